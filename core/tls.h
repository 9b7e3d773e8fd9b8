// Mutual-TLS credentials for the gateway's listeners and for clients, over
// gRPC's TLS credentials (experimental in 1.51, so kept behind this file).
#ifndef CASEBRIDGE_CORE_TLS_H_
#define CASEBRIDGE_CORE_TLS_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace casebridge::tls {

struct ServerOptions {
  std::string cert_file;        // our certificate chain, PEM
  std::string key_file;         // its private key, PEM
  std::string trusted_ca_file;  // the only CA(s) whose clients are accepted
  std::string crl_dir;          // hashed CRL files; empty disables CRLs
  int refresh_seconds = 60;     // how often files are re-read
};

// Server credentials that require and verify a client certificate issued by
// `trusted_ca_file`, refuse revoked ones, and pick up new files without a
// restart. Checks up front that the files load and the key matches.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerOptions& options);

struct ChannelOptions {
  std::string cert_file;  // our client certificate, PEM
  std::string key_file;   // its private key, PEM
  std::string ca_file;    // CA that issued the server's certificate
  // The server's certificate must carry exactly this URI SAN.
  std::string expected_server_identity;
  // Called at each handshake with the server's certificate (PEM) once its
  // identity matched; a non-OK status refuses the handshake. The gateway
  // checks the peer's certificate against its CRLs here.
  std::function<absl::Status(absl::string_view pem)> check_server_cert;
};

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ChannelOptions& options);

// OK if every CA certificate in `ca_file` has a CRL in `crl_dir` (OpenSSL
// hashed names, <subject hash>.rN) that it signed and that is current at
// `now`. gRPC lets clients through when a CA's CRL is missing, so the gateway
// refuses to start instead. FAILED_PRECONDITION naming the CA otherwise.
absl::Status CheckCrlCoverage(const std::string& ca_file,
                              const std::string& crl_dir, absl::Time now);

// OK if no CA of `own_ca_file` is also in `peer_ca_file`, by name or by
// public key. The office port trusts the first, the peer port the second:
// a CA in both would let the peer's CA issue certificates for this
// country's offices (and this country's CA pose as the peer's).
// FAILED_PRECONDITION naming the CA otherwise.
absl::Status CheckTrustAnchorsApart(const std::string& own_ca_file,
                                    const std::string& peer_ca_file);

// OK if `cert_file` holds a certificate and `key_file` its private key.
// Errors name the file.
absl::Status CheckKeyPair(const std::string& cert_file,
                          const std::string& key_file);

// Subject and notAfter of each certificate in a PEM file (for status output).
struct CertificateInfo {
  std::string subject;
  std::vector<std::string> uri_sans;
  absl::Time not_before;
  absl::Time not_after;
};
absl::StatusOr<std::vector<CertificateInfo>> ReadCertificates(
    const std::string& pem_file);

}  // namespace casebridge::tls

#endif  // CASEBRIDGE_CORE_TLS_H_
