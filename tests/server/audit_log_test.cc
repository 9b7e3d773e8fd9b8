#include "server/audit_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/audit_entry.h"
#include "core/crypto.h"
#include "core/grpc_status.h"
#include "core/identity.h"
#include "core/merkle.h"
#include "core/status_macros.h"
#include "server/schema.h"
#include "server/sqlite_audit_log.h"
#include "server/sqlite_case_store.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr char kFia[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kPkGateway[] = "spiffe://pk.casebridge/gateway";

AuditEvent Event(const std::string& action, std::vector<std::string> subjects,
                 const std::string& payload = "payload") {
  AuditEvent event;
  event.actor = kFia;
  event.action = action;
  event.subjects = std::move(subjects);
  event.payload = payload;
  return event;
}

// A plain SQLite connection to the gateway's file, used the way someone with
// file access would: to tamper with the log behind the gateway's back.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  std::string Blob(const std::string& sql, int64_t idx) {
    sqlite3_stmt* stmt = Prepare(sql);
    sqlite3_bind_int64(stmt, 1, idx);
    std::string out;
    if (sqlite3_step(stmt) == SQLITE_ROW) {
      const void* data = sqlite3_column_blob(stmt, 0);
      const int size = sqlite3_column_bytes(stmt, 0);
      if (data != nullptr) {
        out.assign(static_cast<const char*>(data), static_cast<size_t>(size));
      }
    } else {
      ADD_FAILURE() << "no row for " << sql << " with " << idx;
    }
    sqlite3_finalize(stmt);
    return out;
  }

  // Sets `entry` of row `idx`.
  void SetRow(int64_t idx, const std::string& entry) {
    SetBlob("UPDATE audit_log SET entry = ? WHERE idx = ?", idx, entry);
  }

  // Runs `sql` binding `blob` then `idx`; expects one row changed.
  void SetBlob(const std::string& sql, int64_t idx, const std::string& blob) {
    sqlite3_stmt* stmt = Prepare(sql);
    sqlite3_bind_blob(stmt, 1, blob.data(), static_cast<int>(blob.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 2, idx);
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_DONE) << sqlite3_errmsg(db_);
    EXPECT_EQ(sqlite3_changes(db_), 1);
    sqlite3_finalize(stmt);
  }

  void Exec(const std::string& sql) {
    char* error = nullptr;
    EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error),
              SQLITE_OK)
        << (error != nullptr ? error : "");
    sqlite3_free(error);
  }

 private:
  sqlite3_stmt* Prepare(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db_);
    return stmt;
  }
  sqlite3* db_ = nullptr;
};

// RFC 6962 section 2.1's MTH over leaf hashes, by its definition.
std::string ReferenceRoot(const std::vector<std::string>& leaves,
                          size_t begin = 0, size_t end = SIZE_MAX) {
  end = std::min(end, leaves.size());
  if (end - begin == 1) return leaves[begin];
  size_t split = 1;
  while (split * 2 < end - begin) split *= 2;
  return merkle::NodeHash(ReferenceRoot(leaves, begin, begin + split),
                          ReferenceRoot(leaves, begin + split, end));
}

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("audit-log");
    Reopen();
  }

  void Reopen() {
    store_.reset();
    auto store = GatewayStore::Open(dir_, v1::COUNTRY_PK, &clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  SqliteAuditLog& log() { return store_->audit_log(); }
  std::string DbPath() const { return GatewayStore::DatabasePath(dir_); }

  // The single integer `sql` selects, on a reader.
  int64_t Count(const std::string& sql) {
    int64_t out = -1;
    EXPECT_OK(store_->database().Read([&](sqlite::Connection& c) {
      auto stmt = c.Prepare(sql);
      if (!stmt.ok()) return stmt.status();
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (*row) out = stmt->ColumnInt(0);
      return absl::OkStatus();
    }));
    return out;
  }

  // Appends `n` entries "case.update" with subjects "PK-2026-00000<i>".
  void AppendEntries(int n) {
    for (int i = 0; i < n; ++i) {
      ASSERT_OK_AND_ASSIGN(
          const uint64_t index,
          log().Append(Event("case.update", {absl::StrCat("PK-2026-00000", i)},
                             absl::StrCat("payload ", i))));
      ASSERT_EQ(index, static_cast<uint64_t>(i));
      clock_.Advance(absl::Seconds(1));
    }
  }

  // Closes the gateway's connections, lets `tamper` edit the file, reopens
  // and verifies.
  template <typename F>
  VerifyReport TamperAndVerify(F tamper) {
    // The entries are in the stored tree, as before every checkpoint.
    EXPECT_OK(log().CatchUpTree());
    store_.reset();
    {
      RawDb raw(DbPath());
      tamper(raw);
    }
    Reopen();
    auto report = log().Verify();
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *report : VerifyReport{};
  }

  FakeClock clock_;
  std::string dir_;
  std::unique_ptr<GatewayStore> store_;
};

TEST_F(AuditLogTest, EmptyLogHasSizeZeroAndVerifies) {
  ASSERT_OK_AND_ASSIGN(const uint64_t size, log().Size());
  EXPECT_EQ(size, 0u);
  ASSERT_OK_AND_ASSIGN(const auto entries, log().Read(0, 10));
  EXPECT_THAT(entries, IsEmpty());
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, log().Verify());
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.entries, 0u);
}

