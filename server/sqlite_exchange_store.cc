#include "server/sqlite_exchange_store.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/envelope.h"
#include "core/grpc_status.h"
#include "core/handling_notice.h"
#include "core/status_macros.h"
#include "core/status_mark.h"
#include "google/protobuf/util/time_util.h"
#include "server/validation.h"

namespace casebridge::server {

// The payload that marks a refusal the store audited itself.
constexpr char kAuditedByStorePayload[] =
    "type.casebridge.dev/refusal.audited-by-store";

absl::Status AuditedByStore(absl::Status refusal) {
  return WithMark(std::move(refusal), kAuditedByStorePayload);
}

bool IsAuditedByStore(const absl::Status& refusal) {
  return HasMark(refusal, kAuditedByStorePayload);
}

namespace {

// An outbox row's last_error, shown to offices: the code and the message
// as callers are shown it (ShownMessage), never a status's payloads (marks
// that stay in this process).
std::string LastError(const absl::Status& error) {
  return absl::StrCat(absl::StatusCodeToString(error.code()), ": ",
                      ShownMessage(error));
}

using google::protobuf::util::TimeUtil;

// messages.direction
constexpr int64_t kOutgoing = 1;
constexpr int64_t kIncoming = 2;
// Versions of one envelope id kept as evidence of its reuse; any one of
// them proves it, with the peer's signature.
constexpr int64_t kMaxConflictsKept = 8;

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

// What the database keeps: whole microseconds.
absl::Time TruncateToMicros(absl::Time t) {
  return absl::FromUnixMicros(absl::ToUnixMicros(t));
}

int64_t Limit(size_t max) {
  return static_cast<int64_t>(
      std::min<size_t>(max, std::numeric_limits<int64_t>::max()));
}

template <typename Message>
absl::StatusOr<Message> ParseStored(const std::string& bytes,
                                    absl::string_view what,
                                    absl::string_view id) {
  Message message;
  if (!message.ParseFromString(bytes)) {
    return absl::DataLossError(
        absl::StrCat("stored ", what, " of ", id, " does not parse"));
  }
  return message;
}

// The outbox columns a state change or a delivery status needs.
struct OutboxRow {
  std::string envelope_id;
  std::string message_id;
  v1::DeliveryState state = v1::DELIVERY_STATE_UNSPECIFIED;
  int32_t attempts = 0;
  std::string last_error;
  std::optional<std::string> receipt;  // serialized v1.SignedReceipt
  int64_t queued_us = 0;
  std::optional<int64_t> delivered_us;
  std::optional<int64_t> acknowledged_us;
};

constexpr char kOutboxColumns[] =
    "envelope_id, message_id, state, attempts, last_error, receipt, "
    "queued_us, delivered_us, acknowledged_us";

OutboxRow ReadOutboxRow(const sqlite::Statement& stmt) {
  OutboxRow row;
  row.envelope_id = stmt.ColumnText(0);
  row.message_id = stmt.ColumnText(1);
  row.state = static_cast<v1::DeliveryState>(stmt.ColumnInt(2));
  row.attempts = static_cast<int32_t>(stmt.ColumnInt(3));
  row.last_error = stmt.ColumnText(4);
  if (!stmt.ColumnIsNull(5)) row.receipt = stmt.ColumnBlob(5);
  row.queued_us = stmt.ColumnInt(6);
  if (!stmt.ColumnIsNull(7)) row.delivered_us = stmt.ColumnInt(7);
  if (!stmt.ColumnIsNull(8)) row.acknowledged_us = stmt.ColumnInt(8);
  return row;
}

// The outbox row whose `column` ("envelope_id" or "message_id") is `value`;
// nullopt if there is none.
absl::StatusOr<std::optional<OutboxRow>> FindOutbox(sqlite::Connection& conn,
                                                    absl::string_view column,
                                                    const std::string& value) {
  CB_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(absl::StrCat(
                                     "SELECT ", kOutboxColumns,
                                     " FROM outbox WHERE ", column, " = ?")));
  stmt.Bind(1, value);
  CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
  if (!row) return std::nullopt;
  return ReadOutboxRow(stmt);
}

absl::StatusOr<OutboxRow> GetEnvelopeRow(sqlite::Connection& conn,
                                         const std::string& envelope_id) {
  CB_ASSIGN_OR_RETURN(std::optional<OutboxRow> row,
                      FindOutbox(conn, "envelope_id", envelope_id));
  if (!row.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("envelope ", envelope_id, " is not in the outbox"));
  }
  return *std::move(row);
}

absl::StatusOr<v1::DeliveryStatus> ToDeliveryStatus(const OutboxRow& row) {
  v1::DeliveryStatus status;
  status.set_message_id(row.message_id);
  status.set_state(row.state);
  status.set_attempts(row.attempts);
  status.set_last_error(row.last_error);
  *status.mutable_queued_at() =
      TimeUtil::MicrosecondsToTimestamp(row.queued_us);
  if (row.delivered_us.has_value()) {
    *status.mutable_delivered_at() =
        TimeUtil::MicrosecondsToTimestamp(*row.delivered_us);
  }
  // Acknowledged is reported once delivered (the acknowledgement may
  // overtake our receipt on the wire; the stored state stays DELIVERED).
  if (row.acknowledged_us.has_value() &&
      row.state == v1::DELIVERY_STATE_DELIVERED) {
    status.set_state(v1::DELIVERY_STATE_ACKNOWLEDGED);
    *status.mutable_acknowledged_at() =
        TimeUtil::MicrosecondsToTimestamp(*row.acknowledged_us);
  }
  if (row.receipt.has_value()) {
    CB_ASSIGN_OR_RETURN(*status.mutable_receipt(),
                        ParseStored<v1::SignedReceipt>(*row.receipt, "receipt",
                                                       row.envelope_id));
  }
  return status;
}

bool Pending(v1::DeliveryState state) {
  return state == v1::DELIVERY_STATE_QUEUED || state == v1::DELIVERY_STATE_SENT;
}

// "delivered", "cancelled"...: a state as said in refusals.
std::string StateWord(v1::DeliveryState state) {
  return absl::AsciiStrToLower(
      v1::DeliveryState_Name(state).substr(sizeof("DELIVERY_STATE_") - 1));
}

absl::Status NotPending(const OutboxRow& row) {
  return absl::FailedPreconditionError(absl::StrCat(
      "envelope ", row.envelope_id, " is already ", StateWord(row.state)));
}

absl::StatusOr<bool> MessageExists(sqlite::Connection& conn,
                                   const std::string& message_id) {
  CB_ASSIGN_OR_RETURN(
      auto stmt, conn.Prepare("SELECT 1 FROM messages WHERE message_id = ?"));
  stmt.Bind(1, message_id);
  return stmt.Step();
}

constexpr const char* kBodyField = kMessageBodyField;

// A message as stored. A message purged under retention has an empty body:
// FAILED_PRECONDITION saying so, never an empty message.
absl::StatusOr<v1::CaseMessage> LoadMessage(const RecordSealer* sealer,
                                            sqlite::Connection& conn,
                                            const std::string& message_id,
                                            std::string body, bool sealed) {
  if (body.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("message ", message_id,
                     " had its payload purged under the retention policy"));
  }
  CB_ASSIGN_OR_RETURN(const std::string plain,
                      FromStored(sealer, conn, MessageRecord(message_id),
                                 kBodyField, std::move(body), sealed));
  return ParseStored<v1::CaseMessage>(plain, "message", message_id);
}

absl::Status InsertMessage(const RecordSealer* sealer, sqlite::Connection& conn,
                           const v1::CaseMessage& message, int64_t direction,
                           absl::Time created, const RequestKey& key) {
  CB_ASSIGN_OR_RETURN(
      const StoredPayload body,
      ToStored(sealer, conn, MessageRecord(message.message_id()), kBodyField,
               message.SerializeAsString()));
  CB_ASSIGN_OR_RETURN(
      auto insert,
      conn.Prepare("INSERT INTO messages(message_id, exchange_id, direction, "
                   "kind, priority, sender_office, recipient_office, body, "
                   "created_us, request_id, request_hash, sealed) "
                   "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  insert.Bind(1, message.message_id())
      .Bind(2, message.exchange_id())
      .Bind(3, direction)
      .Bind(4, static_cast<int64_t>(message.kind()))
      .Bind(5, static_cast<int64_t>(message.priority()))
      .Bind(6, message.sender_office())
      .Bind(7, message.recipient_office())
      .BindBlob(8, body.bytes)
      .Bind(9, absl::ToUnixMicros(created))
      .Bind(12, int64_t{body.sealed});
  if (key.request_id.empty()) {
    insert.BindNull(10).BindNull(11);
  } else {
    insert.Bind(10, key.request_id).BindBlob(11, key.request_hash);
  }
  return insert.Run();
}

absl::Status ChangedOneRow(sqlite::Connection& conn, absl::string_view what) {
  if (conn.changes() != 1) {
    return absl::InternalError(
        absl::StrCat(what, " changed ", conn.changes(), " rows"));
  }
  return absl::OkStatus();
}

// The newest cursor of all inboxes as committed (0 if none).
absl::StatusOr<int64_t> NewestCursor(sqlite::Database* db) {
  int64_t head = 0;
  CB_RETURN_IF_ERROR(db->Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("SELECT COALESCE(MAX(cursor), 0) FROM inbox"));
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (row) head = stmt.ColumnInt(0);
    return absl::OkStatus();
  }));
  return head;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteExchangeStore>>
SqliteExchangeStore::Create(sqlite::Database* db, SqliteAuditLog* audit,
                            const Clock* clock, const RecordSealer* sealer) {
  CB_ASSIGN_OR_RETURN(const int64_t head, NewestCursor(db));
  return std::unique_ptr<SqliteExchangeStore>(
      new SqliteExchangeStore(db, audit, clock, sealer, head));
}

absl::StatusOr<int64_t> SqliteExchangeStore::NewestInboxCursor() {
  return NewestCursor(db_);
}

// --- Outgoing ----------------------------------------------------------------

