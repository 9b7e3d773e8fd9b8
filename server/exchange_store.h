// Storage of the cross-border exchange (DESIGN.md section 4): outgoing
// messages and their outbox envelopes, envelopes received from the peer with
// the receipts given for them, and each office's inbox. Every change commits
// together with the audit entry that records it, or not at all. Semantics:
// docs/exchange.md#outbox-inbound-and-inbox; tables: docs/storage.md.
#ifndef CASEBRIDGE_SERVER_EXCHANGE_STORE_H_
#define CASEBRIDGE_SERVER_EXCHANGE_STORE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "casebridge/v1/exchange.pb.h"
#include "casebridge/v1/office.pb.h"
#include "server/audit_log.h"
#include "server/case_store.h"

namespace casebridge::server {

// A refusal the store audited itself (an envelope id received before with
// other bytes: kept as evidence, with its entry), so the receiver does not
// audit it again. A status mark (core/status_mark.h).
absl::Status AuditedByStore(absl::Status refusal);
bool IsAuditedByStore(const absl::Status& refusal);

// A message on its way out, as the service finished it.
struct OutgoingMessage {
  // Complete: message_id, exchange_id, kind, priority, sender_office,
  // recipient_office, sent_at... are set by the caller and stored as given.
  v1::CaseMessage message;
  // Id of the envelope that will carry it, minted by the caller (it is an
  // audit subject, so it must be known before the envelope is signed).
  std::string envelope_id;
  // Builds and signs the envelope once the audit entry recording the send
  // exists: `audit_index` is that entry's index, for
  // Envelope.origin_audit_index. Called at most once, inside the store's write
  // transaction: it must be quick and must not call the store. An error from
  // it aborts everything and is returned as is.
  std::function<absl::StatusOr<v1::SignedEnvelope>(uint64_t audit_index)> seal;
  // Set for a message on one of this gateway's own cases (SendMessage): the
  // case must have been shared with the peer first, by a CASE_SHARE neither
  // FAILED nor CANCELLED, so that the message never reaches a peer that
  // cannot read its case nor reply. FAILED_PRECONDITION otherwise, nothing
  // written. A request id replay is answered before this check.
  bool needs_shared_case = false;
};

struct QueuedMessage {
  std::string message_id;
  std::string envelope_id;
  bool replayed = false;      // the request id had already queued this message
  v1::DeliveryStatus status;  // QUEUED for a new message
};

// An outbox envelope the sender may deliver now.
struct OutboxItem {
  int64_t seq = 0;  // queue order
  std::string envelope_id;
  std::string message_id;
  std::string exchange_id;
  v1::Priority priority = v1::PRIORITY_UNSPECIFIED;
  v1::DeliveryState state = v1::DELIVERY_STATE_UNSPECIFIED;  // QUEUED or SENT
  int32_t attempts = 0;
  absl::Time next_attempt;
  v1::SignedEnvelope signed_envelope;  // exactly the bytes signed
};

struct InboundResult {
  v1::SignedReceipt receipt;  // byte for byte the receipt first given
  bool replay = false;        // the envelope had already been received
  // Set when the message was stored under another handling than it was
  // sent under (HoldToHeldCase); unset for replays.
  struct Held {
    v1::HandlingCode case_code;  // its case's, as held here
    v1::HandlingCode held_code;  // the one it is stored under
  };
  std::optional<Held> held;
};

// One envelope of ExchangeStore::AcceptInboundBatch, as AcceptInbound takes
// it. The pointers are the caller's and must outlive the call.
struct InboundEnvelope {
  const v1::SignedEnvelope* signed_envelope = nullptr;
  const v1::Envelope* parsed = nullptr;
  std::vector<std::string> inbox_offices;
  AuditEvent audit;
  // Appended after `audit`, in the same transaction, when the message is
  // stored under another handling than it was sent under (HoldToHeldCase):
  // its subjects become the exchange id, the message id and the envelope id,
  // its payload the notice of the handling stored (HandlingNotice, as
  // officers are shown it). Not appended if its action is empty.
  AuditEvent held_audit;
};

// One message of ExchangeStore::RecordInboxDeliveries.
struct InboxDelivery {
  std::string message_id;
  AuditEvent audit;  // appended the first time only, message id as subject
};

struct InboxItem {
  int64_t cursor = 0;  // position in the gateway's inbox, increasing
  v1::CaseMessage message;
  std::optional<absl::Time> acknowledged_at;  // unset until acknowledged
};

class ExchangeStore {
 public:
  virtual ~ExchangeStore() = default;

