#ifndef CASEBRIDGE_SERVER_SQLITE_AUDIT_LOG_H_
#define CASEBRIDGE_SERVER_SQLITE_AUDIT_LOG_H_

#include "core/clock.h"
#include "core/merkle.h"
#include "server/audit_log.h"
#include "server/sqlite.h"

namespace casebridge::server {

// Tree nodes of the audit log, read from table audit_nodes on one
// connection (inside the caller's transaction).
class SqliteNodeSource final : public merkle::NodeSource {
 public:
  explicit SqliteNodeSource(sqlite::Connection& connection)
      : connection_(connection) {}
  absl::StatusOr<std::string> Node(int level, uint64_t index) override;

 private:
  sqlite::Connection& connection_;
};

// Refusals of calls by offices older than ?1 whose salts are still there,
// oldest first, at most ?2. Its WHERE repeats the partial index
// audit_refusal_salts' (migration 10) term for term, so the query walks that
// index and reads only what it purges; gateways' refusals are evidence kept
// (see the migration). AuditLogTest checks the plan.
inline constexpr char kPurgeableRefusals[] =
    "SELECT idx FROM audit_log WHERE status_code != 0 AND salt IS NOT NULL "
    "AND actor NOT IN ('spiffe://pk.casebridge/gateway', "
    "'spiffe://cn.casebridge/gateway') AND time_us < ?1 ORDER BY time_us "
    "LIMIT ?2";

// AuditLog in the gateway's SQLite database (tables audit_log, audit_nodes,
// audit_subjects and checkpoints: schema.cc and docs/audit-log.md).
class SqliteAuditLog final : public AuditLog {
 public:
  // `db` and `clock` must outlive this object.
  SqliteAuditLog(sqlite::Database* db, const Clock* clock)
      : db_(db), clock_(clock) {}

  // Adds the tree nodes and subject rows of the entries that have none yet,
  // in batches of write transactions. Appending writes the entry alone; the
  // checkpointer calls this before it signs, and the readers that need the
  // tree or the subjects call it when the log is ahead of them. Also
  // rebuilds a log from before the Merkle tree (they are derived data).
  absl::Status CatchUpTree();
  // The same, for every entry without them, inside the caller's write
  // transaction: for work that finds entries by their subjects (retention)
  // and must not miss one appended since its last CatchUpTree.
  absl::Status CatchUpInTransaction(sqlite::Connection& connection);
  // Entries that have their leaf in the stored tree (a prefix of the log).
  static absl::StatusOr<uint64_t> IndexedSizeOn(sqlite::Connection& connection);

  absl::StatusOr<uint64_t> Append(const AuditEvent& event) override;
  absl::StatusOr<uint64_t> Size() override;
  absl::StatusOr<std::vector<StoredEntry>> Read(uint64_t start,
                                                size_t max) override;
  absl::StatusOr<std::vector<StoredEntry>> ReadVisibleTo(
      const std::string& office, uint64_t start, size_t max,
      uint64_t* next) override;
  absl::StatusOr<std::string> RootAt(uint64_t size) override;
  absl::StatusOr<std::vector<std::string>> InclusionProof(
      uint64_t index, uint64_t size) override;
  absl::StatusOr<std::vector<std::string>> ConsistencyProof(
      uint64_t size1, uint64_t size2) override;
  absl::StatusOr<std::optional<StoredCheckpoint>> LatestCheckpoint() override;
  absl::StatusOr<std::optional<StoredCheckpoint>> LatestCosignedCheckpoint()
      override;
  absl::StatusOr<VerifyReport> Verify() override;

  // Appends inside the caller's write transaction on `connection`, so the
  // entry commits or rolls back with the change it records.
  absl::StatusOr<uint64_t> AppendInTransaction(sqlite::Connection& connection,
                                               const AuditEvent& event);

  // Whether entries at or after `from` call for a checkpoint at once: all
  // but the records of witnessing (cosignatures given, offers refused),
  // which wait for other entries or for Checkpointer::Options::quiet_max_age.
  static absl::StatusOr<bool> HasWorkSince(sqlite::Connection& connection,
                                           uint64_t from);
  static absl::StatusOr<uint64_t> SizeOn(sqlite::Connection& connection);
  static absl::StatusOr<std::optional<StoredCheckpoint>> LatestCheckpointOn(
      sqlite::Connection& connection, bool cosigned_only);
  // The newest cosigned checkpoint covering entry `index`; nullopt if none.
  absl::StatusOr<std::optional<StoredCheckpoint>> CosignedCheckpointCovering(
      uint64_t index);
  // The salt of entry `index`'s payload hash; nullopt once purged.
  absl::StatusOr<std::optional<std::string>> PayloadSalt(uint64_t index);
  // Retention of refusals (docs/audit-log.md#retention): sets to NULL the
  // salts of the refusal entries (outcome not OK) written before `cutoff`
  // whose actor is not a gateway: their payloads were requests of offices
  // (or unknown callers) that nothing stored and no other purge reaches.
  // Gateways' refusals stay provable (evidence: conflicting envelopes, forks
  // of the peer's log). At most `batch` entries a transaction, each
  // transaction audited as "retention.purge_refusals" by `actor`, subjects
  // the lowest and highest index purged and `cutoff` (RFC 3339, UTC).
  // Returns the number of entries purged.
  absl::StatusOr<int> PurgeRefusalSalts(absl::Time cutoff,
                                        const std::string& actor,
                                        int batch = 500);

  // Stores a newly signed checkpoint; FAILED_PRECONDITION unless it is
  // larger than every stored one.
  absl::Status StoreCheckpoint(const StoredCheckpoint& checkpoint);
  // Replaces checkpoint `size`'s note with one carrying the peer's verified
  // cosignature.
  absl::Status StoreCosigned(uint64_t size, const std::string& note);

  // Recomputes the leaves and checks them and the stored nodes, on a reader.
  // Entries not yet in the stored tree are recomputed only.
  static absl::StatusOr<VerifyReport> VerifyTree(sqlite::Connection& reader);

 private:
  // Adds the nodes and subject rows of at most `max_entries` entries (-1:
  // all) past the indexed prefix; returns how many it added.
  static absl::StatusOr<uint64_t> CatchUpOn(sqlite::Connection& connection,
                                            int64_t max_entries);
  // Runs `read` in a read transaction once the stored tree covers `size`
  // entries (catching it up first if need be); OUT_OF_RANGE, naming
  // `size_name`, if the log is smaller.
  absl::Status ReadTree(
      uint64_t size, absl::string_view size_name,
      const std::function<absl::Status(sqlite::Connection&)>& read);

  absl::StatusOr<std::vector<StoredEntry>> ReadRows(
      sqlite::Connection& c, const std::string& sql,
      const std::function<void(sqlite::Statement&)>& bind);

  sqlite::Database* const db_;
  const Clock* const clock_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_SQLITE_AUDIT_LOG_H_
