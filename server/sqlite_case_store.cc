#include "server/sqlite_case_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/identity.h"
#include "core/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "server/schema.h"

namespace casebridge::server {
namespace {

using google::protobuf::util::TimeUtil;

// Exchange ids carry six digits per year.
constexpr int64_t kMaxCasesPerYear = 999999;

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

absl::StatusOr<v1::CaseReference> ParseBody(const std::string& body,
                                            const std::string& exchange_id) {
  v1::CaseReference c;
  if (!c.ParseFromString(body)) {
    return absl::DataLossError(
        absl::StrCat("stored case ", exchange_id, " does not parse"));
  }
  return c;
}

std::string Serialize(const v1::CaseReference& c) {
  std::string out;
  c.SerializeToString(&out);
  return out;
}

// Writes all columns of `c` (body included) to the row of its exchange id.
absl::Status WriteRow(sqlite::Connection& conn, const v1::CaseReference& c) {
  CB_ASSIGN_OR_RETURN(
      auto stmt,
      conn.Prepare("UPDATE cases SET local_reference = ?, category = ?, "
                   "status = ?, summary = ?, version = ?, updated_us = ?, "
                   "body = ? WHERE exchange_id = ?"));
  stmt.Bind(1, c.local_reference())
      .Bind(2, static_cast<int64_t>(c.category()))
      .Bind(3, static_cast<int64_t>(c.status()))
      .Bind(4, c.summary())
      .Bind(5, c.version())
      .Bind(6, TimeUtil::TimestampToMicroseconds(c.updated_at()))
      .BindBlob(7, Serialize(c))
      .Bind(8, c.exchange_id());
  CB_RETURN_IF_ERROR(stmt.Run());
  if (conn.changes() != 1) {
    return absl::InternalError(absl::StrCat("updating case ", c.exchange_id(),
                                            " changed ", conn.changes(),
                                            " rows"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::CaseReference> ReadCase(sqlite::Connection& conn,
                                           const std::string& exchange_id) {
  CB_ASSIGN_OR_RETURN(
      auto stmt, conn.Prepare("SELECT body FROM cases WHERE exchange_id = ?"));
  stmt.Bind(1, exchange_id);
  CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
  if (!row) {
    return absl::NotFoundError(
        absl::StrCat("case ", exchange_id, " not found"));
  }
  return ParseBody(stmt.ColumnBlob(0), exchange_id);
}

}  // namespace

absl::StatusOr<OpenedCase> SqliteCaseStore::OpenCase(
    const v1::CaseReference& draft, const std::string& owner,
    const RequestKey& key, const AuditEvent& audit) {
  OpenedCase result;
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    if (!key.request_id.empty()) {
      CB_ASSIGN_OR_RETURN(
          auto find, conn.Prepare("SELECT exchange_id, request_hash, body FROM "
                                  "cases WHERE owner_office = ? AND "
                                  "request_id = ?"));
      find.Bind(1, owner).Bind(2, key.request_id);
      CB_ASSIGN_OR_RETURN(const bool row, find.Step());
      if (row) {
        if (find.ColumnBlob(1) != key.request_hash) {
          return absl::AlreadyExistsError(absl::StrCat(
              "request_id \"", key.request_id, "\" already opened case ",
              find.ColumnText(0), " with different content"));
        }
        CB_ASSIGN_OR_RETURN(result.case_reference,
                            ParseBody(find.ColumnBlob(2), find.ColumnText(0)));
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
    c.set_exchange_id(
        absl::StrFormat("%s-%04d-%06d", CountryCode(country_), year, number));
    c.set_status(v1::CASE_STATUS_OPEN);
    c.set_owner_office(owner);
    c.set_origin_country(country_);
    c.set_version(1);
    *c.mutable_created_at() = ToProto(now);
    *c.mutable_updated_at() = ToProto(now);
    c.set_updated_by(owner);

    CB_ASSIGN_OR_RETURN(
        auto insert,
        conn.Prepare(
            "INSERT INTO cases(exchange_id, local_reference, category, "
            "status, owner_office, summary, version, created_us, "
            "updated_us, body, request_id, request_hash) "
            "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    insert.Bind(1, c.exchange_id())
        .Bind(2, c.local_reference())
        .Bind(3, static_cast<int64_t>(c.category()))
        .Bind(4, static_cast<int64_t>(c.status()))
        .Bind(5, c.owner_office())
        .Bind(6, c.summary())
        .Bind(7, c.version())
        .Bind(8, absl::ToUnixMicros(now))
        .Bind(9, absl::ToUnixMicros(now))
        .BindBlob(10, Serialize(c));
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
    return WriteRow(conn, shared);
  }
  CB_ASSIGN_OR_RETURN(
      auto insert,
      conn.Prepare("INSERT INTO cases(exchange_id, local_reference, category, "
                   "status, owner_office, summary, version, created_us, "
                   "updated_us, body) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  insert.Bind(1, shared.exchange_id())
      .Bind(2, shared.local_reference())
      .Bind(3, static_cast<int64_t>(shared.category()))
      .Bind(4, static_cast<int64_t>(shared.status()))
      .Bind(5, shared.owner_office())
      .Bind(6, shared.summary())
      .Bind(7, shared.version())
      .Bind(8, TimeUtil::TimestampToMicroseconds(shared.created_at()))
      .Bind(9, TimeUtil::TimestampToMicroseconds(shared.updated_at()))
      .BindBlob(10, Serialize(shared));
  return insert.Run();
}

absl::StatusOr<v1::CaseReference> SqliteCaseStore::GetCase(
    const std::string& exchange_id) {
  v1::CaseReference c;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(c, ReadCase(conn, exchange_id));
    return absl::OkStatus();
  }));
  return c;
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
            "SELECT seq, exchange_id, body FROM cases WHERE seq > ?1 "
            "AND (?2 = 0 OR status = ?2) AND (?3 = 0 OR category = ?3) "
            "AND (?4 = '' OR owner_office = ?4) "
            "AND (?5 = '' OR instr(exchange_id, ?5) > 0 "
            "     OR instr(local_reference, ?5) > 0 OR instr(summary, ?5) > 0) "
            "ORDER BY seq LIMIT ?6"));
    stmt.Bind(1, after)
        .Bind(2, static_cast<int64_t>(filter.status))
        .Bind(3, static_cast<int64_t>(filter.category))
        .Bind(4, filter.owner_office)
        .Bind(5, filter.text)
        .Bind(6, static_cast<int64_t>(page_size) + 1);
    while (true) {
      CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
      if (!row) break;
      if (static_cast<int>(page.cases.size()) == page_size) {
        page.has_more = true;
        break;
      }
      page.last_position = stmt.ColumnInt(0);
      CB_ASSIGN_OR_RETURN(auto c,
                          ParseBody(stmt.ColumnBlob(2), stmt.ColumnText(1)));
      page.cases.push_back(std::move(c));
    }
    return absl::OkStatus();
  }));
  return page;
}

absl::StatusOr<v1::CaseReference> SqliteCaseStore::UpdateCase(
    const std::string& exchange_id, int64_t expected_version,
    const std::function<absl::Status(v1::CaseReference&)>& apply,
    const std::string& actor, const AuditEvent& audit) {
  v1::CaseReference updated;
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(v1::CaseReference c, ReadCase(conn, exchange_id));
    if (c.version() != expected_version) {
      return absl::AbortedError(absl::StrCat(
          "expected_version: case ", exchange_id, " is at version ",
          c.version(), ", not ", expected_version,
          "; read it again and reapply your change"));
    }
    CB_RETURN_IF_ERROR(apply(c));
    c.set_version(expected_version + 1);
    *c.mutable_updated_at() = ToProto(clock_->Now());
    c.set_updated_by(actor);
    CB_RETURN_IF_ERROR(WriteRow(conn, c));
    CB_RETURN_IF_ERROR(audit_->AppendInTransaction(conn, audit).status());
    updated = std::move(c);
    return absl::OkStatus();
  }));
  return updated;
}

