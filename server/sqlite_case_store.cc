#include "server/sqlite_case_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/crypto.h"
#include "core/field_crypto.h"
#include "core/grpc_status.h"
#include "core/identity.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "server/data_key_rotation.h"
#include "server/schema.h"

namespace casebridge::server {
namespace {

using google::protobuf::util::TimeUtil;

// Exchange ids carry six digits per year.
constexpr int64_t kMaxCasesPerYear = 999999;

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

std::string Serialize(const v1::CaseReference& c) {
  std::string out;
  c.SerializeToString(&out);
  return out;
}

constexpr const char* kBodyField = kCaseBodyField;

// The entries whose payloads held a case's personal fields: the requests
// that carried them, and the body as sealed at open.
const std::string* const kPurgeCaseSalts = new std::string(absl::StrCat(
    "UPDATE audit_log SET salt = NULL WHERE action IN ('",
    absl::StrJoin(
        {kCaseOpenAction, kCaseOpenReplayedAction, kCaseOpenPersonalDataAction,
         kCaseUpdateAction, kCaseUpdatePersonalDataAction, kSealedAtOpenAction},
        "', '"),
    "') AND idx IN (SELECT idx FROM audit_subjects WHERE subject = ?)"));

// "V-" and 8 characters of RFC 4648 base32: 40 random bits.
std::string MintPseudonym() {
  static constexpr char kBase32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  const std::string random = crypto::RandomBytes(5);
  uint64_t bits = 0;
  for (const char byte : random)
    bits = (bits << 8) | static_cast<uint8_t>(byte);
  std::string out = "V-";
  for (int i = 7; i >= 0; --i) out.push_back(kBase32[(bits >> (5 * i)) & 31]);
  return out;
}

}  // namespace

void MintPseudonyms(v1::CaseReference& c) {
  std::set<std::string> taken;
  for (const v1::VictimReference& v : c.victims()) taken.insert(v.pseudonym());
  for (v1::VictimReference& v : *c.mutable_victims()) {
    if (!v.pseudonym().empty()) continue;
    std::string minted;
    do {
      minted = MintPseudonym();
    } while (!taken.insert(minted).second);
    v.set_pseudonym(std::move(minted));
  }
}

namespace {

// The body column of `c` (sealed under the case's key when the store has a
// data key).
absl::StatusOr<StoredPayload> StoreBody(const RecordSealer* sealer,
                                        sqlite::Connection& conn,
                                        const v1::CaseReference& c) {
  return ToStored(sealer, conn, CaseRecord(c.exchange_id()), kBodyField,
                  Serialize(c));
}

// Writes all columns of `c` (body included) to the row of its exchange id,
// which then holds its personal fields again (purged_us NULL).
absl::Status WriteRow(const RecordSealer* sealer, sqlite::Connection& conn,
                      const v1::CaseReference& c) {
  CB_ASSIGN_OR_RETURN(const StoredPayload body, StoreBody(sealer, conn, c));
  CB_ASSIGN_OR_RETURN(
      auto stmt,
      conn.Prepare("UPDATE cases SET local_reference = ?, category = ?, "
                   "status = ?, summary = ?, version = ?, updated_us = ?, "
                   "body = ?, sealed = ?, purged_us = NULL "
                   "WHERE exchange_id = ?"));
  stmt.Bind(1, c.local_reference())
      .Bind(2, static_cast<int64_t>(c.category()))
      .Bind(3, static_cast<int64_t>(c.status()))
      .Bind(4, c.summary())
      .Bind(5, c.version())
      .Bind(6, TimeUtil::TimestampToMicroseconds(c.updated_at()))
      .BindBlob(7, body.bytes)
      .Bind(8, int64_t{body.sealed})
      .Bind(9, c.exchange_id());
  CB_RETURN_IF_ERROR(stmt.Run());
  if (conn.changes() != 1) {
    return absl::InternalError(absl::StrCat("updating case ", c.exchange_id(),
                                            " changed ", conn.changes(),
                                            " rows"));
  }
  return absl::OkStatus();
}

struct StoredCase {
  v1::CaseReference reference;
  bool purged = false;
};

absl::StatusOr<StoredCase> ReadCase(const RecordSealer* sealer,
                                    sqlite::Connection& conn,
                                    const std::string& exchange_id) {
  CB_ASSIGN_OR_RETURN(auto stmt,
                      conn.Prepare("SELECT body, sealed, purged_us, version "
                                   "FROM cases WHERE exchange_id = ?"));
  stmt.Bind(1, exchange_id);
  CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
  if (!row) {
    return absl::NotFoundError(
        absl::StrCat("case ", exchange_id, " not found"));
  }
  StoredCase out;
  out.purged = !stmt.ColumnIsNull(2);
  CB_ASSIGN_OR_RETURN(
      out.reference,
      FromStoredCase(sealer, conn, exchange_id, stmt.ColumnBlob(0),
                     stmt.ColumnInt(1) != 0, stmt.ColumnInt(3)));
  return out;
}

}  // namespace

absl::StatusOr<OpenedCase> SqliteCaseStore::OpenCase(
    const v1::CaseReference& draft, const std::string& owner,
    const RequestKey& key, const AuditEvent& audit) {
  OpenedCase result;
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    if (!key.request_id.empty()) {
      CB_ASSIGN_OR_RETURN(
          auto find,
          conn.Prepare("SELECT exchange_id, request_hash, body, sealed, "
                       "version FROM cases WHERE owner_office = ? AND "
                       "request_id = ?"));
      find.Bind(1, owner).Bind(2, key.request_id);
      CB_ASSIGN_OR_RETURN(const bool row, find.Step());
      if (row) {
        if (find.ColumnBlob(1) != key.request_hash) {
          return absl::AlreadyExistsError(absl::StrCat(
              "request_id \"", key.request_id, "\" already opened case ",
              find.ColumnText(0), " with different content"));
        }
        CB_ASSIGN_OR_RETURN(
            result.case_reference,
            FromStoredCase(sealer_, conn, find.ColumnText(0),
                           find.ColumnBlob(2), find.ColumnInt(3) != 0,
                           find.ColumnInt(4)));
        result.replayed = true;
        return absl::OkStatus();
      }
    }

    const absl::Time now = clock_->Now();
    const int64_t year = absl::ToCivilYear(now, absl::UTCTimeZone()).year();
    CB_ASSIGN_OR_RETURN(
        auto bump,
        conn.Prepare(
            "INSERT INTO exchange_id_counters(year, last) VALUES(?, 1) "
            "ON CONFLICT(year) DO UPDATE SET last = last + 1 "
            "RETURNING last"));
    bump.Bind(1, year);
    CB_ASSIGN_OR_RETURN(const bool got, bump.Step());
    if (!got) return absl::InternalError("exchange id counter returned no row");
    const int64_t number = bump.ColumnInt(0);
    CB_ASSIGN_OR_RETURN(const bool extra, bump.Step());
    (void)extra;
    if (number > kMaxCasesPerYear) {
      // Rolled back with the rest: the counter stays at the limit.
      return absl::ResourceExhaustedError(absl::StrCat(
          "this gateway has minted ", kMaxCasesPerYear, " exchange ids in ",
          year, "; the id format has no room for more"));
    }

    v1::CaseReference c = draft;
    MintPseudonyms(c);
    c.set_exchange_id(
        absl::StrFormat("%s-%04d-%06d", CountryCode(country_), year, number));
    c.set_status(v1::CASE_STATUS_OPEN);
    c.set_owner_office(owner);
    c.set_origin_country(country_);
    c.set_version(1);
    *c.mutable_created_at() = ToProto(now);
    *c.mutable_updated_at() = ToProto(now);
    c.set_updated_by(owner);

    CB_ASSIGN_OR_RETURN(const StoredPayload body, StoreBody(sealer_, conn, c));
    CB_ASSIGN_OR_RETURN(
        auto insert,
        conn.Prepare(
            "INSERT INTO cases(exchange_id, local_reference, category, "
            "status, owner_office, summary, version, created_us, "
            "updated_us, body, request_id, request_hash, sealed) "
            "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    insert.Bind(1, c.exchange_id())
        .Bind(2, c.local_reference())
        .Bind(3, static_cast<int64_t>(c.category()))
        .Bind(4, static_cast<int64_t>(c.status()))
        .Bind(5, c.owner_office())
        .Bind(6, c.summary())
        .Bind(7, c.version())
        .Bind(8, absl::ToUnixMicros(now))
        .Bind(9, absl::ToUnixMicros(now))
        .BindBlob(10, body.bytes)
        .Bind(13, int64_t{body.sealed});
    if (key.request_id.empty()) {
      insert.BindNull(11).BindNull(12);
    } else {
      insert.Bind(11, key.request_id).BindBlob(12, key.request_hash);
    }
    CB_RETURN_IF_ERROR(insert.Run());

    AuditEvent event = audit;
    event.subjects.push_back(c.exchange_id());
    CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, event).status());
    result.case_reference = std::move(c);
    return absl::OkStatus();
  }));
  return result;
}

