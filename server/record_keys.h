// Data protection at rest (docs/storage.md#data-protection): each case and
// each message has a key of its own, kept in table record_keys wrapped
// (sealed) under the gateway's data key, which never enters the database.
// A record's personal fields are sealed under its key, with associated data
// naming the record and the column, so a sealed value moved to another row
// or column does not open. Deleting the record's key (retention) shreds
// every copy of those fields at once.
#ifndef CASEBRIDGE_SERVER_RECORD_KEYS_H_
#define CASEBRIDGE_SERVER_RECORD_KEYS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "casebridge/v1/exchange.pb.h"
#include "core/clock.h"
#include "core/field_crypto.h"
#include "server/sqlite.h"

namespace casebridge::server {

// The sealed columns, as named in the associated data.
inline constexpr char kCaseBodyField[] = "cases.body";
inline constexpr char kMessageBodyField[] = "messages.body";
inline constexpr char kOutboxEnvelopeField[] = "outbox.envelope";
inline constexpr char kInboundEnvelopeField[] = "inbound.envelope";

// The audit action of a payload found in the clear and sealed when the
// store opens with its data key: one entry per row, actor this gateway,
// subjects the row's ids and its column (one of the above), payload the
// bytes as found. After the upgrade that brought data protection, an entry
// of this kind means someone wrote the database outside the gateway.
inline constexpr char kSealedAtOpenAction[] = "data.sealed_at_open";

// The audit action of a retention purge: one entry per case whose personal
// fields, or per message whose payloads, were purged (their record key
// shredded), actor this gateway, subject the exchange id or the message id.
// The offline verifier holds the store to these entries.
inline constexpr char kRetentionPurgeAction[] = "retention.purge";

// The record of a case's and of a message's key.
std::string CaseRecord(absl::string_view exchange_id);
std::string MessageRecord(absl::string_view message_id);

// The row of record_keys that holds no record's key but the data key's
// check value: a constant sealed under the data key, written when the data
// key is first used with the database. A data key that does not open it is
// not the key this database's data is sealed under.
inline constexpr char kDataKeyCheckRecord[] = "check/data-key";

// The check id of a stored check value: the first 16 hex digits of its
// SHA-256. It names which data key a database is sealed under (in errors,
// logs and the audit log) without telling anything about the key.
std::string DataKeyCheckId(absl::string_view check_value);

// The check id of the database's check value; empty if it has none.
absl::StatusOr<std::string> StoredCheckId(sqlite::Connection& conn);

// Whether `key` opens the database's check value; false if it has none.
absl::StatusOr<bool> OpensCheckValue(sqlite::Connection& conn,
                                     const crypto::FieldKey& key);

// What re-wrapping the record keys under a new data key did.
struct RewrapReport {
  int record_keys = 0;       // record keys re-wrapped (the check value aside)
  std::string old_check_id;  // of the check value replaced
  std::string new_check_id;  // of the check value written
};

// Inside the caller's write transaction: every record key's wrapping under
// `old_key` replaced by one under `new_key`, and the check value by one
// sealed under `new_key`. Shredded records have no key and stay shredded.
// FAILED_PRECONDITION if `old_key` does not open the check value (or the
// database has none); DATA_LOSS, naming the record, if a record's key does
// not open under `old_key`. On error the caller must roll back: some rows
// may already be re-wrapped.
absl::StatusOr<RewrapReport> RewrapRecordKeys(sqlite::Connection& conn,
                                              const crypto::FieldKey& old_key,
                                              const crypto::FieldKey& new_key,
                                              absl::Time now);

// Whether the database holds anything sealed: a row of record_keys (the
// check value included) or a row whose `sealed` is 1. A missing data key
// may be replaced by a new one only when it does not.
absl::StatusOr<bool> HoldsSealedData(sqlite::Connection& conn);

// Seals and opens record fields. Thread-safe; every call runs inside the
// caller's transaction on `conn` (a write transaction for Seal and Shred).
class RecordSealer {
 public:
  // `clock` must outlive the sealer.
  RecordSealer(crypto::FieldKey data_key, const Clock* clock)
      : data_key_(std::move(data_key)), clock_(clock) {}

