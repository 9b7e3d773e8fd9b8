#include "server/gateway.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/audit_entry.h"
#include "core/identity.h"
#include "core/log.h"
#include "core/note.h"
#include "core/status_macros.h"
#include "core/tls.h"
#include "server/audit_service.h"
#include "server/call_handler.h"
#include "server/call_limits.h"
#include "server/cert_monitor.h"
#include "server/checkpointer.h"
#include "server/evidence.h"
#include "server/inbound.h"
#include "server/inbox_watchers.h"
#include "server/office_service.h"
#include "server/peer_channel.h"
#include "server/peer_link.h"
#include "server/peer_service.h"
#include "server/policy_reloader.h"
#include "server/sqlite_case_store.h"
#include "server/witness.h"
#include "server/work_queue.h"

namespace casebridge::server {
namespace {

// Health status name that turns NOT_SERVING while a fork of the peer's log
// is on record (docs/operations.md#forks).
constexpr char kWitnessHealth[] = "casebridge.audit.witness";

// Health status name that is NOT_SERVING while a certificate the gateway
// presents or trusts is expired or not yet valid, or a trusted CA lacks a
// current CRL (docs/operations.md#certificate-and-crl-status).
constexpr char kCertsHealth[] = "casebridge.certs";

// Health status name that is SERVING while the peer gateway has admitted
// this gateway's Deliver stream.
constexpr char kPeerLinkHealth[] = "casebridge.peer_link";

v1::Country PeerCountry(v1::Country ours) {
  return ours == v1::COUNTRY_PK ? v1::COUNTRY_CN : v1::COUNTRY_PK;
}

// Prefixes a status with the config field it concerns.
absl::Status AtField(absl::string_view field, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrCat(field, ": ", status.message()));
}

template <typename T>
absl::StatusOr<T> AtField(absl::string_view field, absl::StatusOr<T> value) {
  if (value.ok()) return value;
  return AtField(field, value.status());
}

void ApplyLimits(grpc::ServerBuilder& builder, const config::Limits& limits) {
  // Without this gRPC binds with SO_REUSEPORT, and a second gateway on the
  // same address would start and share the port instead of failing.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(static_cast<int>(limits.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(limits.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             limits.keepalive_time_seconds * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             limits.keepalive_timeout_seconds * 1000);
  // Clients may ping this often while no data flows: half the shortest
  // keepalive a gateway may be configured with, for timer jitter. gRPC's
  // default (once in 5 minutes) ends an idle peer link after the peer's
  // third keepalive with GOAWAY "too_many_pings", and the peer then pings
  // ever more rarely.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      config::Limits::kMinKeepaliveSeconds * 1000 / 2);
  // Connections are re-handshaken at this age, so rotated certificates and
  // new CRLs apply to long-lived clients too.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                             limits.max_connection_age_seconds * 1000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                             limits.drain_seconds * 1000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             limits.max_concurrent_streams);
}

// The peer's previous keys of one purpose, from `previous` (config
// `field`), as note keys named `name` of `type`. A key that is the current
// one (`current`, raw) or listed twice is refused, as for envelope keys.
absl::StatusOr<std::vector<keys::TrustedNoteKey>> PreviousNoteKeys(
    absl::string_view field,
    const std::vector<config::Gateway::PreviousKey>& previous,
    const std::string& name, uint8_t type, const std::string& current) {
  std::vector<keys::TrustedNoteKey> out;
  for (size_t i = 0; i < previous.size(); ++i) {
    const std::string at = absl::StrCat(field, "[", i, "].file");
    CB_ASSIGN_OR_RETURN(
        auto verifier,
        AtField(at, crypto::Ed25519Verifier::FromPemFile(previous[i].file)));
    const std::string raw = verifier->public_key();
    bool known = raw == current;
    for (const keys::TrustedNoteKey& k : out) {
      known = known || k.key.public_key == raw;
    }
    if (known) {
      return absl::AlreadyExistsError(
          absl::StrCat(at, ": key ", exchange::KeyId(raw),
                       " is already trusted (the current key or listed "
                       "before)"));
    }
    out.push_back(
        {note::MakeVerifierKey(name, type, raw), previous[i].trusted_until});
  }
  return out;
}

void MarkServing(grpc::Server& server,
                 const std::vector<std::string>& services) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", true);
  for (const std::string& name : services) health->SetServingStatus(name, true);
}

}  // namespace

