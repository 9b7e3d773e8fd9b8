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
// ends the burst and reports the count, for one summary audit entry.
#ifndef CASEBRIDGE_SERVER_CALL_LIMITS_H_
#define CASEBRIDGE_SERVER_CALL_LIMITS_H_

#include <cstdint>
#include <map>
#include <string>

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
    int max_streams = 16;             // open WatchInbox streams per identity
    // The configuration keys named in refusals.
    std::string rate_key = "limits.office_calls_per_second";
    std::string streams_key = "limits.office_streams_per_identity";
  };

  // A refusal, or the end of a burst of refusals.
  struct Decision {
    absl::Status status;  // OK or RESOURCE_EXHAUSTED
    bool audit = false;   // a refusal that opens a burst: audit it
    // Set on an admission that closes a burst: the refusals it held (the
    // first of them audited), and when the first came.
    int64_t burst_refusals = 0;
    absl::Time burst_start;
  };

  // `clock` must outlive the limiter.
  CallLimiter(Options options, const Clock* clock);

  // One call of `identity`: takes a token from its bucket.
  Decision AdmitCall(const std::string& identity);

  // A WatchInbox stream of `identity` wants to open. On OK the stream
  // counts until StreamClosed.
  Decision OpenStream(const std::string& identity);
  void StreamClosed(const std::string& identity);

  // A call of `identity` passed every limit: ends its burst of refusals,
  // if one is open, and reports it.
  Decision CloseBurst(const std::string& identity);

  // Streams `identity` holds open (for tests).
  int open_streams(const std::string& identity) const;

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time refilled;
    int streams = 0;
    bool refusing = false;  // inside a burst of refusals
    int64_t refusals = 0;
    absl::Time burst_start;
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

// Ends the burst `closed` (from CloseBurst) of `identity`, if it held
// refusals: audits limits.refused, RESOURCE_EXHAUSTED "N <refused> since
// <time><beyond>; only the first was audited on its own", and logs
// limits.burst_ended.
void SummarizeBurst(AuditLog& audit, const std::string& identity,
                    const CallLimiter::Decision& closed,
                    absl::string_view refused, absl::string_view beyond);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_CALL_LIMITS_H_
