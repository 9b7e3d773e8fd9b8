// Gateway and client configuration, read from TOML. Every key is documented
// in docs/configuration.md; unknown keys are refused so a typo never silently
// drops a setting. Relative paths are relative to the config file's folder.
#ifndef CASEBRIDGE_CORE_CONFIG_H_
#define CASEBRIDGE_CORE_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "casebridge/v1/common.pb.h"
#include "casebridge/v1/exchange.pb.h"
#include "casebridge/v1/office.pb.h"
#include "core/policy.h"

namespace casebridge::config {

struct Office {
  std::string identity;      // SPIFFE id (office or auditor of our country)
  std::string display_name;  // shown to humans
  v1::Role role = v1::ROLE_UNSPECIFIED;
};

struct Limits {
  int64_t max_message_bytes = 4 << 20;
  int max_concurrent_streams = 100;
  int keepalive_time_seconds = 60;
  static constexpr int kMinKeepaliveSeconds = 10;  // of keepalive_time
  int keepalive_timeout_seconds = 20;
  int max_connection_age_seconds = 3600;
  // How long SIGTERM waits for in-flight calls before cancelling them.
  int drain_seconds = 10;
  // Largest serialized envelope accepted from the peer (and sent to it).
  int64_t max_envelope_bytes = 1 << 20;
  // An envelope created further in the future than this is refused. (Age is
  // not limited: an envelope may wait out a long outage in the outbox;
  // replays are caught by envelope id.)
  int max_clock_skew_seconds = 300;
  // Envelopes in flight to the peer at once (one per case at most).
  int delivery_window = 64;
  // Longest wait between two delivery attempts of one envelope.
  int retry_max_seconds = 60;
  // Token bucket per office-port identity: sustained calls per second and
  // the burst allowed on top (docs/operations.md#abuse-limits). Far above
  // what a desk's officers and tools do, far below what a stolen
  // certificate in a loop would.
  int office_calls_per_second = 200;
  int office_burst = 2000;
  // The same for the pinned peer gateway on the peer port.
  int peer_calls_per_second = 200;
  int peer_burst = 2000;
  // Calls a port can only refuse (a certificate without exactly one
  // spiffe:// identity; on the peer port, any identity but the peer's):
  // refused for what they are, and audited on their own at this rate per
  // port, with this burst; the rest are counted in summary entries.
  int stranger_audits_per_second = 1;
  int stranger_audit_burst = 20;
  // Envelopes of the peer refused by the receiver's checks: each gets its
  // refusal, and is audited on its own at this rate, with this burst; the
  // rest are counted in summary entries, so that a faulty or compromised
  // peer streaming refused envelopes cannot grow the audit log at will.
  int peer_refusal_audits_per_second = 50;
  int peer_refusal_audit_burst = 1000;
  // A burst of refusals still open (counted, not audited one by one) has
  // its count audited at least this often, and when the gateway stops.
  int refusal_summary_seconds = 60;
  // WatchInbox streams one identity may hold open at once.
  int office_streams_per_identity = 16;
  // Deliver streams the peer gateway may hold open at once. Its sender uses
  // one (two while a broken one is being ended); each may hold up to 64 MiB
  // of envelopes unanswered, so this bounds what a faulty or compromised
  // peer can make this gateway hold.
  int peer_streams = 4;
  // Threads that run calls and the exchange's work (the work queue). An
  // office call holds one until its write is committed, so this bounds the
  // office calls being written at once: more admits more per commit (higher
  // throughput, less CPU per message) and makes every message wait behind
  // more (docs/performance.md#admission-and-batch-size-run-i).
  int work_threads = 8;
  static constexpr int kMinWorkThreads = 4;
  static constexpr int kMaxWorkThreads = 256;
};

struct AuditSettings {
  // A checkpoint is signed at most this often while entries arrive.
  int checkpoint_interval_ms = 1000;
  // Message payloads (bodies, envelopes) and the salts of the audit entries
  // about them are purged this many days after the message was queued or
  // received. 0 keeps them for ever. Superseded by retention.message_days,
  // whose default it is (both together are refused); read the retention
  // settings, not this.
  int payload_retention_days = 0;
};

// Encryption of personal fields at rest (docs/storage.md#data-protection).
struct DataProtection {
  // 32 raw bytes; created 0600 at start if missing. Default
  // <data_dir>/data.key; production keeps it outside data_dir and backs it
  // up apart from the database (docs/operations.md#the-data-key).
  std::string key_file;
};

// Retention of payloads and personal fields (docs/audit-log.md#retention).
// Days are counted from a message's queueing or receipt and from a case's
// last change; 0 keeps for ever.
struct RetentionSettings {
  // Messages of a kind with no entry in `message_kind_days`.
  int message_days = 0;
  // Per v1::MessageKind number; overrides `message_days` for that kind.
  std::map<int, int> message_kind_days;
  // Per final v1::CaseStatus number (REPATRIATED, CLOSED): a case with that
  // status whose last change is this many days old has its personal fields
  // purged.
  std::map<int, int> case_status_days;