  // `plaintext` sealed as `field` of `record`. The record's key is made (and
  // stored wrapped) on first use.
  absl::StatusOr<std::string> Seal(sqlite::Connection& conn,
                                   absl::string_view record,
                                   absl::string_view field,
                                   absl::string_view plaintext) const;
  // What Seal made. FAILED_PRECONDITION if the record's key was shredded;
  // DATA_LOSS if the value or the wrapped key does not authenticate (changed,
  // or another data key, record or field).
  absl::StatusOr<std::string> Open(sqlite::Connection& conn,
                                   absl::string_view record,
                                   absl::string_view field,
                                   absl::string_view sealed) const;
  // Deletes the record's key (OK if it has none): what was sealed under it
  // can never be opened again.
  absl::Status Shred(sqlite::Connection& conn, absl::string_view record) const;

  // Checks, inside a write transaction, that the data key is the one the
  // database's data is sealed under: it must open the check value, or, in a
  // database that has none yet, the wrapped key of a record; then writes
  // the check value if it is missing. FAILED_PRECONDITION if the key does
  // not open them.
  absl::Status CheckDataKey(sqlite::Connection& conn) const;

 private:
  absl::StatusOr<std::optional<crypto::FieldKey>> FindKey(
      sqlite::Connection& conn, absl::string_view record) const;

  const crypto::FieldKey data_key_;
  const Clock* const clock_;
};

// A payload column's stored bytes and whether they are sealed (the row's
// `sealed` column).
struct StoredPayload {
  std::string bytes;
  bool sealed = false;
};

// The stores' one path to and from a payload column. With a null `sealer`
// (a store opened without data protection) payloads are stored as they are;
// reading a sealed payload then fails with FAILED_PRECONDITION.
absl::StatusOr<StoredPayload> ToStored(const RecordSealer* sealer,
                                       sqlite::Connection& conn,
                                       absl::string_view record,
                                       absl::string_view field,
                                       absl::string_view plaintext);
absl::StatusOr<std::string> FromStored(const RecordSealer* sealer,
                                       sqlite::Connection& conn,
                                       absl::string_view record,
                                       absl::string_view field,
                                       std::string bytes, bool sealed);

// The stored form of a signed envelope (outbox and inbound
// signed_envelope): a serialized SignedEnvelope whose `envelope` bytes are
// sealed; its signature and key id stay readable, so that the audit log
// verifies without the data key. An empty column (purged) reads as an empty
// SignedEnvelope.
absl::StatusOr<StoredPayload> ToStoredEnvelope(
    const RecordSealer* sealer, sqlite::Connection& conn,
    absl::string_view record, absl::string_view field,
    const v1::SignedEnvelope& envelope);
absl::StatusOr<v1::SignedEnvelope> FromStoredEnvelope(
    const RecordSealer* sealer, sqlite::Connection& conn,
    absl::string_view record, absl::string_view field, const std::string& bytes,
    bool sealed);

// A case as stored: its row's `body` and `sealed` columns, and its
// `version` column. The body is the authoritative record and carries its own
// version; the column is a clear copy for queries. A body whose version is
// not the column's is refused (DATA_LOSS naming the case and both versions):
// sealed bytes of an earlier version still open under the case's record key,
// so a body put back from an old WAL frame or a backup is caught here unless
// the column was put back with it, and then by `casebridge audit verify`,
// which compares the column with the versions the audit log recorded
// (docs/storage.md#what-the-database-file-alone-gives-away).
absl::StatusOr<v1::CaseReference> FromStoredCase(const RecordSealer* sealer,
                                                 sqlite::Connection& conn,
                                                 absl::string_view exchange_id,
                                                 std::string body, bool sealed,
                                                 int64_t row_version);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_RECORD_KEYS_H_