absl::Status SqliteCaseStore::StoreSharedInTransaction(
    sqlite::Connection& conn, const v1::CaseReference& shared) {
  if (shared.origin_country() == country_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "case_reference.origin_country: case ", shared.exchange_id(),
        " claims to come from this gateway's own country"));
  }
  CB_ASSIGN_OR_RETURN(
      auto find,
      conn.Prepare("SELECT version FROM cases WHERE exchange_id = ?"));
  find.Bind(1, shared.exchange_id());
  CB_ASSIGN_OR_RETURN(const bool held, find.Step());
  if (held) {
    if (find.ColumnInt(0) >= shared.version())
      return absl::OkStatus();  // not newer
    return WriteRow(sealer_, conn, shared);
  }
  CB_ASSIGN_OR_RETURN(const StoredPayload body,
                      StoreBody(sealer_, conn, shared));
  CB_ASSIGN_OR_RETURN(
      auto insert,
      conn.Prepare("INSERT INTO cases(exchange_id, local_reference, category, "
                   "status, owner_office, summary, version, created_us, "
                   "updated_us, body, sealed) "
                   "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  insert.Bind(1, shared.exchange_id())
      .Bind(2, shared.local_reference())
      .Bind(3, static_cast<int64_t>(shared.category()))
      .Bind(4, static_cast<int64_t>(shared.status()))
      .Bind(5, shared.owner_office())
      .Bind(6, shared.summary())
      .Bind(7, shared.version())
      .Bind(8, TimeUtil::TimestampToMicroseconds(shared.created_at()))
      .Bind(9, TimeUtil::TimestampToMicroseconds(shared.updated_at()))
      .BindBlob(10, body.bytes)
      .Bind(11, int64_t{body.sealed});
  return insert.Run();
}

absl::StatusOr<v1::CaseReference> SqliteCaseStore::GetCase(
    const std::string& exchange_id) {
  v1::CaseReference c;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(StoredCase stored,
                        ReadCase(sealer_, conn, exchange_id));
    c = std::move(stored.reference);
    return absl::OkStatus();
  }));
  return c;
}