TEST_F(AuditLogTest, AppendReturnsConsecutiveIndexesFromZero) {
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(const uint64_t index,
                         log().Append(Event("case.get", {"PK-2026-000001"})));
    EXPECT_EQ(index, i);
  }
  ASSERT_OK_AND_ASSIGN(const uint64_t size, log().Size());
  EXPECT_EQ(size, 4u);
}

TEST_F(AuditLogTest, ReadReturnsDecodedEntries) {
  const absl::Time t0 = clock_.Now();
  ASSERT_OK(log().Append(Event("case.open", {"PK-2026-000001"})).status());
  clock_.Advance(absl::Microseconds(1500));
  AuditEvent second = Event("case.update", {"PK-2026-000001", "受害者已获救"});
  second.actor = "spiffe://pk.casebridge/office/embassy-beijing";
  ASSERT_OK(log().Append(second).status());

  ASSERT_OK_AND_ASSIGN(const std::vector<StoredEntry> entries,
                       log().Read(0, 10));
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].index, 0u);
  EXPECT_EQ(entries[0].entry.index, 0u);
  EXPECT_EQ(entries[0].entry.actor, kFia);
  EXPECT_EQ(entries[0].entry.action, "case.open");
  EXPECT_THAT(entries[0].entry.subjects, ElementsAre("PK-2026-000001"));
  EXPECT_EQ(entries[0].entry.status_code, 0);
  EXPECT_EQ(entries[0].entry.status_message, "");
  EXPECT_EQ(entries[0].entry.time, t0);
  EXPECT_EQ(entries[0].entry.payload_hash.size(), 32u);
  EXPECT_EQ(entries[0].bytes, audit::Encode(entries[0].entry));

  EXPECT_EQ(entries[1].index, 1u);
  EXPECT_EQ(entries[1].entry.actor,
            "spiffe://pk.casebridge/office/embassy-beijing");
  EXPECT_EQ(entries[1].entry.action, "case.update");
  EXPECT_THAT(entries[1].entry.subjects,
              ElementsAre("PK-2026-000001", "受害者已获救"));
  EXPECT_EQ(entries[1].entry.time, t0 + absl::Microseconds(1500));
  // Each entry is a leaf of the tree: SHA-256(0x00 || bytes), stored once
  // the tree catches up (before a checkpoint).
  ASSERT_OK(log().CatchUpTree());
  store_.reset();
  RawDb raw(DbPath());
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(raw.Blob("SELECT hash FROM audit_nodes WHERE level = 0 AND "
                       "idx = ?",
                       i),
              crypto::Sha256(std::string(1, '\0') + entries[i].bytes));
  }
  EXPECT_EQ(raw.Blob("SELECT hash FROM audit_nodes WHERE level = 1 AND "
                     "idx = ?",
                     0),
            merkle::NodeHash(merkle::LeafHash(entries[0].bytes),
                             merkle::LeafHash(entries[1].bytes)));
}