  // The days for messages of `kind`; 0: kept.
  int DaysFor(v1::MessageKind kind) const;
  // Whether anything is ever purged.
  bool enabled() const;
  // The fewest days set above 0 for any message kind or case status; 0 when
  // nothing is ever purged. Refused calls' entries lose their salts after it.
  int ShortestDays() const;
};

struct Gateway {
  std::string source_path;  // the file this was read from
  v1::Country country = v1::COUNTRY_UNSPECIFIED;
  std::string identity;  // our gateway's SPIFFE id
  std::string data_dir;

  std::string office_address;  // host:port; port 0 picks a free one
  std::string peer_address;

  std::string tls_cert;  // our gateway certificate (chain), PEM
  std::string tls_key;   // its private key, PEM
  std::string own_ca;    // trusted on the office port
  std::string peer_ca;   // trusted on the peer port
  std::string crl_dir;   // hashed CRL files (<hash>.rN) for both CAs
  int cert_refresh_seconds = 60;
  // How often crl_dir and the CA files are checked for changes (revocations
  // take effect on open connections within this), and expiry re-evaluated.
  int crl_refresh_seconds = 10;
  // Certificates (own, CAs) whose notAfter is this close are warned about.
  int expiry_warning_days = 30;
  // CRLs whose nextUpdate is this close are warned about.
  int crl_expiry_warning_days = 7;

  std::string envelope_signing_key;    // Ed25519, PKCS#8 PEM
  std::string checkpoint_signing_key;  // Ed25519, PKCS#8 PEM
  std::string witness_signing_key;     // Ed25519, PKCS#8 PEM

  std::string peer_identity;             // pinned SPIFFE id of the peer gateway
  std::string peer_endpoint;             // host:port of the peer's peer port
  std::string peer_envelope_public_key;  // PEM
  // While the peer rotates its envelope key: its previous keys, each trusted
  // until its time (docs/operations.md#signing-key-rotation).
  struct PreviousKey {
    std::string file;  // PEM
    absl::Time trusted_until;
  };
  std::vector<PreviousKey> peer_previous_envelope_keys;
  std::string peer_checkpoint_public_key;  // PEM
  // The same while it rotates its checkpoint key or its witness key.
  std::vector<PreviousKey> peer_previous_checkpoint_keys;
  std::string peer_witness_public_key;  // PEM
  std::vector<PreviousKey> peer_previous_witness_keys;
  // The peer country's offices allowed to send us messages (SPIFFE ids).
  std::vector<std::string> peer_offices;

  std::vector<Office> offices;
  // What each role may do: [policy.roles], or the built-in table.
  policy::RoleTable roles = policy::RoleTable::BuiltIn();
  bool policy_from_config = false;  // [policy.roles] was given
  // How often the config file is checked for a changed [[offices]],
  // peer.offices or [policy] (0: only on SIGHUP).
  int policy_reload_check_seconds = 5;
  Limits limits;
  AuditSettings audit;
  DataProtection data_protection;
  RetentionSettings retention;
  std::string log_level = "info";
};

struct Client {
  std::string source_path;
  std::string endpoint;          // host:port of the gateway's office port
  std::string gateway_identity;  // expected SPIFFE id of the gateway
  std::string cert;              // our client certificate, PEM
  std::string key;               // its private key, PEM
  std::string ca;                // CA that issued the gateway's certificate
  int timeout_seconds = 10;      // deadline of each call
};

// Whether loading a gateway config checks that its private key files
// (tls.key and the [signing] keys) can be read. The gateway needs them;
// tools that read only certificates and the office table (casebridge certs
// status, policy check) run as users who may not read them.
enum class PrivateKeys { kRead, kNotRead };

// Reads and validates a gateway config. Every file it names must be
// readable (the private keys only with PrivateKeys::kRead). Errors read
//   "<file>: <dotted.key>: <what is wrong>"
// and have code INVALID_ARGUMENT (bad content) or NOT_FOUND (file missing).
absl::StatusOr<Gateway> LoadGateway(const std::string& path,
                                    PrivateKeys keys = PrivateKeys::kRead);
absl::StatusOr<Gateway> ParseGateway(const std::string& toml_text,
                                     const std::string& source_path,
                                     PrivateKeys keys = PrivateKeys::kRead);

absl::StatusOr<Client> LoadClient(const std::string& path);

// "liaison_officer" and the like; ROLE_UNSPECIFIED if unknown.
v1::Role RoleFromName(const std::string& name);
std::string RoleName(v1::Role role);

}  // namespace casebridge::config

#endif  // CASEBRIDGE_CORE_CONFIG_H_
