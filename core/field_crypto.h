// Authenticated encryption of stored fields (docs/storage.md#data-protection):
// AES-256-GCM over OpenSSL 3 with a fresh random 96-bit nonce per value and
// associated data that binds each ciphertext to the place it belongs (record
// and column), so a sealed value copied into another row does not open.
//
// Sealed format, version 1:
//
//   0x01 || nonce (12 bytes) || ciphertext (as long as the plaintext) || tag
//   (16)
#ifndef CASEBRIDGE_CORE_FIELD_CRYPTO_H_
#define CASEBRIDGE_CORE_FIELD_CRYPTO_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace casebridge::crypto {

inline constexpr size_t kFieldKeySize = 32;    // AES-256
inline constexpr size_t kFieldNonceSize = 12;  // 96 bits, random per value
inline constexpr size_t kFieldTagSize = 16;
// What sealing adds to a plaintext: version byte, nonce and tag.
inline constexpr size_t kSealOverhead = 1 + kFieldNonceSize + kFieldTagSize;

// One AES-256-GCM key. Copyable; the bytes are wiped when an object dies.
// Thread-safe: Seal and Open keep no state between calls.
class FieldKey {
 public:
  // INVALID_ARGUMENT unless `raw` is exactly 32 bytes.
  static absl::StatusOr<FieldKey> FromBytes(absl::string_view raw);
  // 32 bytes from OpenSSL's CSPRNG.
  static FieldKey Generate();

  FieldKey(const FieldKey& other) = default;
  FieldKey& operator=(const FieldKey& other);
  ~FieldKey();

  // `plaintext` sealed with associated data `aad` (not stored; the opener
  // must present the same bytes). INTERNAL only if OpenSSL fails.
  absl::StatusOr<std::string> Seal(absl::string_view plaintext,
                                   absl::string_view aad) const;
  // The plaintext of a value Seal made under this key with this `aad`.
  // DATA_LOSS if the value is malformed, was changed in any byte, or was
  // sealed under another key or with other associated data.
  absl::StatusOr<std::string> Open(absl::string_view sealed,
                                   absl::string_view aad) const;

  // The raw key, for wrapping it under another key. Handle with care.
  const std::string& bytes() const { return bytes_; }

 private:
  explicit FieldKey(std::string bytes) : bytes_(std::move(bytes)) {}
  std::string bytes_;
};

// The gateway's data key, read from `path`. NOT_FOUND (naming the path) if
// the file does not exist. Refused (FAILED_PRECONDITION, naming the path) if
// the file is not a regular file, is not owned by this process's effective
// user, is readable or writable by group or others, or is not exactly 32
// bytes long.
absl::StatusOr<FieldKey> LoadKeyFile(const std::string& path);

// Creates the data key file `path` (which must not exist; the folder must)
// with mode 0600 holding 32 fresh random bytes, and syncs the file and its
// folder so that the key survives a crash once this returns.
absl::StatusOr<FieldKey> CreateKeyFile(const std::string& path);

// LoadKeyFile, creating the file first (CreateKeyFile) if it does not exist.
// Only for a key that protects nothing yet: the gateway's store decides
// itself whether a missing key may be replaced.
absl::StatusOr<FieldKey> LoadOrCreateKeyFile(const std::string& path);

// Renames the data key file `from` over `to` (in the same folder) and syncs
// the folder, so that once this returns `to` holds the key `from` held, even
// after a crash. FAILED_PRECONDITION naming the files if either step fails.
absl::Status ReplaceKeyFile(const std::string& from, const std::string& to);

// Removes the data key file `path` (OK if it does not exist) and syncs its
// folder.
absl::Status RemoveKeyFile(const std::string& path);

}  // namespace casebridge::crypto

#endif  // CASEBRIDGE_CORE_FIELD_CRYPTO_H_
