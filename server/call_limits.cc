#include "server/call_limits.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/log.h"

namespace casebridge::server {

CallLimiter::CallLimiter(Options options, const Clock* clock)
    : options_(options), clock_(clock) {}

CallLimiter::Bucket& CallLimiter::BucketLocked(const std::string& identity) {
  auto [it, inserted] = buckets_.try_emplace(identity);
  if (inserted) {
    it->second.tokens = options_.burst;
    it->second.refilled = clock_->Now();
  }
  return it->second;
}

CallLimiter::Decision CallLimiter::RefuseLocked(Bucket& bucket,
                                                absl::Status status) {
  Decision decision;
  decision.status = std::move(status);
  if (!bucket.refusing) {
    bucket.refusing = true;
    bucket.refusals = 0;
    bucket.burst_start = clock_->Now();
    bucket.burst_began = bucket.burst_start;
    bucket.reported = false;
    decision.audit = true;
  }
  ++bucket.refusals;
  return decision;
}

CallLimiter::Decision CallLimiter::AdmitCall(const std::string& identity) {
  absl::MutexLock lock(&mu_);
  Bucket& bucket = BucketLocked(identity);
  const absl::Time now = clock_->Now();
  if (now > bucket.refilled) {
    bucket.tokens =
        std::min(options_.burst,
                 bucket.tokens + absl::ToDoubleSeconds(now - bucket.refilled) *
                                     options_.calls_per_second);
    bucket.refilled = now;
  }
  if (bucket.tokens < 1) {
    return RefuseLocked(
        bucket,
        absl::ResourceExhaustedError(absl::StrCat(
            "rate limit: ", identity, " may make ", options_.calls_per_second,
            " calls per second (bursts of ", options_.burst,
            "); slow down and retry (", options_.rate_key, ")")));
  }
  bucket.tokens -= 1;
  return Decision{};
}

CallLimiter::Decision CallLimiter::OpenStream(const std::string& identity) {
  absl::MutexLock lock(&mu_);
  Bucket& bucket = BucketLocked(identity);
  if (bucket.streams >= options_.max_streams) {
    return RefuseLocked(
        bucket, absl::ResourceExhaustedError(absl::StrCat(
                    identity, " already has ", bucket.streams, " ",
                    options_.stream_kind,
                    " streams open, the most allowed; close one first (",
                    options_.streams_key, ")")));
  }
  ++bucket.streams;
  return Decision{};
}

CallLimiter::Decision CallLimiter::CloseBurst(const std::string& identity) {
  absl::MutexLock lock(&mu_);
  Decision decision;
  auto it = buckets_.find(identity);
  if (it == buckets_.end() || !it->second.refusing) return decision;
  Bucket& bucket = it->second;
  decision.burst_refusals = bucket.refusals;
  decision.burst_start = bucket.burst_start;
  decision.burst_began = bucket.burst_began;
  decision.reported_before = bucket.reported;
  bucket.refusing = false;
  bucket.refusals = 0;
  return decision;
}

std::vector<std::pair<std::string, CallLimiter::Decision>>
CallLimiter::TakeOpenBursts(bool end_all) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  std::vector<std::pair<std::string, Decision>> out;
  for (auto& [identity, bucket] : buckets_) {
    if (!bucket.refusing) continue;
    Decision counted;
    counted.burst_refusals = bucket.refusals;
    counted.burst_start = bucket.burst_start;
    counted.burst_began = bucket.burst_began;
    counted.reported_before = bucket.reported;
    // A burst with nothing counted since its last report has stopped.
    counted.ended = end_all || bucket.refusals == 0;
    if (counted.ended) {
      bucket.refusing = false;
    } else {
      bucket.reported = true;
      bucket.burst_start = now;
    }
    bucket.refusals = 0;
    out.emplace_back(identity, counted);
  }
  return out;
}

void CallLimiter::StreamClosed(const std::string& identity) {
  absl::MutexLock lock(&mu_);
  auto it = buckets_.find(identity);
  if (it != buckets_.end() && it->second.streams > 0) --it->second.streams;
}

int CallLimiter::open_streams(const std::string& identity) const {
  absl::MutexLock lock(&mu_);
  auto it = buckets_.find(identity);
  return it == buckets_.end() ? 0 : it->second.streams;
}

void CallLimiter::Summarize(AuditLog& audit, const std::string& identity,
                            const Decision& counted) const {
  if (counted.burst_refusals <= 0) return;
  auto format = [](absl::Time t) {
    return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
  };
  const std::string since = format(counted.burst_start);
  AuditEvent event;
  event.actor = identity;
  event.action = "limits.refused";
  event.outcome = absl::ResourceExhaustedError(
      counted.reported_before
          ? absl::StrCat(counted.burst_refusals, " more ", options_.refused,
                         " since ", since, options_.beyond,
                         " (the burst began ", format(counted.burst_began),
                         "); none was audited on its own")
          : absl::StrCat(counted.burst_refusals, " ", options_.refused,
                         " since ", since, options_.beyond,
                         "; only the first was audited on its own"));
  AppendOrLog(audit, event);
  log::Warning(counted.ended ? "limits.burst_ended" : "limits.burst_counted",
               {{"identity", identity},
                {"refused", counted.burst_refusals},
                {"since", since}});
}

OpenBurstReporter::OpenBurstReporter(std::vector<CallLimiter*> limiters,
                                     AuditLog* audit, absl::Duration interval)
    : limiters_(std::move(limiters)), audit_(audit), interval_(interval) {
  thread_ = std::thread([this] { Run(); });
}

OpenBurstReporter::~OpenBurstReporter() { Stop(); }

void OpenBurstReporter::Report(bool end_all) {
  for (CallLimiter* limiter : limiters_) {
    for (const auto& [identity, counted] : limiter->TakeOpenBursts(end_all)) {
      limiter->Summarize(*audit_, identity, counted);
    }
  }
}

void OpenBurstReporter::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_);
      if (stopping_) return;
    }
    Report(/*end_all=*/false);
  }
}

void OpenBurstReporter::Stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  Report(/*end_all=*/true);
}

}  // namespace casebridge::server