  // --- Outgoing ------------------------------------------------------------

  // In one transaction: appends `audit` (with the message id and envelope id
  // added as subjects), calls `outgoing.seal` with that entry's index, and
  // stores the message and its envelope in the outbox (QUEUED, due now).
  //
  // A request id already used by the message's sender_office returns the
  // message it queued (replayed = true, its current status, nothing written,
  // seal not called) if the request hash matches, or ALREADY_EXISTS if not.
  // INVALID_ARGUMENT if message_id, exchange_id, envelope_id or seal is
  // missing; ALREADY_EXISTS if the message id is taken; FAILED_PRECONDITION
  // if `needs_shared_case` and the case was never shared; INTERNAL if the
  // sealed envelope does not carry this envelope id, message id and audit
  // index.
  virtual absl::StatusOr<QueuedMessage> QueueOutgoing(
      const OutgoingMessage& outgoing, const RequestKey& key,
      const AuditEvent& audit) = 0;

  // Up to `max` envelopes due for delivery, in sending order. Per-case order
  // is kept: of each case only the oldest envelope not yet delivered (QUEUED
  // or SENT; FAILED ones no longer hold the case back) is a candidate, and it
  // is returned if its next attempt is due (<= now, or further ahead than
  // any wait the sender sets: the clock was set back) and its exchange id
  // is not in `busy_cases` (cases with a delivery in flight). Candidates come
  // URGENT first, then PRIORITY, then ROUTINE, and in queue order within a
  // priority. Reads only.
  virtual absl::StatusOr<std::vector<OutboxItem>> ReadyToSend(
      absl::Time now, size_t max, const std::set<std::string>& busy_cases) = 0;

  // An attempt already counted by RecordAttempt failed: keeps `error` as
  // last_error and makes the envelope due again at `next_attempt`, without
  // counting another attempt. OK and nothing changed if the envelope is no
  // longer pending (a receipt came meanwhile); NOT_FOUND if unknown.
  virtual absl::Status RecordRetry(const std::string& envelope_id,
                                   const absl::Status& error,
                                   absl::Time next_attempt) = 0;

  // Records one delivery attempt that brought no receipt: attempts + 1, state
  // SENT, last_error = `error` (cleared if OK, e.g. an attempt still
  // running), next attempt due at `next_attempt`. Not audited: attempts are
  // the gateway log's business. NOT_FOUND for an unknown envelope;
  // FAILED_PRECONDITION if it is already DELIVERED or FAILED.
  virtual absl::Status RecordAttempt(const std::string& envelope_id,
                                     const absl::Status& error,
                                     absl::Time next_attempt) = 0;

  // One envelope of a sending round, as RecordSending records it.
  struct Attempt {
    std::string envelope_id;
    // The envelope.sent entry, appended as given, on the first transmission
    // only; unset for a retransmission (not audited).
    std::optional<AuditEvent> sent;
  };
  // In one transaction: stores the peer's signed receipt (state DELIVERED,
  // delivered at `delivered_at`) and appends `audit` (message id and envelope
  // id added as subjects). The caller has verified the receipt and checked it
  // against the envelope (exchange::CheckReceiptMatches). A receipt ends a
  // FAILED state too: it proves delivery. The same receipt bytes again: OK,
  // nothing written. NOT_FOUND for an unknown envelope; FAILED_PRECONDITION
  // if it is DELIVERED with another receipt.
  virtual absl::Status RecordDelivered(const std::string& envelope_id,
                                       const v1::SignedReceipt& receipt,
                                       absl::Time delivered_at,
                                       const AuditEvent& audit) = 0;