absl::StatusOr<QueuedMessage> SqliteExchangeStore::QueueOutgoing(
    const OutgoingMessage& outgoing, const RequestKey& key,
    const AuditEvent& audit) {
  const v1::CaseMessage& message = outgoing.message;
  if (message.message_id().empty()) {
    return absl::InvalidArgumentError("message.message_id: missing");
  }
  if (message.exchange_id().empty()) {
    return absl::InvalidArgumentError("message.exchange_id: missing");
  }
  if (outgoing.envelope_id.empty()) {
    return absl::InvalidArgumentError("envelope_id: missing");
  }
  if (!outgoing.seal) return absl::InvalidArgumentError("seal: missing");

  QueuedMessage result;
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(result, QueueInTransaction(conn, outgoing, key, audit));
    return absl::OkStatus();
  }));
  return result;
}

namespace {

// Whether a CASE_SHARE of `exchange_id` was queued here and not given up
// (FAILED) or withdrawn (CANCELLED): per-case order then delivers it before
// any later message of the case. Literal constants, so that the partial index
// outgoing_shares serves the query.
absl::StatusOr<bool> CaseSharedWithPeer(sqlite::Connection& conn,
                                        const std::string& exchange_id) {
  static_assert(kOutgoing == 1 && v1::MESSAGE_KIND_CASE_SHARE == 6 &&
                v1::DELIVERY_STATE_FAILED == 5 &&
                v1::DELIVERY_STATE_CANCELLED == 6);
  CB_ASSIGN_OR_RETURN(
      auto find,
      conn.Prepare("SELECT 1 FROM messages JOIN outbox USING (message_id) "
                   "WHERE messages.exchange_id = ? AND direction = 1 "
                   "AND kind = 6 AND state NOT IN (5, 6) LIMIT 1"));
  find.Bind(1, exchange_id);
  return find.Step();
}

// A queued message that waits for a share (WaitingForShare).
struct WaitingMessage {
  std::string message_id;
  std::string envelope_id;
  std::string sender_office;
};

// The messages, at most `max`, that wait for the share `message_id` of
// their case: queued after it, not yet delivered, with no other share not
// given up (FAILED, CANCELLED) ahead of them. Without it they would reach a
// peer that cannot read the case they concern (the receiver does not check;
// SendMessage's share check is made once, when the message is queued).
// None if `message_id` is no share; else sets `*exchange_id` to its case.
// Literal constants as in CaseSharedWithPeer.
absl::StatusOr<std::vector<WaitingMessage>> WaitingForShare(
    sqlite::Connection& conn, const std::string& message_id, int64_t max,
    std::string* exchange_id) {
  std::vector<WaitingMessage> out;
  CB_ASSIGN_OR_RETURN(
      auto share,
      conn.Prepare("SELECT exchange_id, seq FROM messages WHERE "
                   "message_id = ? AND direction = 1 AND kind = 6"));
  share.Bind(1, message_id);
  CB_ASSIGN_OR_RETURN(const bool is_share, share.Step());
  if (!is_share) return out;
  *exchange_id = share.ColumnText(0);
  CB_ASSIGN_OR_RETURN(
      auto waiting,
      conn.Prepare(
          "SELECT m.message_id, o.envelope_id, m.sender_office FROM messages "
          "m JOIN outbox o "
          "USING (message_id) WHERE m.exchange_id = ?1 AND m.direction = 1 "
          "AND m.kind != 6 AND o.state IN (1, 2) AND m.seq > ?2 "
          "AND NOT EXISTS (SELECT 1 FROM messages s JOIN outbox so "
          "USING (message_id) WHERE s.exchange_id = ?1 AND s.direction = 1 "
          "AND s.kind = 6 AND so.state NOT IN (5, 6) AND s.message_id != ?3 "
          "AND s.seq < m.seq) "
          "ORDER BY m.seq LIMIT ?4"));
  waiting.Bind(1, *exchange_id)
      .Bind(2, share.ColumnInt(1))
      .Bind(3, message_id)
      .Bind(4, max);
  while (true) {
    CB_ASSIGN_OR_RETURN(const bool row, waiting.Step());
    if (!row) break;
    out.push_back(
        {waiting.ColumnText(0), waiting.ColumnText(1), waiting.ColumnText(2)});
  }
  return out;
}

// Ends the pending outbox row whose `key` column ("envelope_id" or
// "message_id") is `id` in `state` (FAILED, CANCELLED) with `last_error`;
// `what` names the step if no row changed.
absl::Status EndPending(sqlite::Connection& conn, absl::string_view key,
                        const std::string& id, v1::DeliveryState state,
                        const std::string& last_error, absl::string_view what) {
  CB_ASSIGN_OR_RETURN(
      auto update,
      conn.Prepare(absl::StrCat("UPDATE outbox SET state = ?, last_error = ? "
                                "WHERE ",
                                key, " = ? AND state IN (1, 2)")));
  update.Bind(1, static_cast<int64_t>(state)).Bind(2, last_error).Bind(3, id);
  CB_RETURN_IF_ERROR(update.Run());
  return ChangedOneRow(conn, what);
}

// OK unless messages wait for the share `message_id` (WaitingForShare): it
// is not withdrawn under them. The refusal names the waiting messages
// `viewer` sent, all of them if `viewer` is unset (a supervisor's cancel),
// and only counts the others: their ids are not the caller's to learn.
absl::Status NoMessageWaitsForTheShare(
    sqlite::Connection& conn, const std::string& message_id,
    const std::optional<std::string>& viewer) {
  constexpr int64_t kLookedAt = 1000;  // counts stop there ("or more")
  constexpr size_t kNamed = 3;
  std::string exchange_id;
  CB_ASSIGN_OR_RETURN(
      const auto waiting,
      WaitingForShare(conn, message_id, kLookedAt, &exchange_id));
  if (waiting.empty()) return absl::OkStatus();
  std::vector<std::string> parts;
  size_t more = 0;
  size_t others = 0;
  for (const WaitingMessage& w : waiting) {
    if (viewer.has_value() && w.sender_office != *viewer) {
      ++others;
    } else if (parts.size() < kNamed) {
      parts.push_back(w.message_id);
    } else {
      ++more;
    }
  }
  const char* const or_more =
      static_cast<int64_t>(waiting.size()) == kLookedAt ? " or more" : "";
  if (more > 0) {
    parts.push_back(absl::StrCat(more, others > 0 ? "" : or_more, " more"));
  }
  if (others > 0) {
    parts.push_back(absl::StrCat(others, or_more,
                                 others == 1 ? " message" : " messages",
                                 " of other offices"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "message ", message_id, " shares case ", exchange_id,
      " with the peer, and messages queued on the case wait for it (",
      absl::StrJoin(parts, ", "), "); cancel those first",
      others > 0 ? " (another office's: that office or a supervisor)" : "",
      ": without the share the peer could not read the case they concern"));
}

}  // namespace

absl::StatusOr<QueuedMessage> SqliteExchangeStore::QueueInTransaction(
    sqlite::Connection& conn, const OutgoingMessage& outgoing,
    const RequestKey& key, const AuditEvent& audit) {
  const v1::CaseMessage& message = outgoing.message;
  QueuedMessage result;
  const absl::Status status = [&]() -> absl::Status {
    if (!key.request_id.empty()) {
      CB_ASSIGN_OR_RETURN(
          auto find,
          conn.Prepare("SELECT message_id, request_hash FROM messages "
                       "WHERE sender_office = ? AND request_id = ?"));
      find.Bind(1, message.sender_office()).Bind(2, key.request_id);
      CB_ASSIGN_OR_RETURN(const bool row, find.Step());
      if (row) {
        const std::string message_id = find.ColumnText(0);
        if (find.ColumnBlob(1) != key.request_hash) {
          return absl::AlreadyExistsError(absl::StrCat(
              "request_id \"", key.request_id, "\" already sent message ",
              message_id, " with different content"));
        }
        CB_ASSIGN_OR_RETURN(std::optional<OutboxRow> queued,
                            FindOutbox(conn, "message_id", message_id));
        if (!queued.has_value()) {
          return absl::DataLossError(absl::StrCat(
              "outgoing message ", message_id, " has no outbox envelope"));
        }
        result.message_id = message_id;
        result.envelope_id = queued->envelope_id;
        result.replayed = true;
        CB_ASSIGN_OR_RETURN(result.status, ToDeliveryStatus(*queued));
        return absl::OkStatus();
      }
    }
    if (outgoing.needs_shared_case) {
      CB_ASSIGN_OR_RETURN(const bool shared,
                          CaseSharedWithPeer(conn, message.exchange_id()));
      if (!shared) {
        return absl::FailedPreconditionError(absl::StrCat(
            "message.exchange_id: case ", message.exchange_id(),
            " has not been shared with the peer country, which could neither "
            "read it nor reply; share it first (ShareCase)"));
      }
    }
    CB_ASSIGN_OR_RETURN(const bool taken,
                        MessageExists(conn, message.message_id()));
    if (taken) {
      return absl::AlreadyExistsError(
          absl::StrCat("message_id ", message.message_id(), " already exists"));
    }
    CB_ASSIGN_OR_RETURN(std::optional<OutboxRow> envelope_taken,
                        FindOutbox(conn, "envelope_id", outgoing.envelope_id));
    if (envelope_taken.has_value()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "envelope_id ", outgoing.envelope_id, " already exists"));
    }

    const absl::Time now = TruncateToMicros(clock_->Now());
    AuditEvent event = audit;
    event.subjects.push_back(message.message_id());
    event.subjects.push_back(outgoing.envelope_id);
    CB_ASSIGN_OR_RETURN(const uint64_t index,
                        audit_->AppendInTransaction(conn, event));
    CB_ASSIGN_OR_RETURN(const v1::SignedEnvelope sealed, outgoing.seal(index));

    // The sealed envelope must be the one the audit entry names.
    v1::Envelope envelope;
    if (!envelope.ParseFromString(sealed.envelope())) {
      return absl::InternalError(
          absl::StrCat("sealed envelope ", outgoing.envelope_id,
                       " is not a well-formed casebridge.v1.Envelope"));
    }
    if (envelope.envelope_id() != outgoing.envelope_id ||
        envelope.message().message_id() != message.message_id() ||
        envelope.origin_audit_index() != index) {
      return absl::InternalError(absl::StrCat(
          "sealed envelope does not carry envelope id ", outgoing.envelope_id,
          ", message id ", message.message_id(), " and audit index ", index));
    }

