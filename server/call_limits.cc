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
                    identity, " already has ", bucket.streams,
                    " WatchInbox streams open, the most allowed; close one "
                    "first (",
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
  bucket.refusing = false;
  bucket.refusals = 0;
  return decision;
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

void SummarizeBurst(AuditLog& audit, const std::string& identity,
                    const CallLimiter::Decision& closed,
                    absl::string_view refused, absl::string_view beyond) {
  if (closed.burst_refusals <= 0) return;
  const std::string since = absl::FormatTime(
      "%Y-%m-%dT%H:%M:%SZ", closed.burst_start, absl::UTCTimeZone());
  AuditEvent event;
  event.actor = identity;
  event.action = "limits.refused";
  event.outcome = absl::ResourceExhaustedError(
      absl::StrCat(closed.burst_refusals, " ", refused, " since ", since,
                   beyond, "; only the first was audited on its own"));
  AppendOrLog(audit, event);
  log::Warning("limits.burst_ended", {{"identity", identity},
                                      {"refused", closed.burst_refusals},
                                      {"since", since}});
}

}  // namespace casebridge::server