TEST_F(AuditLogTest, ReadHonoursStartAndMax) {
  AppendEntries(5);
  ASSERT_OK_AND_ASSIGN(const auto middle, log().Read(1, 2));
  ASSERT_EQ(middle.size(), 2u);
  EXPECT_EQ(middle[0].index, 1u);
  EXPECT_EQ(middle[1].index, 2u);
  ASSERT_OK_AND_ASSIGN(const auto tail, log().Read(3, 100));
  ASSERT_EQ(tail.size(), 2u);
  EXPECT_EQ(tail[1].index, 4u);
  ASSERT_OK_AND_ASSIGN(const auto beyond, log().Read(5, 10));
  EXPECT_THAT(beyond, IsEmpty());
}

TEST_F(AuditLogTest, StoresRefusalWithCodeAndMessage) {
  AuditEvent event = Event("case.open", {});
  event.actor = "spiffe://pk.casebridge/auditor/pk-auditor";
  event.outcome =
      absl::PermissionDeniedError("role auditor may not call OpenCase");
  ASSERT_OK_AND_ASSIGN(const uint64_t index, log().Append(event));
  ASSERT_OK_AND_ASSIGN(const auto entries, log().Read(index, 1));
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].entry.status_code,
            static_cast<int32_t>(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(entries[0].entry.status_code, 7);  // grpc PERMISSION_DENIED
  EXPECT_EQ(entries[0].entry.status_message,
            "role auditor may not call OpenCase");
  EXPECT_EQ(entries[0].entry.actor,
            "spiffe://pk.casebridge/auditor/pk-auditor");
}

TEST_F(AuditLogTest, StoresTheShownMessageOfTheGatewaysOwnStorageTrouble) {
  // Offices read their own entries and auditors all: the SQL of a failed
  // write stays in the gateway log.
  AuditEvent event = Event("message.send", {});
  event.outcome = WithLogOnlyDetail(absl::ResourceExhaustedError(
      "executing \"INSERT INTO outbox(envelope_id, ...) VALUES(?, ...)\": "
      "database or disk is full (sqlite 13)"));
  ASSERT_OK_AND_ASSIGN(const uint64_t index, log().Append(event));
  ASSERT_OK_AND_ASSIGN(const auto entries, log().Read(index, 1));
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].entry.status_code,
            static_cast<int32_t>(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(entries[0].entry.status_message,
            "the gateway's storage is full; try again later");
}