    CB_RETURN_IF_ERROR(
        InsertMessage(sealer_, conn, message, kOutgoing, now, key));
    CB_ASSIGN_OR_RETURN(
        const StoredPayload stored,
        ToStoredEnvelope(sealer_, conn, MessageRecord(message.message_id()),
                         kOutboxEnvelopeField, sealed));
    CB_ASSIGN_OR_RETURN(
        auto insert,
        conn.Prepare("INSERT INTO outbox(envelope_id, message_id, "
                     "exchange_id, priority, signed_envelope, state, "
                     "attempts, next_attempt_us, queued_us, sealed) "
                     "VALUES(?, ?, ?, ?, ?, ?, 0, ?, ?, ?)"));
    insert.Bind(1, outgoing.envelope_id)
        .Bind(2, message.message_id())
        .Bind(3, message.exchange_id())
        .Bind(4, static_cast<int64_t>(message.priority()))
        .BindBlob(5, stored.bytes)
        .Bind(6, static_cast<int64_t>(v1::DELIVERY_STATE_QUEUED))
        .Bind(7, absl::ToUnixMicros(now))
        .Bind(8, absl::ToUnixMicros(now))
        .Bind(9, int64_t{stored.sealed});
    CB_RETURN_IF_ERROR(insert.Run());

    result.message_id = message.message_id();
    result.envelope_id = outgoing.envelope_id;
    result.replayed = false;
    result.status.set_message_id(message.message_id());
    result.status.set_state(v1::DELIVERY_STATE_QUEUED);
    *result.status.mutable_queued_at() = ToProto(now);
    return absl::OkStatus();
  }();
  if (!status.ok()) return status;
  return result;
}

absl::StatusOr<std::vector<OutboxItem>> SqliteExchangeStore::ReadyToSend(
    absl::Time now, size_t max, const std::set<std::string>& busy_cases) {
  std::vector<OutboxItem> items;
  if (max == 0) return items;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    // First the sequence numbers, in sending order, from the covering index
    // outbox_ready: due envelopes of cases not busy that are their case's
    // head (no older pending envelope of the same case, probed in
    // outbox_pending). The walk stops once `max` are found, so its cost
    // follows the window and the busy cases, not the backlog; no envelope
    // bytes are read for skipped rows, and the rows of busy cases (those in
    // flight, a window's worth at every call) are skipped before the probe.
    std::vector<int64_t> chosen;
    {
      CB_ASSIGN_OR_RETURN(
          auto due,
          conn.Prepare("SELECT seq, exchange_id FROM outbox "
                       "WHERE state IN (1, 2) AND (next_attempt_us <= ?1 "
                       "OR next_attempt_us > ?2) "
                       "ORDER BY priority DESC, seq"));
      due.Bind(1, absl::ToUnixMicros(now))
          .Bind(2, absl::ToUnixMicros(now + longest_wait_));
      while (chosen.size() < max) {
        CB_ASSIGN_OR_RETURN(const bool row, due.Step());
        if (!row) break;
        const int64_t seq = due.ColumnInt(0);
        const std::string exchange_id = due.ColumnText(1);
        if (busy_cases.contains(exchange_id)) continue;
        CB_ASSIGN_OR_RETURN(
            auto older,
            conn.Prepare("SELECT 1 FROM outbox WHERE exchange_id = ? "
                         "AND state IN (1, 2) AND seq < ? LIMIT 1"));
        older.Bind(1, exchange_id).Bind(2, seq);
        CB_ASSIGN_OR_RETURN(const bool behind, older.Step());
        if (!behind) chosen.push_back(seq);
      }
    }
    // Then those envelopes, in the same snapshot.
    items.reserve(chosen.size());
    for (const int64_t seq : chosen) {
      CB_ASSIGN_OR_RETURN(
          auto stmt,
          conn.Prepare("SELECT envelope_id, message_id, exchange_id, "
                       "priority, state, attempts, next_attempt_us, "
                       "signed_envelope, sealed FROM outbox WHERE seq = ?"));
      stmt.Bind(1, seq);
      CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
      if (!row) {
        return absl::InternalError(
            absl::StrCat("outbox row ", seq, " vanished from a snapshot"));
      }
      OutboxItem item;
      item.seq = seq;
      item.envelope_id = stmt.ColumnText(0);
      item.message_id = stmt.ColumnText(1);
      item.exchange_id = stmt.ColumnText(2);
      item.priority = static_cast<v1::Priority>(stmt.ColumnInt(3));
      item.state = static_cast<v1::DeliveryState>(stmt.ColumnInt(4));
      item.attempts = static_cast<int32_t>(stmt.ColumnInt(5));
      item.next_attempt = absl::FromUnixMicros(stmt.ColumnInt(6));
      CB_ASSIGN_OR_RETURN(
          item.signed_envelope,
          FromStoredEnvelope(sealer_, conn, MessageRecord(item.message_id),
                             kOutboxEnvelopeField, stmt.ColumnBlob(7),
                             stmt.ColumnInt(8) != 0));
      items.push_back(std::move(item));
    }
    return absl::OkStatus();
  }));
  return items;
}

absl::Status SqliteExchangeStore::RecordRetry(const std::string& envelope_id,
                                              const absl::Status& error,
                                              absl::Time next_attempt) {
  return db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(const OutboxRow row, GetEnvelopeRow(conn, envelope_id));
    if (!Pending(row.state)) return absl::OkStatus();
    CB_ASSIGN_OR_RETURN(
        auto update,
        conn.Prepare("UPDATE outbox SET last_error = ?, next_attempt_us = ? "
                     "WHERE envelope_id = ?"));
    update.Bind(1, LastError(error))
        .Bind(2, absl::ToUnixMicros(next_attempt))
        .Bind(3, envelope_id);
    CB_RETURN_IF_ERROR(update.Run());
    return ChangedOneRow(conn, "recording a failed attempt");
  });
}

namespace {

// RecordAttempt's work inside the caller's transaction. The outer status is
// the database's error; the inner one this envelope's own refusal (nothing
// written then). `first`, if given, tells whether this was the envelope's
// first attempt counted.
absl::StatusOr<absl::Status> CountAttempt(sqlite::Connection& conn,
                                          const std::string& envelope_id,
                                          const absl::Status& error,
                                          absl::Time next_attempt,
                                          bool* first = nullptr) {
  CB_ASSIGN_OR_RETURN(std::optional<OutboxRow> row,
                      FindOutbox(conn, "envelope_id", envelope_id));
  if (!row.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("envelope ", envelope_id, " is not in the outbox"));
  }
  // A message cancelled while its envelope was being written to the stream
  // was sent all the same: the attempt counts (and a first one is audited),
  // and the row stays CANCELLED.
  if (!Pending(row->state) && row->state != v1::DELIVERY_STATE_CANCELLED) {
    return NotPending(*row);
  }
  CB_ASSIGN_OR_RETURN(
      auto update,
      conn.Prepare("UPDATE outbox SET attempts = attempts + 1, "
                   "state = CASE state WHEN 6 THEN 6 ELSE ? END, "
                   "last_error = CASE state WHEN 6 THEN last_error ELSE ? END, "
                   "next_attempt_us = ? "
                   "WHERE envelope_id = ?"));
  update.Bind(1, static_cast<int64_t>(v1::DELIVERY_STATE_SENT));
  if (error.ok()) {
    update.BindNull(2);
  } else {
    update.Bind(2, LastError(error));
  }
  update.Bind(3, absl::ToUnixMicros(next_attempt)).Bind(4, envelope_id);
  CB_RETURN_IF_ERROR(update.Run());
  CB_RETURN_IF_ERROR(ChangedOneRow(conn, "recording a delivery attempt"));
  if (first != nullptr) *first = row->attempts == 0;
  return absl::OkStatus();
}

// RecordDelivered's work inside the caller's transaction; statuses as
// CountAttempt's.
absl::StatusOr<absl::Status> StoreReceipt(sqlite::Connection& conn,
                                          SqliteAuditLog* audit_log,
                                          const std::string& envelope_id,
                                          const std::string& receipt_bytes,
                                          absl::Time delivered_at,
                                          const AuditEvent& audit) {
  CB_ASSIGN_OR_RETURN(std::optional<OutboxRow> row,
                      FindOutbox(conn, "envelope_id", envelope_id));
  if (!row.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("envelope ", envelope_id, " is not in the outbox"));
  }
  if (row->state == v1::DELIVERY_STATE_DELIVERED) {
    if (row->receipt == receipt_bytes) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("envelope ", envelope_id,
                     " is already delivered with another receipt"));
  }
  CB_ASSIGN_OR_RETURN(auto update,
                      conn.Prepare("UPDATE outbox SET state = ?, receipt = ?, "
                                   "delivered_us = ? WHERE envelope_id = ?"));
  update.Bind(1, static_cast<int64_t>(v1::DELIVERY_STATE_DELIVERED))
      .BindBlob(2, receipt_bytes)
      .Bind(3, absl::ToUnixMicros(delivered_at))
      .Bind(4, envelope_id);
  CB_RETURN_IF_ERROR(update.Run());
  CB_RETURN_IF_ERROR(ChangedOneRow(conn, "storing a receipt"));
  AuditEvent event = audit;
  event.subjects.push_back(row->message_id);
  event.subjects.push_back(envelope_id);
  CB_RETURN_IF_ERROR(audit_log->AppendInTransaction(conn, event).status());
  return absl::OkStatus();
}

}  // namespace

absl::Status SqliteExchangeStore::RecordAttempt(const std::string& envelope_id,
                                                const absl::Status& error,
                                                absl::Time next_attempt) {
  return db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(const absl::Status counted,
                        CountAttempt(conn, envelope_id, error, next_attempt));
    return counted;
  });
}