absl::StatusOr<CaseAccess> SqliteCaseStore::AccessOf(
    const std::string& exchange_id, const std::string& office) {
  CaseAccess access = CaseAccess::kNone;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    // NULL without rows; else 1 if any row is the peer's addressing.
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        conn.Prepare("SELECT MAX(i.forwarded_by IS NULL AND m.direction = ?3 "
                     "AND m.kind != ?4) FROM messages m JOIN inbox i "
                     "ON i.message_id = m.message_id "
                     "WHERE m.exchange_id = ?1 AND i.office = ?2"));
    stmt.Bind(1, exchange_id)
        .Bind(2, office)
        .Bind(3, int64_t{2})  // incoming
        .Bind(4, static_cast<int64_t>(v1::MESSAGE_KIND_ACKNOWLEDGEMENT));
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (row && !stmt.ColumnIsNull(0)) {
      access = stmt.ColumnInt(0) != 0 ? CaseAccess::kAddressed
                                      : CaseAccess::kReached;
    }
    return absl::OkStatus();
  }));
  return access;
}

absl::StatusOr<CasePage> SqliteCaseStore::ListCases(const CaseFilter& filter,
                                                    int64_t after,
                                                    int page_size) {
  CasePage page;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    // One static statement: unset filters match everything.
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        conn.Prepare(
            "SELECT seq, exchange_id, body, sealed, version FROM cases "
            "WHERE seq > ?1 "
            "AND ((?9 = 1 AND substr(exchange_id, 1, length(?8)) != ?8) "
            "     OR ((?2 = 0 OR status = ?2) AND (?3 = 0 OR category = ?3) "
            "         AND (?4 = '' OR owner_office = ?4) "
            "         AND (?5 = '' OR instr(exchange_id, ?5) > 0 "
            "              OR instr(local_reference, ?5) > 0 "
            "              OR instr(summary, ?5) > 0))) "
            "AND (?7 = '' OR substr(exchange_id, 1, length(?8)) = ?8 "
            "     OR EXISTS (SELECT 1 FROM messages m JOIN inbox i "
            "                ON i.message_id = m.message_id "
            "                WHERE m.exchange_id = cases.exchange_id "
            "                AND i.office = ?7)) "
            "ORDER BY seq LIMIT ?6"));
    stmt.Bind(1, after)
        .Bind(2, static_cast<int64_t>(filter.status))
        .Bind(3, static_cast<int64_t>(filter.category))
        .Bind(4, filter.owner_office)
        .Bind(5, filter.text)
        .Bind(6, static_cast<int64_t>(page_size) + 1)
        .Bind(7, filter.visible_to_office)
        .Bind(8, filter.own_prefix)
        .Bind(9, int64_t{filter.peer_fields_unfiltered});
    while (true) {
      CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
      if (!row) break;
      if (static_cast<int>(page.cases.size()) == page_size) {
        page.has_more = true;
        break;
      }
      page.positions.push_back(stmt.ColumnInt(0));
      CB_ASSIGN_OR_RETURN(
          auto c,
          FromStoredCase(sealer_, conn, stmt.ColumnText(1), stmt.ColumnBlob(2),
                         stmt.ColumnInt(3) != 0, stmt.ColumnInt(4)));
      page.cases.push_back(std::move(c));
    }
    return absl::OkStatus();
  }));
  return page;
}