Gateway::Gateway(config::Gateway config) : config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<grpc::Server>> Gateway::StartListener(
    absl::string_view field, const std::string& address,
    const std::string& trusted_ca, const std::vector<grpc::Service*>& services,
    CallHandler* handler, int* port) {
  const config::Gateway& c = config_;
  tls::ServerOptions options{c.tls_cert, c.tls_key, trusted_ca, c.crl_dir,
                             c.cert_refresh_seconds};
  CB_ASSIGN_OR_RETURN(auto creds,
                      AtField("tls", tls::MakeServerCredentials(options)));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, creds, port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  builder.SetContextAllocator(handler->MakeCallDoneHook());
  ApplyLimits(builder, c.limits);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    // UNAVAILABLE: the port may be freed, or the address come up, later.
    return absl::UnavailableError(
        absl::StrCat(field, ": cannot listen on ", address,
                     " (address in use or not local?)"));
  }
  return server;
}

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Start(config::Gateway config,
                                                        const Clock* clock) {
  std::unique_ptr<Gateway> gateway(new Gateway(std::move(config)));
  CB_RETURN_IF_ERROR(gateway->Init(clock));
  return gateway;
}

absl::Status Gateway::Init(const Clock* clock) {
  const config::Gateway& c = config_;
  // Keys first: a gateway that cannot sign must not take calls.
  CB_ASSIGN_OR_RETURN(
      envelope_signer_,
      AtField("signing.envelope_key",
              crypto::Ed25519Signer::FromPemFile(c.envelope_signing_key)));
  CB_ASSIGN_OR_RETURN(
      checkpoint_signer_,
      AtField("signing.checkpoint_key",
              crypto::Ed25519Signer::FromPemFile(c.checkpoint_signing_key)));
  CB_ASSIGN_OR_RETURN(
      witness_signer_,
      AtField("signing.witness_key",
              crypto::Ed25519Signer::FromPemFile(c.witness_signing_key)));
  if (envelope_signer_->public_key() == checkpoint_signer_->public_key() ||
      envelope_signer_->public_key() == witness_signer_->public_key() ||
      checkpoint_signer_->public_key() == witness_signer_->public_key()) {
    return absl::InvalidArgumentError(
        "signing: envelope_key, checkpoint_key and witness_key must be three "
        "different keys");
  }
  CB_ASSIGN_OR_RETURN(
      peer_envelope_keys_,
      AtField("peer.envelope_public_key",
              exchange::KeyRing::FromPemFiles({c.peer_envelope_public_key})));
  for (size_t i = 0; i < c.peer_previous_envelope_keys.size(); ++i) {
    const auto& previous = c.peer_previous_envelope_keys[i];
    const std::string field =
        absl::StrCat("peer.previous_envelope_keys[", i, "].file");
    CB_ASSIGN_OR_RETURN(
        auto verifier,
        AtField(field, crypto::Ed25519Verifier::FromPemFile(previous.file)));
    CB_RETURN_IF_ERROR(AtField(
        field,
        peer_envelope_keys_.Add(std::move(verifier), previous.trusted_until)));
  }
  // Previous keys stop being trusted at their time, whatever the uptime.
  peer_envelope_keys_.set_clock(clock);
  CB_ASSIGN_OR_RETURN(peer_checkpoint_verifier_,
                      AtField("peer.checkpoint_public_key",
                              crypto::Ed25519Verifier::FromPemFile(
                                  c.peer_checkpoint_public_key)));
  CB_ASSIGN_OR_RETURN(
      peer_witness_verifier_,
      AtField("peer.witness_public_key",
              crypto::Ed25519Verifier::FromPemFile(c.peer_witness_public_key)));
  {
    const std::string peer_country(CountryCode(PeerCountry(c.country)));
    CB_ASSIGN_OR_RETURN(
        peer_previous_checkpoint_keys_,
        PreviousNoteKeys("peer.previous_checkpoint_keys",
                         c.peer_previous_checkpoint_keys,
                         audit::LogOrigin(peer_country), note::kTypeEd25519,
                         peer_checkpoint_verifier_->public_key()));
    CB_ASSIGN_OR_RETURN(peer_previous_witness_keys_,
                        PreviousNoteKeys("peer.previous_witness_keys",
                                         c.peer_previous_witness_keys,
                                         audit::WitnessName(peer_country),
                                         note::kTypeCosignatureV1,
                                         peer_witness_verifier_->public_key()));
  }

  // Each file under its own key first: the checks that combine them name
  // one key only.
  CB_ASSIGN_OR_RETURN(auto certs,
                      AtField("tls.cert", tls::ReadCertificates(c.tls_cert)));
  CB_RETURN_IF_ERROR(
      AtField("tls.own_ca", tls::ReadCertificates(c.own_ca).status()));
  CB_RETURN_IF_ERROR(
      AtField("tls.peer_ca", tls::ReadCertificates(c.peer_ca).status()));
  CB_RETURN_IF_ERROR(
      AtField("tls.key", tls::CheckKeyPair(c.tls_cert, c.tls_key)));
  {
    // Exactly one spiffe:// URI SAN, ours: what clients and the peer check.
    const auto& sans = certs.front().uri_sans;
    const auto spiffe = std::count_if(
        sans.begin(), sans.end(),
        [](const std::string& s) { return s.rfind("spiffe://", 0) == 0; });
    if (spiffe != 1 ||
        std::find(sans.begin(), sans.end(), c.identity) == sans.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tls.cert: ", c.tls_cert,
          " must carry exactly one spiffe:// URI SAN, ", c.identity));
    }
  }
  CB_RETURN_IF_ERROR(
      AtField("tls.peer_ca", tls::CheckTrustAnchorsApart(c.own_ca, c.peer_ca)));
  // gRPC admits clients of a CA whose CRL is missing: refuse to start instead.
  CB_RETURN_IF_ERROR(AtField(
      "tls.crl_dir", tls::CheckCrlCoverage(c.own_ca, c.crl_dir, clock->Now())));
  CB_RETURN_IF_ERROR(
      AtField("tls.crl_dir",
              tls::CheckCrlCoverage(c.peer_ca, c.crl_dir, clock->Now())));

  CB_ASSIGN_OR_RETURN(store_,
                      AtField("data_dir", GatewayStore::Open(c, clock)));
  if (store_->key_inside_data_dir()) {
    // Any copy of the data directory then carries the key with the data.
    log::Warning("data_protection.key_in_data_dir",
                 {{"key_file", c.data_protection.key_file},
                  {"hint",
                   "keep the data key outside data_dir "
                   "(docs/operations.md#the-data-key)"}});
  }

  CB_RETURN_IF_ERROR(AtField("data_dir", RecordSigningKeys()));

  work_ = std::make_unique<WorkQueue>(c.limits.work_threads);
  // Revocations and expiry: read once now (warnings about what expires soon
  // are logged before the listeners open), then every crl_refresh_seconds.
  revocations_ = std::make_unique<Revocations>();
  CertMonitor::Options monitor;
  monitor.files = certs::FilesOf(c);
  monitor.interval = absl::Seconds(c.crl_refresh_seconds);
  monitor.cert_window = absl::Hours(24) * c.expiry_warning_days;
  monitor.crl_window = absl::Hours(24) * c.crl_expiry_warning_days;
  cert_monitor_ = std::make_unique<CertMonitor>(std::move(monitor),
                                                revocations_.get(), clock);
  cert_monitor_->Check();
  CallLimiter::Options limits;
  limits.calls_per_second = c.limits.office_calls_per_second;
  limits.burst = c.limits.office_burst;
  limits.max_streams = c.limits.office_streams_per_identity;
  office_limiter_ = std::make_unique<CallLimiter>(limits, clock);
  CallLimiter::Options peer_limits;
  peer_limits.calls_per_second = c.limits.peer_calls_per_second;
  peer_limits.burst = c.limits.peer_burst;
  peer_limits.rate_key = "limits.peer_calls_per_second";
  peer_limits.max_streams = c.limits.peer_streams;
  peer_limits.streams_key = "limits.peer_streams";
  peer_limits.stream_kind = "Deliver";
  peer_limiter_ = std::make_unique<CallLimiter>(peer_limits, clock);
  CallLimiter::Options stranger_limits;
  stranger_limits.calls_per_second = c.limits.stranger_audits_per_second;
  stranger_limits.burst = c.limits.stranger_audit_burst;
  stranger_limits.rate_key = "limits.stranger_audits_per_second";
  stranger_limits.refused = "calls refused";
  stranger_limits.beyond = " beyond limits.stranger_audits_per_second";
  stranger_limiter_ = std::make_unique<CallLimiter>(stranger_limits, clock);
  policies_ = std::make_unique<PolicyHolder>(
      std::make_shared<const AccessPolicy>(config_));
  office_handler_ = std::make_unique<CallHandler>(
      Port::kOffice, &config_, &store_->audit_log(), work_.get(), clock,
      revocations_.get(), office_limiter_.get(), policies_.get(),
      stranger_limiter_.get());
  peer_handler_ = std::make_unique<CallHandler>(
      Port::kPeer, &config_, &store_->audit_log(), work_.get(), clock,
      revocations_.get(), peer_limiter_.get(), nullptr,
      stranger_limiter_.get());
  CB_ASSIGN_OR_RETURN(
      peer_channel_,
      PeerChannel::Create(&config_, revocations_.get(), &store_->audit_log()));
  store_->exchange().set_longest_wait(
      absl::Seconds(c.limits.retry_max_seconds));
  peer_link_ =
      PeerLink::Start(&config_, &store_->exchange(), &peer_envelope_keys_,
                      peer_channel_.get(), clock);
  inbox_watchers_ = std::make_unique<InboxWatchers>(&store_->exchange());
  OfficeServiceImpl::Exchange exchange;
  exchange.store = &store_->exchange();
  exchange.envelope_signer = envelope_signer_.get();
  exchange.wake_sender = [link = peer_link_.get()] { link->Wake(); };
  exchange.peer_link = peer_link_.get();
  exchange.watchers = inbox_watchers_.get();
  exchange.work = work_.get();
  exchange.clock = clock;
  office_service_ = std::make_unique<OfficeServiceImpl>(
      &config_, office_handler_.get(), &store_->cases(), &store_->audit_log(),
      std::move(exchange));
  witness_refusal_ = std::make_unique<WitnessRefusal>();
  evidence_ = std::make_unique<Evidence>(
      &store_->database(), &store_->audit_log(), peer_channel_->Source(),
      store_->sealer(), witness_refusal_.get());
  office_audit_service_ = std::make_unique<AuditServiceImpl>(
      office_handler_.get(), &store_->audit_log(), evidence_.get());
  inbound_ = std::make_unique<Inbound>(
      &config_, &store_->exchange(), &store_->audit_log(), &peer_envelope_keys_,
      envelope_signer_.get(), clock, policies_.get());
  burst_reporter_ = std::make_unique<OpenBurstReporter>(
      std::vector<CallLimiter*>{office_limiter_.get(), peer_limiter_.get(),
                                stranger_limiter_.get(),
                                inbound_->refusal_audits()},
      &store_->audit_log(), absl::Seconds(c.limits.refusal_summary_seconds));

  const std::string our_country(CountryCode(c.country));
  const std::string peer_country(CountryCode(PeerCountry(c.country)));
  Witness::Options witness;
  witness.peer_origin = audit::LogOrigin(peer_country);
  witness.peer_checkpoint_key =
      note::MakeVerifierKey(witness.peer_origin, note::kTypeEd25519,
                            peer_checkpoint_verifier_->public_key());
  witness.previous_peer_checkpoint_keys = peer_previous_checkpoint_keys_;
  witness.witness_name = audit::WitnessName(our_country);
  witness.signer = witness_signer_.get();
  witness_ = std::make_unique<Witness>(std::move(witness), &store_->database(),
                                       &store_->audit_log(), clock);
  CB_RETURN_IF_ERROR(AtField("data_dir", witness_->Load()));
  peer_service_ = std::make_unique<PeerServiceImpl>(
      peer_handler_.get(), inbound_.get(), work_.get(), witness_.get());
  peer_audit_service_ = std::make_unique<AuditServiceImpl>(
      peer_handler_.get(), &store_->audit_log(), evidence_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  // Office port: only our own CA's clients. Peer port: only the peer
  // country's CA. Same certificate, different trust.
  CB_ASSIGN_OR_RETURN(
      office_server_,
      StartListener("listen.office", c.office_address, c.own_ca,
                    {office_service_.get(), office_audit_service_.get()},
                    office_handler_.get(), &office_port_));
  CB_ASSIGN_OR_RETURN(
      peer_server_,
      StartListener("listen.peer", c.peer_address, c.peer_ca,
                    {peer_service_.get(), peer_audit_service_.get()},
                    peer_handler_.get(), &peer_port_));
  MarkServing(*office_server_, {v1::OfficeService::service_full_name(),
                                v1::AuditService::service_full_name()});
  MarkServing(*peer_server_, {v1::PeerService::service_full_name(),
                              v1::AuditService::service_full_name()});
  for (grpc::Server* server : {office_server_.get(), peer_server_.get()}) {
    if (auto* health = server->GetHealthCheckService()) {
      health->SetServingStatus(kWitnessHealth, true);
    }
  }
  SetHealth(kCertsHealth, cert_monitor_->serving());
  // Told at once, then at each change (peer.link_up, peer.link_down).
  peer_link_->set_on_link_change(
      [this](bool up) { SetHealth(kPeerLinkHealth, up); });
  cert_monitor_->set_on_health(
      [this](bool serving) { SetHealth(kCertsHealth, serving); });
  cert_monitor_->set_on_revocations([this] {
    office_handler_->EndRevokedStreams();
    peer_handler_->EndRevokedStreams();
    // The sender looks at its channel now rather than at its next poll: a
    // stream to a peer whose certificate the new list revokes ends at once.
    peer_link_->Wake();
  });
  cert_monitor_->Start();
  PolicyReloader::Options reload;
  reload.config_path = c.source_path;
  reload.country = c.country;
  reload.identity = c.identity;
  reload.check_interval = absl::Seconds(c.policy_reload_check_seconds);
  reload.on_replaced = [this](const AccessPolicy& policy) {
    office_handler_->EndStreamsOutsidePolicy(policy);
  };
  policy_reloader_ = std::make_unique<PolicyReloader>(
      std::move(reload), policies_.get(), &store_->audit_log());
  policy_reloader_->Start();
  // Called at once if a fork is on record (from an earlier run, or offered
  // since the peer port opened).
  witness_->set_on_fork([this] {
    for (grpc::Server* server : {office_server_.get(), peer_server_.get()}) {
      if (auto* health = server->GetHealthCheckService()) {
        health->SetServingStatus(kWitnessHealth, false);
      }
    }
  });
  if (witness_->fork_on_record()) {
    log::Error("witness.fork_on_record",
               {{"origin", audit::LogOrigin(peer_country)},
                {"hint", "see table checkpoint_forks; docs/operations.md"}});
  }

  Checkpointer::Options checkpoints;
  checkpoints.origin = audit::LogOrigin(our_country);
  checkpoints.signer = checkpoint_signer_.get();
  checkpoints.peer_witness_key = note::MakeVerifierKey(
      audit::WitnessName(peer_country), note::kTypeCosignatureV1,
      peer_witness_verifier_->public_key());
  checkpoints.previous_peer_witness_keys = peer_previous_witness_keys_;
  checkpoints.interval = absl::Milliseconds(c.audit.checkpoint_interval_ms);
  checkpoints.retry_max = absl::Seconds(c.limits.retry_max_seconds);
  checkpoints.refusal = witness_refusal_.get();
  checkpoints.actor = config_.identity;
  if (c.retention.enabled()) {
    checkpoints.maintenance = [this, clock] {
      auto purged = store_->PurgeExpired(config_.retention, clock->Now(),
                                         config_.identity);
      if (!purged.ok()) {
        log::Error("retention.purge_failed",
                   {{"error", std::string(purged.status().message())}});
      } else if (purged->messages + purged->cases + purged->refusals > 0) {
        log::Info("retention.purged", {{"messages", purged->messages},
                                       {"cases", purged->cases},
                                       {"refusals", purged->refusals}});
      }
    };
  }
  checkpointer_ = std::make_unique<Checkpointer>(
      std::move(checkpoints), &store_->database(), &store_->audit_log(),
      peer_channel_->Source(), clock);
  checkpointer_->Start();
  started_ = true;
  log::Info("gateway.started",
            {{"identity", c.identity},
             {"office_port", office_port_},
             {"peer_port", peer_port_},
             {"data_dir", c.data_dir},
             {"offices", c.offices.size()},
             {"policy", policies_->Current()->digest()},
             {"schema_version", store_->database().schema_version()}});
  return absl::OkStatus();
}