absl::Status SqliteExchangeStore::RecordDelivered(
    const std::string& envelope_id, const v1::SignedReceipt& receipt,
    absl::Time delivered_at, const AuditEvent& audit) {
  const std::string receipt_bytes = exchange::StoredBytes(receipt);
  return db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(const absl::Status stored,
                        StoreReceipt(conn, audit_, envelope_id, receipt_bytes,
                                     delivered_at, audit));
    return stored;
  });
}

absl::StatusOr<ExchangeStore::SendingRecorded>
SqliteExchangeStore::RecordSending(const Sending& sending) {
  SendingRecorded results;
  if (sending.attempts.empty() && sending.deliveries.empty()) return results;
  std::vector<std::string> receipt_bytes;
  receipt_bytes.reserve(sending.deliveries.size());
  for (const Delivery& delivery : sending.deliveries) {
    receipt_bytes.push_back(exchange::StoredBytes(delivery.receipt));
  }
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    results = {};  // a unit may run again if its batch is retried
    results.attempts.reserve(sending.attempts.size());
    for (const Attempt& attempt : sending.attempts) {
      bool first = false;
      CB_ASSIGN_OR_RETURN(
          absl::Status counted,
          CountAttempt(conn, attempt.envelope_id, absl::OkStatus(),
                       sending.next_attempt, &first));
      if (counted.ok() && first && attempt.sent.has_value()) {
        CB_RETURN_IF_ERROR(
            audit_->AppendInTransaction(conn, *attempt.sent).status());
      }
      results.attempts.push_back(std::move(counted));
    }
    // Inside the transaction: the moment the receipts become durable, up to
    // this transaction's own commit.
    const absl::Time delivered_at = TruncateToMicros(clock_->Now());
    results.deliveries.reserve(sending.deliveries.size());
    for (size_t i = 0; i < sending.deliveries.size(); ++i) {
      const Delivery& delivery = sending.deliveries[i];
      CB_ASSIGN_OR_RETURN(
          absl::Status stored,
          StoreReceipt(conn, audit_, delivery.envelope_id, receipt_bytes[i],
                       delivered_at, delivery.audit));
      results.deliveries.push_back(std::move(stored));
    }
    return absl::OkStatus();
  }));
  return results;
}

absl::Status SqliteExchangeStore::CancelOutgoing(
    const std::string& message_id, const std::string& why,
    const std::optional<std::string>& viewer, const AuditEvent& audit) {
  return db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(std::optional<OutboxRow> row,
                        FindOutbox(conn, "message_id", message_id));
    if (!row.has_value()) {
      return absl::NotFoundError(
          absl::StrCat("outgoing message ", message_id, " not found"));
    }
    if (!Pending(row->state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("message ", message_id, " is ", StateWord(row->state),
                       "; only a message not yet delivered (queued or sent) "
                       "can be cancelled"));
    }
    CB_RETURN_IF_ERROR(NoMessageWaitsForTheShare(conn, message_id, viewer));
    CB_RETURN_IF_ERROR(EndPending(conn, "message_id", message_id,
                                  v1::DELIVERY_STATE_CANCELLED, why,
                                  "cancelling a message"));
    AuditEvent event = audit;
    event.subjects.push_back(row->envelope_id);
    return audit_->AppendInTransaction(conn, event).status();
  });
}

absl::Status SqliteExchangeStore::RecordRefused(const std::string& envelope_id,
                                                const absl::Status& refusal,
                                                const AuditEvent& audit) {
  return db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(const OutboxRow row, GetEnvelopeRow(conn, envelope_id));
    AuditEvent event = audit;
    event.subjects.push_back(row.message_id);
    event.subjects.push_back(envelope_id);
    // Cancelled while on its way: the refusal is on record, the row stays.
    if (row.state == v1::DELIVERY_STATE_CANCELLED) {
      return audit_->AppendInTransaction(conn, event).status();
    }
    if (!Pending(row.state)) return NotPending(row);
    CB_RETURN_IF_ERROR(EndPending(conn, "envelope_id", envelope_id,
                                  v1::DELIVERY_STATE_FAILED, LastError(refusal),
                                  "recording a refusal"));
    CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, event).status());
    // A share refused for good leaves the messages that waited for it
    // without a case the peer can read: they fail with it, each on record,
    // rather than reach the peer.
    std::string exchange_id;
    CB_ASSIGN_OR_RETURN(
        const auto waiting,
        WaitingForShare(conn, row.message_id,
                        std::numeric_limits<int64_t>::max(), &exchange_id));
    const absl::Status why = absl::FailedPreconditionError(absl::StrCat(
        "the share of case ", exchange_id, " (", row.message_id,
        ") was refused by the peer for good; share the case again, then "
        "send this message again"));
    for (const WaitingMessage& w : waiting) {
      CB_RETURN_IF_ERROR(EndPending(conn, "envelope_id", w.envelope_id,
                                    v1::DELIVERY_STATE_FAILED, LastError(why),
                                    "failing a message"));
      AuditEvent failed;
      failed.actor = audit.actor;
      failed.action = "message.failed";
      failed.subjects = {exchange_id, w.message_id, w.envelope_id};
      failed.outcome = why;
      CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, failed).status());
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<v1::DeliveryStatus> SqliteExchangeStore::GetDeliveryStatus(
    const std::string& message_id) {
  v1::DeliveryStatus status;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(std::optional<OutboxRow> row,
                        FindOutbox(conn, "message_id", message_id));
    if (!row.has_value()) {
      return absl::NotFoundError(
          absl::StrCat("outgoing message ", message_id, " not found"));
    }
    CB_ASSIGN_OR_RETURN(status, ToDeliveryStatus(*row));
    if (Pending(row->state)) {
      // Per-case order: an earlier message of the case not delivered yet
      // holds this one back. Its sender may be another office; what it
      // met is told, not what it says.
      CB_ASSIGN_OR_RETURN(
          auto ahead,
          conn.Prepare("SELECT o.exchange_id, o.attempts, o.last_error FROM "
                       "outbox o JOIN outbox me ON me.message_id = ?1 "
                       "WHERE o.exchange_id = me.exchange_id AND o.seq < "
                       "me.seq AND o.state IN (1, 2) ORDER BY o.seq LIMIT 1"));
      ahead.Bind(1, message_id);
      CB_ASSIGN_OR_RETURN(const bool waiting, ahead.Step());
      if (waiting) {
        const std::string last_error =
            ahead.ColumnIsNull(2) ? "" : ahead.ColumnText(2);
        status.set_waiting_behind(absl::StrCat(
            "an earlier message of case ", ahead.ColumnText(0),
            " is not delivered yet (", ahead.ColumnInt(1),
            ahead.ColumnInt(1) == 1 ? " attempt" : " attempts",
            last_error.empty() ? ""
                               : absl::StrCat("; last error: ", last_error),
            ")"));
      }
    }
    return absl::OkStatus();
  }));
  return status;
}

absl::StatusOr<v1::CaseMessage> SqliteExchangeStore::GetOutgoingMessage(
    const std::string& message_id) {
  return ReadOutgoing(message_id, /*with_body=*/true);
}

absl::StatusOr<v1::CaseMessage> SqliteExchangeStore::GetOutgoingHead(
    const std::string& message_id) {
  return ReadOutgoing(message_id, /*with_body=*/false);
}

absl::StatusOr<v1::CaseMessage> SqliteExchangeStore::ReadOutgoing(
    const std::string& message_id, bool with_body) {
  v1::CaseMessage message;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        conn.Prepare("SELECT body, sealed, purged_us, exchange_id, kind, "
                     "priority, sender_office, recipient_office FROM messages "
                     "WHERE message_id = ? AND direction = ?"));
    stmt.Bind(1, message_id).Bind(2, kOutgoing);
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (!row) {
      return absl::NotFoundError(
          absl::StrCat("outgoing message ", message_id, " not found"));
    }
    if (!with_body || !stmt.ColumnIsNull(2)) {
      // Purged, or the head only: what the row keeps in the clear, so that
      // its sender can still follow its delivery.
      message.set_message_id(message_id);
      message.set_exchange_id(stmt.ColumnText(3));
      message.set_kind(static_cast<v1::MessageKind>(stmt.ColumnInt(4)));
      message.set_priority(static_cast<v1::Priority>(stmt.ColumnInt(5)));
      message.set_sender_office(stmt.ColumnText(6));
      message.set_recipient_office(stmt.ColumnText(7));
      return absl::OkStatus();
    }
    CB_ASSIGN_OR_RETURN(
        message, LoadMessage(sealer_, conn, message_id, stmt.ColumnBlob(0),
                             stmt.ColumnInt(1) != 0));
    return absl::OkStatus();
  }));
  return message;
}

// --- Retention ---------------------------------------------------------------

absl::StatusOr<int> SqliteExchangeStore::PurgeExpired(
    absl::Time cutoff, const std::string& actor) {
  return Purge({PurgeGroup{"1", 0, absl::ToUnixMicros(cutoff)}},
               absl::ToUnixMicros(cutoff), actor);
}

absl::StatusOr<int> SqliteExchangeStore::PurgeExpired(
    const config::RetentionSettings& policy, absl::Time now,
    const std::string& actor) {
  const auto cutoff = [&](int days) {
    return absl::ToUnixMicros(now - absl::Hours(24) * days);
  };
  std::vector<PurgeGroup> groups;
  for (int kind = v1::MessageKind_MIN + 1; kind <= v1::MessageKind_MAX;
       ++kind) {
    if (!v1::MessageKind_IsValid(kind)) continue;
    const int days = policy.DaysFor(static_cast<v1::MessageKind>(kind));
    if (days > 0) groups.push_back({"m.kind = ?3", kind, cutoff(days)});
  }
  if (policy.message_days > 0) {
    // Rows of no kind this build knows: the default applies.
    groups.push_back(
        {absl::StrCat("(m.kind IS NULL OR m.kind NOT BETWEEN 1 AND ",
                      v1::MessageKind_MAX, ")"),
         0, cutoff(policy.message_days)});
  }
  // A conflicting envelope's kind is known only from bytes the gateway
  // refused: it follows the shortest retention configured for any message.
  std::optional<int64_t> conflicts_cutoff;
  for (const PurgeGroup& group : groups) {
    conflicts_cutoff =
        std::max(conflicts_cutoff.value_or(group.cutoff_us), group.cutoff_us);
  }
  return Purge(groups, conflicts_cutoff, actor);
}