  // A verified receipt, as RecordSending stores it.
  struct Delivery {
    std::string envelope_id;
    v1::SignedReceipt receipt;
    AuditEvent audit;  // receipt.stored; message and envelope id are added
  };
  // What the sender has to record at one moment: the attempts of the rounds
  // it wrote to the stream since it last recorded, and the receipts read
  // meanwhile.
  struct Sending {
    std::vector<Attempt> attempts;
    // When an attempt's envelope is due again should no answer come (the
    // sender passes "now": a restarted sender holds nothing in flight).
    absl::Time next_attempt;
    std::vector<Delivery> deliveries;
  };
  struct SendingRecorded {
    std::vector<absl::Status> attempts;    // one per attempt, in order
    std::vector<absl::Status> deliveries;  // one per delivery, in order
  };
  // The sender's bookkeeping in one transaction, attempts first, so a
  // receipt stored here follows the envelope.sent entry of its envelope.
  // For each attempt: counts the attempt as RecordAttempt(envelope_id, OK,
  // next_attempt) does and, if it is the envelope's first, appends its
  // `sent` entry if set (an envelope sent again before its first attempt was
  // recorded is audited once); its status is OK,
  // or NOT_FOUND / FAILED_PRECONDITION as RecordAttempt would return them
  // (that attempt left out, its entry not appended). For each delivery: as
  // RecordDelivered, with delivered_at taken inside the transaction (the
  // moment the receipts are stored, whole microseconds); a delivery that is
  // not OK writes nothing of its own. Any other error (the database's)
  // writes nothing and is returned for the whole record.
  virtual absl::StatusOr<SendingRecorded> RecordSending(
      const Sending& sending) = 0;

  // In one transaction: marks the envelope FAILED (the peer refused it for
  // good; it is never sent again), keeps `refusal` as last_error and appends
  // `audit` (message id and envelope id added as subjects). NOT_FOUND for an
  // unknown envelope; FAILED_PRECONDITION if it is already DELIVERED or
  // FAILED.
  virtual absl::Status RecordRefused(const std::string& envelope_id,
                                     const absl::Status& refusal,
                                     const AuditEvent& audit) = 0;

  // In one transaction: marks the message's envelope CANCELLED (never sent
  // again; later messages of its case no longer wait for it), keeps `why`
  // as last_error and appends `audit` (envelope id added as a subject).
  // NOT_FOUND for an unknown message; FAILED_PRECONDITION naming its state
  // if it is no longer QUEUED or SENT, or if it is a share that messages
  // queued after it wait for. That refusal names the waiting messages
  // `viewer` (an office) sent and counts the others; unset, it names all.
  virtual absl::Status CancelOutgoing(const std::string& message_id,
                                      const std::string& why,
                                      const std::optional<std::string>& viewer,
                                      const AuditEvent& audit) = 0;

  // Where an outgoing message is. NOT_FOUND if no outgoing message has this
  // id (received messages have no delivery status here).
  virtual absl::StatusOr<v1::DeliveryStatus> GetDeliveryStatus(
      const std::string& message_id) = 0;

  // An outgoing message as queued (sender_office tells who may see it).
  // NOT_FOUND if no outgoing message has this id.
  virtual absl::StatusOr<v1::CaseMessage> GetOutgoingMessage(
      const std::string& message_id) = 0;
  // The same without its body, which is not read (nor unsealed): the
  // columns kept in the clear (ids, kind, priority, sender and recipient
  // offices), enough to decide who may see the message.
  virtual absl::StatusOr<v1::CaseMessage> GetOutgoingHead(
      const std::string& message_id) = 0;

  // --- Incoming ------------------------------------------------------------