void Gateway::SetHealth(const std::string& name, bool serving) {
  for (grpc::Server* server : {office_server_.get(), peer_server_.get()}) {
    if (server == nullptr) continue;
    if (auto* health = server->GetHealthCheckService()) {
      health->SetServingStatus(name, serving);
    }
  }
}

void Gateway::Shutdown(absl::Duration drain) {
  if (stopped_) return;
  stopped_ = true;
  // No more health changes or stream ends from the monitor or the link.
  if (cert_monitor_) cert_monitor_->Stop();
  if (peer_link_) peer_link_->set_on_link_change(nullptr);
  if (policy_reloader_) policy_reloader_->Stop();
  const auto deadline = absl::ToChronoTime(absl::Now() + drain);
  for (grpc::Server* server : {office_server_.get(), peer_server_.get()}) {
    if (server == nullptr) continue;
    if (auto* health = server->GetHealthCheckService()) health->Shutdown();
  }
  // Both listeners drain in parallel: Shutdown() blocks until done or deadline.
  std::thread office([&] {
    if (office_server_) office_server_->Shutdown(deadline);
  });
  if (peer_server_) peer_server_->Shutdown(deadline);
  office.join();
  // No call is left to end a burst: each open one gets its summary now.
  if (burst_reporter_) burst_reporter_->Stop();
  // Envelopes in flight stay in the outbox and go again after a restart.
  if (peer_link_) peer_link_->Stop();
  if (checkpointer_) checkpointer_->Stop();
  inbox_watchers_.reset();  // no stream is left to poke
  work_.reset();            // finishes queued work, joins threads
  if (started_) log::Info("gateway.stopped", {{"identity", config_.identity}});
}