absl::StatusOr<int> SqliteExchangeStore::Purge(
    const std::vector<PurgeGroup>& groups,
    std::optional<int64_t> conflicts_cutoff_us, const std::string& actor) {
  // Bounded transactions, so office calls are never held up for long.
  constexpr int kBatch = 500;
  // The entries about a message are found by their subject rows, which the
  // newest entries may not have yet.
  CB_RETURN_IF_ERROR(audit_->CatchUpTree());
  int purged = 0;
  for (const PurgeGroup& group : groups) {
    int batch = kBatch;
    while (batch == kBatch) {
      CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn)
                                        -> absl::Status {
        batch = 0;
        // Entries appended since the purge's CatchUpTree get their subject
        // rows first: the purge finds entries by them.
        CB_RETURN_IF_ERROR(audit_->CatchUpInTransaction(conn));
        std::vector<std::string> expired;
        {
          CB_ASSIGN_OR_RETURN(
              auto find,
              conn.Prepare(absl::StrCat(
                  "SELECT m.message_id FROM messages m WHERE m.purged_us IS "
                  "NULL AND m.created_us < ?1 AND ",
                  group.where,
                  " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE "
                  "o.message_id = m.message_id AND o.state IN (1, 2)) "
                  "ORDER BY m.seq LIMIT ?2")));
          find.Bind(1, group.cutoff_us).Bind(2, kBatch);
          if (group.where.find("?3") != std::string::npos) {
            find.Bind(3, group.kind);
          }
          while (true) {
            CB_ASSIGN_OR_RETURN(const bool row, find.Step());
            if (!row) break;
            expired.push_back(find.ColumnText(0));
          }
        }
        const absl::Time now = clock_->Now();
        for (const std::string& message_id : expired) {
          CB_RETURN_IF_ERROR(PurgeMessageInTransaction(conn, *audit_, sealer_,
                                                       message_id, actor, now));
          ++batch;
        }
        return absl::OkStatus();
      }));
      purged += batch;
      if (batch > 0) db_->OweWalTruncation();
    }
  }
  int64_t conflicts = 0;
  if (conflicts_cutoff_us.has_value()) {
    // Envelopes kept as evidence of a reused id hold payloads too.
    CB_RETURN_IF_ERROR(
        db_->Write([&](sqlite::Connection& conn) -> absl::Status {
          CB_ASSIGN_OR_RETURN(
              auto emptied,
              conn.Prepare("UPDATE envelope_conflicts SET signed_envelope "
                           "= X'' WHERE received_us < ? AND "
                           "signed_envelope != X''"));
          emptied.Bind(1, *conflicts_cutoff_us);
          CB_RETURN_IF_ERROR(emptied.Run());
          conflicts = conn.changes();
          return absl::OkStatus();
        }));
  }
  // The purged bytes and shredded keys are zeroed in their pages; the page
  // images that held them go with the WAL.
  if (conflicts > 0) db_->OweWalTruncation();
  // Also after an earlier run that failed half-way or could not truncate.
  if (db_->wal_truncation_owed()) CB_RETURN_IF_ERROR(db_->TruncateWal());
  return purged;
}

absl::Status PurgeMessageInTransaction(
    sqlite::Connection& conn, SqliteAuditLog& audit, const RecordSealer* sealer,
    const std::string& message_id, const std::string& actor, absl::Time now) {
  for (const char* sql : {
           // The request's hash is an unsalted digest of the body.
           "UPDATE messages SET body = X'', sealed = 0, request_id = NULL, "
           "request_hash = NULL, purged_us = ?2 WHERE message_id = ?1",
           // A cancellation's reason is free text an office wrote about
           // the message: "cancelled by <office>: <reason>" keeps who.
           "UPDATE outbox SET signed_envelope = X'', sealed = 0, "
           "last_error = CASE WHEN state = 6 AND instr(last_error, ': ') > 0 "
           "THEN substr(last_error, 1, instr(last_error, ': ') - 1) "
           "ELSE last_error END WHERE message_id = ?1",
           "UPDATE inbound SET signed_envelope = X'', sealed = 0 "
           "WHERE message_id = ?1 OR audit_index IN (SELECT idx "
           "FROM audit_subjects WHERE subject = ?1)",
           "UPDATE audit_log SET salt = NULL WHERE idx IN "
           "(SELECT idx FROM audit_subjects WHERE subject = ?1)",
       }) {
    CB_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(sql));
    stmt.Bind(1, message_id);
    if (absl::string_view(sql).find("?2") != absl::string_view::npos) {
      stmt.Bind(2, absl::ToUnixMicros(now));
    }
    CB_RETURN_IF_ERROR(stmt.Run());
  }
  // Copies of the sealed payloads elsewhere (free pages, the WAL, backups)
  // die with the key.
  if (sealer != nullptr) {
    CB_RETURN_IF_ERROR(sealer->Shred(conn, MessageRecord(message_id)));
  }
  AuditEvent event;
  event.actor = actor;
  event.action = kRetentionPurgeAction;
  event.subjects = {message_id};
  return audit.AppendInTransaction(conn, event).status();
}

namespace {

// A payload column that may hold rows written in the clear.
struct ClearTable {
  const char* select;  // key, message id ('' for inbound), payload; LIMIT ?
  const char* update;  // ?1 sealed bytes, ?2 key[, ?3 message id]
  bool envelope;       // the column is a SignedEnvelope
  const char* field;
};

struct ClearRow {
  std::string key;
  std::string message_id;  // empty for inbound: the envelope names it
  std::string bytes;
};

// Seals `row` of `table` and audits it as kSealedAtOpenAction by `actor`,
// named by the message id first (so that a purge of the message clears
// this entry's salt with its others), then the key if it differs, then the
// column; payload the bytes as found.
absl::Status SealClearRow(sqlite::Connection& conn, const RecordSealer* sealer,
                          SqliteAuditLog& audit, const ClearTable& table,
                          ClearRow row, const std::string& actor) {
  StoredPayload stored;
  if (table.envelope) {
    CB_ASSIGN_OR_RETURN(
        const v1::SignedEnvelope envelope,
        ParseStored<v1::SignedEnvelope>(row.bytes, "envelope", row.key));
    if (row.message_id.empty()) {
      CB_ASSIGN_OR_RETURN(
          const v1::Envelope parsed,
          ParseStored<v1::Envelope>(envelope.envelope(), "envelope", row.key));
      row.message_id = parsed.message().message_id();
    }
    CB_ASSIGN_OR_RETURN(
        stored, ToStoredEnvelope(sealer, conn, MessageRecord(row.message_id),
                                 table.field, envelope));
  } else {
    CB_ASSIGN_OR_RETURN(stored,
                        ToStored(sealer, conn, MessageRecord(row.message_id),
                                 table.field, row.bytes));
  }
  CB_ASSIGN_OR_RETURN(auto update, conn.Prepare(table.update));
  update.BindBlob(1, stored.bytes).Bind(2, row.key);
  if (absl::string_view(table.update).find("?3") != absl::string_view::npos) {
    update.Bind(3, row.message_id);
  }
  CB_RETURN_IF_ERROR(update.Run());
  AuditEvent event;
  event.actor = actor;
  event.action = kSealedAtOpenAction;
  event.subjects = {row.message_id};
  if (row.key != row.message_id) event.subjects.push_back(row.key);
  event.subjects.push_back(table.field);
  event.payload = std::move(row.bytes);
  return audit.AppendInTransaction(conn, event).status();
}

}  // namespace

absl::StatusOr<int> SqliteExchangeStore::SealStoredPayloads(
    const std::string& actor) {
  if (sealer_ == nullptr) {
    return absl::FailedPreconditionError("sealing needs the data key");
  }
  constexpr int kBatch = 500;
  int sealed = 0;
  // Each table in batches: rows are selected by their `sealed` flag, which
  // the same transaction sets.
  for (const ClearTable& table : {
           ClearTable{"SELECT message_id, message_id, body FROM messages "
                      "WHERE sealed = 0 AND purged_us IS NULL ORDER BY seq "
                      "LIMIT ?",
                      "UPDATE messages SET body = ?, sealed = 1 "
                      "WHERE message_id = ?",
                      false, kBodyField},
           ClearTable{"SELECT envelope_id, message_id, signed_envelope FROM "
                      "outbox WHERE sealed = 0 AND length(signed_envelope) > "
                      "0 ORDER BY seq LIMIT ?",
                      "UPDATE outbox SET signed_envelope = ?, sealed = 1 "
                      "WHERE envelope_id = ?",
                      true, kOutboxEnvelopeField},
           ClearTable{"SELECT envelope_id, '', signed_envelope FROM inbound "
                      "WHERE sealed = 0 AND length(signed_envelope) > 0 "
                      "ORDER BY audit_index LIMIT ?",
                      "UPDATE inbound SET signed_envelope = ?1, sealed = 1, "
                      "message_id = ?3 WHERE envelope_id = ?2",
                      true, kInboundEnvelopeField},
       }) {
    int batch = kBatch;
    while (batch == kBatch) {
      CB_RETURN_IF_ERROR(
          db_->Write([&](sqlite::Connection& conn) -> absl::Status {
            batch = 0;
            std::vector<ClearRow> rows;
            {
              CB_ASSIGN_OR_RETURN(auto find, conn.Prepare(table.select));
              find.Bind(1, kBatch);
              while (true) {
                CB_ASSIGN_OR_RETURN(const bool row, find.Step());
                if (!row) break;
                rows.push_back({find.ColumnText(0), find.ColumnText(1),
                                find.ColumnBlob(2)});
              }
            }
            for (ClearRow& row : rows) {
              CB_RETURN_IF_ERROR(SealClearRow(conn, sealer_, *audit_, table,
                                              std::move(row), actor));
              ++batch;
            }
            return absl::OkStatus();
          }));
      sealed += batch;
    }
  }
  return sealed;
}

// --- Incoming ----------------------------------------------------------------

