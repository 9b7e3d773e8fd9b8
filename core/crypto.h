// SHA-256 and randomness over OpenSSL 3; Ed25519 signing and verification
// over libsodium (about twice as fast as OpenSSL 3.0's on the same machine,
// docs/performance.md), with keys read and written by OpenSSL. Every OpenSSL
// object is owned by a unique_ptr with its deleter; every return value is
// checked.
#ifndef CASEBRIDGE_CORE_CRYPTO_H_
#define CASEBRIDGE_CORE_CRYPTO_H_

#include <openssl/evp.h>

#include <array>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace casebridge::crypto {

inline constexpr size_t kSha256Size = 32;
inline constexpr size_t kEd25519PublicKeySize = 32;
inline constexpr size_t kEd25519SignatureSize = 64;

struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;

// SHA-256 of `data`: 32 raw bytes.
std::string Sha256(absl::string_view data);

// Incremental SHA-256 for inputs made of several parts, reusable: Finish
// starts the next hash. Hot loops (the Merkle tree, log verification) keep
// one per thread, since OpenSSL 3's one-shot functions set up a context on
// every call, which made a 65-byte node hash about three times slower. The
// algorithm is fetched once per process. Aborts if OpenSSL cannot hash at
// all, which no caller could recover from.
class Sha256Hasher {
 public:
  using Digest = std::array<unsigned char, kSha256Size>;

  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  void Update(const void* data, size_t size);
  // The hash of everything since the last Finish (or construction), as 32
  // raw bytes; the hasher is then ready for the next one.
  Digest FinishDigest();
  std::string Finish();

 private:
  void Begin();

  EVP_MD_CTX* ctx_;  // owned
};

// `n` bytes from OpenSSL's CSPRNG. Aborts if the generator fails: no caller
// can do anything sensible without randomness.
std::string RandomBytes(size_t n);

// Lower-case hex.
std::string HexEncode(absl::string_view bytes);

// Text of the newest OpenSSL error on this thread's queue (and clears it).
std::string OpenSslErrorText();

// libsodium's secret key (seed and public key, 64 bytes) in sodium_malloc
// memory: guard pages around it, locked against swapping where the system
// allows, zeroed when freed.
struct SodiumFree {
  void operator()(unsigned char* p) const;
};
using SecretKeyPtr = std::unique_ptr<unsigned char, SodiumFree>;

// Signs with one Ed25519 private key. Thread-safe.
class Ed25519Signer {
 public:
  // Reads a PKCS#8 PEM private key. Errors name the file.
  static absl::StatusOr<std::unique_ptr<Ed25519Signer>> FromPemFile(
      const std::string& path);
  static absl::StatusOr<std::unique_ptr<Ed25519Signer>> FromPem(
      absl::string_view pem);
  // Makes a fresh key (tests, benchmarks).
  static std::unique_ptr<Ed25519Signer> Generate();

  // 64-byte signature over `message`.
  absl::StatusOr<std::string> Sign(absl::string_view message) const;
  // The 32-byte raw public key.
  const std::string& public_key() const { return public_key_; }

 private:
  static absl::StatusOr<std::unique_ptr<Ed25519Signer>> FromKey(EVP_PKEY* key);
  Ed25519Signer(SecretKeyPtr secret_key, std::string public_key)
      : secret_key_(std::move(secret_key)),
        public_key_(std::move(public_key)) {}
  SecretKeyPtr secret_key_;
  std::string public_key_;
};

// Verifies Ed25519 signatures of one public key. Thread-safe.
class Ed25519Verifier {
 public:
  // Reads a SubjectPublicKeyInfo PEM public key. Errors name the file.
  static absl::StatusOr<std::unique_ptr<Ed25519Verifier>> FromPemFile(
      const std::string& path);
  static absl::StatusOr<std::unique_ptr<Ed25519Verifier>> FromPem(
      absl::string_view pem);
  // From the 32 raw bytes.
  static absl::StatusOr<std::unique_ptr<Ed25519Verifier>> FromRawPublicKey(
      absl::string_view raw);

  // OK if `signature` is a valid signature of `message`; otherwise
  // UNAUTHENTICATED.
  absl::Status Verify(absl::string_view message,
                      absl::string_view signature) const;
  const std::string& public_key() const { return public_key_; }

 private:
  explicit Ed25519Verifier(std::string public_key)
      : public_key_(std::move(public_key)) {}
  std::string public_key_;
};

// Reads a whole file. NOT_FOUND / PERMISSION_DENIED name the path;
// INVALID_ARGUMENT for more than kMaxFileBytes (a pipe or a device that
// never ends among them). Every file CaseBridge reads (configuration, keys,
// certificates, CRLs, evidence bundles) is far smaller.
inline constexpr size_t kMaxFileBytes = size_t{64} << 20;
absl::StatusOr<std::string> ReadFile(const std::string& path);

}  // namespace casebridge::crypto

#endif  // CASEBRIDGE_CORE_CRYPTO_H_