// Retention of refusals: a refused call's request (an OpenCase naming a
// victim, say) was never stored, so no purge of a message or case reaches
// its entry.
TEST_F(AuditLogTest, PurgesTheSaltsOfOldRefusalsOnlyInAuditedBatches) {
  auto refusal = [] {
    AuditEvent event = Event("case.open", {}, "an OpenCase naming a victim");
    event.outcome = absl::InvalidArgumentError("victims[0].age: negative");
    return event;
  };
  std::vector<uint64_t> old_refusals;
  ASSERT_OK_AND_ASSIGN(const uint64_t first, log().Append(refusal()));
  old_refusals.push_back(first);
  ASSERT_OK_AND_ASSIGN(const uint64_t success,
                       log().Append(Event("case.update", {"PK-2026-000001"})));
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(absl::Seconds(1));
    ASSERT_OK_AND_ASSIGN(const uint64_t index, log().Append(refusal()));
    old_refusals.push_back(index);
  }
  // Gateways' refusals are evidence the log keeps provable: an envelope kept
  // in envelope_conflicts, a fork of the peer's log, the peer's permanent
  // refusal of one of ours.
  std::vector<uint64_t> evidence;
  for (const auto& [actor, action] :
       std::vector<std::pair<std::string, std::string>>{
           {GatewayIdentity(v1::COUNTRY_CN), "envelope.received"},
           {GatewayIdentity(v1::COUNTRY_CN), "witness.fork"},
           {GatewayIdentity(v1::COUNTRY_PK), "envelope.refused_by_peer"}}) {
    AuditEvent event = Event(action, {"PK-2026-000001"}, "a signature");
    event.actor = actor;
    event.outcome = absl::AlreadyExistsError("kept as evidence");
    ASSERT_OK_AND_ASSIGN(const uint64_t index, log().Append(event));
    evidence.push_back(index);
  }
  const absl::Time cutoff = clock_.Now() + absl::Seconds(1);
  clock_.Advance(absl::Hours(1));
  ASSERT_OK_AND_ASSIGN(const uint64_t recent, log().Append(refusal()));
  ASSERT_OK_AND_ASSIGN(const uint64_t size_before, log().Size());

  ASSERT_OK_AND_ASSIGN(const int purged,
                       log().PurgeRefusalSalts(cutoff, kPkGateway, 3));
  EXPECT_EQ(purged, 4);
  for (const uint64_t index : old_refusals) {
    ASSERT_OK_AND_ASSIGN(const auto salt, log().PayloadSalt(index));
    EXPECT_EQ(salt, std::nullopt) << "entry " << index;
  }
  evidence.push_back(success);
  evidence.push_back(recent);
  for (const uint64_t index : evidence) {
    ASSERT_OK_AND_ASSIGN(const auto salt, log().PayloadSalt(index));
    EXPECT_NE(salt, std::nullopt) << "entry " << index;
  }
  // One entry per transaction (3 and then 1), naming the lowest and highest
  // index it purged and the cutoff.
  ASSERT_OK_AND_ASSIGN(const auto added, log().Read(size_before, 10));
  ASSERT_EQ(added.size(), 2u);
  for (const StoredEntry& e : added) {
    EXPECT_EQ(e.entry.action, "retention.purge_refusals");
    EXPECT_EQ(e.entry.actor, kPkGateway);
    EXPECT_EQ(e.entry.status_code, 0);
  }
  const std::string cutoff_text =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", cutoff, absl::UTCTimeZone());
  EXPECT_THAT(added[0].entry.subjects,
              ElementsAre(absl::StrCat(old_refusals[0]),
                          absl::StrCat(old_refusals[2]), cutoff_text));
  EXPECT_THAT(added[1].entry.subjects,
              ElementsAre(absl::StrCat(old_refusals[3]),
                          absl::StrCat(old_refusals[3]), cutoff_text));

  // Nothing left to purge: no entry either.
  ASSERT_OK_AND_ASSIGN(const int again,
                       log().PurgeRefusalSalts(cutoff, kPkGateway));
  EXPECT_EQ(again, 0);
  ASSERT_OK_AND_ASSIGN(const uint64_t size_after, log().Size());
  EXPECT_EQ(size_after, size_before + 2);
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, log().Verify());
  EXPECT_TRUE(report.ok()) << report.problem;
}

TEST_F(AuditLogTest, ThePurgeOfRefusalsWalksItsPartialIndex) {
  // The query's WHERE must repeat the index's (migration 10): otherwise
  // every run would scan the whole log while holding the writer.
  std::string plan;
  ASSERT_OK(store_->database().Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto explain,
        c.Prepare(absl::StrCat("EXPLAIN QUERY PLAN ", kPurgeableRefusals)));
    while (true) {
      CB_ASSIGN_OR_RETURN(const bool row, explain.Step());
      if (!row) break;
      absl::StrAppend(&plan, explain.ColumnText(3), "\n");
    }
    return absl::OkStatus();
  }));
  EXPECT_THAT(plan, HasSubstr("USING INDEX audit_refusal_salts (time_us<?)"));
  EXPECT_THAT(plan, Not(HasSubstr("TEMP B-TREE")));
  // The gateways' identities the query leaves out are the only ones a
  // gateway can have.
  EXPECT_THAT(
      kPurgeableRefusals,
      HasSubstr(absl::StrCat("'", GatewayIdentity(v1::COUNTRY_PK), "', '",
                             GatewayIdentity(v1::COUNTRY_CN), "'")));
}

