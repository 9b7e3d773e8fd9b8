#include "server/record_keys.h"

#include <openssl/crypto.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/status_macros.h"

namespace casebridge::server {
namespace {

// Associated data: what a sealed value is, and where it belongs.
std::string FieldAad(absl::string_view record, absl::string_view field) {
  return absl::StrCat("casebridge/field/v1\n", record, "\n", field);
}

std::string WrapAad(absl::string_view record) {
  return absl::StrCat("casebridge/record-key/v1\n", record);
}

constexpr char kCheckAad[] = "casebridge/data-key-check/v1";
constexpr char kCheckPlaintext[] = "casebridge data key check value";

}  // namespace

std::string CaseRecord(absl::string_view exchange_id) {
  return absl::StrCat("case/", exchange_id);
}

std::string MessageRecord(absl::string_view message_id) {
  return absl::StrCat("message/", message_id);
}

absl::StatusOr<std::optional<crypto::FieldKey>> RecordSealer::FindKey(
    sqlite::Connection& conn, absl::string_view record) const {
  CB_ASSIGN_OR_RETURN(
      auto find,
      conn.Prepare("SELECT wrapped FROM record_keys WHERE record = ?"));
  find.Bind(1, record);
  CB_ASSIGN_OR_RETURN(const bool row, find.Step());
  if (!row) return std::nullopt;
  auto raw = data_key_.Open(find.ColumnBlob(0), WrapAad(record));
  if (!raw.ok()) {
    return absl::DataLossError(absl::StrCat(
        "the key of ", record,
        " does not open under the data key (another data key, or changed)"));
  }
  auto key = crypto::FieldKey::FromBytes(*raw);
  OPENSSL_cleanse(raw->data(), raw->size());
  if (!key.ok()) {
    return absl::DataLossError(
        absl::StrCat("the key of ", record, " has the wrong size"));
  }
  return *std::move(key);
}

absl::StatusOr<std::string> RecordSealer::Seal(
    sqlite::Connection& conn, absl::string_view record, absl::string_view field,
    absl::string_view plaintext) const {
  CB_ASSIGN_OR_RETURN(std::optional<crypto::FieldKey> key,
                      FindKey(conn, record));
  if (!key.has_value()) {
    key = crypto::FieldKey::Generate();
    CB_ASSIGN_OR_RETURN(const std::string wrapped,
                        data_key_.Seal(key->bytes(), WrapAad(record)));
    CB_ASSIGN_OR_RETURN(
        auto insert,
        conn.Prepare("INSERT INTO record_keys(record, wrapped, created_us) "
                     "VALUES(?, ?, ?)"));
    insert.Bind(1, record)
        .BindBlob(2, wrapped)
        .Bind(3, absl::ToUnixMicros(clock_->Now()));
    CB_RETURN_IF_ERROR(insert.Run());
  }
  return key->Seal(plaintext, FieldAad(record, field));
}

absl::StatusOr<std::string> RecordSealer::Open(sqlite::Connection& conn,
                                               absl::string_view record,
                                               absl::string_view field,
                                               absl::string_view sealed) const {
  CB_ASSIGN_OR_RETURN(std::optional<crypto::FieldKey> key,
                      FindKey(conn, record));
  if (!key.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the key of ", record, " was shredded: ", field, " is unreadable"));
  }
  auto plaintext = key->Open(sealed, FieldAad(record, field));
  if (!plaintext.ok()) {
    return absl::DataLossError(absl::StrCat(
        "stored ", field, " of ", record, ": ", plaintext.status().message()));
  }
  return plaintext;
}

absl::Status RecordSealer::Shred(sqlite::Connection& conn,
                                 absl::string_view record) const {
  CB_ASSIGN_OR_RETURN(auto drop,
                      conn.Prepare("DELETE FROM record_keys WHERE record = ?"));
  drop.Bind(1, record);
  return drop.Run();
}

absl::Status RecordSealer::CheckDataKey(sqlite::Connection& conn) const {
  CB_ASSIGN_OR_RETURN(
      auto check,
      conn.Prepare("SELECT wrapped FROM record_keys WHERE record = ?"));
  check.Bind(1, kDataKeyCheckRecord);
  CB_ASSIGN_OR_RETURN(const bool has_check, check.Step());
  if (has_check) {
    const std::string value = check.ColumnBlob(0);
    auto opened = data_key_.Open(value, kCheckAad);
    if (!opened.ok() || *opened != kCheckPlaintext) {
      return absl::FailedPreconditionError(
          absl::StrCat("it does not open the database's data key check value, "
                       "check id ",
                       DataKeyCheckId(value)));
    }
    return absl::OkStatus();
  }
  // A database written before the check value existed: any record's key.
  CB_ASSIGN_OR_RETURN(
      auto any,
      conn.Prepare("SELECT record, wrapped FROM record_keys LIMIT 1"));
  CB_ASSIGN_OR_RETURN(const bool has_key, any.Step());
  if (has_key) {
    auto raw = data_key_.Open(any.ColumnBlob(1), WrapAad(any.ColumnText(0)));
    if (!raw.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("it does not open the key of ", any.ColumnText(0)));
    }
    OPENSSL_cleanse(raw->data(), raw->size());
  }
  CB_ASSIGN_OR_RETURN(const std::string value,
                      data_key_.Seal(kCheckPlaintext, kCheckAad));
  CB_ASSIGN_OR_RETURN(
      auto insert,
      conn.Prepare("INSERT INTO record_keys(record, wrapped, created_us) "
                   "VALUES(?, ?, ?)"));
  insert.Bind(1, kDataKeyCheckRecord)
      .BindBlob(2, value)
      .Bind(3, absl::ToUnixMicros(clock_->Now()));
  return insert.Run();
}

