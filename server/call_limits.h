// Per-identity abuse limits: a token bucket of calls and a cap on open
// WatchInbox streams (docs/operations.md#abuse-limits). The office port has
// one limiter, the peer port (for the pinned peer) another; a third decides
// which of the calls a port can only refuse are audited on their own.
//
// Refusals are RESOURCE_EXHAUSTED. So that a flood cannot flood the audit
// log, refusals come in bursts: the first refusal of an identity after an
// admitted call opens a burst and is audited; later refusals of that
// identity are only counted; CloseBurst, called once a call passes the
// limits that apply to it (even if it is then refused for something else),
// ends the burst and reports the count, for one summary audit entry. An
// identity that does not come back, or keeps being refused, has its count
// summarized by OpenBurstReporter every limits.refusal_summary_seconds and
// when the gateway stops.
#ifndef CASEBRIDGE_SERVER_CALL_LIMITS_H_
#define CASEBRIDGE_SERVER_CALL_LIMITS_H_

#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/clock.h"
#include "server/audit_log.h"

namespace casebridge::server {

class CallLimiter {
 public:
  struct Options {
    double calls_per_second = 10000;  // sustained rate per identity
    double burst = 20000;             // bucket size
    int max_streams = 16;  // open WatchInbox / Deliver streams per identity
    // The configuration keys named in refusals.
    std::string rate_key = "limits.office_calls_per_second";
    std::string streams_key = "limits.office_streams_per_identity";
    std::string stream_kind = "WatchInbox";  // the streams counted
    // How summary entries name the refusals they count, and what they were
    // refused beyond (empty, or " beyond <key>").
    std::string refused = "calls refused by the limits";
    std::string beyond;
  };

  // A refusal, or the end of a burst of refusals.
  struct Decision {
    absl::Status status;  // OK or RESOURCE_EXHAUSTED
    bool audit = false;   // a refusal that opens a burst: audit it
    // Set on an admission that closes a burst, or for a burst reported
    // while open: the refusals counted since `burst_start`, which is when
    // the burst began (its first refusal, audited, is among them) or, when
    // `reported_before`, when the count last went to the audit log.
    int64_t burst_refusals = 0;
    absl::Time burst_start;
    absl::Time burst_began;
    bool reported_before = false;
    bool ended = true;  // false: the burst goes on after this count
  };

  // `clock` must outlive the limiter.
  CallLimiter(Options options, const Clock* clock);

  // One call of `identity`: takes a token from its bucket.
  Decision AdmitCall(const std::string& identity);

  // A WatchInbox (office port) or Deliver (peer port) stream of `identity`
  // wants to open. On OK the stream counts until StreamClosed.
  Decision OpenStream(const std::string& identity);
  void StreamClosed(const std::string& identity);

  // A call of `identity` passed every limit: ends its burst of refusals,
  // if one is open, and reports it.
  Decision CloseBurst(const std::string& identity);

  // The bursts open now, each with the refusals counted since it began or
  // was last reported (none if no refusal came since). Counting starts
  // again; a burst stays open if it had refusals to report, so its next
  // refusals are still only counted, and ends otherwise (its next refusal
  // is audited on its own). `end_all` ends every burst.
  std::vector<std::pair<std::string, Decision>> TakeOpenBursts(bool end_all);

  // Writes the summary entry of `counted` (from CloseBurst or
  // TakeOpenBursts), if it holds refusals: action limits.refused, actor
  // `identity`, RESOURCE_EXHAUSTED "<N> <refused> since <time><beyond>;
  // only the first was audited on its own", or for a count after an
  // earlier one "<N> more <refused> since <time><beyond> (the burst began
  // <time>); none was audited on its own". Logs limits.burst_ended, or
  // limits.burst_counted for a burst that goes on.
  void Summarize(AuditLog& audit, const std::string& identity,
                 const Decision& counted) const;

  // Streams `identity` holds open (for tests).
  int open_streams(const std::string& identity) const;

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time refilled;
    int streams = 0;
    bool refusing = false;   // inside a burst of refusals
    int64_t refusals = 0;    // since burst_start
    absl::Time burst_start;  // the burst's beginning or its last report
    absl::Time burst_began;
    bool reported = false;  // part of the burst went to the audit log
  };

  Decision RefuseLocked(Bucket& bucket, absl::Status status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Bucket& BucketLocked(const std::string& identity)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const Clock* const clock_;
  mutable absl::Mutex mu_;
  // One entry per identity seen: bounded by the certificates the CA issued.
  std::map<std::string, Bucket, std::less<>> buckets_ ABSL_GUARDED_BY(mu_);
};

// Summarizes the open bursts of each limiter (TakeOpenBursts, Summarize)
// every `interval`, on a thread of its own, so that a count does not wait
// for the identity's next admitted call, which may never come; Stop ends
// every burst with its summary. A crash loses at most one interval's
// counts; the first refusal of each burst is in the log already.
class OpenBurstReporter {
 public:
  // `limiters` and `audit` must outlive the reporter.
  OpenBurstReporter(std::vector<CallLimiter*> limiters, AuditLog* audit,
                    absl::Duration interval);
  ~OpenBurstReporter();  // Stop
  OpenBurstReporter(const OpenBurstReporter&) = delete;
  OpenBurstReporter& operator=(const OpenBurstReporter&) = delete;

  // One round, as the thread makes them.
  void Report(bool end_all);
  // Joins the thread, then reports with every burst ended. Idempotent.
  void Stop();

 private:
  void Run();

  const std::vector<CallLimiter*> limiters_;
  AuditLog* const audit_;
  const absl::Duration interval_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ = false;  // Stop's final report is made
  std::thread thread_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_CALL_LIMITS_H_
