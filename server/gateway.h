// One country's gateway: the office and peer listeners over mutual TLS, the
// services behind them, and the store. main.cc is a thin wrapper around it.
#ifndef CASEBRIDGE_SERVER_GATEWAY_H_
#define CASEBRIDGE_SERVER_GATEWAY_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/public_keys.h"

namespace casebridge::server {

class GatewayStore;
class WorkQueue;
class CallHandler;
class CallLimiter;
class OpenBurstReporter;
class CertMonitor;
class Revocations;
class OfficeServiceImpl;
class PeerServiceImpl;
class Inbound;
class InboxWatchers;
class PeerLink;
class PeerChannel;
class AuditServiceImpl;
class Checkpointer;
class Evidence;
class WitnessRefusal;
class Witness;
class PolicyHolder;
class PolicyReloader;

class Gateway {
 public:
  // Checks the configuration's files (keys load, key matches certificate,
  // every trusted CA has a current CRL), opens the store and starts both
  // listeners. FAILED_PRECONDITION / INVALID_ARGUMENT name the field or file
  // at fault. `clock` must outlive the gateway.
  static absl::StatusOr<std::unique_ptr<Gateway>> Start(config::Gateway config,
                                                        const Clock* clock);
  ~Gateway();

  int office_port() const { return office_port_; }
  int peer_port() const { return peer_port_; }
  const config::Gateway& config() const { return config_; }

  // Re-reads the config file's access policy ([[offices]], peer.offices,
  // [policy]) and puts it in force (server/policy_reloader.h): true if it
  // changed, false if not, the error if refused (the old one stays).
  absl::StatusOr<bool> ReloadPolicy(absl::string_view trigger);

  // Stops taking calls, lets in-flight calls finish for up to `drain`, then
  // cancels the rest. Idempotent.
  void Shutdown(absl::Duration drain);

 private:
  explicit Gateway(config::Gateway config);
  absl::Status Init(const Clock* clock);
  // Starts one TLS listener on `address` admitting clients of `trusted_ca`;
  // `field` names the config key in errors. Sets *port to the bound port.
  // `handler` learns when each of the listener's calls is done.
  absl::StatusOr<std::unique_ptr<grpc::Server>> StartListener(
      absl::string_view field, const std::string& address,
      const std::string& trusted_ca,
      const std::vector<grpc::Service*>& services, CallHandler* handler,
      int* port);
  // Audits our signing keys ("signing.keys") and the peer keys we trust
  // ("peer.keys_trusted", previous keys with their time) when they differ
  // from the last record: a rotation is on record on both sides.
  absl::Status RecordSigningKeys();
  // Sets the health status `name` on both listeners.
  void SetHealth(const std::string& name, bool serving);

  config::Gateway config_;
  std::unique_ptr<crypto::Ed25519Signer> envelope_signer_;
  std::unique_ptr<crypto::Ed25519Signer> checkpoint_signer_;
  std::unique_ptr<crypto::Ed25519Signer> witness_signer_;
  exchange::KeyRing peer_envelope_keys_;
  std::unique_ptr<crypto::Ed25519Verifier> peer_checkpoint_verifier_;
  std::unique_ptr<crypto::Ed25519Verifier> peer_witness_verifier_;
  // The peer's previous checkpoint and witness keys, each trusted until its
  // time (config peer.previous_checkpoint_keys, peer.previous_witness_keys).
  std::vector<keys::TrustedNoteKey> peer_previous_checkpoint_keys_;
  std::vector<keys::TrustedNoteKey> peer_previous_witness_keys_;
  std::unique_ptr<GatewayStore> store_;
  std::unique_ptr<WorkQueue> work_;
  std::unique_ptr<Revocations> revocations_;
  std::unique_ptr<CallLimiter> office_limiter_;
  std::unique_ptr<CallLimiter> peer_limiter_;
  std::unique_ptr<CallLimiter> stranger_limiter_;
  std::unique_ptr<CertMonitor> cert_monitor_;
  std::unique_ptr<PolicyHolder> policies_;
  std::unique_ptr<PolicyReloader> policy_reloader_;
  std::unique_ptr<CallHandler> office_handler_;
  std::unique_ptr<CallHandler> peer_handler_;
  // Outlives its users below (the link, witnessing, evidence).
  std::unique_ptr<PeerChannel> peer_channel_;
  std::unique_ptr<PeerLink> peer_link_;
  std::unique_ptr<Witness> witness_;
  // Outlives evidence_ and checkpointer_ (declared before them).
  std::unique_ptr<WitnessRefusal> witness_refusal_;
  std::unique_ptr<Evidence> evidence_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<InboxWatchers> inbox_watchers_;
  std::unique_ptr<OfficeServiceImpl> office_service_;
  std::unique_ptr<AuditServiceImpl> office_audit_service_;
  std::unique_ptr<Inbound> inbound_;
  // After the limiters and inbound_, whose bursts it summarizes.
  std::unique_ptr<OpenBurstReporter> burst_reporter_;
  std::unique_ptr<PeerServiceImpl> peer_service_;
  std::unique_ptr<AuditServiceImpl> peer_audit_service_;
  std::unique_ptr<grpc::Server> office_server_;
  std::unique_ptr<grpc::Server> peer_server_;
  int office_port_ = 0;
  int peer_port_ = 0;
  bool started_ = false;  // both listeners came up
  bool stopped_ = false;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_GATEWAY_H_
