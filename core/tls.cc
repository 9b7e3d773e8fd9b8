#include "core/tls.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/cert_status.h"
#include "core/crypto.h"
#include "core/openssl_ptr.h"
#include "core/status_macros.h"

namespace casebridge::tls {
namespace {

using openssl::BioPtr;
using openssl::MemBio;
using openssl::X509CrlPtr;
using openssl::X509Ptr;

namespace fs = std::filesystem;
using grpc::experimental::ExternalCertificateVerifier;
using grpc::experimental::TlsCustomVerificationCheckRequest;

absl::StatusOr<std::vector<X509Ptr>> ReadPemCertificates(
    const std::string& path) {
  CB_ASSIGN_OR_RETURN(const std::string pem, crypto::ReadFile(path));
  BioPtr bio = MemBio(pem);
  std::vector<X509Ptr> certs;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    certs.push_back(std::move(cert));
  }
  ERR_clear_error();  // the loop ends on "no start line"
  if (certs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no PEM certificate in file"));
  }
  return certs;
}

absl::Time Asn1ToTime(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTM(tm, absl::UTCTimeZone());
}

std::string SubjectOf(X509* cert) {
  return certs::NameText(X509_get_subject_name(cert));
}

// Post-handshake check on the client: the server must present the pinned
// SPIFFE id. The chain itself is verified by gRPC against the CA.
class SpiffeIdVerifier final : public ExternalCertificateVerifier {
 public:
  SpiffeIdVerifier(
      std::string expected,
      std::function<absl::Status(absl::string_view pem)> check_cert)
      : expected_(std::move(expected)), check_cert_(std::move(check_cert)) {}

  bool Verify(TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/,
              grpc::Status* sync_status) override {
    int matches = 0;
    int spiffe = 0;
    for (const grpc::string_ref& uri : request->uri_names()) {
      const std::string value(uri.data(), uri.size());
      if (absl::StartsWith(value, "spiffe://")) ++spiffe;
      if (value == expected_) ++matches;
    }
    if (spiffe != 1 || matches != 1) {
      *sync_status =
          grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                       absl::StrCat("server certificate is not ", expected_));
      return true;  // decided synchronously
    }
    *sync_status = grpc::Status::OK;
    if (check_cert_) {
      const grpc::string_ref pem = request->peer_cert();
      const absl::Status checked =
          check_cert_(absl::string_view(pem.data(), pem.size()));
      if (!checked.ok()) {
        *sync_status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                    std::string(checked.message()));
      }
    }
    return true;
  }

  void Cancel(TlsCustomVerificationCheckRequest* /*request*/) override {}

 private:
  const std::string expected_;
  const std::function<absl::Status(absl::string_view pem)> check_cert_;
};

}  // namespace

absl::Status CheckKeyPair(const std::string& cert_file,
                          const std::string& key_file) {
  CB_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs,
                      ReadPemCertificates(cert_file));
  CB_ASSIGN_OR_RETURN(const std::string key_pem, crypto::ReadFile(key_file));
  BioPtr bio = MemBio(key_pem);
  crypto::EvpPkeyPtr key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(key_file, ": not a PEM private key"));
  }
  if (X509_check_private_key(certs.front().get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        key_file, ": private key does not match the certificate in ",
        cert_file));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerOptions& options) {
  CB_RETURN_IF_ERROR(CheckKeyPair(options.cert_file, options.key_file));
  CB_RETURN_IF_ERROR(ReadPemCertificates(options.trusted_ca_file).status());
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          options.key_file, options.cert_file, options.trusted_ca_file,
          options.refresh_seconds);
  grpc::experimental::TlsServerCredentialsOptions tls_options(provider);
  tls_options.watch_root_certs();
  tls_options.watch_identity_key_cert_pairs();  // without it 1.51 aborts
  tls_options.set_cert_request_type(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!options.crl_dir.empty()) tls_options.set_crl_directory(options.crl_dir);
  auto creds = grpc::experimental::TlsServerCredentials(tls_options);
  if (creds == nullptr) {
    return absl::InternalError("gRPC refused the TLS server options");
  }
  return creds;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ChannelOptions& options) {
  CB_RETURN_IF_ERROR(CheckKeyPair(options.cert_file, options.key_file));
  CB_ASSIGN_OR_RETURN(const std::string roots,
                      crypto::ReadFile(options.ca_file));
  CB_ASSIGN_OR_RETURN(const std::string cert,
                      crypto::ReadFile(options.cert_file));
  CB_ASSIGN_OR_RETURN(const std::string key,
                      crypto::ReadFile(options.key_file));
  auto provider =
      std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
          roots,
          std::vector<grpc::experimental::IdentityKeyCertPair>{{key, cert}});
  grpc::experimental::TlsChannelCredentialsOptions tls_options;
  tls_options.set_certificate_provider(provider);
  tls_options.watch_root_certs();
  tls_options.watch_identity_key_cert_pairs();
  tls_options.set_verify_server_certs(true);
  // Identity is pinned by SPIFFE id rather than by host name.
  tls_options.set_certificate_verifier(
      ExternalCertificateVerifier::Create<SpiffeIdVerifier>(
          options.expected_server_identity, options.check_server_cert));
  tls_options.set_check_call_host(false);
  auto creds = grpc::experimental::TlsCredentials(tls_options);
  if (creds == nullptr) {
    return absl::InternalError("gRPC refused the TLS channel options");
  }
  return creds;
}