absl::StatusOr<InboundResult> SqliteExchangeStore::AcceptInbound(
    const v1::SignedEnvelope& signed_envelope, const v1::Envelope& parsed,
    const std::vector<std::string>& inbox_offices,
    const std::function<absl::StatusOr<v1::SignedReceipt>(
        uint64_t audit_index, absl::Time received_at)>& make_receipt,
    const AuditEvent& audit) {
  std::vector<InboundEnvelope> one(1);
  one[0].signed_envelope = &signed_envelope;
  one[0].parsed = &parsed;
  one[0].inbox_offices = inbox_offices;
  one[0].audit = audit;
  std::vector<absl::StatusOr<InboundResult>> results = AcceptInboundBatch(
      one, [&](size_t, uint64_t audit_index, absl::Time received_at) {
        return make_receipt(audit_index, received_at);
      });
  return std::move(results[0]);
}

std::vector<absl::StatusOr<InboundResult>>
SqliteExchangeStore::AcceptInboundBatch(
    const std::vector<InboundEnvelope>& envelopes,
    const std::function<absl::StatusOr<v1::SignedReceipt>(
        size_t position, uint64_t audit_index, absl::Time received_at)>&
        make_receipt) {
  // Hashing and serializing happen before the writer is taken.
  std::vector<std::string> digests;
  std::vector<std::string> bytes;
  digests.reserve(envelopes.size());
  bytes.reserve(envelopes.size());
  for (const InboundEnvelope& in : envelopes) {
    digests.push_back(exchange::EnvelopeDigest(*in.signed_envelope));
    bytes.push_back(exchange::StoredBytes(*in.signed_envelope));
  }
  std::vector<absl::StatusOr<InboundResult>> results;
  std::vector<Conflict> conflicts;
  int64_t newest_cursor = 0;
  const absl::Status written =
      db_->Write([&](sqlite::Connection& conn) -> absl::Status {
        results.clear();
        conflicts.assign(envelopes.size(), Conflict::kNone);
        newest_cursor = 0;
        for (size_t i = 0; i < envelopes.size(); ++i) {
          CB_RETURN_IF_ERROR(conn.Run("SAVEPOINT inbound_envelope"));
          Conflict conflict = Conflict::kNone;
          absl::StatusOr<InboundResult> result = AcceptInTransaction(
              conn, envelopes[i], digests[i], bytes[i],
              [&](uint64_t audit_index, absl::Time received_at) {
                return make_receipt(i, audit_index, received_at);
              },
              &conflict, &newest_cursor);
          // A failed envelope leaves nothing behind; the evidence of a
          // conflict is kept. Should SQLite have rolled the whole
          // transaction back (a full disk), the batch fails with the cause.
          if (!result.ok()) {
            if (!conn.InTransaction()) return result.status();
            CB_RETURN_IF_ERROR(conn.Run("ROLLBACK TO inbound_envelope"));
          }
          CB_RETURN_IF_ERROR(conn.Run("RELEASE inbound_envelope"));
          conflicts[i] = conflict;
          results.push_back(std::move(result));
        }
        return absl::OkStatus();
      });
  if (!written.ok()) {
    return std::vector<absl::StatusOr<InboundResult>>(envelopes.size(),
                                                      written);
  }
  for (size_t i = 0; i < envelopes.size(); ++i) {
    const std::string reused =
        conflicts[i] == Conflict::kNone
            ? std::string()
            : absl::StrCat("envelope_id ", envelopes[i].parsed->envelope_id(),
                           " was already received with other content");
    switch (conflicts[i]) {
      case Conflict::kNone:
        break;
      case Conflict::kKept:
        results[i] =
            AuditedByStore(exchange::Permanently(absl::AlreadyExistsError(
                absl::StrCat(reused, "; kept as evidence"))));
        break;
      case Conflict::kKeptBefore:
        results[i] =
            exchange::Permanently(absl::AlreadyExistsError(absl::StrCat(
                reused, "; these bytes are kept as evidence already")));
        break;
      case Conflict::kNotKept:
        results[i] =
            exchange::Permanently(absl::AlreadyExistsError(absl::StrCat(
                reused, "; ", kMaxConflictsKept,
                " other versions are kept as evidence, this one is not")));
        break;
    }
  }
  if (newest_cursor > 0) AdvanceInboxHead(newest_cursor);
  return results;
}

absl::StatusOr<std::optional<v1::CaseReference>> SqliteExchangeStore::HeldCase(
    sqlite::Connection& conn, const std::string& exchange_id) const {
  CB_ASSIGN_OR_RETURN(
      auto stmt,
      conn.Prepare(
          "SELECT body, sealed, version FROM cases WHERE exchange_id = ?"));
  stmt.Bind(1, exchange_id);
  CB_ASSIGN_OR_RETURN(const bool found, stmt.Step());
  if (!found) return std::optional<v1::CaseReference>();
  CB_ASSIGN_OR_RETURN(
      v1::CaseReference held,
      FromStoredCase(sealer_, conn, exchange_id, stmt.ColumnBlob(0),
                     stmt.ColumnInt(1) != 0, stmt.ColumnInt(2)));
  return std::optional<v1::CaseReference>(std::move(held));
}

absl::StatusOr<std::optional<v1::SignedReceipt>>
SqliteExchangeStore::ReceiptFor(const std::string& envelope_id,
                                const std::string& digest) {
  std::optional<v1::SignedReceipt> receipt;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto find, conn.Prepare("SELECT receipt FROM inbound WHERE "
                                "envelope_id = ? AND envelope_sha256 = ?"));
    find.Bind(1, envelope_id).BindBlob(2, digest);
    CB_ASSIGN_OR_RETURN(const bool seen, find.Step());
    if (!seen) return absl::OkStatus();
    CB_ASSIGN_OR_RETURN(
        receipt, ParseStored<v1::SignedReceipt>(find.ColumnBlob(0), "receipt",
                                                envelope_id));
    return absl::OkStatus();
  }));
  return receipt;
}

