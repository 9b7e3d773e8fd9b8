#ifndef CASEBRIDGE_SERVER_SQLITE_EXCHANGE_STORE_H_
#define CASEBRIDGE_SERVER_SQLITE_EXCHANGE_STORE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/clock.h"
#include "core/config.h"
#include "server/exchange_store.h"
#include "server/record_keys.h"
#include "server/sqlite.h"
#include "server/sqlite_audit_log.h"

namespace casebridge::server {

// ExchangeStore in the gateway's SQLite database (tables messages, outbox,
// inbound, envelope_conflicts and inbox: schema.cc, docs/storage.md).
// Thread-safe.
//
// The inbox head is kept in memory, read once at Create: the data directory's
// lock guarantees this process is the database's only writer.
class SqliteExchangeStore final : public ExchangeStore {
 public:
  // All pointers must outlive the store. With a `sealer`, message bodies
  // and envelope bytes are sealed under each message's key
  // (docs/storage.md#data-protection); without, stored as they are.
  static absl::StatusOr<std::unique_ptr<SqliteExchangeStore>> Create(
      sqlite::Database* db, SqliteAuditLog* audit, const Clock* clock,
      const RecordSealer* sealer = nullptr);

  absl::StatusOr<QueuedMessage> QueueOutgoing(const OutgoingMessage& outgoing,
                                              const RequestKey& key,
                                              const AuditEvent& audit) override;
  absl::StatusOr<std::vector<OutboxItem>> ReadyToSend(
      absl::Time now, size_t max,
      const std::set<std::string>& busy_cases) override;
  absl::Status RecordRetry(const std::string& envelope_id,
                           const absl::Status& error,
                           absl::Time next_attempt) override;
  absl::Status RecordAttempt(const std::string& envelope_id,
                             const absl::Status& error,
                             absl::Time next_attempt) override;
  absl::Status RecordDelivered(const std::string& envelope_id,
                               const v1::SignedReceipt& receipt,
                               absl::Time delivered_at,
                               const AuditEvent& audit) override;
  absl::StatusOr<SendingRecorded> RecordSending(
      const Sending& sending) override;
  absl::Status CancelOutgoing(const std::string& message_id,
                              const std::string& why,
                              const std::optional<std::string>& viewer,
                              const AuditEvent& audit) override;
  absl::Status RecordRefused(const std::string& envelope_id,
                             const absl::Status& refusal,
                             const AuditEvent& audit) override;
  absl::StatusOr<v1::DeliveryStatus> GetDeliveryStatus(
      const std::string& message_id) override;
  absl::StatusOr<v1::CaseMessage> GetOutgoingHead(
      const std::string& message_id) override;
  absl::StatusOr<v1::CaseMessage> GetOutgoingMessage(
      const std::string& message_id) override;

  // Retention (docs/audit-log.md#retention): purges the payloads of
  // messages queued or received before `cutoff` (bodies, envelope bytes),
  // shreds their keys, and purges the salts of the audit entries about them,
  // leaving ids, receipts and the log itself. Outgoing messages not yet
  // delivered or failed are kept. Each purge is audited as "retention.purge"
  // by `actor`. Returns the number of messages purged.
  absl::StatusOr<int> PurgeExpired(absl::Time cutoff, const std::string& actor);
  // The same with a cutoff per message kind: `policy.DaysFor(kind)` days
  // before `now` (kinds with 0 are kept). Envelopes kept in
  // envelope_conflicts follow the shortest retention configured for any
  // kind (or the default); kept if no message is ever purged. After a run
  // that purged anything the WAL is truncated (sqlite::Database::TruncateWal).
  absl::StatusOr<int> PurgeExpired(const config::RetentionSettings& policy,
                                   absl::Time now, const std::string& actor);

