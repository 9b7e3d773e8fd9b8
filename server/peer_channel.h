// The channel to the peer gateway's peer port, shared by the sender
// (PeerLink), witnessing (Checkpointer) and evidence requests (Evidence).
//
// Besides its CA and its SPIFFE id, the peer's certificate is checked
// against the CRLs this gateway holds (Revocations: the files of
// tls.crl_dir as they change, which gRPC's own CRL check reads only once) at
// each handshake, and again whenever those CRLs change. A connection whose
// peer showed a certificate that is now revoked is dropped by replacing the
// channel, so that nothing more goes over it; the next handshakes are
// refused until the peer shows a certificate that is not revoked. Each
// refused certificate is audited once ("peer.cert_refused") and logged at
// every refusal.
#ifndef CASEBRIDGE_SERVER_PEER_CHANNEL_H_
#define CASEBRIDGE_SERVER_PEER_CHANNEL_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "core/config.h"
#include "server/audit_log.h"
#include "server/cert_monitor.h"

namespace casebridge::server {

// Where a user of the peer channel gets it for each call (empty: no peer).
using ChannelSource = std::function<std::shared_ptr<grpc::Channel>()>;

// Marks (core/status_mark.h) a status of this gateway refusing the peer's
// certificate, as opposed to the peer refusing us.
inline constexpr char kPeerCertRefusedMark[] =
    "type.casebridge/peer-cert-refused";

class PeerChannel {
 public:
  // Makes the credentials (our certificate and key, the peer CA) and a
  // channel that connects lazily. `revocations` (null: no revocation check)
  // and `audit` (null: refusals are only logged) must outlive this object;
  // channels it handed out may outlive it, and then refuse every handshake.
  static absl::StatusOr<std::unique_ptr<PeerChannel>> Create(
      const config::Gateway* config, const Revocations* revocations,
      AuditLog* audit);
  ~PeerChannel();
  PeerChannel(const PeerChannel&) = delete;
  PeerChannel& operator=(const PeerChannel&) = delete;

  // The channel to use now. If the CRLs changed since the last call and
  // revoke the certificate the peer showed at its last accepted handshake,
  // a new channel replaces the old one first. Thread-safe and cheap.
  std::shared_ptr<grpc::Channel> Get();

  // Why the peer's certificate was refused at the last check (marked
  // kPeerCertRefusedMark); OK once a handshake accepts one again.
  absl::Status refusal() const;

  // A ChannelSource over Get(); this object must outlive its calls.
  ChannelSource Source() {
    return [this] { return Get(); };
  }

 private:
  // What the handshakes' verifier shares with this object: it may run on
  // gRPC's threads after this object is gone.
  struct Checks;

  PeerChannel(const config::Gateway* config,
              std::shared_ptr<grpc::ChannelCredentials> creds,
              std::shared_ptr<Checks> checks);
  std::shared_ptr<grpc::Channel> NewChannel() const;

  const config::Gateway* const config_;
  const std::shared_ptr<grpc::ChannelCredentials> creds_;
  const std::shared_ptr<Checks> checks_;

  mutable absl::Mutex mu_;
  std::shared_ptr<grpc::Channel> channel_ ABSL_GUARDED_BY(mu_);
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_PEER_CHANNEL_H_
