// C2SP signed notes (c2sp.org/signed-note), tlog checkpoints
// (c2sp.org/tlog-checkpoint) and Ed25519 cosignatures
// (c2sp.org/tlog-cosignature, cosignature/v1).
//
// A signed note is UTF-8 text ending in a newline, a blank line, then one or
// more signature lines "— <key name> base64(key id || signature)\n". The key
// id is SHA-256(name || "\n" || type || public key)[:4], where type is 0x01
// for a plain Ed25519 note signature and 0x04 for a cosignature/v1, whose
// signature is a big-endian u64 timestamp followed by the Ed25519 signature
// over "cosignature/v1\ntime <timestamp>\n" || note text.
#ifndef CASEBRIDGE_CORE_NOTE_H_
#define CASEBRIDGE_CORE_NOTE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/crypto.h"

namespace casebridge::note {

inline constexpr uint8_t kTypeEd25519 = 0x01;
inline constexpr uint8_t kTypeCosignatureV1 = 0x04;

// One signature line, decoded.
struct Signature {
  std::string name;  // key name
  uint32_t key_id = 0;
  std::string bytes;  // what follows the key id (signature, or timestamp
                      // and signature for a cosignature)
};

struct Note {
  std::string text;  // the signed text, ending in "\n" (no blank line)
  std::vector<Signature> signatures;
};

// Parses a signed note. INVALID_ARGUMENT naming what is malformed: not UTF-8,
// no blank line before the signatures, text not ending in a newline, a bad
// signature line, bad base64, a name with spaces or "+", no signature, more
// than 100 signatures.
absl::StatusOr<Note> Parse(absl::string_view signed_note);

// Text, blank line, signature lines, each ending in "\n".
std::string Format(const Note& note);

// SHA-256(name || "\n" || type || public_key)[:4], big-endian.
uint32_t KeyId(absl::string_view name, uint8_t type,
               absl::string_view public_key);

// A verifier key: "<name>+<8 hex digits key id>+base64(type || public key)".
struct VerifierKey {
  std::string name;
  uint8_t type = kTypeEd25519;
  std::string public_key;  // 32 raw bytes (Ed25519)
  uint32_t key_id = 0;
};
// INVALID_ARGUMENT unless well formed, of a known type (0x01 or 0x04) with a
// 32-byte key, and the key id matches.
absl::StatusOr<VerifierKey> ParseVerifierKey(absl::string_view vkey);
std::string FormatVerifierKey(const VerifierKey& key);
VerifierKey MakeVerifierKey(absl::string_view name, uint8_t type,
                            absl::string_view public_key);

// Signs `text` (which must end in "\n") as `name`: the signature to add to a
// Note (type 0x01).
absl::StatusOr<Signature> Sign(absl::string_view text, absl::string_view name,
                               const crypto::Ed25519Signer& signer);

// OK if `note` carries a valid type-0x01 signature by `key` (matched by name
// and key id). NOT_FOUND if it carries none by that key; UNAUTHENTICATED if
// one is there but does not verify.
absl::Status Verify(const Note& note, const VerifierKey& key);

// A cosignature/v1 of `text` at `timestamp` (seconds since the epoch).
absl::StatusOr<Signature> Cosign(absl::string_view text, absl::string_view name,
                                 uint64_t timestamp,
                                 const crypto::Ed25519Signer& signer);

// The timestamp of `note`'s valid cosignature/v1 by `key` (type 0x04).
// NOT_FOUND if there is none by that key; UNAUTHENTICATED if one is there
// but does not verify (or its timestamp exceeds 2^63 - 1).
absl::StatusOr<uint64_t> VerifyCosignature(const Note& note,
                                           const VerifierKey& key);

// The body of a tlog checkpoint: origin line, decimal size, base64 root hash,
// then optional extension lines, each ending in "\n".
struct Checkpoint {
  std::string origin;
  uint64_t size = 0;
  std::string root;  // 32 raw bytes
  std::vector<std::string> extensions;

  bool operator==(const Checkpoint&) const = default;
};
std::string FormatCheckpoint(const Checkpoint& checkpoint);
// INVALID_ARGUMENT naming the line: empty origin, size not a canonical
// decimal (no sign, no leading zeros, fits u64), root not base64 of 32 bytes,
// empty extension line, missing final newline.
absl::StatusOr<Checkpoint> ParseCheckpoint(absl::string_view text);

}  // namespace casebridge::note

#endif  // CASEBRIDGE_CORE_NOTE_H_
