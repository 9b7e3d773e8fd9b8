#include "core/crypto.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <sodium.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/openssl_ptr.h"
#include "core/status_macros.h"

namespace casebridge::crypto {
namespace {

using openssl::BioPtr;
using openssl::MemBio;

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

absl::StatusOr<std::string> RawPublicKey(EVP_PKEY* key) {
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError("key is not an Ed25519 key");
  }
  std::string raw(kEd25519PublicKeySize, '\0');
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(
          key, reinterpret_cast<unsigned char*>(raw.data()), &len) != 1 ||
      len != kEd25519PublicKeySize) {
    return absl::InternalError(
        absl::StrCat("reading Ed25519 public key: ", OpenSslErrorText()));
  }
  return raw;
}

// libsodium is initialised once, before its first use; it cannot fail on a
// working system (it only picks CPU-specific code paths).
void EnsureSodium() {
  static const bool ready = [] {
    if (sodium_init() < 0) {
      std::fprintf(stderr, "fatal: libsodium failed to initialise\n");
      std::abort();
    }
    return true;
  }();
  (void)ready;
}

static_assert(crypto_sign_PUBLICKEYBYTES == kEd25519PublicKeySize);
static_assert(crypto_sign_BYTES == kEd25519SignatureSize);
static_assert(crypto_sign_SEEDBYTES == 32);

}  // namespace

void SodiumFree::operator()(unsigned char* p) const { sodium_free(p); }

std::string OpenSslErrorText() {
  const unsigned long code = ERR_get_error();  // NOLINT(google-runtime-int)
  ERR_clear_error();
  if (code == 0) return "no OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

std::string Sha256(absl::string_view data) {
  Sha256Hasher hasher;
  hasher.Update(data);
  return hasher.Finish();
}

namespace {

[[noreturn]] void HashFailed(const char* step) {
  std::fprintf(stderr, "fatal: SHA-256 %s failed: %s\n", step,
               OpenSslErrorText().c_str());
  std::abort();
}

const EVP_MD* Sha256Algorithm() {
  // Never freed: threads may still be hashing while statics are destroyed.
  static EVP_MD* const md = [] {
    EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (fetched == nullptr) HashFailed("fetch");
    return fetched;
  }();
  return md;
}

}  // namespace

Sha256Hasher::Sha256Hasher() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr) HashFailed("context allocation");
  Begin();
}

Sha256Hasher::~Sha256Hasher() { EVP_MD_CTX_free(ctx_); }

void Sha256Hasher::Begin() {
  if (EVP_DigestInit_ex(ctx_, Sha256Algorithm(), nullptr) != 1) {
    HashFailed("init");
  }
}

void Sha256Hasher::Update(const void* data, size_t size) {
  if (EVP_DigestUpdate(ctx_, data, size) != 1) HashFailed("update");
}

Sha256Hasher::Digest Sha256Hasher::FinishDigest() {
  Digest out;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_, out.data(), &len) != 1 || len != out.size()) {
    HashFailed("final");
  }
  Begin();
  return out;
}

std::string Sha256Hasher::Finish() {
  const Digest digest = FinishDigest();
  return std::string(digest.begin(), digest.end());
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()),
                          static_cast<int>(n)) != 1) {
    std::fprintf(stderr, "fatal: RAND_bytes failed: %s\n",
                 OpenSslErrorText().c_str());
    std::abort();
  }
  return out;
}

std::string HexEncode(absl::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0x0F]);
  }
  return out;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", path, ": is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string reason = std::generic_category().message(err);
    if (err == EACCES) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot read ", path, ": ", reason));
    }
    return absl::NotFoundError(
        absl::StrCat("cannot read ", path, ": ", reason));
  }
  // Read in steps up to one byte past the limit: a file given by someone
  // else (an evidence bundle from the other country, say) may be endless
  // (/dev/zero, a pipe) or huge, and must not take the machine's memory.
  std::string contents;
  constexpr size_t kStep = size_t{1} << 16;
  while (contents.size() <= kMaxFileBytes) {
    const size_t had = contents.size();
    contents.resize(had + kStep);
    in.read(contents.data() + had, static_cast<std::streamsize>(kStep));
    contents.resize(had + static_cast<size_t>(in.gcount()));
    if (!in) break;
  }
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat("error reading ", path));
  }
  if (contents.size() > kMaxFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read ", path, ": larger than ", kMaxFileBytes >> 20,
        " MiB, the most any file given to CaseBridge may hold"));
  }
  return contents;
}

// --- Ed25519Signer -----------------------------------------------------------

absl::StatusOr<std::unique_ptr<Ed25519Signer>> Ed25519Signer::FromPemFile(
    const std::string& path) {
  CB_ASSIGN_OR_RETURN(std::string pem, ReadFile(path));
  auto signer = FromPem(pem);
  OPENSSL_cleanse(pem.data(), pem.size());  // the private key's text
  if (!signer.ok()) {
    return absl::Status(signer.status().code(),
                        absl::StrCat(path, ": ", signer.status().message()));
  }
  return signer;
}

absl::StatusOr<std::unique_ptr<Ed25519Signer>> Ed25519Signer::FromPem(
    absl::string_view pem) {
  BioPtr bio = MemBio(pem);
  if (bio == nullptr) return absl::InternalError("BIO_new_mem_buf failed");
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a PEM private key (", OpenSslErrorText(), ")"));
  }
  return FromKey(key.get());
}