  // Takes an envelope from the peer. `parsed` must be what
  // exchange::VerifyEnvelope returned for `signed_envelope`, its content
  // checked by the caller. Deduplicates by envelope id first:
  //  - received before with the same bytes (SHA-256 of the envelope bytes):
  //    returns the receipt given then, replay = true; nothing written;
  //  - received before with other bytes: in a transaction of its own, keeps
  //    `signed_envelope` as evidence and appends `audit` with outcome
  //    ALREADY_EXISTS (envelope id added as subject), then returns
  //    ALREADY_EXISTS "envelope_id <id> was already received with other
  //    content; kept as evidence", marked Permanently and AuditedByStore.
  //    The first envelope is untouched;
  //  - new: in one transaction, appends `audit` (envelope id and message id
  //    added as subjects), calls `make_receipt` with that entry's index and
  //    the receiving time (whole microseconds), stores the envelope with the
  //    receipt, the message (received_at set, and held to its case as held
  //    here: HoldToHeldCase; the signed envelope is kept as received) and
  //    one inbox entry per office in `inbox_offices` (duplicates ignored).
  //    Returns the receipt.
  // `make_receipt` runs inside the write transaction: quick, no store calls;
  // its error aborts everything and is returned as is. ALREADY_EXISTS (marked
  // Permanently), nothing stored, if another envelope already brought this
  // message id.
  virtual absl::StatusOr<InboundResult> AcceptInbound(
      const v1::SignedEnvelope& signed_envelope, const v1::Envelope& parsed,
      const std::vector<std::string>& inbox_offices,
      const std::function<absl::StatusOr<v1::SignedReceipt>(
          uint64_t audit_index, absl::Time received_at)>& make_receipt,
      const AuditEvent& audit) = 0;

  // The receipt this gateway gave for envelope `envelope_id` if it was
  // accepted with exactly these envelope bytes (`digest`, their SHA-256),
  // else nullopt. A read: the answer to a replay whose checks fail today
  // (a configuration, key or rule changed since it was accepted).
  virtual absl::StatusOr<std::optional<v1::SignedReceipt>> ReceiptFor(
      const std::string& envelope_id, const std::string& digest) = 0;

  // AcceptInbound for several envelopes in one write transaction (one
  // commit), in the order given, each inside a savepoint of its own: an
  // envelope that fails is rolled back alone and gets the status
  // AcceptInbound would have returned, and the others are stored (the
  // evidence of a reused envelope id is kept, as AcceptInbound keeps it).
  // `make_receipt` gets the envelope's position in `envelopes`. If the
  // transaction itself fails (BEGIN, a savepoint, COMMIT), every envelope
  // gets that error and nothing is stored. Returns one result per envelope,
  // in order, once the transaction is durable.
  virtual std::vector<absl::StatusOr<InboundResult>> AcceptInboundBatch(
      const std::vector<InboundEnvelope>& envelopes,
      const std::function<absl::StatusOr<v1::SignedReceipt>(
          size_t position, uint64_t audit_index, absl::Time received_at)>&
          make_receipt) = 0;

  // Up to `max` messages of `office`'s inbox after `after_cursor` (0: from the
  // start), in cursor order, acknowledged ones included. Cursors are stable
  // across restarts: resuming after the last cursor seen loses and repeats
  // nothing.
  virtual absl::StatusOr<std::vector<InboxItem>> ReadInbox(
      const std::string& office, int64_t after_cursor, size_t max) = 0;

  // The newest cursor of all inboxes (0 if none), from memory. A stream
  // notes InboxHead(), reads its office's inbox, and when that is drained
  // waits with WaitForInbox on the head it noted.
  virtual int64_t InboxHead() const = 0;
  // The newest cursor of all inboxes as committed, read from the database:
  // InboxHead() is raised just after each commit, so a cursor a stream has
  // just given out may be ahead of it for a moment.
  virtual absl::StatusOr<int64_t> NewestInboxCursor() = 0;
  // Waits until InboxHead() > `seen_head` or `timeout` has passed; returns
  // whether the head moved. Thread-safe; wakes on commits of AcceptInbound.
  virtual bool WaitForInbox(int64_t seen_head, absl::Duration timeout) = 0;

