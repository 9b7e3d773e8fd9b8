#include "tests/testing/test_crl.h"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/crypto.h"
#include "core/openssl_ptr.h"
#include "core/status_macros.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

namespace fs = std::filesystem;

using openssl::BioPtr;
using openssl::MemBio;
using openssl::X509CrlPtr;
using openssl::X509Ptr;
struct TimeDeleter {
  void operator()(ASN1_TIME* t) const { ASN1_TIME_free(t); }
};
using TimePtr = std::unique_ptr<ASN1_TIME, TimeDeleter>;

absl::StatusOr<X509Ptr> ReadCert(const std::string& path) {
  CB_ASSIGN_OR_RETURN(const std::string pem, crypto::ReadFile(path));
  BioPtr bio = MemBio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(path, ": no certificate"));
  }
  return cert;
}

TimePtr Asn1Time(absl::Time t) {
  return TimePtr(ASN1_TIME_set(nullptr, absl::ToTimeT(t)));
}

}  // namespace

absl::StatusOr<std::string> CrlToDer(const std::string& pem) {
  BioPtr bio = MemBio(pem);
  X509CrlPtr crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
  if (crl == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM CRL");
  }
  unsigned char* der = nullptr;
  const int length = i2d_X509_CRL(crl.get(), &der);
  if (length <= 0) return absl::InternalError("i2d_X509_CRL failed");
  std::string out(reinterpret_cast<const char*>(der),
                  static_cast<size_t>(length));
  OPENSSL_free(der);
  return out;
}

absl::StatusOr<std::string> IssueCrl(const CrlOptions& options) {
  CB_ASSIGN_OR_RETURN(X509Ptr ca, ReadCert(options.ca_cert));
  CB_ASSIGN_OR_RETURN(const std::string key_pem,
                      crypto::ReadFile(options.ca_key));
  BioPtr key_bio = MemBio(key_pem);
  crypto::EvpPkeyPtr key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(options.ca_key, ": no private key"));
  }
  X509CrlPtr crl(X509_CRL_new());
  const TimePtr last = Asn1Time(options.last_update);
  const TimePtr next = Asn1Time(options.next_update);
  if (X509_CRL_set_version(crl.get(), 1) != 1 ||  // v2
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca.get())) !=
          1 ||
      X509_CRL_set1_lastUpdate(crl.get(), last.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl.get(), next.get()) != 1) {
    return absl::InternalError("building the CRL");
  }
  for (const std::string& path : options.revoked) {
    CB_ASSIGN_OR_RETURN(X509Ptr cert, ReadCert(path));
    X509_REVOKED* entry = X509_REVOKED_new();
    if (entry == nullptr ||
        X509_REVOKED_set_serialNumber(entry,
                                      X509_get_serialNumber(cert.get())) != 1 ||
        X509_REVOKED_set_revocationDate(entry, last.get()) != 1 ||
        X509_CRL_add0_revoked(crl.get(), entry) != 1) {
      X509_REVOKED_free(entry);
      return absl::InternalError("adding a CRL entry");
    }
  }
  if (X509_CRL_sort(crl.get()) != 1 ||
      X509_CRL_sign(crl.get(), key.get(), EVP_sha256()) <= 0) {
    ERR_clear_error();
    return absl::InternalError("signing the CRL");
  }
  BioPtr out(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509_CRL(out.get(), crl.get()) != 1) {
    return absl::InternalError("writing the CRL");
  }
  char* data = nullptr;
  const int64_t size = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string SubjectHash(const std::string& ca_cert) {
  auto ca = ReadCert(ca_cert);
  if (!ca.ok()) {
    ADD_FAILURE() << ca.status();
    return "";
  }
  int ok = 0;
  const uint64_t hash = X509_NAME_hash_ex(X509_get_subject_name(ca->get()),
                                          nullptr, nullptr, &ok);
  return absl::StrFormat("%08x", hash);
}

void InstallFile(const std::string& dir, const std::string& name,
                 const std::string& contents) {
  const std::string tmp = (fs::path(dir) / (".tmp-" + name)).string();
  WriteFile(tmp, contents);
  std::error_code ec;
  fs::rename(tmp, fs::path(dir) / name, ec);
  if (ec) ADD_FAILURE() << "cannot rename " << tmp << ": " << ec.message();
}

void CopyTestCrls(const std::string& dir) {
  fs::create_directories(dir);
  for (const fs::directory_entry& entry : fs::directory_iterator(Pki("crl"))) {
    fs::copy_file(entry.path(), fs::path(dir) / entry.path().filename(),
                  fs::copy_options::overwrite_existing);
  }
}

}  // namespace casebridge::testing
