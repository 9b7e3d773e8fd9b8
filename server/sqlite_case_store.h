#ifndef CASEBRIDGE_SERVER_SQLITE_CASE_STORE_H_
#define CASEBRIDGE_SERVER_SQLITE_CASE_STORE_H_

#include <memory>
#include <string>

#include "core/clock.h"
#include "core/config.h"
#include "server/case_store.h"
#include "server/record_keys.h"
#include "server/sqlite.h"
#include "server/sqlite_audit_log.h"
#include "server/sqlite_exchange_store.h"

namespace casebridge::server {

// CaseStore in the gateway's SQLite database (table cases, schema.cc).
class SqliteCaseStore final : public CaseStore {
 public:
  // All pointers must outlive this object. With a `sealer`, each case's
  // body is sealed under the case's key; without, it is stored as it is
  // (tests of other parts only).
  SqliteCaseStore(sqlite::Database* db, SqliteAuditLog* audit,
                  const Clock* clock, v1::Country country,
                  const RecordSealer* sealer = nullptr)
      : db_(db),
        audit_(audit),
        clock_(clock),
        country_(country),
        sealer_(sealer) {}

  absl::StatusOr<OpenedCase> OpenCase(const v1::CaseReference& draft,
                                      const std::string& owner,
                                      const RequestKey& key,
                                      const AuditEvent& audit) override;
  absl::StatusOr<v1::CaseReference> GetCase(
      const std::string& exchange_id) override;
  absl::StatusOr<CaseAccess> AccessOf(const std::string& exchange_id,
                                      const std::string& office) override;
  absl::StatusOr<CasePage> ListCases(const CaseFilter& filter, int64_t after,
                                     int page_size) override;
  // Keeps a case reference the peer shared, inside the caller's write
  // transaction: inserted if new, replaced if `shared` is a newer version of
  // the copy held. A case of our own country is refused.
  absl::Status StoreSharedInTransaction(sqlite::Connection& conn,
                                        const v1::CaseReference& shared);

  // Refuses (FAILED_PRECONDITION) a case whose personal data was purged.
  using CaseStore::UpdateCase;
  absl::StatusOr<v1::CaseReference> UpdateCase(
      const std::string& exchange_id, int64_t expected_version,
      const std::function<absl::Status(v1::CaseReference&)>& apply,
      const std::string& actor, const AuditEvent& audit,
      const AlsoAudit& also) override;

  // Retention (docs/audit-log.md#retention): for each status of
  // `policy.case_status_days`, the cases with that status whose last change
  // is older than its days lose their personal fields: the body keeps every
  // other field, in the clear, with victims and last known locations
  // emptied and personal_data_purged_at set; the case's key is shredded;
  // the salts of its case.open and case.update entries are purged. Each
  // purge is audited as "retention.purge" by `actor`, subject the exchange
  // id. Then the CASE_SHARE messages of every purged case that are not in
  // flight (received, delivered or failed), which carry copies of the case,
  // are purged as message retention purges them
  // (PurgeMessageInTransaction); their number goes to `*shares_purged`.
  // After a run that purged anything the WAL is truncated. Returns the
  // number of cases purged.
  absl::StatusOr<int> PurgeExpired(const config::RetentionSettings& policy,
                                   absl::Time now, const std::string& actor,
                                   int* shares_purged = nullptr);

  // Seals the bodies stored without a seal (written before migration 6 or
  // by a store without a data key), each audited as kSealedAtOpenAction by
  // `actor` in the transaction that seals it. Returns how many. Needs a
  // sealer.
  absl::StatusOr<int> SealStoredBodies(const std::string& actor);

 private:
  sqlite::Database* const db_;
  SqliteAuditLog* const audit_;
  const Clock* const clock_;
  const v1::Country country_;
  const RecordSealer* const sealer_;  // may be null
};

// Fills every empty victim pseudonym of `c` with a fresh one, "V-" and 8
// random base32 characters, unique within the case: victims are
// pseudonymous unless an office chose a pseudonym itself.
void MintPseudonyms(v1::CaseReference& c);

// How to open the gateway's store.
struct StoreOptions {
  std::string data_dir;
  v1::Country country = v1::COUNTRY_UNSPECIFIED;
  // The data key (crypto::LoadKeyFile). Created (0600) only if missing
  // while the database holds nothing sealed; otherwise a missing or other
  // key is refused at open. Empty: no data protection, personal fields
  // stored as they are; for tests and tools that never meet sealed rows.
  std::string data_key_file;
};

// What one retention run purged.
struct RetentionReport {
  int messages = 0;  // by their own retention, and shares of purged cases
  int cases = 0;
  int refusals = 0;  // refused calls' entries whose salts were purged
};

// The gateway's database with its stores: `<data_dir>/gateway.db`.
class GatewayStore {
 public:
  // Creates `data_dir` (mode 0700) if needed, opens the database, brings
  // its schema up to date, settles a data key rotation a crash interrupted
  // (server/data_key_rotation.h), reads the data key (creating it only if the
  // database holds nothing sealed), checks it against the database's check
  // value (writing that value on first use) and seals the payloads stored
  // without a seal. `clock` must outlive the store. Errors about the data key
  // (missing while sealed data exists, another key, mode, owner, size) are
  // FAILED_PRECONDITION and name the file.
  static absl::StatusOr<std::unique_ptr<GatewayStore>> Open(
      const StoreOptions& options, const Clock* clock);
  // With the gateway's configuration: data_dir, country and
  // data_protection.key_file.
  static absl::StatusOr<std::unique_ptr<GatewayStore>> Open(
      const config::Gateway& config, const Clock* clock);
  // Without data protection (see StoreOptions::data_key_file).
  static absl::StatusOr<std::unique_ptr<GatewayStore>> Open(
      const std::string& data_dir, v1::Country country, const Clock* clock);

  static std::string DatabasePath(const std::string& data_dir);

  sqlite::Database& database() { return *db_; }
  SqliteAuditLog& audit_log() { return *audit_; }
  SqliteCaseStore& cases() { return *cases_; }
  SqliteExchangeStore& exchange() { return *exchange_; }
  // Null without data protection.
  const RecordSealer* sealer() const { return sealer_.get(); }
  // Whether opening finished a data key rotation that a crash interrupted
  // after its commit (server/data_key_rotation.h).
  bool finished_interrupted_rotation() const {
    return finished_interrupted_rotation_;
  }
  // Whether the data key file is inside data_dir, where every backup of the
  // folder carries it along with the database it protects (the default
  // <data_dir>/data.key): worth a warning at start.
  bool key_inside_data_dir() const { return key_inside_data_dir_; }

  // One retention run: messages by kind, then cases by status, then the
  // salts of refusal entries older than the shortest retention
  // (docs/audit-log.md#retention).
  absl::StatusOr<RetentionReport> PurgeExpired(
      const config::RetentionSettings& policy, absl::Time now,
      const std::string& actor);

 private:
  GatewayStore() = default;
  // An exclusive lock on <data_dir>/gateway.lock, held while open: two
  // gateways must never write one database.
  struct LockFile {
    int fd = -1;
    ~LockFile();
  };
  LockFile lock_;
  bool key_inside_data_dir_ = false;
  bool finished_interrupted_rotation_ = false;
  std::unique_ptr<RecordSealer> sealer_;
  std::unique_ptr<sqlite::Database> db_;
  std::unique_ptr<SqliteAuditLog> audit_;
  std::unique_ptr<SqliteCaseStore> cases_;
  std::unique_ptr<SqliteExchangeStore> exchange_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_SQLITE_CASE_STORE_H_