std::string DataKeyCheckId(absl::string_view check_value) {
  return crypto::HexEncode(crypto::Sha256(check_value)).substr(0, 16);
}

namespace {

// The stored check value; nullopt if the database has none.
absl::StatusOr<std::optional<std::string>> StoredCheckValue(
    sqlite::Connection& conn) {
  CB_ASSIGN_OR_RETURN(
      auto check,
      conn.Prepare("SELECT wrapped FROM record_keys WHERE record = ?"));
  check.Bind(1, kDataKeyCheckRecord);
  CB_ASSIGN_OR_RETURN(const bool row, check.Step());
  if (!row) return std::nullopt;
  return check.ColumnBlob(0);
}

bool Opens(const crypto::FieldKey& key, absl::string_view check_value) {
  auto opened = key.Open(check_value, kCheckAad);
  return opened.ok() && *opened == kCheckPlaintext;
}

}  // namespace

absl::StatusOr<std::string> StoredCheckId(sqlite::Connection& conn) {
  CB_ASSIGN_OR_RETURN(const std::optional<std::string> value,
                      StoredCheckValue(conn));
  return value.has_value() ? DataKeyCheckId(*value) : "";
}

absl::StatusOr<bool> OpensCheckValue(sqlite::Connection& conn,
                                     const crypto::FieldKey& key) {
  CB_ASSIGN_OR_RETURN(const std::optional<std::string> value,
                      StoredCheckValue(conn));
  return value.has_value() && Opens(key, *value);
}

absl::StatusOr<RewrapReport> RewrapRecordKeys(sqlite::Connection& conn,
                                              const crypto::FieldKey& old_key,
                                              const crypto::FieldKey& new_key,
                                              absl::Time now) {
  RewrapReport report;
  CB_ASSIGN_OR_RETURN(const std::optional<std::string> old_check,
                      StoredCheckValue(conn));
  if (!old_check.has_value() || !Opens(old_key, *old_check)) {
    return absl::FailedPreconditionError(
        old_check.has_value()
            ? absl::StrCat("the data key does not open the database's data "
                           "key check value, check id ",
                           DataKeyCheckId(*old_check))
            : "the database has no data key check value");
  }
  report.old_check_id = DataKeyCheckId(*old_check);

  // Read first: the rows are rewritten on the same connection.
  std::vector<std::pair<std::string, std::string>> wrapped_keys;
  {
    CB_ASSIGN_OR_RETURN(auto all,
                        conn.Prepare("SELECT record, wrapped FROM record_keys "
                                     "WHERE record != ? ORDER BY record"));
    all.Bind(1, kDataKeyCheckRecord);
    while (true) {
      CB_ASSIGN_OR_RETURN(const bool row, all.Step());
      if (!row) break;
      wrapped_keys.emplace_back(all.ColumnText(0), all.ColumnBlob(1));
    }
  }
  for (const auto& [record, wrapped] : wrapped_keys) {
    auto raw = old_key.Open(wrapped, WrapAad(record));
    if (!raw.ok()) {
      return absl::DataLossError(absl::StrCat(
          "the key of ", record,
          " does not open under the data key (another data key, or changed)"));
    }
    auto rewrapped = new_key.Seal(*raw, WrapAad(record));
    OPENSSL_cleanse(raw->data(), raw->size());
    CB_RETURN_IF_ERROR(rewrapped.status());
    // Each Statement resets its (cached) statement when it goes.
    CB_ASSIGN_OR_RETURN(
        auto update,
        conn.Prepare("UPDATE record_keys SET wrapped = ? WHERE record = ?"));
    update.BindBlob(1, *rewrapped).Bind(2, record);
    CB_RETURN_IF_ERROR(update.Run());
    ++report.record_keys;
  }

  CB_ASSIGN_OR_RETURN(const std::string new_check,
                      new_key.Seal(kCheckPlaintext, kCheckAad));
  CB_ASSIGN_OR_RETURN(
      auto replace,
      conn.Prepare("UPDATE record_keys SET wrapped = ?, created_us = ? "
                   "WHERE record = ?"));
  replace.BindBlob(1, new_check)
      .Bind(2, absl::ToUnixMicros(now))
      .Bind(3, kDataKeyCheckRecord);
  CB_RETURN_IF_ERROR(replace.Run());
  report.new_check_id = DataKeyCheckId(new_check);
  return report;
}