absl::StatusOr<v1::CaseReference> SqliteCaseStore::UpdateCase(
    const std::string& exchange_id, int64_t expected_version,
    const std::function<absl::Status(v1::CaseReference&)>& apply,
    const std::string& actor, const AuditEvent& audit, const AlsoAudit& also) {
  v1::CaseReference updated;
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(StoredCase stored,
                        ReadCase(sealer_, conn, exchange_id));
    if (stored.purged) {
      return absl::FailedPreconditionError(absl::StrCat(
          "case ", exchange_id,
          " had its personal data purged under the retention policy and "
          "can no longer be changed"));
    }
    v1::CaseReference c = std::move(stored.reference);
    if (c.version() != expected_version) {
      return absl::AbortedError(absl::StrCat(
          "expected_version: case ", exchange_id, " is at version ",
          c.version(), ", not ", expected_version,
          "; read it again and reapply your change"));
    }
    CB_RETURN_IF_ERROR(apply(c));
    MintPseudonyms(c);
    c.set_version(expected_version + 1);
    *c.mutable_updated_at() = ToProto(clock_->Now());
    c.set_updated_by(actor);
    CB_RETURN_IF_ERROR(WriteRow(sealer_, conn, c));
    CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, audit).status());
    if (also) {
      if (std::optional<AuditEvent> more = also(c)) {
        CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, *more).status());
      }
    }
    updated = std::move(c);
    return absl::OkStatus();
  }));
  return updated;
}

// --- Retention and sealing ---------------------------------------------------

namespace {

// Rows changed per transaction, so office calls are never held up for long.
constexpr int kRetentionBatch = 500;

}  // namespace