  // Seals the payloads stored without a seal (written before migration 6 or
  // by a store without a data key): message bodies, outbox and inbound
  // envelopes, each audited as kSealedAtOpenAction by `actor` in the
  // transaction that seals it. Returns how many. Needs a sealer.
  absl::StatusOr<int> SealStoredPayloads(const std::string& actor);

  absl::StatusOr<InboundResult> AcceptInbound(
      const v1::SignedEnvelope& signed_envelope, const v1::Envelope& parsed,
      const std::vector<std::string>& inbox_offices,
      const std::function<absl::StatusOr<v1::SignedReceipt>(
          uint64_t audit_index, absl::Time received_at)>& make_receipt,
      const AuditEvent& audit) override;
  std::vector<absl::StatusOr<InboundResult>> AcceptInboundBatch(
      const std::vector<InboundEnvelope>& envelopes,
      const std::function<absl::StatusOr<v1::SignedReceipt>(
          size_t position, uint64_t audit_index, absl::Time received_at)>&
          make_receipt) override;
  absl::StatusOr<std::optional<v1::SignedReceipt>> ReceiptFor(
      const std::string& envelope_id, const std::string& digest) override;
  absl::StatusOr<std::vector<InboxItem>> ReadInbox(const std::string& office,
                                                   int64_t after_cursor,
                                                   size_t max) override;
  absl::StatusOr<int64_t> NewestInboxCursor() override;
  int64_t InboxHead() const override;
  bool WaitForInbox(int64_t seen_head, absl::Duration timeout) override;
  absl::StatusOr<QueuedMessage> AcknowledgeAndReply(
      const std::string& office, const std::string& message_id, absl::Time at,
      const AuditEvent& audit,
      const std::function<absl::StatusOr<OutgoingMessage>(
          const v1::CaseMessage& acknowledged)>& reply,
      const AuditEvent& reply_audit) override;
  absl::Status RecordInboxDelivery(const std::string& office,
                                   const std::string& message_id, absl::Time at,
                                   const AuditEvent& audit) override;
  std::vector<absl::Status> RecordInboxDeliveries(
      const std::string& office, const std::vector<InboxDelivery>& deliveries,
      absl::Time at) override;
  absl::Status Acknowledge(const std::string& office,
                           const std::string& message_id, absl::Time at,
                           const AuditEvent& audit) override;
  absl::StatusOr<bool> DisseminationGranted(const std::string& exchange_id,
                                            const std::string& office) override;
  absl::StatusOr<int64_t> NewestShareReceived(
      const std::string& exchange_id) override;
  absl::StatusOr<int> ForwardCase(const std::string& exchange_id,
                                  const std::string& office, int64_t through,
                                  bool with_h2,
                                  const AuditEvent& audit) override;
  absl::StatusOr<std::optional<v1::CaseReference>> NewestShareIn(
      const std::string& exchange_id, const std::string& office) override;

 private:
  SqliteExchangeStore(sqlite::Database* db, SqliteAuditLog* audit,
                      const Clock* clock, const RecordSealer* sealer,
                      int64_t inbox_head)
      : db_(db),
        audit_(audit),
        clock_(clock),
        sealer_(sealer),
        inbox_head_(inbox_head) {}

  // Messages of one retention group: `where` is SQL over messages `m` (it
  // may use ?3, bound to `kind`); purged if created before `cutoff_us`.
  struct PurgeGroup {
    std::string where;
    int64_t kind = 0;
    int64_t cutoff_us = 0;
  };
  absl::StatusOr<int> Purge(const std::vector<PurgeGroup>& groups,
                            std::optional<int64_t> conflicts_cutoff_us,
                            const std::string& actor);
  // GetOutgoingMessage, or with `with_body` false GetOutgoingHead.
  absl::StatusOr<v1::CaseMessage> ReadOutgoing(const std::string& message_id,
                                               bool with_body);