TEST_F(AuditLogTest, PurgingRefusalSaltsInBatchesOfNoneIsRefused) {
  AuditEvent event = Event("case.get", {"PK-2026-000001"});
  event.outcome = absl::NotFoundError("no case PK-2026-000001");
  ASSERT_OK_AND_ASSIGN(const uint64_t index, log().Append(event));
  EXPECT_THAT(
      log().PurgeRefusalSalts(clock_.Now() + absl::Hours(1), kPkGateway, 0),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch")));
  ASSERT_OK_AND_ASSIGN(const auto salt, log().PayloadSalt(index));
  EXPECT_NE(salt, std::nullopt);
  ASSERT_OK_AND_ASSIGN(const uint64_t size, log().Size());
  EXPECT_EQ(size, index + 1);
}

TEST_F(AuditLogTest, SamePayloadHashesDifferentlyUnderFreshSalts) {
  ASSERT_OK_AND_ASSIGN(const uint64_t a,
                       log().Append(Event("case.get", {}, "same payload")));
  ASSERT_OK_AND_ASSIGN(const uint64_t b,
                       log().Append(Event("case.get", {}, "same payload")));
  ASSERT_OK_AND_ASSIGN(const auto entries, log().Read(0, 10));
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_NE(entries[0].entry.payload_hash, entries[1].entry.payload_hash);

  for (const uint64_t index : {a, b}) {
    std::string salt;
    ASSERT_OK(
        store_->database().Read([&](sqlite::Connection& c) -> absl::Status {
          auto stmt = c.Prepare("SELECT salt FROM audit_log WHERE idx = ?");
          if (!stmt.ok()) return stmt.status();
          stmt->Bind(1, static_cast<int64_t>(index));
          auto row = stmt->Step();
          if (!row.ok()) return row.status();
          if (!*row) return absl::NotFoundError("no salt");
          salt = stmt->ColumnBlob(0);
          return absl::OkStatus();
        }));
    EXPECT_EQ(salt.size(), 16u);
    EXPECT_EQ(entries[index].entry.payload_hash,
              audit::PayloadHash(salt, "same payload"));
  }
}

TEST_F(AuditLogTest, AppendWritesTheEntryAloneAndTheTreeCatchesUpLater) {
  AppendEntries(3);
  // An office call writes one row; its tree nodes and subject rows wait
  // for the next checkpoint.
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_log WHERE salt IS NOT NULL"), 3);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_nodes"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_subjects"), 0);
  ASSERT_OK_AND_ASSIGN(const VerifyReport unindexed, log().Verify());
  EXPECT_TRUE(unindexed.ok()) << unindexed.problem;
  EXPECT_EQ(unindexed.entries, 3u);

  ASSERT_OK(log().CatchUpTree());
  // Leaves 0..2 and node (1, 0) over leaves 0 and 1.
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_nodes WHERE level = 0"), 3);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_nodes WHERE level = 1"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_subjects WHERE subject = "
                  "'PK-2026-000002' AND idx = 2"),
            1);
  // Catching up again finds nothing to do.
  ASSERT_OK(log().CatchUpTree());
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_nodes"), 4);
}

TEST_F(AuditLogTest, CatchingUpManyEntriesGivesTheSameTree) {
  // More entries than one catch-up unit indexes (it holds the writer only
  // briefly): the tree is still the one over every entry.
  constexpr int kMany = 257;
  for (int i = 0; i < kMany; ++i) {
    ASSERT_OK(log()
                  .Append(Event("case.get", {absl::StrCat("PK-2026-", i)}))
                  .status());
  }
  ASSERT_OK(log().CatchUpTree());
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_nodes WHERE level = 0"), kMany);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_subjects"), kMany);
  ASSERT_OK_AND_ASSIGN(const auto entries, log().Read(0, kMany));
  std::vector<std::string> leaves;
  for (const StoredEntry& e : entries) {
    leaves.push_back(merkle::LeafHash(e.bytes));
  }
  ASSERT_EQ(leaves.size(), static_cast<size_t>(kMany));
  ASSERT_OK_AND_ASSIGN(const std::string root, log().RootAt(kMany));
  EXPECT_EQ(root, ReferenceRoot(leaves));
  for (const uint64_t index : {0, 99, 100, 199, 256}) {
    ASSERT_OK_AND_ASSIGN(const auto proof, log().InclusionProof(index, kMany));
    EXPECT_OK(
        merkle::VerifyInclusion(index, kMany, leaves[index], proof, root));
  }
}

