// What a gateway's certificate files say, read offline: each certificate it
// presents or trusts, each trusted CA's current CRL, and the certificates
// those CRLs revoke. Used by the gateway's certificate monitor and by
// `casebridge certs status` (docs/operations.md#certificate-and-crl-status).
#ifndef CASEBRIDGE_CORE_CERT_STATUS_H_
#define CASEBRIDGE_CORE_CERT_STATUS_H_

#include <openssl/x509.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/config.h"
#include "core/openssl_ptr.h"

namespace casebridge::certs {

// What a CRL entry names: the issuing CA and the serial number.
struct CertificateId {
  std::string issuer;  // DER of the issuer name
  std::string serial;  // upper-case hex, as `openssl x509 -serial` prints it
};

// Issuer and serial of the first certificate in `pem`. INVALID_ARGUMENT if
// it holds none. The issuer is the DER of the first of `ca_subjects` (DER
// subject names of trusted CAs) that names the same issuer as OpenSSL
// compares names (X509_NAME_cmp: case and spacing aside, whatever string
// types encode it), else the certificate's own issuer DER, so that it
// meets a CRL's entries (RevocationList, keyed by their CA's subject DER).
absl::StatusOr<CertificateId> CertificateIdFromPem(
    absl::string_view pem, const std::vector<std::string>& ca_subjects = {});

// A CRL file's contents read the way gRPC's TLS stack reads the CRL
// directory: PEM only. A DER file is skipped there as if the CA had no CRL
// (and revoked certificates complete the handshake), so it is refused here
// too. Null, with `*problem` saying what the file is instead ("not a CRL",
// or "a CRL in DER: ..." with the command to convert it), if not a PEM CRL.
openssl::X509CrlPtr ReadCrlFile(absl::string_view data, std::string* problem);

// How two CA certificates are one trust anchor: "the same name", "the same
// key", or "" if they are apart. A CA trusted on both ports would let the
// peer's CA issue certificates for this country's offices.
std::string SameTrustAnchor(X509* a, X509* b);

// Certificates revoked by CRLs that verified against a trusted CA.
class RevocationList {
 public:
  // `issuer_der`: the subject DER of the CA whose CRL lists `serial`.
  void Add(std::string issuer_der, std::string serial);
  // A trusted CA's subject DER (once each): what CertificateIdFromPem
  // matches a certificate's issuer to.
  void AddCa(std::string subject_der);
  const std::vector<std::string>& cas() const { return cas_; }
  // Adds every entry of `other`.
  void Merge(const RevocationList& other);
  bool IsRevoked(const CertificateId& id) const;
  size_t size() const { return entries_.size(); }
  bool operator==(const RevocationList& other) const {
    return entries_ == other.entries_ && cas_ == other.cas_;
  }

 private:
  std::set<std::pair<std::string, std::string>> entries_;
  std::vector<std::string> cas_;
};

// The files to read, as configured (absolute or relative to the cwd).
struct Files {
  std::string cert;     // tls.cert: our certificate, then its chain
  std::string own_ca;   // tls.own_ca
  std::string peer_ca;  // tls.peer_ca
  std::string crl_dir;  // tls.crl_dir
};
Files FilesOf(const config::Gateway& config);

enum class ItemKind { kCertificate, kCrl };

// Something that cannot be judged by dates.
enum class Problem {
  kNone,
  kMissing,  // a trusted CA has no CRL in crl_dir
  kInvalid,  // unreadable file, not a certificate / CRL, a CRL not signed
             // by the CA its name says, or one the TLS stack never reads
             // (past a gap in the numbering)
};

// One certificate of a file, or the current CRL of one trusted CA (the one
// with the latest nextUpdate among the files the TLS stack reads: <hash>.r0,
// .r1, ... up to the first missing number), or a CRL problem.
struct Item {
  ItemKind kind = ItemKind::kCertificate;
  std::string key;      // config key: tls.cert, tls.own_ca, tls.peer_ca,
                        // tls.crl_dir
  std::string file;     // for a missing CRL, the name expected (<hash>.r0)
  std::string subject;  // certificate subject; for a CRL, its CA's subject
  std::string issuer;   // certificate issuer; for a CRL, the same CA
  absl::Time valid_from = absl::InfinitePast();   // notBefore / lastUpdate
  absl::Time valid_until = absl::InfinitePast();  // notAfter / nextUpdate;
                                                  // InfinitePast if absent
  Problem problem = Problem::kNone;
  std::string detail;  // what is wrong, for kMissing / kInvalid
  size_t revoked = 0;  // CRL: entries in it
};

struct Inventory {
  std::vector<Item> items;
  // Union of the entries of every CRL file of every trusted CA that verified.
  RevocationList revoked;
  // Every <hash>.rN file of a trusted CA verified (no kInvalid CRL item).
  bool crls_clean = true;
};

// Reads the certificates of `files` and, for every CA in own_ca and peer_ca,
// every file <subject hash>.r<N> of crl_dir. The revocations of every CRL
// that verifies count, also past a gap in the numbering; its nextUpdate only
// if the TLS stack reads the file (the unbroken run from .r0, as the start
// check), and a file past the gap is an item of its own (kInvalid). Never
// fails: what cannot be read becomes an item with a problem.
Inventory ReadInventory(const Files& files);

enum class State {
  kOk,
  kExpiresSoon,
  kExpired,
  kNotYetValid,
  kMissing,
  kInvalid
};

// "ok", "expires soon", "expired", "not yet valid", "missing", "invalid".
const char* StateName(State state);

// The item's state at `now`: certificates warn `cert_window` before
// notAfter, CRLs `crl_window` before nextUpdate.
State StateOf(const Item& item, absl::Time now, absl::Duration cert_window,
              absl::Duration crl_window);

// Expired, not yet valid, missing or invalid: what makes handshakes fail or
// lets revoked certificates through.
inline bool IsFailure(State state) {
  return state != State::kOk && state != State::kExpiresSoon;
}

// A certificate name as "/O=CaseBridge PK/CN=pk gateway", each value in
// UTF-8 whatever its ASN.1 string type (a name written in Chinese or Urdu
// reads as written).
std::string NameText(const X509_NAME* name);

}  // namespace casebridge::certs

#endif  // CASEBRIDGE_CORE_CERT_STATUS_H_
