#include "server/peer_channel.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "core/status_mark.h"
#include "core/tls.h"

namespace casebridge::server {
namespace {

// Distinct refused certificates remembered as audited; beyond, the set
// starts again (a peer has one certificate at a time).
constexpr size_t kMaxAudited = 64;

}  // namespace

struct PeerChannel::Checks {
  Checks(const Revocations* r, AuditLog* a, std::string ours, std::string peer)
      : revocations(r),
        audit(a),
        our_identity(std::move(ours)),
        peer_identity(std::move(peer)) {}

  // Held shared by each check, exclusively by Detach: a check never uses
  // the gateway's objects after the PeerChannel is gone.
  absl::Mutex use_mu;
  const Revocations* revocations ABSL_GUARDED_BY(use_mu);
  AuditLog* audit ABSL_GUARDED_BY(use_mu);
  bool detached ABSL_GUARDED_BY(use_mu) = false;
  const std::string our_identity;
  const std::string peer_identity;

  mutable absl::Mutex mu;
  // The certificate the peer showed at the last handshake accepted, until a
  // check refuses it, and the revocation list it was checked against (read
  // before the check: a list put in force during a check is newer).
  std::string accepted_pem ABSL_GUARDED_BY(mu);
  uint64_t accepted_generation ABSL_GUARDED_BY(mu) = 0;
  absl::Status refusal ABSL_GUARDED_BY(mu);
  std::set<std::string, std::less<>> audited ABSL_GUARDED_BY(mu);

  // OK if the peer's certificate `pem` is not revoked; the refusal (marked
  // kPeerCertRefusedMark), audited the first time, otherwise.
  absl::Status Check(absl::string_view pem) {
    absl::ReaderMutexLock use(&use_mu);
    if (detached) {
      return absl::UnavailableError("this gateway's peer channel is closed");
    }
    const uint64_t generation =
        revocations == nullptr ? 0 : revocations->generation();
    const absl::Status checked = revocations == nullptr
                                     ? absl::OkStatus()
                                     : revocations->Check(pem, peer_identity);
    if (checked.ok()) {
      absl::MutexLock lock(&mu);
      accepted_pem = std::string(pem);
      accepted_generation = generation;
      refusal = absl::OkStatus();
      return absl::OkStatus();
    }
    absl::Status refused =
        WithMark(absl::UnauthenticatedError(absl::StrCat(
                     "this gateway refuses the peer gateway's certificate: ",
                     checked.message())),
                 kPeerCertRefusedMark);
    bool first = false;
    {
      absl::MutexLock lock(&mu);
      refusal = refused;
      if (accepted_pem == pem) accepted_pem.clear();
      if (audited.size() >= kMaxAudited) audited.clear();
      first = audited.emplace(pem).second;
    }
    log::Warning(
        "peer.cert_refused",
        {{"peer", peer_identity}, {"reason", std::string(checked.message())}});
    if (first && audit != nullptr) {
      AuditEvent event;
      event.actor = our_identity;
      event.action = "peer.cert_refused";
      event.subjects = {peer_identity};
      event.outcome = refused;
      AppendOrLog(*audit, event);
    }
    return refused;
  }

  // The accepted certificate if it was checked against an older list than
  // `generation`; empty otherwise.
  std::string AcceptedBefore(uint64_t generation) const {
    absl::MutexLock lock(&mu);
    return accepted_generation < generation ? accepted_pem : std::string();
  }

  absl::Status Refusal() const {
    absl::MutexLock lock(&mu);
    return refusal;
  }

  void Detach() {
    absl::WriterMutexLock use(&use_mu);
    detached = true;
    revocations = nullptr;
    audit = nullptr;
  }
};

absl::StatusOr<std::unique_ptr<PeerChannel>> PeerChannel::Create(
    const config::Gateway* config, const Revocations* revocations,
    AuditLog* audit) {
  auto checks = std::make_shared<Checks>(revocations, audit, config->identity,
                                         config->peer_identity);
  tls::ChannelOptions options;
  options.cert_file = config->tls_cert;
  options.key_file = config->tls_key;
  options.ca_file = config->peer_ca;
  options.expected_server_identity = config->peer_identity;
  options.check_server_cert = [checks](absl::string_view pem) {
    return checks->Check(pem);
  };
  CB_ASSIGN_OR_RETURN(auto creds, tls::MakeChannelCredentials(options));
  return std::unique_ptr<PeerChannel>(
      new PeerChannel(config, std::move(creds), std::move(checks)));
}

PeerChannel::PeerChannel(const config::Gateway* config,
                         std::shared_ptr<grpc::ChannelCredentials> creds,
                         std::shared_ptr<Checks> checks)
    : config_(config),
      creds_(std::move(creds)),
      checks_(std::move(checks)),
      channel_(NewChannel()) {}

PeerChannel::~PeerChannel() { checks_->Detach(); }

std::shared_ptr<grpc::Channel> PeerChannel::NewChannel() const {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              config_->limits.retry_max_seconds * 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
              config_->limits.keepalive_time_seconds * 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              config_->limits.keepalive_timeout_seconds * 1000);
  args.SetMaxReceiveMessageSize(
      static_cast<int>(config_->limits.max_message_bytes));
  args.SetMaxSendMessageSize(
      static_cast<int>(config_->limits.max_message_bytes));
  // A channel of its own connections: by default channels with the same
  // target and credentials share them, and a replaced channel's successor
  // would go on over the connection it replaces.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(config_->peer_endpoint, creds_, args);
}

std::shared_ptr<grpc::Channel> PeerChannel::Get() {
  absl::MutexLock lock(&mu_);
  uint64_t generation = 0;
  {
    absl::ReaderMutexLock use(&checks_->use_mu);
    if (checks_->revocations != nullptr) {
      generation = checks_->revocations->generation();
    }
  }
  // The certificate accepted last, if a list newer than the one it passed is
  // in force (also one put in force while its handshake was being checked).
  const std::string pem = checks_->AcceptedBefore(generation);
  if (!pem.empty() && !checks_->Check(pem).ok()) {
    channel_ = NewChannel();
    log::Warning("peer.channel_replaced",
                 {{"peer", config_->peer_endpoint},
                  {"reason", "the peer's certificate is revoked"}});
  }
  return channel_;
}

absl::Status PeerChannel::refusal() const { return checks_->Refusal(); }

}  // namespace casebridge::server