  // In one transaction: marks `message_id` in `office`'s inbox acknowledged
  // at `at` and appends `audit` (message id added as subject). NOT_FOUND if
  // the message is not in that office's inbox; FAILED_PRECONDITION if the
  // office already acknowledged it.
  virtual absl::Status Acknowledge(const std::string& office,
                                   const std::string& message_id, absl::Time at,
                                   const AuditEvent& audit) = 0;

  // Records that `message_id` was written to `office`'s inbox stream at
  // `at`, appending `audit` (message id added as subject) the first time
  // only; later calls (a resumed stream sending it again) change nothing.
  // NOT_FOUND if the message is not in that office's inbox.
  virtual absl::Status RecordInboxDelivery(const std::string& office,
                                           const std::string& message_id,
                                           absl::Time at,
                                           const AuditEvent& audit) = 0;

  // RecordInboxDelivery for several messages of `office`'s inbox in one
  // transaction. Returns one status per message, in order: NOT_FOUND for a
  // message not in that office's inbox (the others are recorded all the
  // same); any other error fails the whole transaction and every message.
  virtual std::vector<absl::Status> RecordInboxDeliveries(
      const std::string& office, const std::vector<InboxDelivery>& deliveries,
      absl::Time at) = 0;

  // As Acknowledge, and in the same transaction queues the acknowledgement
  // that travels back: `reply` gets the acknowledged message, held to its
  // case as held here now as well (HoldToCaseHandling: the case may have
  // changed since; a restriction stating both cut to the limit if need be),
  // and returns the
  // outgoing message to queue (as QueueOutgoing would, with `reply_audit`),
  // so an acknowledgement is never recorded without its way back.
  virtual absl::StatusOr<QueuedMessage> AcknowledgeAndReply(
      const std::string& office, const std::string& message_id, absl::Time at,
      const AuditEvent& audit,
      const std::function<absl::StatusOr<OutgoingMessage>(
          const v1::CaseMessage& acknowledged)>& reply,
      const AuditEvent& reply_audit) = 0;

  // --- Onward dissemination (docs/api.md#handling-codes) ------------------

  // Whether the peer permitted passing its case `exchange_id` on to our
  // `office`: a DISSEMINATION_GRANT received for the case named the office,
  // or any office, and no DISSEMINATION_WITHDRAWAL received since withdrew
  // it. Reads only.
  virtual absl::StatusOr<bool> DisseminationGranted(
      const std::string& exchange_id, const std::string& office) = 0;

  // The position of the newest CASE_SHARE message received for
  // `exchange_id` (0 if none): read before the checks that allow a
  // ForwardCase, and passed to it as `through`.
  virtual absl::StatusOr<int64_t> NewestShareReceived(
      const std::string& exchange_id) = 0;

  // In one transaction: appends `audit` and puts every CASE_SHARE message
  // received for `exchange_id` up to position `through` in `office`'s inbox
  // (rows already there are kept), as passed on by the audit's actor: a
  // share received after the checks is not passed on under them. Unless
  // `with_h2` (the originator addressed `office` or permitted it), a share
  // marked H2 as stored here, or purged (its marking unknown), stays
  // behind: an older version of the case may be H2 when the newest is not.
  // Returns how many rows were added. NOT_FOUND, nothing written, if no
  // such CASE_SHARE was received; PERMISSION_DENIED, nothing written, if
  // every one of them stays behind.
  virtual absl::StatusOr<int> ForwardCase(const std::string& exchange_id,
                                          const std::string& office,
                                          int64_t through, bool with_h2,
                                          const AuditEvent& audit) = 0;

  // The case as shared in the newest version among the CASE_SHARE messages
  // of `exchange_id` in `office`'s inbox; nullopt if there is none (or only
  // purged ones). Reads only.
  virtual absl::StatusOr<std::optional<v1::CaseReference>> NewestShareIn(
      const std::string& exchange_id, const std::string& office) = 0;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_EXCHANGE_STORE_H_
