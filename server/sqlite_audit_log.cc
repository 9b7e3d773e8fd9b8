#include "server/sqlite_audit_log.h"

#include "absl/strings/str_cat.h"
#include "core/crypto.h"
#include "core/status_macros.h"

namespace casebridge::server {
namespace {

constexpr size_t kSaltBytes = 16;

}  // namespace

absl::StatusOr<uint64_t> SqliteAuditLog::AppendInTransaction(
    sqlite::Connection& connection, const AuditEvent& event) {
  uint64_t index = 0;
  std::string previous = audit::GenesisLink();
  {
    CB_ASSIGN_OR_RETURN(
        auto last,
        connection.Prepare(
            "SELECT idx, link FROM audit_log ORDER BY idx DESC LIMIT 1"));
    CB_ASSIGN_OR_RETURN(const bool row, last.Step());
    if (row) {
      index = static_cast<uint64_t>(last.ColumnInt(0)) + 1;
      previous = last.ColumnBlob(1);
    }
  }
  const std::string salt = crypto::RandomBytes(kSaltBytes);
  audit::Entry entry;
  entry.index = index;
  // Microseconds: what the encoding keeps.
  entry.time = absl::FromUnixMicros(absl::ToUnixMicros(clock_->Now()));
  entry.actor = event.actor;
  entry.action = event.action;
  entry.subjects = event.subjects;
  entry.payload_hash = audit::PayloadHash(salt, event.payload);
  entry.status_code = static_cast<int32_t>(event.outcome.code());
  entry.status_message = std::string(event.outcome.message());
  const std::string bytes = audit::Encode(entry);
  const std::string link = audit::ChainLink(previous, bytes);

  CB_ASSIGN_OR_RETURN(
      auto insert,
      connection.Prepare(
          "INSERT INTO audit_log(idx, entry, link, time_us, actor, "
          "action, status_code) VALUES(?, ?, ?, ?, ?, ?, ?)"));
  insert.Bind(1, static_cast<int64_t>(index))
      .BindBlob(2, bytes)
      .BindBlob(3, link)
      .Bind(4, absl::ToUnixMicros(entry.time))
      .Bind(5, entry.actor)
      .Bind(6, entry.action)
      .Bind(7, static_cast<int64_t>(entry.status_code));
  CB_RETURN_IF_ERROR(insert.Run());
  CB_ASSIGN_OR_RETURN(
      auto salt_insert,
      connection.Prepare(
          "INSERT INTO audit_payload_salts(idx, salt) VALUES(?, ?)"));
  salt_insert.Bind(1, static_cast<int64_t>(index)).BindBlob(2, salt);
  CB_RETURN_IF_ERROR(salt_insert.Run());
  return index;
}

absl::StatusOr<uint64_t> SqliteAuditLog::Append(const AuditEvent& event) {
  uint64_t index = 0;
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(index, AppendInTransaction(c, event));
    return absl::OkStatus();
  }));
  return index;
}

absl::StatusOr<uint64_t> SqliteAuditLog::Size() {
  uint64_t size = 0;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log"));
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (row) size = static_cast<uint64_t>(stmt.ColumnInt(0));
    return absl::OkStatus();
  }));
  return size;
}

absl::StatusOr<std::vector<StoredEntry>> SqliteAuditLog::Read(uint64_t start,
                                                              size_t max) {
  std::vector<StoredEntry> out;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare("SELECT idx, entry, link FROM audit_log WHERE idx >= ? "
                  "ORDER BY idx LIMIT ?"));
    stmt.Bind(1, static_cast<int64_t>(start))
        .Bind(2, static_cast<int64_t>(max));
    while (true) {
      CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
      if (!row) break;
      StoredEntry stored;
      stored.index = static_cast<uint64_t>(stmt.ColumnInt(0));
      stored.bytes = stmt.ColumnBlob(1);
      stored.link = stmt.ColumnBlob(2);
      CB_ASSIGN_OR_RETURN(stored.entry, audit::Decode(stored.bytes));
      out.push_back(std::move(stored));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<VerifyReport> SqliteAuditLog::VerifyChain(
    sqlite::Connection& reader) {
  VerifyReport report;
  CB_ASSIGN_OR_RETURN(
      auto stmt,
      reader.Prepare("SELECT idx, entry, link FROM audit_log ORDER BY idx"));
  std::string previous = audit::GenesisLink();
  uint64_t expected = 0;
  while (true) {
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (!row) break;
    const auto index = static_cast<uint64_t>(stmt.ColumnInt(0));
    const std::string bytes = stmt.ColumnBlob(1);
    const std::string link = stmt.ColumnBlob(2);
    auto fail = [&](uint64_t at, std::string why) {
      report.first_bad = at;
      report.problem = std::move(why);
      return report;
    };
    if (index != expected) {
      return fail(expected,
                  absl::StrCat("entry ", expected,
                               " is missing (next stored is ", index, ")"));
    }
    auto entry = audit::Decode(bytes);
    if (!entry.ok()) return fail(index, std::string(entry.status().message()));
    if (entry->index != index) {
      return fail(index, absl::StrCat("entry stored at ", index,
                                      " says it is entry ", entry->index));
    }
    const std::string recomputed = audit::ChainLink(previous, bytes);
    if (recomputed != link) {
      return fail(index,
                  "chain link does not match the entry's bytes and the "
                  "previous link (entry edited, removed or reordered)");
    }
    previous = link;
    ++expected;
    report.entries = expected;
  }
  return report;
}

absl::StatusOr<VerifyReport> SqliteAuditLog::Verify() {
  VerifyReport report;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(report, VerifyChain(c));
    return absl::OkStatus();
  }));
  return report;
}

}  // namespace casebridge::server
