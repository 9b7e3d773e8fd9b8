#include "server/audit_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/audit_entry.h"
#include "core/crypto.h"
#include "core/merkle.h"
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
  // Each entry is a leaf of the tree: SHA-256(0x00 || bytes).
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
          auto stmt = c.Prepare(
              "SELECT salt FROM audit_payload_salts "
              "WHERE idx = ?");
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
  const VerifyReport report = TamperAndVerify([](RawDb& raw) {
    raw.Exec(
        "DELETE FROM audit_payload_salts WHERE idx = 2;"
        "DELETE FROM audit_log WHERE idx = 2;");
  });
  EXPECT_EQ(report.first_bad, 2u);
  EXPECT_THAT(report.problem, HasSubstr("missing"));
}

TEST_F(AuditLogTest, DetectsDeletedFirstEntry) {
  AppendEntries(3);
  const VerifyReport report = TamperAndVerify([](RawDb& raw) {
    raw.Exec(
        "DELETE FROM audit_payload_salts WHERE idx = 0;"
        "DELETE FROM audit_log WHERE idx = 0;");
  });
  EXPECT_EQ(report.first_bad, 0u);
  EXPECT_THAT(report.problem, Not(IsEmpty()));
}

TEST_F(AuditLogTest, DetectsDeletionWithRenumberingAtItsIndex) {
  // Close the gap left by a deletion: the entry that moved down still says
  // which entry it is.
  AppendEntries(5);
  const VerifyReport report = TamperAndVerify([](RawDb& raw) {
    raw.Exec(
        "DELETE FROM audit_payload_salts;"
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