TEST_F(AuditLogTest, CatchingUpInATransactionIndexesEveryEntryBehind) {
  // What a purge's transaction does before it finds entries by subject:
  // every entry appended since the last catch-up gets its subject rows (and
  // leaf) there, in one go, whatever their number.
  constexpr int kMany = 257;
  AppendEntries(kMany);
  int64_t found = -1;
  ASSERT_OK(store_->database().Write([&](sqlite::Connection& c) {
    CB_RETURN_IF_ERROR(log().CatchUpInTransaction(c));
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare("SELECT idx FROM audit_subjects WHERE subject = ?"));
    stmt.Bind(1, absl::StrCat("PK-2026-00000", kMany - 1));
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (row) found = stmt.ColumnInt(0);
    return absl::OkStatus();
  }));
  EXPECT_EQ(found, kMany - 1);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_subjects"), kMany);
  ASSERT_OK_AND_ASSIGN(const auto entries, log().Read(0, kMany));
  std::vector<std::string> leaves;
  for (const StoredEntry& e : entries) {
    leaves.push_back(merkle::LeafHash(e.bytes));
  }
  ASSERT_OK_AND_ASSIGN(const std::string root, log().RootAt(kMany));
  EXPECT_EQ(root, ReferenceRoot(leaves));
}

TEST_F(AuditLogTest, ProofsBeyondTheStoredTreeCatchItUpFirst) {
  AppendEntries(5);
  ASSERT_OK_AND_ASSIGN(const auto entries, log().Read(0, 10));
  std::vector<std::string> leaves;
  for (const StoredEntry& e : entries) {
    leaves.push_back(merkle::LeafHash(e.bytes));
  }
  ASSERT_OK_AND_ASSIGN(const std::string root, log().RootAt(5));
  EXPECT_EQ(root, ReferenceRoot(leaves));
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_nodes WHERE level = 0"), 5);

  // Entries 5 and 6: not in the stored tree.
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK(log().Append(Event("case.get", {"PK-2026-000001"})).status());
  }
  ASSERT_OK_AND_ASSIGN(const auto proof, log().InclusionProof(6, 7));
  ASSERT_OK_AND_ASSIGN(const auto more, log().Read(5, 10));
  for (const StoredEntry& e : more) leaves.push_back(merkle::LeafHash(e.bytes));
  EXPECT_OK(
      merkle::VerifyInclusion(6, 7, leaves[6], proof, ReferenceRoot(leaves)));
  EXPECT_THAT(log().ConsistencyProof(5, 8),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("larger than the log (7 entries)")));
}

