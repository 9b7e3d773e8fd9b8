#ifndef CASEBRIDGE_SERVER_SQLITE_CASE_STORE_H_
#define CASEBRIDGE_SERVER_SQLITE_CASE_STORE_H_

#include <memory>
#include <string>

#include "core/clock.h"
#include "server/case_store.h"
#include "server/sqlite.h"
#include "server/sqlite_audit_log.h"
#include "server/sqlite_exchange_store.h"

namespace casebridge::server {

// CaseStore in the gateway's SQLite database (table cases, schema.cc).
class SqliteCaseStore final : public CaseStore {
 public:
  // All pointers must outlive this object.
  SqliteCaseStore(sqlite::Database* db, SqliteAuditLog* audit,
                  const Clock* clock, v1::Country country)
      : db_(db), audit_(audit), clock_(clock), country_(country) {}

  absl::StatusOr<OpenedCase> OpenCase(const v1::CaseReference& draft,
                                      const std::string& owner,
                                      const RequestKey& key,
                                      const AuditEvent& audit) override;
  absl::StatusOr<v1::CaseReference> GetCase(
      const std::string& exchange_id) override;
  absl::StatusOr<CasePage> ListCases(const CaseFilter& filter, int64_t after,
                                     int page_size) override;
  // Keeps a case reference the peer shared, inside the caller's write
  // transaction: inserted if new, replaced if `shared` is a newer version of
  // the copy held. A case of our own country is refused.
  absl::Status StoreSharedInTransaction(sqlite::Connection& conn,
                                        const v1::CaseReference& shared);

  absl::StatusOr<v1::CaseReference> UpdateCase(
      const std::string& exchange_id, int64_t expected_version,
      const std::function<absl::Status(v1::CaseReference&)>& apply,
      const std::string& actor, const AuditEvent& audit) override;

 private:
  sqlite::Database* const db_;
  SqliteAuditLog* const audit_;
  const Clock* const clock_;
  const v1::Country country_;
};

// The gateway's database with its stores: `<data_dir>/gateway.db`.
class GatewayStore {
 public:
  // Creates `data_dir` (mode 0700) if needed, opens the database and brings
  // its schema up to date. `clock` must outlive the store.
  static absl::StatusOr<std::unique_ptr<GatewayStore>> Open(
      const std::string& data_dir, v1::Country country, const Clock* clock);

  static std::string DatabasePath(const std::string& data_dir);

  sqlite::Database& database() { return *db_; }
  SqliteAuditLog& audit_log() { return *audit_; }
  SqliteCaseStore& cases() { return *cases_; }
  SqliteExchangeStore& exchange() { return *exchange_; }

 private:
  GatewayStore() = default;
  // An exclusive lock on <data_dir>/gateway.lock, held while open: two
  // gateways must never write one database.
  struct LockFile {
    int fd = -1;
    ~LockFile();
  };
  LockFile lock_;
  std::unique_ptr<sqlite::Database> db_;
  std::unique_ptr<SqliteAuditLog> audit_;
  std::unique_ptr<SqliteCaseStore> cases_;
  std::unique_ptr<SqliteExchangeStore> exchange_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_SQLITE_CASE_STORE_H_