absl::StatusOr<bool> HoldsSealedData(sqlite::Connection& conn) {
  CB_ASSIGN_OR_RETURN(
      auto stmt,
      conn.Prepare("SELECT EXISTS (SELECT 1 FROM record_keys) "
                   "OR EXISTS (SELECT 1 FROM cases WHERE sealed = 1) "
                   "OR EXISTS (SELECT 1 FROM messages WHERE sealed = 1) "
                   "OR EXISTS (SELECT 1 FROM outbox WHERE sealed = 1) "
                   "OR EXISTS (SELECT 1 FROM inbound WHERE sealed = 1)"));
  CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
  return row && stmt.ColumnInt(0) != 0;
}

namespace {

// With the data key, every payload is stored sealed (rows from before
// sealing are sealed when the store opens, a purged case's remainder under a
// fresh key) and a purged payload is empty. A payload in the clear is
// therefore one written outside the gateway, which the AEAD would have
// caught had it been sealed: it is refused, never taken as the record.
absl::Status NotSealed(absl::string_view record, absl::string_view field) {
  return absl::DataLossError(absl::StrCat(
      "stored ", field, " of ", record,
      " is in the clear, though every payload is sealed under the data key: "
      "the database was changed outside the gateway"));
}

}  // namespace

absl::StatusOr<StoredPayload> ToStored(const RecordSealer* sealer,
                                       sqlite::Connection& conn,
                                       absl::string_view record,
                                       absl::string_view field,
                                       absl::string_view plaintext) {
  StoredPayload out;
  if (sealer == nullptr) {
    out.bytes = std::string(plaintext);
    return out;
  }
  CB_ASSIGN_OR_RETURN(out.bytes, sealer->Seal(conn, record, field, plaintext));
  out.sealed = true;
  return out;
}

absl::StatusOr<std::string> FromStored(const RecordSealer* sealer,
                                       sqlite::Connection& conn,
                                       absl::string_view record,
                                       absl::string_view field,
                                       std::string bytes, bool sealed) {
  if (!sealed) {
    if (sealer != nullptr && !bytes.empty()) return NotSealed(record, field);
    return bytes;
  }
  if (sealer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("stored ", field, " of ", record,
                     " is sealed and the store was opened without the data "
                     "key"));
  }
  return sealer->Open(conn, record, field, bytes);
}

absl::StatusOr<StoredPayload> ToStoredEnvelope(
    const RecordSealer* sealer, sqlite::Connection& conn,
    absl::string_view record, absl::string_view field,
    const v1::SignedEnvelope& envelope) {
  StoredPayload out;
  // Fields outside the signed bytes are signed by nobody: not kept
  // (exchange::StoredBytes).
  if (sealer == nullptr) {
    out.bytes = exchange::StoredBytes(envelope);
    return out;
  }
  v1::SignedEnvelope stored = envelope;
  stored.DiscardUnknownFields();
  CB_ASSIGN_OR_RETURN(*stored.mutable_envelope(),
                      sealer->Seal(conn, record, field, envelope.envelope()));
  out.bytes = stored.SerializeAsString();
  out.sealed = true;
  return out;
}

absl::StatusOr<v1::SignedEnvelope> FromStoredEnvelope(
    const RecordSealer* sealer, sqlite::Connection& conn,
    absl::string_view record, absl::string_view field, const std::string& bytes,
    bool sealed) {
  v1::SignedEnvelope envelope;
  if (!envelope.ParseFromString(bytes)) {
    return absl::DataLossError(
        absl::StrCat("stored ", field, " of ", record, " does not parse"));
  }
  if (!bytes.empty()) {
    CB_ASSIGN_OR_RETURN(
        *envelope.mutable_envelope(),
        FromStored(sealer, conn, record, field, envelope.envelope(), sealed));
  }
  return envelope;
}

absl::StatusOr<v1::CaseReference> FromStoredCase(const RecordSealer* sealer,
                                                 sqlite::Connection& conn,
                                                 absl::string_view exchange_id,
                                                 std::string body, bool sealed,
                                                 int64_t row_version) {
  CB_ASSIGN_OR_RETURN(const std::string plain,
                      FromStored(sealer, conn, CaseRecord(exchange_id),
                                 kCaseBodyField, std::move(body), sealed));
  v1::CaseReference c;
  if (!c.ParseFromString(plain)) {
    return absl::DataLossError(
        absl::StrCat("stored case ", exchange_id, " does not parse"));
  }
  if (c.version() != row_version) {
    return absl::DataLossError(absl::StrCat(
        "stored case ", exchange_id, " holds version ", c.version(),
        " but its row says version ", row_version,
        ": the case was put back from an earlier copy or changed outside the "
        "gateway; run `casebridge audit verify` on this data directory"));
  }
  return c;
}

}  // namespace casebridge::server