TEST_F(AuditLogTest, UpgradeMovesSaltsIntoTheLogAndIndexesOldEntries) {
  // A data directory as a gateway of schema version 3 left it: the entry's
  // salt in a table of its own.
  store_.reset();
  const std::string old_dir = NewTempDir("audit-log-v3");
  const std::string salt(16, '\x5a');
  audit::Entry entry;
  entry.index = 0;
  entry.time = absl::FromUnixMicros(1'700'000'000'000'000);
  entry.actor = kFia;
  entry.action = "case.open";
  entry.subjects = {"PK-2026-000001"};
  entry.payload_hash = audit::PayloadHash(salt, "an OpenCase request");
  const std::string bytes = audit::Encode(entry);
  {
    const auto& all = GatewayMigrations();
    const std::vector<sqlite::Migration> v3(all.begin(), all.begin() + 3);
    ASSERT_EQ(v3.back().version, 3);
    ASSERT_OK_AND_ASSIGN(auto db, sqlite::Database::Open(
                                      GatewayStore::DatabasePath(old_dir), v3));
    ASSERT_OK(db->Write([&](sqlite::Connection& c) -> absl::Status {
      auto row = c.Prepare(
          "INSERT INTO audit_log(idx, entry, time_us, actor, action, "
          "status_code) VALUES(0, ?, 0, ?, 'case.open', 0)");
      if (!row.ok()) return row.status();
      row->BindBlob(1, bytes).Bind(2, kFia);
      CB_RETURN_IF_ERROR(row->Run());
      auto salt_row =
          c.Prepare("INSERT INTO audit_payload_salts(idx, salt) VALUES(0, ?)");
      if (!salt_row.ok()) return salt_row.status();
      salt_row->BindBlob(1, salt);
      return salt_row->Run();
    }));
  }
  dir_ = old_dir;
  Reopen();
  ASSERT_OK_AND_ASSIGN(const auto kept, log().PayloadSalt(0));
  EXPECT_EQ(kept, salt);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM sqlite_schema WHERE name = "
                  "'audit_payload_salts'"),
            0);
  ASSERT_OK_AND_ASSIGN(const std::string root, log().RootAt(1));
  EXPECT_EQ(root, merkle::LeafHash(bytes));
  ASSERT_OK_AND_ASSIGN(const uint64_t next,
                       log().Append(Event("case.get", {"PK-2026-000001"})));
  EXPECT_EQ(next, 1u);
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, log().Verify());
  EXPECT_TRUE(report.ok()) << report.problem;
}

TEST_F(AuditLogTest, VerifyAcceptsIntactLog) {
  AppendEntries(5);
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, log().Verify());
  EXPECT_TRUE(report.ok()) << report.problem;
  EXPECT_EQ(report.entries, 5u);
  EXPECT_FALSE(report.first_bad.has_value());
  EXPECT_EQ(report.problem, "");
}

TEST_F(AuditLogTest, LogSurvivesRestartAndContinuesTree) {
  AppendEntries(3);
  Reopen();
  ASSERT_OK_AND_ASSIGN(const uint64_t index,
                       log().Append(Event("case.get", {"PK-2026-000001"})));
  EXPECT_EQ(index, 3u);
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, log().Verify());
  EXPECT_TRUE(report.ok()) << report.problem;
  EXPECT_EQ(report.entries, 4u);
}

TEST_F(AuditLogTest, DetectsEditedEntryAtItsIndex) {
  AppendEntries(5);
  const VerifyReport report = TamperAndVerify([](RawDb& raw) {
    std::string entry =
        raw.Blob("SELECT entry FROM audit_log WHERE idx = ?", 2);
    ASSERT_FALSE(entry.empty());
    // Last byte of the payload hash: the entry still decodes.
    entry.back() = static_cast<char>(entry.back() ^ 0x01);
    raw.SetRow(2, entry);
  });
  EXPECT_EQ(report.first_bad, 2u);
  EXPECT_THAT(report.problem, Not(IsEmpty()));
  EXPECT_EQ(report.entries, 2u);
}

TEST_F(AuditLogTest, DetectsEditedActionAtItsIndex) {
  AppendEntries(5);
  const VerifyReport report = TamperAndVerify([](RawDb& raw) {
    const std::string bytes =
        raw.Blob("SELECT entry FROM audit_log WHERE idx = ?", 3);
    auto entry = audit::Decode(bytes);
    ASSERT_TRUE(entry.ok()) << entry.status();
    entry->action = "case.get";
    raw.SetRow(3, audit::Encode(*entry));
  });
  EXPECT_EQ(report.first_bad, 3u);
  EXPECT_THAT(report.problem, HasSubstr("leaf hash"));
}