absl::StatusOr<int> SqliteCaseStore::PurgeExpired(
    const config::RetentionSettings& policy, absl::Time now,
    const std::string& actor, int* shares_purged) {
  // The entries about a case are found by their subject rows, which the
  // newest entries may not have yet.
  CB_RETURN_IF_ERROR(audit_->CatchUpTree());
  int purged = 0;
  // A case whose stored body cannot be read (it does not open, or was put
  // back from an earlier copy) is left as it is and reported once every
  // other case is purged: one damaged row must not keep the others' personal
  // data past its retention.
  absl::Status unreadable;
  int unreadable_count = 0;
  for (const auto& kept : policy.case_status_days) {
    // Named apart, not bound: the transaction's lambda captures them.
    const auto status = kept.first;
    const auto days = kept.second;
    if (days <= 0) continue;
    const int64_t cutoff = absl::ToUnixMicros(now - absl::Hours(24) * days);
    int64_t after_seq = 0;  // the batches walk the cases in seq order
    int found = kRetentionBatch;
    while (found == kRetentionBatch) {
      int batch = 0;
      CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn)
                                        -> absl::Status {
        batch = 0;
        found = 0;
        // Entries appended since the purge's CatchUpTree get their subject
        // rows first: the purge finds entries by them.
        CB_RETURN_IF_ERROR(audit_->CatchUpInTransaction(conn));
        std::vector<std::pair<int64_t, std::string>> expired;
        {
          CB_ASSIGN_OR_RETURN(
              auto find,
              conn.Prepare("SELECT seq, exchange_id FROM cases WHERE status = "
                           "? AND updated_us < ? AND purged_us IS NULL AND "
                           "seq > ? ORDER BY seq LIMIT ?"));
          find.Bind(1, int64_t{status})
              .Bind(2, cutoff)
              .Bind(3, after_seq)
              .Bind(4, kRetentionBatch);
          while (true) {
            CB_ASSIGN_OR_RETURN(const bool row, find.Step());
            if (!row) break;
            expired.emplace_back(find.ColumnInt(0), find.ColumnText(1));
          }
        }
        found = static_cast<int>(expired.size());
        const absl::Time purged_at = clock_->Now();
        for (const auto& [seq, exchange_id] : expired) {
          after_seq = seq;
          absl::StatusOr<StoredCase> read =
              ReadCase(sealer_, conn, exchange_id);
          // The row's own trouble (a body or key that does not open, a
          // version not its row's, a key missing), not the database's: a
          // corrupt page or a busy database stops the run.
          const absl::StatusCode code = read.status().code();
          if ((code == absl::StatusCode::kDataLoss ||
               code == absl::StatusCode::kFailedPrecondition) &&
              !HasLogOnlyDetail(read.status())) {
            if (unreadable_count++ == 0) {
              unreadable = absl::DataLossError(
                  absl::StrCat("case ", exchange_id,
                               " was not purged: ", read.status().message()));
            }
            continue;
          }
          CB_RETURN_IF_ERROR(read.status());
          StoredCase stored = *std::move(read);
          v1::CaseReference& c = stored.reference;
          c.clear_victims();
          c.clear_last_known_locations();
          *c.mutable_personal_data_purged_at() = ToProto(purged_at);
          // The key that sealed the personal fields is shredded; what is
          // left of the case is sealed under a fresh one, so that no case
          // body is ever read from the clear (FromStored).
          if (sealer_ != nullptr) {
            CB_RETURN_IF_ERROR(sealer_->Shred(conn, CaseRecord(exchange_id)));
          }
          CB_ASSIGN_OR_RETURN(const StoredPayload body,
                              StoreBody(sealer_, conn, c));
          CB_ASSIGN_OR_RETURN(
              auto update,
              // The OpenCase request's hash is an unsalted digest of the
              // personal fields it carried: forgotten with them.
              conn.Prepare("UPDATE cases SET body = ?, sealed = ?, "
                           "purged_us = ?, request_id = NULL, "
                           "request_hash = NULL WHERE exchange_id = ?"));
          update.BindBlob(1, body.bytes)
              .Bind(2, int64_t{body.sealed})
              .Bind(3, absl::ToUnixMicros(purged_at))
              .Bind(4, exchange_id);
          CB_RETURN_IF_ERROR(update.Run());
          // The requests that carried the personal fields.
          CB_ASSIGN_OR_RETURN(auto salts, conn.Prepare(*kPurgeCaseSalts));
          salts.Bind(1, exchange_id);
          CB_RETURN_IF_ERROR(salts.Run());
          AuditEvent event;
          event.actor = actor;
          event.action = kRetentionPurgeAction;
          event.subjects = {exchange_id};
          CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, event).status());
          ++batch;
        }
        return absl::OkStatus();
      }));
      purged += batch;
      if (batch > 0) db_->OweWalTruncation();
    }
  }
  // Copies of purged cases in CASE_SHARE messages, sent or received, once
  // they are no longer in flight (a share still queued or being sent is
  // purged by the first run after its delivery or failure).
  int shares = 0;
  int batch = kRetentionBatch;
  while (batch == kRetentionBatch) {
    CB_RETURN_IF_ERROR(
        db_->Write([&](sqlite::Connection& conn) -> absl::Status {
          batch = 0;
          // Entries appended since the purge's CatchUpTree get their subject
          // rows first: the purge finds entries by them.
          CB_RETURN_IF_ERROR(audit_->CatchUpInTransaction(conn));
          std::vector<std::string> copies;
          {
            CB_ASSIGN_OR_RETURN(
                auto find,
                conn.Prepare("SELECT m.message_id FROM cases c JOIN messages m "
                             "ON m.exchange_id = c.exchange_id "
                             "WHERE c.purged_us IS NOT NULL AND m.kind = ? "
                             "AND m.purged_us IS NULL AND NOT EXISTS (SELECT 1 "
                             "FROM outbox o WHERE o.message_id = m.message_id "
                             "AND o.state IN (1, 2)) ORDER BY m.seq LIMIT ?"));
            find.Bind(1, int64_t{v1::MESSAGE_KIND_CASE_SHARE})
                .Bind(2, kRetentionBatch);
            while (true) {
              CB_ASSIGN_OR_RETURN(const bool row, find.Step());
              if (!row) break;
              copies.push_back(find.ColumnText(0));
            }
          }
          const absl::Time purged_at = clock_->Now();
          for (const std::string& message_id : copies) {
            CB_RETURN_IF_ERROR(PurgeMessageInTransaction(
                conn, *audit_, sealer_, message_id, actor, purged_at));
            ++batch;
          }
          return absl::OkStatus();
        }));
    shares += batch;
    if (batch > 0) db_->OweWalTruncation();
  }
  if (shares_purged != nullptr) *shares_purged = shares;
  // The shredded keys are zeroed in their pages; the page images that held
  // them go with the WAL.
  // Also after an earlier run that failed half-way or could not truncate.
  if (db_->wal_truncation_owed()) CB_RETURN_IF_ERROR(db_->TruncateWal());
  if (!unreadable.ok()) {
    return absl::Status(
        unreadable.code(),
        absl::StrCat(
            unreadable.message(),
            unreadable_count > 1
                ? absl::StrCat(" (and ", unreadable_count - 1, " other cases)")
                : std::string(),
            "; ", purged, purged == 1 ? " case" : " cases", " purged"));
  }
  return purged;
}

