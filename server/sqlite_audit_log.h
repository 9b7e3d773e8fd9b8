#ifndef CASEBRIDGE_SERVER_SQLITE_AUDIT_LOG_H_
#define CASEBRIDGE_SERVER_SQLITE_AUDIT_LOG_H_

#include "core/clock.h"
#include "server/audit_log.h"
#include "server/sqlite.h"

namespace casebridge::server {

// AuditLog in the gateway's SQLite database (tables audit_log and
// audit_payload_salts, see schema.cc and docs/audit-log.md).
class SqliteAuditLog final : public AuditLog {
 public:
  // `db` and `clock` must outlive this object.
  SqliteAuditLog(sqlite::Database* db, const Clock* clock)
      : db_(db), clock_(clock) {}

  absl::StatusOr<uint64_t> Append(const AuditEvent& event) override;
  absl::StatusOr<uint64_t> Size() override;
  absl::StatusOr<std::vector<StoredEntry>> Read(uint64_t start,
                                                size_t max) override;
  absl::StatusOr<VerifyReport> Verify() override;

  // Appends inside the caller's write transaction on `connection`, so the
  // entry commits or rolls back with the change it records.
  absl::StatusOr<uint64_t> AppendInTransaction(sqlite::Connection& connection,
                                               const AuditEvent& event);

  // Verifies the chain of the database file at `path` without a running
  // gateway (opened read-only as far as the log is concerned).
  static absl::StatusOr<VerifyReport> VerifyChain(sqlite::Connection& reader);

 private:
  sqlite::Database* const db_;
  const Clock* const clock_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_SQLITE_AUDIT_LOG_H_