absl::StatusOr<InboundResult> SqliteExchangeStore::AcceptInTransaction(
    sqlite::Connection& conn, const InboundEnvelope& in,
    const std::string& digest, const std::string& bytes,
    const std::function<absl::StatusOr<v1::SignedReceipt>(
        uint64_t audit_index, absl::Time received_at)>& make_receipt,
    Conflict* conflict, int64_t* newest_cursor) {
  const v1::Envelope& parsed = *in.parsed;
  const std::string& envelope_id = parsed.envelope_id();
  InboundResult result;
  CB_ASSIGN_OR_RETURN(
      auto find, conn.Prepare("SELECT envelope_sha256, receipt FROM inbound "
                              "WHERE envelope_id = ?"));
  find.Bind(1, envelope_id);
  CB_ASSIGN_OR_RETURN(const bool seen, find.Step());
  const absl::Time now = TruncateToMicros(clock_->Now());
  if (seen) {
    if (find.ColumnBlob(0) == digest) {
      CB_ASSIGN_OR_RETURN(result.receipt,
                          ParseStored<v1::SignedReceipt>(
                              find.ColumnBlob(1), "receipt", envelope_id));
      result.replay = true;
      return result;
    }
    // The same bytes again, or yet another version beyond those kept: a
    // faulty or compromised peer repeating itself must not grow the
    // evidence and the log at will. Refused all the same, and audited at
    // the rate of the receiver's other refusals.
    CB_ASSIGN_OR_RETURN(
        auto kept,
        conn.Prepare("SELECT COUNT(*), "
                     "COALESCE(MAX(signed_envelope = ?2), 0) "
                     "FROM envelope_conflicts WHERE envelope_id = ?1"));
    kept.Bind(1, envelope_id).BindBlob(2, bytes);
    CB_ASSIGN_OR_RETURN(const bool counted, kept.Step());
    if (counted && kept.ColumnInt(1) != 0) {
      *conflict = Conflict::kKeptBefore;
      return result;
    }
    if (counted && kept.ColumnInt(0) >= kMaxConflictsKept) {
      *conflict = Conflict::kNotKept;
      return result;
    }
    // Committed even though the envelope is refused: the evidence outlives
    // the refusal.
    CB_ASSIGN_OR_RETURN(
        auto keep,
        conn.Prepare("INSERT INTO envelope_conflicts(envelope_id, "
                     "signed_envelope, received_us) VALUES(?, ?, ?)"));
    keep.Bind(1, envelope_id)
        .BindBlob(2, bytes)
        .Bind(3, absl::ToUnixMicros(now));
    CB_RETURN_IF_ERROR(keep.Run());
    AuditEvent event = in.audit;
    event.subjects.push_back(envelope_id);
    event.outcome = absl::AlreadyExistsError(
        absl::StrCat("envelope_id ", envelope_id,
                     " was already received with other content; kept as "
                     "evidence"));
    CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, event).status());
    *conflict = Conflict::kKept;
    return result;
  }

  v1::CaseMessage message = parsed.message();
  // When the peer purged the case's personal data is its own record: ours
  // says when this gateway purged it, if it did.
  if (message.has_case_reference()) {
    message.mutable_case_reference()->clear_personal_data_purged_at();
  }
  CB_ASSIGN_OR_RETURN(const bool taken,
                      MessageExists(conn, message.message_id()));
  if (taken) {
    return exchange::Permanently(absl::AlreadyExistsError(
        absl::StrCat("message_id ", message.message_id(),
                     " was already received in another envelope")));
  }

  CB_ASSIGN_OR_RETURN(const std::optional<v1::CaseReference> held,
                      HeldCase(conn, message.exchange_id()));
  if (held.has_value() && HoldToHeldCase(*held, &message)) {
    result.held =
        InboundResult::Held{held->handling_code(), message.handling_code()};
  }

  AuditEvent event = in.audit;
  event.subjects.push_back(envelope_id);
  event.subjects.push_back(message.message_id());
  CB_ASSIGN_OR_RETURN(const uint64_t index,
                      audit_->AppendInTransaction(conn, event));
  CB_ASSIGN_OR_RETURN(result.receipt, make_receipt(index, now));
  // The handling it is delivered under, where that is not the one it was
  // sent under, is on record with it.
  if (result.held.has_value() && !in.held_audit.action.empty()) {
    AuditEvent held_event = in.held_audit;
    held_event.subjects = {message.exchange_id(), message.message_id(),
                           envelope_id};
    held_event.payload =
        HandlingNotice(message.handling_code(), message.handling_restriction());
    CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, held_event).status());
  }

  StoredPayload stored;
  if (sealer_ == nullptr) {
    stored.bytes = bytes;
  } else {
    CB_ASSIGN_OR_RETURN(
        stored,
        ToStoredEnvelope(sealer_, conn, MessageRecord(message.message_id()),
                         kInboundEnvelopeField, *in.signed_envelope));
  }
  CB_ASSIGN_OR_RETURN(
      auto insert,
      conn.Prepare("INSERT INTO inbound(envelope_id, envelope_sha256, "
                   "signed_envelope, receipt, received_us, audit_index, "
                   "sealed, message_id) VALUES(?, ?, ?, ?, ?, ?, ?, ?)"));
  insert.Bind(1, envelope_id)
      .BindBlob(2, digest)
      .BindBlob(3, stored.bytes)
      .Bind(7, int64_t{stored.sealed})
      .Bind(8, message.message_id())
      .BindBlob(4, result.receipt.SerializeAsString())
      .Bind(5, absl::ToUnixMicros(now))
      .Bind(6, static_cast<int64_t>(index));
  CB_RETURN_IF_ERROR(insert.Run());

  *message.mutable_received_at() = ToProto(now);
  CB_RETURN_IF_ERROR(InsertMessage(sealer_, conn, message, kIncoming, now, {}));
  if (message.kind() == v1::MESSAGE_KIND_CASE_SHARE && shared_case_sink_) {
    CB_RETURN_IF_ERROR(shared_case_sink_(conn, message.case_reference()));
  }
  if (message.kind() == v1::MESSAGE_KIND_DISSEMINATION_GRANT) {
    // The first grant naming an office is kept; later ones change nothing.
    const v1::DisseminationGrant& grant = message.dissemination_grant();
    std::vector<std::string> offices(grant.offices().begin(),
                                     grant.offices().end());
    if (grant.any_office()) offices.push_back("*");
    for (const std::string& office : offices) {
      CB_ASSIGN_OR_RETURN(
          auto granted,
          conn.Prepare("INSERT INTO dissemination_grants(exchange_id, office, "
                       "message_id, granted_by, received_us) "
                       "VALUES(?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"));
      granted.Bind(1, message.exchange_id())
          .Bind(2, office)
          .Bind(3, message.message_id())
          .Bind(4, message.sender_office())
          .Bind(5, absl::ToUnixMicros(now));
      CB_RETURN_IF_ERROR(granted.Run());
    }
  }
  if (message.kind() == v1::MESSAGE_KIND_DISSEMINATION_WITHDRAWAL) {
    // The permissions withdrawn are deleted (a later grant gives them
    // anew); the withdrawal is kept, one row per office named, '*' for all.
    const v1::DisseminationGrant& withdrawn = message.dissemination_grant();
    std::vector<std::string> offices(withdrawn.offices().begin(),
                                     withdrawn.offices().end());
    if (withdrawn.any_office()) offices = {"*"};
    for (const std::string& office : offices) {
      CB_ASSIGN_OR_RETURN(
          auto revoke,
          conn.Prepare(office == "*"
                           ? "DELETE FROM dissemination_grants "
                             "WHERE exchange_id = ?1"
                           : "DELETE FROM dissemination_grants "
                             "WHERE exchange_id = ?1 AND office = ?2"));
      revoke.Bind(1, message.exchange_id());
      if (office != "*") revoke.Bind(2, office);
      CB_RETURN_IF_ERROR(revoke.Run());
      CB_ASSIGN_OR_RETURN(
          auto keep,
          conn.Prepare("INSERT INTO dissemination_withdrawals(message_id, "
                       "office, exchange_id, withdrawn_by, received_us) "
                       "VALUES(?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"));
      keep.Bind(1, message.message_id())
          .Bind(2, office)
          .Bind(3, message.exchange_id())
          .Bind(4, message.sender_office())
          .Bind(5, absl::ToUnixMicros(now));
      CB_RETURN_IF_ERROR(keep.Run());
    }
  }
  if (message.kind() == v1::MESSAGE_KIND_ACKNOWLEDGEMENT) {
    // The first acknowledgement of one of our messages is recorded on it.
    CB_ASSIGN_OR_RETURN(
        auto acked, conn.Prepare("UPDATE outbox SET acknowledged_us = ? WHERE "
                                 "message_id = ? AND acknowledged_us IS NULL"));
    acked.Bind(1, absl::ToUnixMicros(now)).Bind(2, message.in_reply_to());
    CB_RETURN_IF_ERROR(acked.Run());
  }

  int64_t newest = *newest_cursor;
  for (const std::string& office : in.inbox_offices) {
    // Prepared per office: a statement is reset only when released.
    CB_ASSIGN_OR_RETURN(
        auto deliver,
        conn.Prepare("INSERT INTO inbox(office, message_id) VALUES(?, ?) "
                     "ON CONFLICT DO NOTHING RETURNING cursor"));
    deliver.Bind(1, office).Bind(2, message.message_id());
    CB_ASSIGN_OR_RETURN(const bool inserted, deliver.Step());
    if (inserted) newest = std::max(newest, deliver.ColumnInt(0));
  }
  // Only once nothing can fail: a rolled-back envelope moves no cursor.
  *newest_cursor = newest;
  result.replay = false;
  return result;
}

absl::StatusOr<std::vector<InboxItem>> SqliteExchangeStore::ReadInbox(
    const std::string& office, int64_t after_cursor, size_t max) {
  std::vector<InboxItem> items;
  if (max == 0) return items;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        conn.Prepare("SELECT i.cursor, i.message_id, i.acknowledged_us, "
                     "m.body, m.sealed FROM inbox i JOIN messages m "
                     "ON m.message_id = i.message_id "
                     "WHERE i.office = ? AND i.cursor > ? "
                     "AND m.purged_us IS NULL "
                     "ORDER BY i.cursor LIMIT ?"));
    stmt.Bind(1, office).Bind(2, after_cursor).Bind(3, Limit(max));
    while (true) {
      CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
      if (!row) break;
      InboxItem item;
      item.cursor = stmt.ColumnInt(0);
      if (!stmt.ColumnIsNull(2)) {
        item.acknowledged_at = absl::FromUnixMicros(stmt.ColumnInt(2));
      }
      CB_ASSIGN_OR_RETURN(
          item.message,
          LoadMessage(sealer_, conn, stmt.ColumnText(1), stmt.ColumnBlob(3),
                      stmt.ColumnInt(4) != 0));
      items.push_back(std::move(item));
    }
    return absl::OkStatus();
  }));
  return items;
}

int64_t SqliteExchangeStore::InboxHead() const {
  absl::MutexLock lock(&head_mu_);
  return inbox_head_;
}

bool SqliteExchangeStore::WaitForInbox(int64_t seen_head,
                                       absl::Duration timeout) {
  absl::MutexLock lock(&head_mu_);
  const auto moved = [this, seen_head] {
    head_mu_.AssertHeld();
    return inbox_head_ > seen_head;
  };
  return head_mu_.AwaitWithTimeout(absl::Condition(&moved), timeout);
}

void SqliteExchangeStore::AdvanceInboxHead(int64_t cursor) {
  absl::MutexLock lock(&head_mu_);
  inbox_head_ = std::max(inbox_head_, cursor);
}

namespace {

// Which inbox event a row is being marked with.
enum class InboxMark { kDelivered, kAcknowledged };

// Stamps `office`'s inbox row of `message_id` with `at` in the column of
// `mark`, inside the caller's transaction. Returns whether the row was
// stamped now (false: it already was). NOT_FOUND if there is no such row.
absl::StatusOr<bool> MarkInboxRow(sqlite::Connection& conn, InboxMark mark,
                                  const std::string& office,
                                  const std::string& message_id,
                                  absl::Time at) {
  const bool delivered = mark == InboxMark::kDelivered;
  CB_ASSIGN_OR_RETURN(
      auto find,
      conn.Prepare(delivered ? "SELECT delivered_us FROM inbox "
                               "WHERE office = ? AND message_id = ?"
                             : "SELECT acknowledged_us FROM inbox "
                               "WHERE office = ? AND message_id = ?"));
  find.Bind(1, office).Bind(2, message_id);
  CB_ASSIGN_OR_RETURN(const bool row, find.Step());
  if (!row) {
    return absl::NotFoundError(absl::StrCat(
        "message ", message_id, " is not in the inbox of ", office));
  }
  if (!find.ColumnIsNull(0)) return false;
  CB_ASSIGN_OR_RETURN(
      auto update,
      conn.Prepare(delivered ? "UPDATE inbox SET delivered_us = ? "
                               "WHERE office = ? AND message_id = ?"
                             : "UPDATE inbox SET acknowledged_us = ? "
                               "WHERE office = ? AND message_id = ?"));
  update.Bind(1, absl::ToUnixMicros(at)).Bind(2, office).Bind(3, message_id);
  CB_RETURN_IF_ERROR(update.Run());
  CB_RETURN_IF_ERROR(ChangedOneRow(conn, "marking an inbox message"));
  return true;
}

// Marks `message_id` acknowledged in `office`'s inbox; FAILED_PRECONDITION
// if it already was.
absl::Status MarkAcknowledged(sqlite::Connection& conn,
                              const std::string& office,
                              const std::string& message_id, absl::Time at) {
  CB_ASSIGN_OR_RETURN(
      const bool marked,
      MarkInboxRow(conn, InboxMark::kAcknowledged, office, message_id, at));
  if (!marked) {
    return absl::FailedPreconditionError(absl::StrCat(
        "message ", message_id, " is already acknowledged by ", office));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SqliteExchangeStore::AcknowledgeInTransaction(
    sqlite::Connection& conn, const std::string& office,
    const std::string& message_id, absl::Time at, const AuditEvent& audit) {
  CB_RETURN_IF_ERROR(MarkAcknowledged(conn, office, message_id, at));
  AuditEvent event = audit;
  event.subjects.push_back(message_id);
  return audit_->AppendInTransaction(conn, event).status();
}

absl::Status SqliteExchangeStore::RecordInboxDelivery(
    const std::string& office, const std::string& message_id, absl::Time at,
    const AuditEvent& audit) {
  return db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        const bool marked,
        MarkInboxRow(conn, InboxMark::kDelivered, office, message_id, at));
    if (!marked) return absl::OkStatus();  // delivered before: audited then
    AuditEvent event = audit;
    event.subjects.push_back(message_id);
    return audit_->AppendInTransaction(conn, event).status();
  });
}