// The key's 32-byte seed goes into libsodium's secret key, which is checked
// to give the same public key as OpenSSL reads from the file.
absl::StatusOr<std::unique_ptr<Ed25519Signer>> Ed25519Signer::FromKey(
    EVP_PKEY* key) {
  CB_ASSIGN_OR_RETURN(std::string public_key, RawPublicKey(key));
  EnsureSodium();
  SecretKeyPtr seed(
      static_cast<unsigned char*>(sodium_malloc(crypto_sign_SEEDBYTES)));
  SecretKeyPtr secret_key(
      static_cast<unsigned char*>(sodium_malloc(crypto_sign_SECRETKEYBYTES)));
  if (seed == nullptr || secret_key == nullptr) {
    return absl::ResourceExhaustedError("no memory for an Ed25519 secret key");
  }
  size_t len = crypto_sign_SEEDBYTES;
  if (EVP_PKEY_get_raw_private_key(key, seed.get(), &len) != 1 ||
      len != crypto_sign_SEEDBYTES) {
    return absl::InternalError(
        absl::StrCat("reading Ed25519 private key: ", OpenSslErrorText()));
  }
  unsigned char derived[crypto_sign_PUBLICKEYBYTES];
  if (crypto_sign_seed_keypair(derived, secret_key.get(), seed.get()) != 0 ||
      sodium_memcmp(derived, public_key.data(), sizeof(derived)) != 0) {
    return absl::InternalError(
        "Ed25519 private key does not give its own public key");
  }
  return std::unique_ptr<Ed25519Signer>(
      new Ed25519Signer(std::move(secret_key), std::move(public_key)));
}

std::unique_ptr<Ed25519Signer> Ed25519Signer::Generate() {
  EVP_PKEY* raw_key = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr);
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx) != 1 ||
      EVP_PKEY_keygen(ctx, &raw_key) != 1) {
    std::fprintf(stderr, "fatal: Ed25519 keygen failed: %s\n",
                 OpenSslErrorText().c_str());
    std::abort();
  }
  EVP_PKEY_CTX_free(ctx);
  EvpPkeyPtr key(raw_key);
  auto signer = FromKey(key.get());
  if (!signer.ok()) {
    std::fprintf(stderr, "fatal: %s\n",
                 std::string(signer.status().message()).c_str());
    std::abort();
  }
  return *std::move(signer);
}

absl::StatusOr<std::string> Ed25519Signer::Sign(
    absl::string_view message) const {
  std::string sig(kEd25519SignatureSize, '\0');
  if (crypto_sign_detached(
          reinterpret_cast<unsigned char*>(sig.data()), nullptr,
          reinterpret_cast<const unsigned char*>(message.data()),
          message.size(), secret_key_.get()) != 0) {
    return absl::InternalError("Ed25519 sign failed");
  }
  return sig;
}

// --- Ed25519Verifier ---------------------------------------------------------

absl::StatusOr<std::unique_ptr<Ed25519Verifier>> Ed25519Verifier::FromPemFile(
    const std::string& path) {
  CB_ASSIGN_OR_RETURN(const std::string pem, ReadFile(path));
  auto verifier = FromPem(pem);
  if (!verifier.ok()) {
    return absl::Status(verifier.status().code(),
                        absl::StrCat(path, ": ", verifier.status().message()));
  }
  return verifier;
}

absl::StatusOr<std::unique_ptr<Ed25519Verifier>> Ed25519Verifier::FromPem(
    absl::string_view pem) {
  BioPtr bio = MemBio(pem);
  if (bio == nullptr) return absl::InternalError("BIO_new_mem_buf failed");
  EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a PEM public key (", OpenSslErrorText(), ")"));
  }
  CB_ASSIGN_OR_RETURN(std::string raw, RawPublicKey(key.get()));
  return FromRawPublicKey(raw);
}

absl::StatusOr<std::unique_ptr<Ed25519Verifier>>
Ed25519Verifier::FromRawPublicKey(absl::string_view raw) {
  if (raw.size() != kEd25519PublicKeySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("Ed25519 public key must be 32 bytes, got ", raw.size()));
  }
  EnsureSodium();
  // A key of small order, or not a canonical point of the curve, would let
  // one signature pass for every message under a lax verifier; no signer has
  // one. Refused here, so that a configured key is checked when it is read.
  if (crypto_core_ed25519_is_valid_point(
          reinterpret_cast<const unsigned char*>(raw.data())) != 1) {
    return absl::InvalidArgumentError(
        "bad Ed25519 public key: not a point of the curve's main subgroup "
        "(small order or not canonical)");
  }
  return std::unique_ptr<Ed25519Verifier>(
      new Ed25519Verifier(std::string(raw)));
}

absl::Status Ed25519Verifier::Verify(absl::string_view message,
                                     absl::string_view signature) const {
  if (signature.size() != kEd25519SignatureSize) {
    return absl::UnauthenticatedError(absl::StrCat(
        "Ed25519 signature must be 64 bytes, got ", signature.size()));
  }
  // Besides what RFC 8032 requires (S < L), libsodium refuses an R of small
  // order, which OpenSSL 3.0 accepts (a second, non-standard signature of a
  // message by the same key).
  if (crypto_sign_verify_detached(
          reinterpret_cast<const unsigned char*>(signature.data()),
          reinterpret_cast<const unsigned char*>(message.data()),
          message.size(),
          reinterpret_cast<const unsigned char*>(public_key_.data())) != 0) {
    return absl::UnauthenticatedError("Ed25519 signature does not verify");
  }
  return absl::OkStatus();
}

}  // namespace casebridge::crypto