TEST_F(AuditLogTest, DetectsUndecodableEntryAtItsIndex) {
  AppendEntries(5);
  const VerifyReport report = TamperAndVerify([](RawDb& raw) {
    std::string entry =
        raw.Blob("SELECT entry FROM audit_log WHERE idx = ?", 1);
    entry.push_back('\0');
    raw.SetRow(1, entry);
  });
  EXPECT_EQ(report.first_bad, 1u);
  EXPECT_THAT(report.problem, HasSubstr("trailing"));
}

TEST_F(AuditLogTest, DetectsDeletedEntryAtItsIndex) {
  AppendEntries(5);
  const VerifyReport report = TamperAndVerify(
      [](RawDb& raw) { raw.Exec("DELETE FROM audit_log WHERE idx = 2;"); });
  EXPECT_EQ(report.first_bad, 2u);
  EXPECT_THAT(report.problem, HasSubstr("missing"));
}

TEST_F(AuditLogTest, DetectsDeletedFirstEntry) {
  AppendEntries(3);
  const VerifyReport report = TamperAndVerify(
      [](RawDb& raw) { raw.Exec("DELETE FROM audit_log WHERE idx = 0;"); });
  EXPECT_EQ(report.first_bad, 0u);
  EXPECT_THAT(report.problem, Not(IsEmpty()));
}

TEST_F(AuditLogTest, DetectsDeletionWithRenumberingAtItsIndex) {
  // Close the gap left by a deletion: the entry that moved down still says
  // which entry it is.
  AppendEntries(5);
  const VerifyReport report = TamperAndVerify([](RawDb& raw) {
    raw.Exec(
        "DELETE FROM audit_log WHERE idx = 2;"
        "UPDATE audit_log SET idx = idx - 1 WHERE idx > 2;");
  });
  EXPECT_EQ(report.first_bad, 2u);
  EXPECT_THAT(report.problem, Not(IsEmpty()));
}

TEST_F(AuditLogTest, DetectsSwappedEntriesAtTheFirstOfThem) {
  AppendEntries(5);
  const VerifyReport report = TamperAndVerify([](RawDb& raw) {
    const std::string entry1 =
        raw.Blob("SELECT entry FROM audit_log WHERE idx = ?", 1);
    const std::string entry3 =
        raw.Blob("SELECT entry FROM audit_log WHERE idx = ?", 3);
    raw.SetRow(1, entry3);
    raw.SetRow(3, entry1);
  });
  EXPECT_EQ(report.first_bad, 1u);
  EXPECT_THAT(report.problem, Not(IsEmpty()));
}

TEST_F(AuditLogTest, DetectsConsistentlyRewrittenEntryAtTheNextOne) {
  AppendEntries(5);
  // The entry and its leaf hash are both rewritten: the parent node, made
  // when entry 3 was appended, no longer matches.
  const VerifyReport report = TamperAndVerify([](RawDb& raw) {
    auto entry =
        audit::Decode(raw.Blob("SELECT entry FROM audit_log WHERE idx = ?", 2));
    ASSERT_TRUE(entry.ok()) << entry.status();
    entry->subjects = {"PK-2026-000999"};
    const std::string bytes = audit::Encode(*entry);
    raw.SetRow(2, bytes);
    raw.SetBlob("UPDATE audit_nodes SET hash = ? WHERE level = 0 AND idx = ?",
                2, merkle::LeafHash(bytes));
  });
  EXPECT_EQ(report.first_bad, 3u);
  EXPECT_THAT(report.problem, HasSubstr("tree node"));
  EXPECT_EQ(report.entries, 3u);
}

TEST_F(AuditLogTest, VerifyTreeWorksOnAPlainConnection) {
  AppendEntries(3);
  store_.reset();
  ASSERT_OK_AND_ASSIGN(auto connection,
                       sqlite::Connection::Open(DbPath(), /*create=*/false));
  ASSERT_OK_AND_ASSIGN(const VerifyReport report,
                       SqliteAuditLog::VerifyTree(*connection));
  EXPECT_TRUE(report.ok()) << report.problem;
  EXPECT_EQ(report.entries, 3u);
}

}  // namespace
}  // namespace casebridge::server
