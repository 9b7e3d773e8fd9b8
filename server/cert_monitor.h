// Certificate lifecycle while the gateway runs (docs/operations.md#revocation
// and #certificate-and-crl-status):
//  - Revocations: the certificates the trusted CAs' CRLs revoke, checked on
//    every call, because gRPC reads a CRL file name only once;
//  - CertMonitor: re-reads the certificate files and crl_dir every
//    tls.crl_refresh_seconds, replaces the revocation list when files
//    changed, logs certificates and CRLs close to or past expiry, and keeps
//    the health status casebridge.certs.
#ifndef CASEBRIDGE_SERVER_CERT_MONITOR_H_
#define CASEBRIDGE_SERVER_CERT_MONITOR_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/cert_status.h"
#include "core/clock.h"

namespace casebridge::server {

// The current revocation list. Thread-safe: many readers, one writer.
class Revocations {
 public:
  // OK unless the certificate in `peer_pem` (the verified certificate of
  // the other end: a client's, or the peer gateway's server certificate) is
  // revoked: then UNAUTHENTICATED
  // "certificate serial <hex> of <identity> was revoked". A PEM that does not
  // parse is refused too (UNAUTHENTICATED).
  absl::Status Check(absl::string_view peer_pem,
                     absl::string_view identity) const;

  // True if the certificate `peer_pem` is revoked (false if it does not
  // parse).
  bool IsRevoked(absl::string_view peer_pem) const;

  void Replace(certs::RevocationList list);
  size_t size() const;
  // Lists put in force so far: changes whenever the list may have.
  uint64_t generation() const;

 private:
  // Issuer and serial of a PEM, parsed once per distinct certificate.
  absl::StatusOr<certs::CertificateId> IdOf(absl::string_view pem) const;

  mutable absl::Mutex mu_;
  std::shared_ptr<const certs::RevocationList> list_ ABSL_GUARDED_BY(mu_) =
      std::make_shared<const certs::RevocationList>();
  // Each with the generation of the list whose CAs named its issuer
  // (CertificateIdFromPem).
  struct CachedId {
    certs::CertificateId id;
    uint64_t generation = 0;
  };
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // lists replaced
  mutable std::map<std::string, CachedId, std::less<>> ids_
      ABSL_GUARDED_BY(mu_);
};

class CertMonitor {
 public:
  struct Options {
    certs::Files files;
    absl::Duration interval = absl::Seconds(10);  // between checks
    absl::Duration cert_window = absl::Hours(24 * 30);
    absl::Duration crl_window = absl::Hours(24 * 7);
    // A problem still present is logged again after this long.
    absl::Duration relog_interval = absl::Hours(24);
  };

  // `revocations` and `clock` must outlive the monitor.
  CertMonitor(Options options, Revocations* revocations, const Clock* clock);
  ~CertMonitor();  // stops the thread

  // Called with true/false whenever the health status should change (and
  // by the first Check). Set before the first Check.
  void set_on_health(std::function<void(bool serving)> on_health) {
    on_health_ = std::move(on_health);
  }
  // Called after a new revocation list took effect. Set before Start.
  void set_on_revocations(std::function<void()> on_revocations) {
    on_revocations_ = std::move(on_revocations);
  }

  // One round: re-reads the files if any changed (always the first time),
  // replaces the revocation list, judges every item, logs, reports health.
  void Check();

  // Runs Check every `interval` on a thread of its own, until Stop.
  void Start();
  void Stop();

  bool serving() const;

 private:
  // Names, sizes and modification times of every file read: re-read when
  // this changes.
  std::string Fingerprint() const;
  void Run();

  const Options options_;
  Revocations* const revocations_;
  const Clock* const clock_;
  std::function<void(bool)> on_health_;
  std::function<void()> on_revocations_;

  // Only the thread running Check (the monitor's, or the caller before
  // Start) touches these.
  std::string fingerprint_;
  certs::Inventory inventory_;
  bool checked_ = false;
  // Last time each problem (file, subject, state) was logged.
  std::map<std::string, absl::Time> logged_;

  mutable absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = true;
  bool reported_ ABSL_GUARDED_BY(mu_) = false;  // on_health_ called once
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_CERT_MONITOR_H_