Gateway::~Gateway() { Shutdown(absl::ZeroDuration()); }

namespace {

// Subjects of the newest entry by `actor` with `action`; empty if none.
absl::StatusOr<std::vector<std::string>> LastSubjects(
    sqlite::Database& db, const std::string& actor, const std::string& action) {
  std::vector<std::string> subjects;
  CB_RETURN_IF_ERROR(db.Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("SELECT entry FROM audit_log WHERE actor = ?1 "
                                "AND action = ?2 ORDER BY idx DESC LIMIT 1"));
    stmt.Bind(1, actor).Bind(2, action);
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (!row) return absl::OkStatus();
    CB_ASSIGN_OR_RETURN(const audit::Entry entry,
                        audit::Decode(stmt.ColumnBlob(0)));
    subjects = entry.subjects;
    return absl::OkStatus();
  }));
  return subjects;
}

}  // namespace

absl::Status Gateway::RecordSigningKeys() {
  // Subjects: "<purpose>:<key id>", and for a previous peer key
  // "...:until:<time>", so that any change gives other subjects.
  const std::vector<std::string> ours = {
      "envelope:" + exchange::KeyId(envelope_signer_->public_key()),
      "checkpoint:" + exchange::KeyId(checkpoint_signer_->public_key()),
      "witness:" + exchange::KeyId(witness_signer_->public_key())};
  auto subject = [](absl::string_view purpose, const std::string& id,
                    absl::Time until) {
    return until == absl::InfiniteFuture()
               ? absl::StrCat(purpose, ":", id)
               : absl::StrCat(purpose, ":", id, ":until:",
                              absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", until,
                                               absl::UTCTimeZone()));
  };
  std::vector<std::string> theirs;
  for (const std::string& id : peer_envelope_keys_.key_ids()) {
    theirs.push_back(
        subject("envelope", id, peer_envelope_keys_.TrustedUntil(id)));
  }
  theirs.push_back("checkpoint:" +
                   exchange::KeyId(peer_checkpoint_verifier_->public_key()));
  for (const keys::TrustedNoteKey& k : peer_previous_checkpoint_keys_) {
    theirs.push_back(subject("checkpoint", exchange::KeyId(k.key.public_key),
                             k.trusted_until));
  }
  theirs.push_back("witness:" +
                   exchange::KeyId(peer_witness_verifier_->public_key()));
  for (const keys::TrustedNoteKey& k : peer_previous_witness_keys_) {
    theirs.push_back(
        subject("witness", exchange::KeyId(k.key.public_key), k.trusted_until));
  }

  for (const auto& [action, subjects] :
       {std::pair<std::string, const std::vector<std::string>*>{"signing.keys",
                                                                &ours},
        {"peer.keys_trusted", &theirs}}) {
    CB_ASSIGN_OR_RETURN(
        const std::vector<std::string> last,
        LastSubjects(store_->database(), config_.identity, action));
    if (last == *subjects) continue;
    AuditEvent event;
    event.actor = config_.identity;
    event.action = action;
    event.subjects = *subjects;
    CB_RETURN_IF_ERROR(store_->audit_log().Append(event).status());
    log::Info(
        action == "signing.keys" ? "signing.keys_changed" : "peer.keys_changed",
        {{"previous", absl::StrJoin(last, " ")},
         {"now", absl::StrJoin(*subjects, " ")}});
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> Gateway::ReloadPolicy(absl::string_view trigger) {
  if (policy_reloader_ == nullptr || stopped_) {
    return absl::FailedPreconditionError("the gateway is not running");
  }
  return policy_reloader_->Reload(trigger);
}

}  // namespace casebridge::server
