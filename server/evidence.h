// Evidence bundles (docs/audit-log.md#evidence-bundles): everything needed
// to prove one envelope's exchange offline with the two gateways' public
// keys. The envelope and its origin signature, the receiver's signed
// receipt, and for each log the entry (SENT in the origin's, RECEIVED in the
// receiver's) with an inclusion proof under a checkpoint the other gateway
// cosigned. A gateway holds its own log's part; it asks the peer for the
// other part.
#ifndef CASEBRIDGE_SERVER_EVIDENCE_H_
#define CASEBRIDGE_SERVER_EVIDENCE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "casebridge/v1/audit.grpc.pb.h"
#include "server/checkpointer.h"
#include "server/peer_channel.h"
#include "server/record_keys.h"
#include "server/sqlite.h"
#include "server/sqlite_audit_log.h"

namespace casebridge::server {

class Evidence {
 public:
  // Pointers must outlive this object. `peer` may be empty (then only the
  // local part can be given). `sealer` opens the sealed envelope bytes
  // (GatewayStore::sealer()); null for a store without data protection.
  // `refusal`, if given, says when the peer refuses our checkpoints.
  Evidence(sqlite::Database* db, SqliteAuditLog* audit, ChannelSource peer,
           const RecordSealer* sealer = nullptr,
           const WitnessRefusal* refusal = nullptr);

  // FAILED_PRECONDITION for an entry no cosigned checkpoint covers yet:
  // "try again" while the peer is merely behind; with the peer's refusal
  // of our checkpoints, that refusal and what it means.
  static absl::Status NotCoveredYet(uint64_t index,
                                    const absl::Status& refusal);

  // The part our log proves, with the envelope and (once delivered) the
  // receipt. NOT_FOUND if the envelope is unknown or its payload was
  // purged; FAILED_PRECONDITION if no checkpoint the peer cosigned covers
  // the entry yet (or, sending side, no receipt yet).
  absl::StatusOr<v1::EvidenceBundle> LocalPart(const std::string& envelope_id);

  // The whole bundle: our part and the peer's. The peer is asked while the
  // caller's work thread waits (up to 10 s), so at most kMaxPeerAsks bundles
  // wait for it at once, whoever asks; beyond, UNAVAILABLE "try again": a
  // peer slow to answer never holds the whole work pool (office calls, the
  // peer's deliveries). The peer is asked on behalf of `call`, if given:
  // when it is cancelled (its client gives up, or the gateway stops and its
  // drain period is over), so is the question to the peer, and its deadline
  // bounds the question's.
  absl::StatusOr<v1::EvidenceBundle> Bundle(
      const std::string& envelope_id,
      const grpc::CallbackServerContext* call = nullptr);
  static constexpr int kMaxPeerAsks = 2;

  // The envelope that carried message `message_id`, sent or received here.
  // NOT_FOUND if none.
  absl::StatusOr<std::string> EnvelopeOf(const std::string& message_id);

  // Whether `office` sent the envelope's message or had it in its inbox.
  absl::StatusOr<bool> VisibleTo(const std::string& office,
                                 const std::string& envelope_id);

 private:
  absl::StatusOr<v1::LogEvidence> Prove(uint64_t index, bool with_salt);
  // A stored signed_envelope column, opened if `sealed`.
  absl::StatusOr<std::string> Opened(sqlite::Connection& conn,
                                     std::string stored, bool sealed,
                                     const std::string& message_id,
                                     const char* field) const;

  sqlite::Database* const db_;
  SqliteAuditLog* const audit_;
  const RecordSealer* const sealer_;     // may be null
  const WitnessRefusal* const refusal_;  // may be null
  const ChannelSource peer_;             // empty: no peer
  std::atomic<int> peer_asks_{0};        // Bundle calls waiting for the peer
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_EVIDENCE_H_