absl::StatusOr<int> SqliteCaseStore::SealStoredBodies(
    const std::string& actor) {
  if (sealer_ == nullptr) {
    return absl::FailedPreconditionError("sealing needs the data key");
  }
  int sealed = 0;
  int batch = kRetentionBatch;
  while (batch == kRetentionBatch) {
    CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn)
                                      -> absl::Status {
      batch = 0;
      std::vector<std::pair<std::string, std::string>> rows;
      {
        CB_ASSIGN_OR_RETURN(
            auto find,
            conn.Prepare("SELECT exchange_id, body FROM cases WHERE sealed = "
                         "0 ORDER BY seq LIMIT ?"));
        find.Bind(1, kRetentionBatch);
        while (true) {
          CB_ASSIGN_OR_RETURN(const bool row, find.Step());
          if (!row) break;
          rows.emplace_back(find.ColumnText(0), find.ColumnBlob(1));
        }
      }
      for (const auto& [exchange_id, body] : rows) {
        CB_ASSIGN_OR_RETURN(
            const StoredPayload stored,
            ToStored(sealer_, conn, CaseRecord(exchange_id), kBodyField, body));
        CB_ASSIGN_OR_RETURN(
            auto update, conn.Prepare("UPDATE cases SET body = ?, sealed = 1 "
                                      "WHERE exchange_id = ?"));
        update.BindBlob(1, stored.bytes).Bind(2, exchange_id);
        CB_RETURN_IF_ERROR(update.Run());
        AuditEvent event;
        event.actor = actor;
        event.action = kSealedAtOpenAction;
        event.subjects = {exchange_id, kBodyField};
        event.payload = body;
        CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, event).status());
        ++batch;
      }
      return absl::OkStatus();
    }));
    sealed += batch;
  }
  return sealed;
}

