// Owning pointers for the OpenSSL objects the project handles, each freed
// by its own OpenSSL function, and a read-only memory BIO over a string.
#ifndef CASEBRIDGE_CORE_OPENSSL_PTR_H_
#define CASEBRIDGE_CORE_OPENSSL_PTR_H_

#include <openssl/bio.h>
#include <openssl/x509.h>

#include <memory>

#include "absl/strings/string_view.h"

namespace casebridge::openssl {

struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

struct X509CrlDeleter {
  void operator()(X509_CRL* x) const { X509_CRL_free(x); }
};
using X509CrlPtr = std::unique_ptr<X509_CRL, X509CrlDeleter>;

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

// A BIO reading `data`, which must outlive it; null if OpenSSL cannot
// allocate one.
inline BioPtr MemBio(absl::string_view data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

}  // namespace casebridge::openssl

#endif  // CASEBRIDGE_CORE_OPENSSL_PTR_H_
