// The audit entry encoding, version 1 (docs/audit-log.md): versioned,
// length-prefixed, big-endian binary. The exact bytes are what the log hashes;
// they are never re-encoded from a parsed form for hashing.
#ifndef CASEBRIDGE_CORE_AUDIT_ENTRY_H_
#define CASEBRIDGE_CORE_AUDIT_ENTRY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace casebridge::audit {

inline constexpr uint8_t kEntryVersion = 1;
inline constexpr size_t kMaxStringBytes = size_t{16} * 1024;
inline constexpr size_t kMaxSubjects = 64;

struct Entry {
  uint64_t index = 0;                 // 0-based position in the log
  absl::Time time;                    // microsecond precision
  std::string actor;                  // SPIFFE id of the caller or the gateway
  std::string action;                 // e.g. "case.open"
  std::vector<std::string> subjects;  // exchange ids, message ids...
  std::string payload_hash;           // SHA-256(salt || payload), 32 bytes
  int32_t status_code = 0;            // grpc::StatusCode of the outcome
  std::string status_message;         // reason of a refusal; empty on success

  bool operator==(const Entry&) const = default;
};

// Encodes `entry`. Strings longer than kMaxStringBytes are truncated and at
// most kMaxSubjects subjects are kept, so any entry can be recorded.
std::string Encode(const Entry& entry);

// Parses bytes made by Encode. DATA_LOSS naming the offset on anything
// malformed: wrong version, short input, oversized field, trailing bytes.
absl::StatusOr<Entry> Decode(absl::string_view bytes);

// SHA-256(salt || payload).
std::string PayloadHash(absl::string_view salt, absl::string_view payload);

// The names a gateway's log and keys go by in signed notes
// (docs/audit-log.md#checkpoints): "pk.casebridge/audit" is the origin line
// of PK's checkpoints and the name of its checkpoint key;
// "pk.casebridge/witness" names the key PK cosigns CN's checkpoints with.
// `country` is "PK" or "CN" (any case).
std::string LogOrigin(absl::string_view country);
std::string WitnessName(absl::string_view country);

// The entry actions of witnessing: a peer checkpoint cosigned, a peer
// checkpoint refused. These entries alone do not call for a new checkpoint
// at once, or two witnesses would keep each other busy.
inline constexpr char kWitnessAction[] = "witness.cosign";
inline constexpr char kWitnessRefusalAction[] = "peer.add_checkpoint";

}  // namespace casebridge::audit

#endif  // CASEBRIDGE_CORE_AUDIT_ENTRY_H_