// --- GatewayStore ------------------------------------------------------------

GatewayStore::LockFile::~LockFile() {
  if (fd >= 0) ::close(fd);  // releases the flock
}

namespace {

// Whether `file` is inside `dir` (or below it), symbolic links resolved.
bool IsInside(const std::string& file, const std::string& dir) {
  std::error_code ec;
  const std::filesystem::path f = std::filesystem::weakly_canonical(file, ec);
  if (ec) return false;
  const std::filesystem::path d = std::filesystem::weakly_canonical(dir, ec);
  if (ec) return false;
  const std::filesystem::path relative = f.lexically_relative(d);
  return !relative.empty() && *relative.begin() != "..";
}

}  // namespace

std::string GatewayStore::DatabasePath(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / "gateway.db").string();
}

absl::StatusOr<std::unique_ptr<GatewayStore>> GatewayStore::Open(
    const std::string& data_dir, v1::Country country, const Clock* clock) {
  StoreOptions options;
  options.data_dir = data_dir;
  options.country = country;
  return Open(options, clock);
}

absl::StatusOr<std::unique_ptr<GatewayStore>> GatewayStore::Open(
    const config::Gateway& config, const Clock* clock) {
  StoreOptions options;
  options.data_dir = config.data_dir;
  options.country = config.country;
  options.data_key_file = config.data_protection.key_file;
  return Open(options, clock);
}

absl::StatusOr<RetentionReport> GatewayStore::PurgeExpired(
    const config::RetentionSettings& policy, absl::Time now,
    const std::string& actor) {
  // Each kind of record is purged even if another's purge fails (a case
  // whose body no longer opens, say): the first failure is returned once
  // all have run.
  RetentionReport report;
  absl::Status failed;
  auto count = [&failed](absl::StatusOr<int> purged, int* into) {
    if (purged.ok()) {
      *into += *purged;
    } else if (failed.ok()) {
      failed = purged.status();
    }
  };
  // What the run did purge, said with its failure.
  auto with_counts = [&report](const absl::Status& status) {
    return absl::Status(
        status.code(),
        absl::StrCat(status.message(), " (this run purged ", report.messages,
                     " messages, ", report.cases, " cases and the salts of ",
                     report.refusals, " refusals)"));
  };
  count(exchange_->PurgeExpired(policy, now, actor), &report.messages);
  int shares = 0;
  count(cases_->PurgeExpired(policy, now, actor, &shares), &report.cases);
  report.messages += shares;
  if (const int days = policy.ShortestDays(); days > 0) {
    count(audit_->PurgeRefusalSalts(now - absl::Hours(24) * days, actor),
          &report.refusals);
  }
  if (!failed.ok()) {
    // A store failure keeps its mark (its detail stays in the gateway log).
    return HasLogOnlyDetail(failed) ? WithLogOnlyDetail(with_counts(failed))
                                    : with_counts(failed);
  }
  return report;
}