 public:
  // Where case references carried by CASE_SHARE messages are kept, in the
  // same transaction as the message (set once, before use; may be unset in
  // tests of the exchange alone).
  void set_shared_case_sink(
      std::function<absl::Status(sqlite::Connection&, const v1::CaseReference&)>
          sink) {
    shared_case_sink_ = std::move(sink);
  }
  // The longest wait the sender sets before an attempt
  // (limits.retry_max_seconds; set once, before use). ReadyToSend takes an
  // envelope due later than that from now as due: the clock was set back
  // since its wait was set, which would otherwise hold it, and its case,
  // back by as much.
  void set_longest_wait(absl::Duration longest) { longest_wait_ = longest; }

 private:
  std::function<absl::Status(sqlite::Connection&, const v1::CaseReference&)>
      shared_case_sink_;

  // QueueOutgoing's work inside the caller's transaction.
  absl::StatusOr<QueuedMessage> QueueInTransaction(
      sqlite::Connection& conn, const OutgoingMessage& outgoing,
      const RequestKey& key, const AuditEvent& audit);
  // Acknowledge's work inside the caller's transaction.
  absl::Status AcknowledgeInTransaction(sqlite::Connection& conn,
                                        const std::string& office,
                                        const std::string& message_id,
                                        absl::Time at, const AuditEvent& audit);
  // AcknowledgeAndReply's reply to `message_id`, under the message's
  // handling held to its case's as held here now.
  absl::StatusOr<OutgoingMessage> MakeReply(
      sqlite::Connection& conn, const std::string& message_id,
      const std::function<absl::StatusOr<OutgoingMessage>(
          const v1::CaseMessage& acknowledged)>& reply) const;

  // One envelope of AcceptInboundBatch inside the caller's transaction
  // (AcceptInbound's work). `digest` is the SHA-256 of its bytes, `bytes`
  // the serialized SignedEnvelope. Sets `*conflict` when the envelope id came
  // before with other bytes: the evidence is written (kKept) and the caller
  // keeps it and refuses; or it is not, being kept already or beyond
  // kMaxConflictsKept (the caller refuses all the same). Moves
  // `*newest_cursor` to the newest inbox row added.
  enum class Conflict { kNone, kKept, kKeptBefore, kNotKept };
  absl::StatusOr<InboundResult> AcceptInTransaction(
      sqlite::Connection& conn, const InboundEnvelope& in,
      const std::string& digest, const std::string& bytes,
      const std::function<absl::StatusOr<v1::SignedReceipt>(
          uint64_t audit_index, absl::Time received_at)>& make_receipt,
      Conflict* conflict, int64_t* newest_cursor);

  // The case `exchange_id` as this gateway holds it (its body opened);
  // nullopt if it holds none.
  absl::StatusOr<std::optional<v1::CaseReference>> HeldCase(
      sqlite::Connection& conn, const std::string& exchange_id) const;

  // Moves the head forward to `cursor` (never back) and wakes waiters.
  void AdvanceInboxHead(int64_t cursor);

  sqlite::Database* const db_;
  SqliteAuditLog* const audit_;
  const Clock* const clock_;
  const RecordSealer* const sealer_;              // may be null
  absl::Duration longest_wait_ = absl::Hours(1);  // retry_max_seconds' most
  mutable absl::Mutex head_mu_;
  int64_t inbox_head_ ABSL_GUARDED_BY(head_mu_);
};

// Retention's purge of one message inside the caller's write transaction:
// empties its body and envelope bytes, shreds its key (with a `sealer`),
// purges the salts of the audit entries about it and audits
// "retention.purge" by `actor`, subject the message id. The audit log's
// subject rows must be caught up in the same transaction
// (SqliteAuditLog::CatchUpInTransaction).
absl::Status PurgeMessageInTransaction(
    sqlite::Connection& conn, SqliteAuditLog& audit, const RecordSealer* sealer,
    const std::string& message_id, const std::string& actor, absl::Time now);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_SQLITE_EXCHANGE_STORE_H_
