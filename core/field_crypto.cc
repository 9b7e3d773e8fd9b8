#include "core/field_crypto.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/crypto.h"
#include "core/status_macros.h"

namespace casebridge::crypto {
namespace {

constexpr unsigned char kSealVersion = 1;

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

// AES-256-GCM fetched once: passing EVP_aes_256_gcm() makes OpenSSL 3 look
// the implementation up again (a locked store and a parameter search) at
// every seal and open.
const EVP_CIPHER* Aes256Gcm() {
  static EVP_CIPHER* const cipher = [] {
    EVP_CIPHER* fetched = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
    if (fetched == nullptr) {
      std::fprintf(stderr, "fatal: AES-256-GCM unavailable: %s\n",
                   OpenSslErrorText().c_str());
      std::abort();
    }
    return fetched;
  }();
  return cipher;
}

const unsigned char* Bytes(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

unsigned char* Bytes(std::string& s) {
  return reinterpret_cast<unsigned char*>(s.data());
}

// Feeds `aad` to an initialised context (possibly empty).
bool AddAad(EVP_CIPHER_CTX* ctx, absl::string_view aad) {
  int len = 0;
  return aad.empty() || EVP_CipherUpdate(ctx, nullptr, &len, Bytes(aad),
                                         static_cast<int>(aad.size())) == 1;
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Makes the entries of `path`'s folder (a file created, renamed or removed
// there) durable.
absl::Status SyncFolderOf(const std::string& path) {
  const std::string::size_type slash = path.rfind('/');
  const std::string folder = slash == std::string::npos ? "."
                             : slash == 0               ? "/"
                                                        : path.substr(0, slash);
  Fd dir;
  dir.fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir.fd < 0 || ::fsync(dir.fd) != 0) {
    return Errno("cannot sync the folder of data key", path);
  }
  return absl::OkStatus();
}

absl::Status WriteNewKeyFile(const std::string& path) {
  std::string raw = RandomBytes(kFieldKeySize);
  Fd file;
  file.fd = ::open(path.c_str(),
                   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (file.fd < 0) return Errno("cannot create data key", path);
  // The mode given to open() is narrowed by the umask only; make it exact.
  if (::fchmod(file.fd, 0600) != 0) return Errno("cannot chmod", path);
  const ssize_t written = ::write(file.fd, raw.data(), raw.size());
  OPENSSL_cleanse(raw.data(), raw.size());
  if (written != static_cast<ssize_t>(kFieldKeySize) || ::fsync(file.fd) != 0) {
    const absl::Status status = Errno("cannot write data key", path);
    ::unlink(path.c_str());
    return status;
  }
  // The file's directory entry is durable only once its folder is synced.
  const absl::Status synced = SyncFolderOf(path);
  if (!synced.ok()) ::unlink(path.c_str());
  return synced;
}

}  // namespace

absl::StatusOr<FieldKey> FieldKey::FromBytes(absl::string_view raw) {
  if (raw.size() != kFieldKeySize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a field key is ", kFieldKeySize, " bytes, not ", raw.size()));
  }
  return FieldKey(std::string(raw));
}

FieldKey FieldKey::Generate() { return FieldKey(RandomBytes(kFieldKeySize)); }

FieldKey& FieldKey::operator=(const FieldKey& other) {
  if (this != &other) {
    OPENSSL_cleanse(bytes_.data(), bytes_.size());
    bytes_ = other.bytes_;
  }
  return *this;
}

FieldKey::~FieldKey() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }

absl::StatusOr<std::string> FieldKey::Seal(absl::string_view plaintext,
                                           absl::string_view aad) const {
  std::string out(kSealOverhead + plaintext.size(), '\0');
  out[0] = static_cast<char>(kSealVersion);
  const std::string nonce = RandomBytes(kFieldNonceSize);
  std::memcpy(out.data() + 1, nonce.data(), kFieldNonceSize);
  unsigned char* ciphertext = Bytes(out) + 1 + kFieldNonceSize;

  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (ctx == nullptr ||
      EVP_EncryptInit_ex(ctx.get(), Aes256Gcm(), nullptr, Bytes(bytes_),
                         Bytes(nonce)) != 1 ||
      !AddAad(ctx.get(), aad) ||
      EVP_EncryptUpdate(ctx.get(), ciphertext, &len, Bytes(plaintext),
                        static_cast<int>(plaintext.size())) != 1 ||
      static_cast<size_t>(len) != plaintext.size() ||
      EVP_EncryptFinal_ex(ctx.get(), ciphertext + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG,
                          static_cast<int>(kFieldTagSize),
                          ciphertext + plaintext.size()) != 1) {
    return absl::InternalError(
        absl::StrCat("AES-256-GCM sealing failed: ", OpenSslErrorText()));
  }
  return out;
}

absl::StatusOr<std::string> FieldKey::Open(absl::string_view sealed,
                                           absl::string_view aad) const {
  if (sealed.size() < kSealOverhead ||
      static_cast<unsigned char>(sealed[0]) != kSealVersion) {
    return absl::DataLossError("sealed value is malformed");
  }
  const absl::string_view nonce = sealed.substr(1, kFieldNonceSize);
  const size_t size = sealed.size() - kSealOverhead;
  const absl::string_view ciphertext = sealed.substr(1 + kFieldNonceSize, size);
  std::string tag(sealed.substr(1 + kFieldNonceSize + size));
  std::string plaintext(size, '\0');

  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (ctx == nullptr ||
      EVP_DecryptInit_ex(ctx.get(), Aes256Gcm(), nullptr, Bytes(bytes_),
                         Bytes(nonce)) != 1 ||
      !AddAad(ctx.get(), aad) ||
      EVP_DecryptUpdate(ctx.get(), Bytes(plaintext), &len, Bytes(ciphertext),
                        static_cast<int>(size)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG,
                          static_cast<int>(kFieldTagSize), Bytes(tag)) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), Bytes(plaintext) + len, &len) != 1) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    OpenSslErrorText();  // clears the queue
    return absl::DataLossError(
        "sealed value does not authenticate (changed, or another key or "
        "place)");
  }
  return plaintext;
}

