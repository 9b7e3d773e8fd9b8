// The receiving end of the exchange: every envelope the peer gateway
// delivers goes through Inbound::Receive (docs/exchange.md#receiving).
#ifndef CASEBRIDGE_SERVER_INBOUND_H_
#define CASEBRIDGE_SERVER_INBOUND_H_

#include <string>
#include <vector>

#include "casebridge/v1/peer.pb.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "server/audit_log.h"
#include "server/exchange_store.h"

namespace casebridge::server {

class Inbound {
 public:
  // All pointers must outlive this object. `signer` is our envelope key,
  // which signs receipts. Thread-safe.
  Inbound(const config::Gateway* config, ExchangeStore* store, AuditLog* audit,
          const exchange::KeyRing* peer_keys,
          const crypto::Ed25519Signer* signer, const Clock* clock);

  // Checks one envelope and, if it passes, stores it with the message and
  // its inbox entries and answers with our signed receipt (a replay gets the
  // receipt first given). Checks, in order: size, key id and signature
  // (exchange::VerifyEnvelope), origin and destination gateways, clock skew,
  // ids, the sender office (must be in peer.offices), the recipient office
  // (ours), the message content. Any refusal is answered as a
  // DeliveryRefusal, audited, and stores nothing (an envelope id reused with
  // other bytes is kept as evidence).
  v1::DeliverResponse Receive(const std::string& peer_identity,
                              const v1::DeliverRequest& request);

  // Whether sending the same bytes again can never succeed.
  static bool IsPermanent(const absl::Status& refusal);

 private:
  absl::Status CheckContent(const v1::Envelope& envelope) const;
  std::vector<std::string> InboxOffices(const v1::CaseMessage& message) const;

  const config::Gateway* const config_;
  ExchangeStore* const store_;
  AuditLog* const audit_;
  const exchange::KeyRing* const peer_keys_;
  const crypto::Ed25519Signer* const signer_;
  const Clock* const clock_;
  const v1::Country peer_country_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_INBOUND_H_