absl::StatusOr<std::unique_ptr<GatewayStore>> GatewayStore::Open(
    const StoreOptions& options, const Clock* clock) {
  const std::string& data_dir = options.data_dir;
  const v1::Country country = options.country;
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("creating data directory ", data_dir, ": ", ec.message()));
  }
  ::chmod(data_dir.c_str(), 0700);
  std::unique_ptr<GatewayStore> store(new GatewayStore());
  const std::string lock_path =
      (std::filesystem::path(data_dir) / "gateway.lock").string();
  store->lock_.fd =
      ::open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (store->lock_.fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", lock_path));
  }
  if (::flock(store->lock_.fd, LOCK_EX | LOCK_NB) != 0) {
    // UNAVAILABLE: it passes once that gateway has stopped (a restart).
    return absl::UnavailableError(
        absl::StrCat(data_dir, " is in use by another running gateway (",
                     lock_path, " is locked)"));
  }
  CB_ASSIGN_OR_RETURN(store->db_, sqlite::Database::Open(DatabasePath(data_dir),
                                                         GatewayMigrations()));
  if (!options.data_key_file.empty()) {
    const std::string& key_file = options.data_key_file;
    CB_ASSIGN_OR_RETURN(const InterruptedRotation interrupted,
                        SettleInterruptedRotation(*store->db_, key_file));
    store->finished_interrupted_rotation_ =
        interrupted == InterruptedRotation::kFinished;
    auto key = crypto::LoadKeyFile(key_file);
    if (absl::IsNotFound(key.status())) {
      // A new key only for a database that holds nothing sealed: a missing
      // key file must not be silently replaced.
      bool sealed_data = false;
      CB_RETURN_IF_ERROR(
          store->db_->Read([&](sqlite::Connection& conn) -> absl::Status {
            CB_ASSIGN_OR_RETURN(sealed_data, HoldsSealedData(conn));
            return absl::OkStatus();
          }));
      if (sealed_data) {
        return absl::FailedPreconditionError(absl::StrCat(
            "data_protection.key_file: data key ", key_file,
            " does not exist and the database ", store->db_->path(),
            " holds data sealed under another key; restore the data key "
            "file"));
      }
      key = crypto::CreateKeyFile(key_file);
    }
    if (!key.ok()) {
      return absl::Status(
          key.status().code(),
          absl::StrCat("data_protection.key_file: ", key.status().message()));
    }
    store->sealer_ = std::make_unique<RecordSealer>(*std::move(key), clock);
    const absl::Status check = store->db_->Write([&](sqlite::Connection& conn) {
      return store->sealer_->CheckDataKey(conn);
    });
    if (absl::IsFailedPrecondition(check)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data_protection.key_file: data key ", key_file,
          " is not the key of the database ", store->db_->path(), " (",
          check.message(),
          "): the database holds data sealed under another key; restore the "
          "data key file"));
    }
    CB_RETURN_IF_ERROR(check);
    store->key_inside_data_dir_ = IsInside(key_file, data_dir);
  }
  store->audit_ = std::make_unique<SqliteAuditLog>(store->db_.get(), clock);
  CB_RETURN_IF_ERROR(store->audit_->CatchUpTree());
  store->cases_ =
      std::make_unique<SqliteCaseStore>(store->db_.get(), store->audit_.get(),
                                        clock, country, store->sealer_.get());
  CB_ASSIGN_OR_RETURN(
      store->exchange_,
      SqliteExchangeStore::Create(store->db_.get(), store->audit_.get(), clock,
                                  store->sealer_.get()));
  if (store->sealer_ != nullptr) {
    // Rows written before migration 6 (or without the key) are sealed
    // before anything is served.
    const std::string actor = GatewayIdentity(country);
    CB_ASSIGN_OR_RETURN(const int bodies,
                        store->cases_->SealStoredBodies(actor));
    CB_ASSIGN_OR_RETURN(const int payloads,
                        store->exchange_->SealStoredPayloads(actor));
    if (bodies + payloads > 0) {
      log::Warning("store.sealed_at_open",
                   {{"case_bodies", bodies},
                    {"message_payloads", payloads},
                    {"note",
                     "payloads found in the clear were sealed and audited ("
                     "data.sealed_at_open); expected once, after upgrading to "
                     "data protection, and never again"}});
      // The plaintext they held is zeroed in the pages, but page images
      // holding it stay in the WAL until it is truncated.
      CB_RETURN_IF_ERROR(store->db_->TruncateWal());
    }
  }
  // Page images left in the WAL by a run that shredded and then failed, or
  // crashed, before truncating it go now. Not fatal: the next retention
  // run tries again.
  if (const absl::Status truncated = store->db_->TruncateWal();
      !truncated.ok()) {
    log::Warning("store.wal_not_truncated",
                 {{"error", std::string(truncated.message())}});
  }
  store->exchange_->set_shared_case_sink(
      [cases = store->cases_.get()](sqlite::Connection& conn,
                                    const v1::CaseReference& shared) {
        return cases->StoreSharedInTransaction(conn, shared);
      });
  return store;
}

}  // namespace casebridge::server
