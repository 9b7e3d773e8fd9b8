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

// The hash chain: link(i) = SHA-256("casebridge/audit-chain/v1" || 0x00 ||
// link(i-1) || SHA-256(entry_i)), with link(-1) = 32 zero bytes.
std::string ChainLink(absl::string_view previous_link,
                      absl::string_view entry_bytes);
std::string GenesisLink();

// SHA-256(salt || payload).
std::string PayloadHash(absl::string_view salt, absl::string_view payload);

}  // namespace casebridge::audit

#endif  // CASEBRIDGE_CORE_AUDIT_ENTRY_H_