absl::StatusOr<FieldKey> LoadKeyFile(const std::string& path) {
  Fd file;
  file.fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (file.fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("data key ", path, " does not exist"));
    }
    return Errno("cannot open data key", path);
  }
  struct stat st;
  if (::fstat(file.fd, &st) != 0) return Errno("cannot stat data key", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("data key ", path, " is not a regular file"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("data key ", path, " is owned by uid ", st.st_uid,
                     ", not by the gateway's user (uid ", ::geteuid(),
                     "): chown it to the user the gateway runs as"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "data key %s has mode %04o: it must be readable by its owner only "
        "(chmod 0600)",
        path, st.st_mode & 07777));
  }
  if (st.st_size != static_cast<off_t>(kFieldKeySize)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data key ", path, " is ", st.st_size, " bytes, not ", kFieldKeySize));
  }
  std::string raw(kFieldKeySize, '\0');
  const ssize_t got = ::read(file.fd, raw.data(), raw.size());
  if (got != static_cast<ssize_t>(kFieldKeySize)) {
    return Errno("cannot read data key", path);
  }
  auto key = FieldKey::FromBytes(raw);
  OPENSSL_cleanse(raw.data(), raw.size());
  return key;
}

absl::StatusOr<FieldKey> CreateKeyFile(const std::string& path) {
  CB_RETURN_IF_ERROR(WriteNewKeyFile(path));
  return LoadKeyFile(path);
}

absl::StatusOr<FieldKey> LoadOrCreateKeyFile(const std::string& path) {
  auto key = LoadKeyFile(path);
  if (absl::IsNotFound(key.status())) return CreateKeyFile(path);
  return key;
}

absl::Status ReplaceKeyFile(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return Errno(absl::StrCat("cannot rename data key ", from, " to"), to);
  }
  return SyncFolderOf(to);
}

absl::Status RemoveKeyFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return Errno("cannot remove data key", path);
  }
  return SyncFolderOf(path);
}

}  // namespace casebridge::crypto
