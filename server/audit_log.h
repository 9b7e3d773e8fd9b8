// The gateway's audit log: every state change and every refused call, in
// order. This is the interface; sqlite_audit_log.h keeps it in the gateway's
// database, in the same transaction as the change it records.
#ifndef CASEBRIDGE_SERVER_AUDIT_LOG_H_
#define CASEBRIDGE_SERVER_AUDIT_LOG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/audit_entry.h"

namespace casebridge::server {

// What a caller asks the log to record. The log adds the index, the time and
// the salted payload hash.
struct AuditEvent {
  std::string actor;                  // verified SPIFFE id of the caller
  std::string action;                 // e.g. "case.open"
  std::vector<std::string> subjects;  // ids the action concerned
  std::string payload;   // bytes committed to as SHA-256(salt || payload)
  absl::Status outcome;  // OK, or the refusal sent to the caller
};

// An entry as stored: its exact bytes, its chain link, and the decoded form.
struct StoredEntry {
  uint64_t index = 0;
  std::string bytes;
  std::string link;
  audit::Entry entry;
};

struct VerifyReport {
  uint64_t entries = 0;               // entries examined
  std::optional<uint64_t> first_bad;  // index of the first bad entry
  std::string problem;                // what is wrong with it
  bool ok() const { return !first_bad.has_value(); }
};

class AuditLog {
 public:
  virtual ~AuditLog() = default;

  // Appends one entry in a transaction of its own (used for refusals, whose
  // change was never made). Returns the new entry's index.
  virtual absl::StatusOr<uint64_t> Append(const AuditEvent& event) = 0;
  // Number of entries.
  virtual absl::StatusOr<uint64_t> Size() = 0;
  // Up to `max` entries starting at `start`.
  virtual absl::StatusOr<std::vector<StoredEntry>> Read(uint64_t start,
                                                        size_t max) = 0;
  // Re-reads every entry and recomputes the hash chain.
  virtual absl::StatusOr<VerifyReport> Verify() = 0;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_AUDIT_LOG_H_