absl::Status CheckCrlCoverage(const std::string& ca_file,
                              const std::string& crl_dir, absl::Time now) {
  CB_ASSIGN_OR_RETURN(std::vector<X509Ptr> cas, ReadPemCertificates(ca_file));
  for (const X509Ptr& ca : cas) {
    int ok = 0;
    const unsigned long hash = X509_NAME_hash_ex(  // NOLINT(google-runtime-int)
        X509_get_subject_name(ca.get()), nullptr, nullptr, &ok);
    if (ok != 1) {
      return absl::InternalError(
          absl::StrCat("hashing subject of CA in ", ca_file));
    }
    const std::string stem = absl::StrFormat("%08lx.r", hash);
    const std::string subject = SubjectOf(ca.get());
    absl::Time newest_next_update = absl::InfinitePast();
    bool found = false;
    for (int n = 0; n < 1000; ++n) {
      const std::string path =
          (fs::path(crl_dir) / absl::StrCat(stem, n)).string();
      std::error_code ec;
      if (!fs::exists(path, ec)) break;
      CB_ASSIGN_OR_RETURN(const std::string data, crypto::ReadFile(path));
      std::string problem;
      const X509CrlPtr crl = certs::ReadCrlFile(data, &problem);
      if (crl == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(path, ": ", problem));
      }
      if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()),
                        X509_get_subject_name(ca.get())) != 0 ||
          X509_CRL_verify(crl.get(), X509_get0_pubkey(ca.get())) != 1) {
        ERR_clear_error();
        return absl::FailedPreconditionError(absl::StrCat(
            path, ": CRL is not signed by CA ", subject, " from ", ca_file));
      }
      found = true;
      newest_next_update = std::max(
          newest_next_update, Asn1ToTime(X509_CRL_get0_nextUpdate(crl.get())));
    }
    if (!found) {
      return absl::FailedPreconditionError(
          absl::StrCat("CRL directory ", crl_dir, " has no CRL for trusted CA ",
                       subject, " (expected ", stem,
                       "0); without it revoked certificates of that "
                       "CA would be accepted"));
    }
    if (newest_next_update <= now) {
      return absl::FailedPreconditionError(absl::StrCat(
          "CRL for trusted CA ", subject, " in ", crl_dir, " expired at ",
          absl::FormatTime(newest_next_update, absl::UTCTimeZone()),
          "; publish a new one"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTrustAnchorsApart(const std::string& own_ca_file,
                                    const std::string& peer_ca_file) {
  CB_ASSIGN_OR_RETURN(std::vector<X509Ptr> own,
                      ReadPemCertificates(own_ca_file));
  CB_ASSIGN_OR_RETURN(std::vector<X509Ptr> peer,
                      ReadPemCertificates(peer_ca_file));
  for (const X509Ptr& ours : own) {
    for (const X509Ptr& theirs : peer) {
      const std::string same = certs::SameTrustAnchor(ours.get(), theirs.get());
      if (same.empty()) continue;
      return absl::FailedPreconditionError(absl::StrCat(
          "CA ", SubjectOf(ours.get()), " in ", own_ca_file, " and CA ",
          SubjectOf(theirs.get()), " in ", peer_ca_file, " have ", same,
          ": the office port would admit certificates the peer's CA issues "
          "(as this country's offices), and the peer port this country's; "
          "give each side its own CA"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<CertificateInfo>> ReadCertificates(
    const std::string& pem_file) {
  CB_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs,
                      ReadPemCertificates(pem_file));
  std::vector<CertificateInfo> out;
  for (const X509Ptr& cert : certs) {
    CertificateInfo info;
    info.subject = SubjectOf(cert.get());
    info.not_before = Asn1ToTime(X509_get0_notBefore(cert.get()));
    info.not_after = Asn1ToTime(X509_get0_notAfter(cert.get()));
    auto* names = static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
    if (names != nullptr) {
      for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
        if (name->type == GEN_URI) {
          const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
          info.uri_sans.emplace_back(
              reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
              ASN1_STRING_length(uri));
        }
      }
      GENERAL_NAMES_free(names);
    }
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace casebridge::tls
