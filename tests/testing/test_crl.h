// CRLs made on the spot for tests: revoking a certificate of the test PKI
// while a gateway runs, or a CRL about to expire.
#ifndef CASEBRIDGE_TESTS_TESTING_TEST_CRL_H_
#define CASEBRIDGE_TESTS_TESTING_TEST_CRL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace casebridge::testing {

struct CrlOptions {
  std::string ca_cert;  // PEM file of the issuing CA
  std::string ca_key;   // its private key
  // PEM files of the certificates to list as revoked (each file's first
  // certificate).
  std::vector<std::string> revoked;
  absl::Time last_update = absl::Now();
  absl::Time next_update = absl::Now() + absl::Hours(24 * 30);
};

// A signed CRL in PEM.
absl::StatusOr<std::string> IssueCrl(const CrlOptions& options);

// The same CRL in DER (`pem` holds one CRL in PEM).
absl::StatusOr<std::string> CrlToDer(const std::string& pem);

// The 8-hex-digit subject hash of the CA in `ca_cert` (the <hash> of
// <hash>.rN CRL file names).
std::string SubjectHash(const std::string& ca_cert);

// Writes `contents` to `dir`/`name` through a temporary file renamed into
// place, as an operator would, so no reader sees half a file.
void InstallFile(const std::string& dir, const std::string& name,
                 const std::string& contents);

// Copies every file of the test PKI's crl/ folder into `dir` (created).
void CopyTestCrls(const std::string& dir);

}  // namespace casebridge::testing

#endif  // CASEBRIDGE_TESTS_TESTING_TEST_CRL_H_
