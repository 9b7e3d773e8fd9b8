// The gateway's audit log: every state change and every refused call, in
// order, as an RFC 6962 Merkle tree with signed checkpoints
// (docs/audit-log.md). This is the interface; sqlite_audit_log.h keeps it in
// the gateway's database, in the same transaction as the change it records.
#ifndef CASEBRIDGE_SERVER_AUDIT_LOG_H_
#define CASEBRIDGE_SERVER_AUDIT_LOG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
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

// An entry as stored: its exact bytes and the decoded form.
struct StoredEntry {
  uint64_t index = 0;
  std::string bytes;
  audit::Entry entry;
};

// One of our signed checkpoints.
struct StoredCheckpoint {
  uint64_t size = 0;
  std::string root;  // 32 bytes
  std::string note;  // C2SP signed note, with the peer's cosignature if any
  absl::Time created;
  bool cosigned = false;  // the note carries the peer's verified cosignature
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
  // Up to `max` entries from `start` on that an office may see: those it
  // made and those naming a message it sent or that was addressed to it.
  // `*next` is set to the index after the last entry examined.
  virtual absl::StatusOr<std::vector<StoredEntry>> ReadVisibleTo(
      const std::string& office, uint64_t start, size_t max,
      uint64_t* next) = 0;

  // Proofs over the tree of the first `size` entries (size <= Size()).
  virtual absl::StatusOr<std::string> RootAt(uint64_t size) = 0;
  virtual absl::StatusOr<std::vector<std::string>> InclusionProof(
      uint64_t index, uint64_t size) = 0;
  virtual absl::StatusOr<std::vector<std::string>> ConsistencyProof(
      uint64_t size1, uint64_t size2) = 0;

  // The newest checkpoint; nullopt before the first.
  virtual absl::StatusOr<std::optional<StoredCheckpoint>>
  LatestCheckpoint() = 0;
  // The newest checkpoint the peer cosigned; nullopt if none.
  virtual absl::StatusOr<std::optional<StoredCheckpoint>>
  LatestCosignedCheckpoint() = 0;

  // Recomputes every leaf from the entry bytes and checks the stored tree
  // nodes and the entries' indexes (no keys needed; the offline verifier,
  // server/audit_verifier.h, checks checkpoints and signatures too).
  virtual absl::StatusOr<VerifyReport> Verify() = 0;
};

// Appends `event`; a failure is logged (audit.append_failed), not returned:
// for entries of refusals and events whose outcome stands either way.
void AppendOrLog(AuditLog& audit, const AuditEvent& event);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_AUDIT_LOG_H_