// --- GatewayStore ------------------------------------------------------------

GatewayStore::LockFile::~LockFile() {
  if (fd >= 0) ::close(fd);  // releases the flock
}

std::string GatewayStore::DatabasePath(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / "gateway.db").string();
}

absl::StatusOr<std::unique_ptr<GatewayStore>> GatewayStore::Open(
    const std::string& data_dir, v1::Country country, const Clock* clock) {
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
    return absl::FailedPreconditionError(
        absl::StrCat(data_dir, " is in use by another running gateway (",
                     lock_path, " is locked)"));
  }
  CB_ASSIGN_OR_RETURN(store->db_, sqlite::Database::Open(DatabasePath(data_dir),
                                                         GatewayMigrations()));
  store->audit_ = std::make_unique<SqliteAuditLog>(store->db_.get(), clock);
  CB_RETURN_IF_ERROR(store->audit_->CatchUpTree());
  store->cases_ = std::make_unique<SqliteCaseStore>(
      store->db_.get(), store->audit_.get(), clock, country);
  CB_ASSIGN_OR_RETURN(store->exchange_,
                      SqliteExchangeStore::Create(store->db_.get(),
                                                  store->audit_.get(), clock));
  store->exchange_->set_shared_case_sink(
      [cases = store->cases_.get()](sqlite::Connection& conn,
                                    const v1::CaseReference& shared) {
        return cases->StoreSharedInTransaction(conn, shared);
      });
  return store;
}

}  // namespace casebridge::server