std::vector<absl::Status> SqliteExchangeStore::RecordInboxDeliveries(
    const std::string& office, const std::vector<InboxDelivery>& deliveries,
    absl::Time at) {
  std::vector<absl::Status> statuses;
  const absl::Status written =
      db_->Write([&](sqlite::Connection& conn) -> absl::Status {
        statuses.clear();
        for (const InboxDelivery& delivery : deliveries) {
          // NOT_FOUND is found before anything is written.
          absl::StatusOr<bool> marked = MarkInboxRow(
              conn, InboxMark::kDelivered, office, delivery.message_id, at);
          if (!marked.ok() &&
              marked.status().code() == absl::StatusCode::kNotFound) {
            statuses.push_back(marked.status());
            continue;
          }
          CB_RETURN_IF_ERROR(marked.status());
          if (*marked) {  // else delivered before: audited then
            AuditEvent event = delivery.audit;
            event.subjects.push_back(delivery.message_id);
            CB_RETURN_IF_ERROR(
                audit_->AppendInTransaction(conn, event).status());
          }
          statuses.push_back(absl::OkStatus());
        }
        return absl::OkStatus();
      });
  if (!written.ok())
    return std::vector<absl::Status>(deliveries.size(), written);
  return statuses;
}

absl::Status SqliteExchangeStore::Acknowledge(const std::string& office,
                                              const std::string& message_id,
                                              absl::Time at,
                                              const AuditEvent& audit) {
  return db_->Write([&](sqlite::Connection& conn) {
    return AcknowledgeInTransaction(conn, office, message_id, at, audit);
  });
}

absl::StatusOr<bool> SqliteExchangeStore::DisseminationGranted(
    const std::string& exchange_id, const std::string& office) {
  bool granted = false;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        conn.Prepare("SELECT 1 FROM dissemination_grants WHERE exchange_id = ? "
                     "AND office IN (?, '*') LIMIT 1"));
    stmt.Bind(1, exchange_id).Bind(2, office);
    CB_ASSIGN_OR_RETURN(granted, stmt.Step());
    return absl::OkStatus();
  }));
  return granted;
}

absl::StatusOr<int64_t> SqliteExchangeStore::NewestShareReceived(
    const std::string& exchange_id) {
  int64_t newest = 0;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        conn.Prepare("SELECT MAX(seq) FROM messages WHERE exchange_id = ? "
                     "AND direction = ? AND kind = ?"));
    stmt.Bind(1, exchange_id)
        .Bind(2, kIncoming)
        .Bind(3, static_cast<int64_t>(v1::MESSAGE_KIND_CASE_SHARE));
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (row && !stmt.ColumnIsNull(0)) newest = stmt.ColumnInt(0);
    return absl::OkStatus();
  }));
  return newest;
}

absl::StatusOr<int> SqliteExchangeStore::ForwardCase(
    const std::string& exchange_id, const std::string& office, int64_t through,
    bool with_h2, const AuditEvent& audit) {
  int added = 0;
  int64_t newest = 0;
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    std::vector<std::string> shares;
    int held_back = 0;
    {
      CB_ASSIGN_OR_RETURN(
          auto find,
          conn.Prepare("SELECT message_id, body, sealed FROM messages "
                       "WHERE exchange_id = ? AND direction = ? AND kind = ? "
                       "AND seq <= ? ORDER BY seq"));
      find.Bind(1, exchange_id)
          .Bind(2, kIncoming)
          .Bind(3, static_cast<int64_t>(v1::MESSAGE_KIND_CASE_SHARE))
          .Bind(4, through);
      while (true) {
        CB_ASSIGN_OR_RETURN(const bool row, find.Step());
        if (!row) break;
        std::string message_id = find.ColumnText(0);
        if (!with_h2) {
          std::string body = find.ColumnBlob(1);
          bool h2 = body.empty();  // purged: its marking is unknown
          if (!h2) {
            CB_ASSIGN_OR_RETURN(
                const v1::CaseMessage share,
                LoadMessage(sealer_, conn, message_id, std::move(body),
                            find.ColumnInt(2) != 0));
            h2 = share.handling_code() == v1::HANDLING_CODE_H2 ||
                 share.case_reference().handling_code() == v1::HANDLING_CODE_H2;
          }
          if (h2) {
            ++held_back;
            continue;
          }
        }
        shares.push_back(std::move(message_id));
      }
    }
    if (shares.empty() && held_back > 0) {
      return absl::PermissionDeniedError(absl::StrCat(
          "handling code H2: every version of case ", exchange_id,
          " received so far is marked H2 and may not be passed on to ", office,
          " without the originator's permission"));
    }
    if (shares.empty()) {
      return absl::NotFoundError(
          absl::StrCat("case ", exchange_id, " was not shared with this side"));
    }
    CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, audit).status());
    for (const std::string& message_id : shares) {
      CB_ASSIGN_OR_RETURN(
          auto deliver,
          conn.Prepare("INSERT INTO inbox(office, message_id, forwarded_by) "
                       "VALUES(?, ?, ?) ON CONFLICT DO NOTHING "
                       "RETURNING cursor"));
      deliver.Bind(1, office).Bind(2, message_id).Bind(3, audit.actor);
      CB_ASSIGN_OR_RETURN(const bool inserted, deliver.Step());
      if (inserted) {
        ++added;
        newest = std::max(newest, deliver.ColumnInt(0));
      }
    }
    return absl::OkStatus();
  }));
  if (newest > 0) AdvanceInboxHead(newest);
  return added;
}

absl::StatusOr<std::optional<v1::CaseReference>>
SqliteExchangeStore::NewestShareIn(const std::string& exchange_id,
                                   const std::string& office) {
  std::optional<v1::CaseReference> newest;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        conn.Prepare("SELECT m.message_id, m.body, m.sealed FROM inbox i "
                     "JOIN messages m ON m.message_id = i.message_id "
                     "WHERE i.office = ? AND m.exchange_id = ? "
                     "AND m.direction = ? AND m.kind = ? "
                     "AND m.purged_us IS NULL"));
    stmt.Bind(1, office)
        .Bind(2, exchange_id)
        .Bind(3, kIncoming)
        .Bind(4, static_cast<int64_t>(v1::MESSAGE_KIND_CASE_SHARE));
    while (true) {
      CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
      if (!row) break;
      CB_ASSIGN_OR_RETURN(
          v1::CaseMessage share,
          LoadMessage(sealer_, conn, stmt.ColumnText(0), stmt.ColumnBlob(1),
                      stmt.ColumnInt(2) != 0));
      if (!share.has_case_reference()) continue;
      if (!newest.has_value() ||
          share.case_reference().version() > newest->version()) {
        newest = std::move(*share.mutable_case_reference());
      }
    }
    return absl::OkStatus();
  }));
  return newest;
}

absl::StatusOr<QueuedMessage> SqliteExchangeStore::AcknowledgeAndReply(
    const std::string& office, const std::string& message_id, absl::Time at,
    const AuditEvent& audit,
    const std::function<absl::StatusOr<OutgoingMessage>(
        const v1::CaseMessage& acknowledged)>& reply,
    const AuditEvent& reply_audit) {
  QueuedMessage result;
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    CB_RETURN_IF_ERROR(MarkAcknowledged(conn, office, message_id, at));
    CB_ASSIGN_OR_RETURN(const OutgoingMessage outgoing,
                        MakeReply(conn, message_id, reply));
    // The request's note is the reply's body: the entry names the reply
    // too, so that the reply's purge clears its salt.
    AuditEvent acknowledged = audit;
    acknowledged.subjects.push_back(message_id);
    acknowledged.subjects.push_back(outgoing.message.message_id());
    CB_RETURN_IF_ERROR(
        audit_->AppendInTransaction(conn, acknowledged).status());
    // The reply's entry names its case first, like any other send.
    AuditEvent event = reply_audit;
    event.subjects.insert(event.subjects.begin(),
                          outgoing.message.exchange_id());
    CB_ASSIGN_OR_RETURN(
        result, QueueInTransaction(conn, outgoing, RequestKey{}, event));
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<OutgoingMessage> SqliteExchangeStore::MakeReply(
    sqlite::Connection& conn, const std::string& message_id,
    const std::function<absl::StatusOr<OutgoingMessage>(
        const v1::CaseMessage& acknowledged)>& reply) const {
  CB_ASSIGN_OR_RETURN(
      auto find,
      conn.Prepare("SELECT body, sealed FROM messages WHERE message_id = ?"));
  find.Bind(1, message_id);
  CB_ASSIGN_OR_RETURN(const bool row, find.Step());
  if (!row) {
    return absl::DataLossError(
        absl::StrCat("inbox message ", message_id, " has no stored message"));
  }
  CB_ASSIGN_OR_RETURN(v1::CaseMessage acknowledged,
                      LoadMessage(sealer_, conn, message_id, find.ColumnBlob(0),
                                  find.ColumnInt(1) != 0));
  // The acknowledgement travels under the message's handling as held here
  // and its case's as held now: the case may have changed since the
  // message came (a CASE_SHARE's too).
  CB_ASSIGN_OR_RETURN(const std::optional<v1::CaseReference> held,
                      HeldCase(conn, acknowledged.exchange_id()));
  if (held.has_value()) {
    HoldToCaseHandling(held->handling_code(), held->handling_restriction(),
                       &acknowledged);
  }
  // Stating both may not fit in one restriction: the case's parts come
  // first and are kept; the peer adds back what it holds from its own copy.
  acknowledged.set_handling_restriction(FitRestriction(
      acknowledged.handling_restriction(), kMaxRestrictionChars));
  return reply(acknowledged);
}

}  // namespace casebridge::server
