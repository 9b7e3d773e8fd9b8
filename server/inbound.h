// The receiving end of the exchange: every envelope the peer gateway
// delivers goes through Inbound::Receive (docs/exchange.md#receiving).
#ifndef CASEBRIDGE_SERVER_INBOUND_H_
#define CASEBRIDGE_SERVER_INBOUND_H_

#include <string>
#include <variant>
#include <vector>

#include "casebridge/v1/peer.pb.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "server/audit_log.h"
#include "server/authorizer.h"
#include "server/call_limits.h"
#include "server/exchange_store.h"

namespace casebridge::server {

class Inbound {
 public:
  // All pointers must outlive this object. `signer` is our envelope key,
  // which signs receipts. Thread-safe.
  Inbound(const config::Gateway* config, ExchangeStore* store, AuditLog* audit,
          const exchange::KeyRing* peer_keys,
          const crypto::Ed25519Signer* signer, const Clock* clock,
          const PolicyHolder* policies);

  // Checks one envelope and, if it passes, stores it with the message and
  // its inbox entries and answers with our signed receipt (a replay gets the
  // receipt first given, even if the checks would refuse it now). Checks, in
  // order: size, key id and signature
  // (exchange::VerifyEnvelope), origin and destination gateways, clock skew,
  // ids, the sender office (must be in peer.offices), the recipient office
  // (ours), the message content. The message is stored held to the
  // stricter of its handling and its case's as this gateway holds it
  // (HoldToHeldCase), never refused for it. Any refusal is answered as a
  // DeliveryRefusal, audited, and stores nothing (an envelope id reused with
  // other bytes is kept as evidence).
  // The largest envelope accepted (limits.max_envelope_bytes).
  size_t max_envelope_bytes() const;

  v1::DeliverResponse Receive(const std::string& peer_identity,
                              const v1::DeliverRequest& request);

  // Receive in two halves, so that the checks of many envelopes can run in
  // parallel and their storing share one transaction.

  // An envelope that passed the checks before deduplication (steps 1-16).
  struct Checked {
    uint64_t sequence = 0;
    v1::SignedEnvelope signed_envelope;
    v1::Envelope envelope;
    std::string digest;  // SHA-256 of the envelope bytes
    std::vector<std::string> inbox_offices;
    AuditEvent event;  // envelope.received, subjects: the exchange id
    // The size of the request as read (set by the stream that read it).
    size_t request_bytes = 0;
  };
  // Steps 1-16 of `request`: the checked envelope, or else the answer that
  // refuses it (already audited and logged). Thread-safe, no store writes
  // but the refusal's audit entry.
  std::variant<Checked, v1::DeliverResponse> Check(
      const std::string& peer_identity, v1::DeliverRequest request);
  // Deduplicates and stores checked envelopes in one transaction
  // (ExchangeStore::AcceptInboundBatch) and answers each, in order: a
  // receipt (only once the transaction is durable) or a refusal, audited
  // and logged. An envelope refused here does not hold back the others.
  std::vector<v1::DeliverResponse> Accept(std::vector<Checked> batch);

  // Whether sending the same bytes again can never succeed.
  static bool IsPermanent(const absl::Status& refusal);

  // Refusals are audited on their own at limits.peer_refusal_audits_per_second
  // (burst limits.peer_refusal_audit_burst); beyond, they are counted, and a
  // burst's count is audited as one limits.refused entry when a refusal is
  // next audited on its own, or when the peer's Deliver stream ends (the
  // peer service calls this then); OpenBurstReporter counts a burst that
  // goes on.
  void EndRefusalBurst(const std::string& peer_identity);
  // The limiter that counts them, for OpenBurstReporter.
  CallLimiter* refusal_audits() { return &refusal_audits_; }

 private:
  absl::Status CheckContent(const AccessPolicy& policy,
                            const v1::Envelope& envelope) const;
  static std::vector<std::string> InboxOffices(const AccessPolicy& policy,
                                               const v1::CaseMessage& message);
  // Turns `response` into a refusal for `refusal`, logs it and, unless the
  // store audited it already, appends `event` with its outcome.
  void Refuse(const absl::Status& refusal, AuditEvent event,
              v1::DeliverResponse* response);
  // For an envelope the checks refused (`checks_now`): if it was accepted
  // before with these very bytes, makes `response` its stored receipt and
  // returns true; false otherwise, also when the store cannot be read (the
  // refusal stands then).
  bool AnswerAsReplay(const v1::SignedEnvelope& signed_envelope,
                      const absl::Status& checks_now,
                      v1::DeliverResponse* response) const;
  // A replay's stored receipt, signed again if a key rotated out since
  // signed it.
  void UnderCurrentKey(const std::string& envelope_id,
                       v1::SignedReceipt* receipt) const;

  const config::Gateway* const config_;
  const PolicyHolder* const policies_;
  ExchangeStore* const store_;
  AuditLog* const audit_;
  const exchange::KeyRing* const peer_keys_;
  const exchange::Signer receipts_;  // this gateway's envelope key
  const Clock* const clock_;
  const v1::Country peer_country_;
  CallLimiter refusal_audits_;  // keyed by the peer's identity
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_INBOUND_H_
