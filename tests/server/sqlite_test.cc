#include "server/sqlite.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/grpc_status.h"
#include "core/status_macros.h"
#include "server/schema.h"
#include "server/write_priority.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::sqlite {
namespace {

namespace fs = std::filesystem;
using ::casebridge::server::GatewayMigrations;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Runs `sql` on a plain SQLite connection to `path`, outside Database.
void RawExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  EXPECT_EQ(rc, SQLITE_OK) << (error != nullptr ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
}

// Number of rows of `table` whose year is `year`, read through `db`.
absl::StatusOr<int64_t> CountYear(Database& db, int64_t year) {
  int64_t count = -1;
  absl::Status status = db.Read([&](Connection& c) -> absl::Status {
    auto stmt =
        c.Prepare("SELECT COUNT(*) FROM exchange_id_counters WHERE year = ?");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, year);
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    count = stmt->ColumnInt(0);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return count;
}

absl::Status InsertYear(Connection& c, int64_t year, int64_t last) {
  auto stmt =
      c.Prepare("INSERT INTO exchange_id_counters(year, last) VALUES(?, ?)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, year).Bind(2, last);
  return stmt->Run();
}

const int kNewest = GatewayMigrations().back().version;

class DatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override { path_ = NewTempDir("sqlite") + "/gateway.db"; }
  std::string path_;
};

TEST_F(DatabaseTest, OpenCreatesFileAndAppliesMigrations) {
  ASSERT_FALSE(fs::exists(path_));
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  EXPECT_TRUE(fs::exists(path_));
  EXPECT_EQ(db->path(), path_);
  EXPECT_EQ(db->schema_version(), kNewest);
  // The tables of every migration exist.
  EXPECT_OK(db->Read([](Connection& c) {
    return c.Exec(
        "SELECT seq FROM cases; SELECT idx FROM audit_log; "
        "SELECT salt FROM audit_log; SELECT hash FROM audit_nodes; "
        "SELECT subject FROM audit_subjects; SELECT size FROM checkpoints; "
        "SELECT origin FROM witness_state; SELECT id FROM checkpoint_forks; "
        "SELECT year FROM exchange_id_counters; SELECT seq FROM messages; "
        "SELECT seq FROM outbox; SELECT envelope_id FROM inbound; "
        "SELECT cursor FROM inbox; SELECT id FROM envelope_conflicts;");
  }));
}

TEST_F(DatabaseTest, MigrationMarksTheInboxCopiesKnownToBeForwarded) {
  // Before migration 13: a message the peer addressed to one office, in its
  // inbox and (forwarded) in another's, and one addressed to the country.
  {
    const auto& all = GatewayMigrations();
    const std::vector<Migration> v12(all.begin(), all.begin() + 12);
    ASSERT_EQ(v12.back().version, 12);
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, v12));
    ASSERT_OK(db->Write([](Connection& c) {
      return c.Exec(
          "INSERT INTO messages(message_id, exchange_id, direction, kind, "
          "recipient_office, body, created_us) VALUES "
          "('PK-M-1', 'PK-2026-000001', 2, 6, 'spiffe://cn/office/a', "
          "X'00', 1), "
          "('PK-M-2', 'PK-2026-000001', 2, 4, '', X'00', 2);"
          "INSERT INTO inbox(office, message_id) VALUES "
          "('spiffe://cn/office/a', 'PK-M-1'), "
          "('spiffe://cn/office/b', 'PK-M-1'), "
          "('spiffe://cn/office/a', 'PK-M-2');");
    }));
  }
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  std::vector<std::string> rows;
  ASSERT_OK(db->Read([&](Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(auto stmt,
                        c.Prepare("SELECT office, message_id, "
                                  "IFNULL(forwarded_by, 'NULL') FROM inbox "
                                  "ORDER BY cursor"));
    while (true) {
      CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
      if (!row) break;
      rows.push_back(absl::StrCat(stmt.ColumnText(0), " ", stmt.ColumnText(1),
                                  " ", stmt.ColumnText(2)));
    }
    return absl::OkStatus();
  }));
  // The copy in another office's inbox than the one addressed is marked
  // (forwarder unknown); the addressed office's and the country-addressed
  // message's are not.
  EXPECT_THAT(rows, ::testing::ElementsAre("spiffe://cn/office/a PK-M-1 NULL",
                                           "spiffe://cn/office/b PK-M-1 ",
                                           "spiffe://cn/office/a PK-M-2 NULL"));
}

TEST_F(DatabaseTest, OpenRecordsSchemaVersionInFile) {
  { ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations())); }
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw, "PRAGMA user_version", -1, &stmt, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), kNewest);
  sqlite3_finalize(stmt);
  sqlite3_close(raw);
}

TEST_F(DatabaseTest, ReopenKeepsDataAndSchema) {
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
    ASSERT_OK(db->Write([](Connection& c) { return InsertYear(c, 2026, 7); }));
  }
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  EXPECT_EQ(db->schema_version(), kNewest);
  ASSERT_OK_AND_ASSIGN(const int64_t count, CountYear(*db, 2026));
  EXPECT_EQ(count, 1);
}

TEST_F(DatabaseTest, RefusesFileFromNewerSchema) {
  { ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations())); }
  RawExec(path_, absl::StrCat("PRAGMA user_version = ", kNewest + 1));
  EXPECT_THAT(
      Database::Open(path_, GatewayMigrations()),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr(path_),
                     HasSubstr(absl::StrCat("schema version ", kNewest + 1)))));
}

TEST_F(DatabaseTest, AppliesOnlyNewMigrations) {
  std::vector<Migration> migrations = {
      {1, "first", "CREATE TABLE a(x INTEGER);"}};
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, migrations));
    EXPECT_EQ(db->schema_version(), 1);
    ASSERT_OK(db->Write(
        [](Connection& c) { return c.Exec("INSERT INTO a VALUES(1)"); }));
  }
  // Re-running migration 1 would fail (table exists); it must be skipped.
  migrations.push_back({2, "second", "CREATE TABLE b(y INTEGER);"});
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, migrations));
  EXPECT_EQ(db->schema_version(), 2);
  EXPECT_OK(db->Read([](Connection& c) {
    return c.Exec("SELECT x FROM a; SELECT y FROM b;");
  }));
}

TEST_F(DatabaseTest, FailedMigrationRollsBackAndKeepsOldVersion) {
  const std::vector<Migration> v1 = {{1, "first", "CREATE TABLE a(x);"}};
  { ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, v1)); }
  std::vector<Migration> broken = v1;
  broken.push_back(
      {2, "broken", "CREATE TABLE b(y); INSERT INTO nowhere VALUES(1);"});
  EXPECT_THAT(Database::Open(path_, broken),
              StatusIs(absl::StatusCode::kInternal,
                       AllOf(HasSubstr("version 2"), HasSubstr("broken"))));
  // Table b of the failed migration was rolled back with it.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, v1));
  EXPECT_EQ(db->schema_version(), 1);
  EXPECT_THAT(
      db->Read([](Connection& c) { return c.Exec("SELECT y FROM b"); }),
      StatusIs(absl::StatusCode::kInternal, HasSubstr("no such table")));
}

TEST_F(DatabaseTest, WriteCommitsWhenWorkSucceeds) {
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  ASSERT_OK(db->Write([](Connection& c) { return InsertYear(c, 2026, 1); }));
  ASSERT_OK_AND_ASSIGN(const int64_t count, CountYear(*db, 2026));
  EXPECT_EQ(count, 1);
}

TEST_F(DatabaseTest, TheWalIsCopiedIntoTheDatabaseFileInTheBackground) {
  ASSERT_OK_AND_ASSIGN(
      auto db, Database::Open(path_, {{1, "t", "CREATE TABLE t(b BLOB);"}}));
  const auto file_size = [this] {
    std::error_code error;
    const auto size = std::filesystem::file_size(path_, error);
    return error ? 0 : size;
  };
  const uintmax_t empty = file_size();
  // 24 MiB in 24 commits: more WAL frames than the checkpoint mark (4,096
  // pages of 4 KiB), and the commits never copy them themselves.
  for (int i = 0; i < 24; ++i) {
    ASSERT_OK(db->Write([](Connection& c) -> absl::Status {
      CB_ASSIGN_OR_RETURN(auto insert,
                          c.Prepare("INSERT INTO t(b) VALUES(randomblob(?))"));
      insert.Bind(1, int64_t{1} << 20);
      return insert.Run();
    }));
  }
  // The checkpointing thread copies the frames into the file.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (file_size() < (uintmax_t{16} << 20) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_GE(file_size(), uintmax_t{16} << 20) << "from " << empty << " bytes";
  int64_t rows = 0;
  ASSERT_OK(db->Read([&rows](Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(auto count, c.Prepare("SELECT count(*) FROM t"));
    CB_ASSIGN_OR_RETURN(const bool row, count.Step());
    if (row) rows = count.ColumnInt(0);
    return absl::OkStatus();
  }));
  EXPECT_EQ(rows, 24);
}

TEST_F(DatabaseTest, TruncatingTheWalLetsWritesThroughWhileAReaderHoldsOn) {
  // A reader on an older snapshot keeps the WAL from being truncated. The
  // truncation waits for it in short tries, and the writes queued meanwhile
  // (an URGENT message's among them) run between the tries instead of
  // waiting for the reader; once the reader ends, the WAL is truncated.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  ASSERT_OK(db->Write([](Connection& c) { return InsertYear(c, 3500, 1); }));
  sqlite3* reader = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &reader), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(reader, "BEGIN; SELECT COUNT(*) FROM exchange_id_counters;",
                   nullptr, nullptr, nullptr),
      SQLITE_OK);
  ASSERT_OK(db->Write([](Connection& c) { return InsertYear(c, 3501, 1); }));

  absl::Status truncated = absl::UnknownError("not run");
  std::thread truncating([&] { truncated = db->TruncateWal(); });
  // For half a second of tries, writes of both priorities keep going
  // through, each far sooner than the reader's end.
  int64_t year = 3502;
  const absl::Time until = absl::Now() + absl::Milliseconds(500);
  while (absl::Now() < until) {
    absl::Notification written;
    std::thread writing([&, y = year] {
      const server::ScopedWritePriority first(
          y % 2 == 0 ? server::WritePriority::kFirst
                     : server::WritePriority::kNormal);
      EXPECT_OK(db->Write([y](Connection& c) { return InsertYear(c, y, 1); }));
      written.Notify();
    });
    EXPECT_TRUE(written.WaitForNotificationWithTimeout(absl::Seconds(5)))
        << "write " << year << " waited for the reader";
    writing.join();
    ++year;
  }
  EXPECT_EQ(sqlite3_exec(reader, "COMMIT;", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(reader);
  truncating.join();
  EXPECT_OK(truncated);
  EXPECT_FALSE(db->wal_truncation_owed());
  EXPECT_EQ(fs::file_size(path_ + "-wal"), 0u);
  for (int64_t y = 3500; y < year; ++y) {
    ASSERT_OK_AND_ASSIGN(const int64_t stored, CountYear(*db, y));
    EXPECT_EQ(stored, 1) << y;
  }
}

TEST_F(DatabaseTest, WriteRollsBackWhenWorkFails) {
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  const absl::Status status = db->Write([](Connection& c) -> absl::Status {
    absl::Status inserted = InsertYear(c, 2026, 1);
    if (!inserted.ok()) return inserted;
    return absl::AbortedError("changed my mind");
  });
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kAborted,
                               HasSubstr("changed my mind")));
  ASSERT_OK_AND_ASSIGN(const int64_t count, CountYear(*db, 2026));
  EXPECT_EQ(count, 0);
  // The writer is usable again afterwards.
  ASSERT_OK(db->Write([](Connection& c) { return InsertYear(c, 2027, 1); }));
  ASSERT_OK_AND_ASSIGN(const int64_t later, CountYear(*db, 2027));
  EXPECT_EQ(later, 1);
}

TEST_F(DatabaseTest, WriteReportsConstraintViolationAndRollsBack) {
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  ASSERT_OK(db->Write([](Connection& c) { return InsertYear(c, 2026, 1); }));
  const absl::Status status = db->Write([](Connection& c) -> absl::Status {
    absl::Status first = InsertYear(c, 2030, 1);
    if (!first.ok()) return first;
    return InsertYear(c, 2026, 2);  // duplicate primary key
  });
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kAlreadyExists,
                               HasSubstr("UNIQUE constraint")));
  // The SQL and SQLite's words are for the gateway log, not for callers.
  EXPECT_TRUE(HasLogOnlyDetail(status));
  EXPECT_EQ(ShownMessage(status),
            "storage error at the gateway; the gateway log has details");
  ASSERT_OK_AND_ASSIGN(const int64_t count, CountYear(*db, 2030));
  EXPECT_EQ(count, 0);
}

TEST_F(DatabaseTest, ReadSeesCommittedData) {
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  ASSERT_OK_AND_ASSIGN(const int64_t before, CountYear(*db, 2026));
  EXPECT_EQ(before, 0);
  ASSERT_OK(db->Write([](Connection& c) { return InsertYear(c, 2026, 42); }));
  int64_t last = 0;
  ASSERT_OK(db->Read([&](Connection& c) -> absl::Status {
    auto stmt =
        c.Prepare("SELECT last FROM exchange_id_counters WHERE year = 2026");
    if (!stmt.ok()) return stmt.status();
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError("no row");
    last = stmt->ColumnInt(0);
    return absl::OkStatus();
  }));
  EXPECT_EQ(last, 42);
}

TEST_F(DatabaseTest, ReadReturnsWorkError) {
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  EXPECT_THAT(db->Read([](Connection&) { return absl::NotFoundError("gone"); }),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("gone")));
  // The reader went back to the pool in a usable state.
  EXPECT_OK(CountYear(*db, 2026).status());
}

TEST_F(DatabaseTest, StatementsRoundTripTextBlobsAndNull) {
  ASSERT_OK_AND_ASSIGN(
      auto db, Database::Open(path_, {{1, "t", "CREATE TABLE t(a, b, c);"}}));
  const std::string text = "受害者已获救 متاثرہ";
  const std::string blob("\0\x01\xff", 3);
  ASSERT_OK(db->Write([&](Connection& c) -> absl::Status {
    auto stmt = c.Prepare("INSERT INTO t(a, b, c) VALUES(?, ?, ?)");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, text).BindBlob(2, blob).BindNull(3);
    return stmt->Run();
  }));
  ASSERT_OK(db->Write([&](Connection& c) -> absl::Status {
    auto stmt = c.Prepare("INSERT INTO t(a, b, c) VALUES('', ?, 5)");
    if (!stmt.ok()) return stmt.status();
    stmt->BindBlob(1, "");
    return stmt->Run();
  }));
  ASSERT_OK(db->Read([&](Connection& c) -> absl::Status {
    auto stmt = c.Prepare("SELECT a, b, c, typeof(b) FROM t ORDER BY rowid");
    if (!stmt.ok()) return stmt.status();
    auto row = stmt->Step();
    EXPECT_TRUE(row.ok() && *row);
    EXPECT_EQ(stmt->ColumnText(0), text);
    EXPECT_EQ(stmt->ColumnBlob(1), blob);
    EXPECT_TRUE(stmt->ColumnIsNull(2));
    row = stmt->Step();
    EXPECT_TRUE(row.ok() && *row);
    EXPECT_EQ(stmt->ColumnBlob(1), "");
    EXPECT_EQ(stmt->ColumnText(3), "blob");  // empty blob is not NULL
    EXPECT_FALSE(stmt->ColumnIsNull(2));
    EXPECT_EQ(stmt->ColumnInt(2), 5);
    return absl::OkStatus();
  }));
}

TEST_F(DatabaseTest, ConcurrentWritersEachCommitOrFailAlone) {
  // Many writers at once are group-committed; a unit that fails is rolled
  // back on its own, and every unit that returned OK is durable.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  constexpr int kThreads = 8;
  constexpr int kWritesPerThread = 60;
  std::vector<std::thread> threads;
  std::atomic<int> ok_count{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWritesPerThread; ++i) {
        const int64_t year = 10000 + t * kWritesPerThread + i;
        const bool fail = i % 7 == 3;
        const absl::Status status =
            db->Write([&](Connection& c) -> absl::Status {
              absl::Status inserted = InsertYear(c, year, 1);
              if (!inserted.ok()) return inserted;
              // A failure after writing: the row must not survive.
              return fail ? absl::AbortedError("refused after writing")
                          : absl::OkStatus();
            });
        if (fail) {
          EXPECT_THAT(status, StatusIs(absl::StatusCode::kAborted,
                                       HasSubstr("refused")));
        } else {
          EXPECT_OK(status);
          ++ok_count;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  int expected_ok = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kWritesPerThread; ++i) {
      const int64_t year = 10000 + t * kWritesPerThread + i;
      const bool fail = i % 7 == 3;
      ASSERT_OK_AND_ASSIGN(int64_t count, CountYear(*db, year));
      EXPECT_EQ(count, fail ? 0 : 1) << "year " << year;
      expected_ok += fail ? 0 : 1;
    }
  }
  EXPECT_EQ(ok_count.load(), expected_ok);
  db.reset();
  // Durable: a fresh open sees every committed row.
  ASSERT_OK_AND_ASSIGN(auto reopened,
                       Database::Open(path_, GatewayMigrations()));
  int64_t durable = 0;
  for (int64_t year = 10000; year < 10000 + kThreads * kWritesPerThread;
       ++year) {
    ASSERT_OK_AND_ASSIGN(int64_t count, CountYear(*reopened, year));
    durable += count;
  }
  EXPECT_EQ(durable, expected_ok);
}

// Waits up to ten seconds for `db` to hold `n` writes behind its running
// batch.
bool AwaitWaitingWrites(Database& db, size_t n) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (db.WaitingWrites() != n) {
    if (absl::Now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// From inside a running write: starts a kFirst write of `work` on
// `thread` and waits until it is queued behind the running batch. False
// if it never queued.
bool QueueFirstPriorityWrite(Database& db, std::jthread& thread,
                             std::function<absl::Status(Connection&)> work) {
  const size_t before = db.WaitingWrites();
  thread = std::jthread([&db, work = std::move(work)] {
    const server::ScopedWritePriority scope(server::WritePriority::kFirst);
    EXPECT_OK(db.Write(work));
  });
  return AwaitWaitingWrites(db, before + 1);
}

// Names of writes in the order they ran, from any thread.
class RunOrder {
 public:
  void Add(const std::string& name) {
    absl::MutexLock lock(&mu_);
    names_.push_back(name);
  }
  std::vector<std::string> Names() {
    absl::MutexLock lock(&mu_);
    return names_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
};

// A batch held running on a database while writes queue behind it: the
// shape of the write-priority tests. Release() lets it commit; Join() waits
// for every write started (the destructor does both).
class HeldBatch {
 public:
  // Starts a write of row `year` that holds the writer until Release().
  HeldBatch(Database& db, int64_t year) : db_(db) {
    threads_.emplace_back([this, year] {
      EXPECT_OK(db_.Write([this, year](Connection& c) {
        running_.Notify();
        release_.WaitForNotification();
        return InsertYear(c, year, 1);
      }));
    });
    running_.WaitForNotification();
  }
  ~HeldBatch() {
    Release();
    Join();
  }
  HeldBatch(const HeldBatch&) = delete;
  HeldBatch& operator=(const HeldBatch&) = delete;

  // Starts a write of `priority` doing `work` (then `after`, once Write
  // returned) and waits until it is queued behind the held batch; false if
  // it never was.
  bool Queue(server::WritePriority priority,
             std::function<absl::Status(Connection&)> work,
             std::function<void()> after = nullptr) {
    const size_t before = db_.WaitingWrites();
    threads_.emplace_back(
        [this, priority, work = std::move(work), after = std::move(after)] {
          const server::ScopedWritePriority scope(priority);
          EXPECT_OK(db_.Write(work));
          if (after) after();
        });
    return AwaitWaitingWrites(db_, before + 1);
  }

  void Release() {
    if (!release_.HasBeenNotified()) release_.Notify();
  }
  void Join() {
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

 private:
  Database& db_;
  absl::Notification running_;
  absl::Notification release_;
  std::vector<std::thread> threads_;
};

// Three writes of `priority` queued behind a held batch of row
// `first_year`, run as one batch; the second (row first_year + 2) rolls the
// whole transaction back, as SQLite does by itself on a full disk or an I/O
// error (a ROLLBACK here stands for it). Expects the first two to fail with
// the cause (their changes are gone) and the third, which the cut-short
// batch left queued, to run in the next batch.
void RunBatchRolledBackBySqlite(Database& db, int64_t first_year,
                                server::WritePriority priority) {
  std::vector<absl::Status> statuses(3);
  std::vector<std::thread> threads;
  {
    HeldBatch held(db, first_year);
    for (int i = 0; i < 3; ++i) {
      const size_t before = db.WaitingWrites();
      threads.emplace_back([&db, &statuses, i, priority, first_year] {
        const server::ScopedWritePriority scope(priority);
        statuses[i] = db.Write([i, first_year](Connection& c) -> absl::Status {
          CB_RETURN_IF_ERROR(InsertYear(c, first_year + 1 + i, 1));
          if (i != 1) return absl::OkStatus();
          CB_RETURN_IF_ERROR(c.Run("ROLLBACK"));
          return absl::ResourceExhaustedError("database or disk is full");
        });
      });
      EXPECT_TRUE(AwaitWaitingWrites(db, before + 1)) << "write " << i;
    }
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(statuses[0], StatusIs(absl::StatusCode::kResourceExhausted,
                                    HasSubstr("disk is full")));
  EXPECT_THAT(statuses[1], StatusIs(absl::StatusCode::kResourceExhausted,
                                    HasSubstr("disk is full")));
  EXPECT_OK(statuses[2]);
}

TEST_F(DatabaseTest, FirstPriorityWritesGoAheadOfNormalOnesWaiting) {
  // While a batch runs, two normal writes queue up, then two kFirst ones:
  // the kFirst ones run next (in their own order), then the normal ones.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  absl::Mutex mu;
  std::vector<std::string> order;
  auto unit = [&](std::string name) {
    return [&, name](Connection& c) -> absl::Status {
      absl::MutexLock lock(&mu);
      order.push_back(name);
      return InsertYear(c, 3000 + static_cast<int64_t>(order.size()), 1);
    };
  };
  HeldBatch held(*db, 3000);
  const std::vector<std::pair<std::string, server::WritePriority>> queued = {
      {"normal-1", server::WritePriority::kNormal},
      {"normal-2", server::WritePriority::kNormal},
      {"first-1", server::WritePriority::kFirst},
      {"first-2", server::WritePriority::kFirst}};
  for (const auto& [name, priority] : queued) {
    ASSERT_TRUE(held.Queue(priority, unit(name))) << name << " never queued";
  }
  held.Release();
  held.Join();
  EXPECT_THAT(order, ElementsAre("first-1", "first-2", "normal-1", "normal-2"));
  EXPECT_EQ(db->WaitingWrites(), 0u);
  // All five are durable.
  for (int64_t year = 3000; year <= 3004; ++year) {
    ASSERT_OK_AND_ASSIGN(int64_t count, CountYear(*db, year));
    EXPECT_EQ(count, 1) << year;
  }
}

TEST_F(DatabaseTest, FirstPriorityBatchCommitsWithoutTheNormalWritesQueued) {
  // A normal write and a kFirst one queue behind a running batch. The kFirst
  // write must be durable, its Write() returned, while the normal write is
  // still running: the two are not in one transaction.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  absl::Notification first_returned;
  bool normal_saw_first_return = false;
  HeldBatch held(*db, 3100);
  ASSERT_TRUE(held.Queue(server::WritePriority::kNormal, [&](Connection& c) {
    normal_saw_first_return =
        first_returned.WaitForNotificationWithTimeout(absl::Seconds(10));
    return InsertYear(c, 3101, 1);
  })) << "normal write never queued";
  ASSERT_TRUE(held.Queue(
      server::WritePriority::kFirst,
      [&](Connection& c) { return InsertYear(c, 3102, 1); },
      [&] { first_returned.Notify(); }))
      << "kFirst write never queued";
  held.Release();
  held.Join();
  EXPECT_TRUE(normal_saw_first_return)
      << "the kFirst write waited for the normal write's work";
  for (int64_t year = 3100; year <= 3102; ++year) {
    ASSERT_OK_AND_ASSIGN(int64_t count, CountYear(*db, year));
    EXPECT_EQ(count, 1) << year;
  }
}

TEST_F(DatabaseTest, ABatchOfNormalWritesGivesWayToAFirstPriorityWrite) {
  // Three normal writes queue behind a running batch and then run as one
  // batch. While the first of them runs, a kFirst write queues: the batch
  // commits that unit (its Write() returns) and stops, the kFirst write
  // runs next, then the two normal units left, none of them lost.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  RunOrder order;
  absl::Notification normal_1_returned;
  bool first_saw_normal_1_return = false;
  // Joined after `held` is done, also when an assertion ends the test
  // early (normal-1 then still runs, and starts it).
  std::jthread first;
  HeldBatch held(*db, 3200);
  ASSERT_TRUE(held.Queue(
      server::WritePriority::kNormal,
      [&](Connection& c) {
        order.Add("normal-1");
        if (!QueueFirstPriorityWrite(*db, first, [&](Connection& c2) {
              order.Add("first");
              first_saw_normal_1_return =
                  normal_1_returned.WaitForNotificationWithTimeout(
                      absl::Seconds(10));
              return InsertYear(c2, 3204, 1);
            })) {
          return absl::DeadlineExceededError("the kFirst write never queued");
        }
        return InsertYear(c, 3201, 1);
      },
      [&] { normal_1_returned.Notify(); }))
      << "normal-1 never queued";
  for (int k = 2; k <= 3; ++k) {
    ASSERT_TRUE(held.Queue(server::WritePriority::kNormal,
                           [&, k](Connection& c) {
                             order.Add(absl::StrCat("normal-", k));
                             return InsertYear(c, 3200 + k, 1);
                           }))
        << "normal-" << k << " never queued";
  }
  held.Release();
  held.Join();
  first.join();
  EXPECT_THAT(order.Names(),
              ElementsAre("normal-1", "first", "normal-2", "normal-3"));
  EXPECT_TRUE(first_saw_normal_1_return)
      << "normal-1 was not committed before the kFirst write ran";
  EXPECT_EQ(db->WaitingWrites(), 0u);
  for (int64_t year = 3200; year <= 3204; ++year) {
    ASSERT_OK_AND_ASSIGN(int64_t count, CountYear(*db, year));
    EXPECT_EQ(count, 1) << year;
  }
}

// A chain of `links` kFirst writes, each queuing the next while it runs (as
// the exchange's loops do under load); link k adds "first-k" to `order` and
// inserts row `year + k`. Link 0 holds the writer until Release(). The
// destructor releases the chain (also when an assertion ends a test early)
// and waits for every link.
class FirstLaneChain {
 public:
  FirstLaneChain(Database& db, int links, int64_t year, RunOrder& order)
      : db_(db), links_(links), year_(year), order_(order) {
    Start(0);
    running_.WaitForNotification();
  }
  ~FirstLaneChain() {
    Release();
    // Every link has been started once the last one has run.
    for (size_t joined = 0;;) {
      std::thread thread;
      {
        absl::MutexLock lock(&mu_);
        if (joined == threads_.size()) break;
        thread = std::move(threads_[joined++]);
      }
      thread.join();
    }
  }
  FirstLaneChain(const FirstLaneChain&) = delete;
  FirstLaneChain& operator=(const FirstLaneChain&) = delete;

  void Release() {
    if (!release_.HasBeenNotified()) release_.Notify();
  }

 private:
  void Start(int k) {
    absl::MutexLock lock(&mu_);
    threads_.emplace_back([this, k] {
      const server::ScopedWritePriority scope(server::WritePriority::kFirst);
      EXPECT_OK(db_.Write([this, k](Connection& c) -> absl::Status {
        order_.Add(absl::StrCat("first-", k));
        if (k == 0) {
          running_.Notify();
          release_.WaitForNotification();
        }
        if (k + 1 < links_) {
          const size_t before = db_.WaitingWrites();
          Start(k + 1);
          if (!AwaitWaitingWrites(db_, before + 1)) {
            return absl::DeadlineExceededError("next link never queued");
          }
        }
        return InsertYear(c, year_ + k, 1);
      }));
    });
  }

  Database& db_;
  const int links_;
  const int64_t year_;
  RunOrder& order_;
  absl::Notification running_;
  absl::Notification release_;
  absl::Mutex mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

// Where `name` ran in `order`.
std::ptrdiff_t PlaceOf(const std::vector<std::string>& order,
                       const std::string& name) {
  return std::find(order.begin(), order.end(), name) - order.begin();
}

TEST_F(DatabaseTest, AStreamOfFirstPriorityWritesDoesNotHoldOthersBackForGood) {
  // A normal write queued at the start of a chain of kFirst writes must
  // run within a few batches, not after the whole chain.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  constexpr int kChain = 40;
  RunOrder order;
  {
    std::jthread normal;  // joined after the chain has been released
    FirstLaneChain chain(*db, kChain, 5000, order);
    normal = std::jthread([&] {
      EXPECT_OK(db->Write([&](Connection& c) {
        order.Add("normal");
        return InsertYear(c, 4999, 1);
      }));
    });
    ASSERT_TRUE(AwaitWaitingWrites(*db, 1)) << "normal write never queued";
    chain.Release();
  }
  const std::vector<std::string> ran = order.Names();
  ASSERT_EQ(ran.size(), static_cast<size_t>(kChain) + 1);
  EXPECT_LE(PlaceOf(ran, "normal"), 12) << absl::StrJoin(ran, " ");
}

TEST_F(DatabaseTest, AfterAStreakOfFirstPriorityBatchesTheOthersRunWhole) {
  // A chain of kFirst writes keeps three normal writes waiting until the
  // streak limit lets them go. Their batch then runs whole: a kFirst write
  // that normal-1 queues while it runs waits for normal-2 and normal-3, so
  // that a steady first lane leaves the others a batch, not a unit, in
  // each turn.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  constexpr int kChain = 20;
  RunOrder order;
  {
    // Declared before the chain: joined after it has been released.
    std::jthread intruder;
    std::vector<std::jthread> normals;
    FirstLaneChain chain(*db, kChain, 6000, order);
    for (int k = 1; k <= 3; ++k) {
      normals.emplace_back([&, k] {
        EXPECT_OK(db->Write([&, k](Connection& c) -> absl::Status {
          order.Add(absl::StrCat("normal-", k));
          if (k == 1 &&
              !QueueFirstPriorityWrite(*db, intruder, [&](Connection& c2) {
                order.Add("intruder");
                return InsertYear(c2, 5900, 1);
              })) {
            return absl::DeadlineExceededError("intruder never queued");
          }
          return InsertYear(c, 5900 + k, 1);
        }));
      });
      ASSERT_TRUE(AwaitWaitingWrites(*db, static_cast<size_t>(k)))
          << "normal-" << k << " never queued";
    }
    chain.Release();
  }
  const std::vector<std::string> ran = order.Names();
  ASSERT_EQ(ran.size(), static_cast<size_t>(kChain) + 4);
  const std::string all = absl::StrJoin(ran, " ");
  EXPECT_EQ(PlaceOf(ran, "normal-2"), PlaceOf(ran, "normal-1") + 1) << all;
  EXPECT_EQ(PlaceOf(ran, "normal-3"), PlaceOf(ran, "normal-1") + 2) << all;
  EXPECT_GT(PlaceOf(ran, "intruder"), PlaceOf(ran, "normal-3")) << all;
  EXPECT_LE(PlaceOf(ran, "normal-1"), 12) << all;
}

TEST_F(DatabaseTest, WritePriorityScopesNest) {
  EXPECT_EQ(server::ScopedWritePriority::Current(),
            server::WritePriority::kNormal);
  {
    const server::ScopedWritePriority outer(server::WritePriority::kFirst);
    EXPECT_EQ(server::ScopedWritePriority::Current(),
              server::WritePriority::kFirst);
    {
      const server::ScopedWritePriority inner(server::WritePriority::kNormal);
      EXPECT_EQ(server::ScopedWritePriority::Current(),
                server::WritePriority::kNormal);
    }
    EXPECT_EQ(server::ScopedWritePriority::Current(),
              server::WritePriority::kFirst);
  }
  EXPECT_EQ(server::ScopedWritePriority::Current(),
            server::WritePriority::kNormal);
}

TEST_F(DatabaseTest, FailingUnitDoesNotUndoAnEarlierUnitOfItsBatch) {
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  // A unit that violates a constraint fails alone, even when another unit
  // wrote the conflicting row just before it.
  ASSERT_OK(db->Write([](Connection& c) { return InsertYear(c, 2031, 1); }));
  EXPECT_THAT(db->Write([](Connection& c) { return InsertYear(c, 2031, 2); }),
              StatusIs(absl::StatusCode::kAlreadyExists, ::testing::_));
  ASSERT_OK_AND_ASSIGN(int64_t count, CountYear(*db, 2031));
  EXPECT_EQ(count, 1);
  ASSERT_OK(db->Write([](Connection& c) { return InsertYear(c, 2032, 1); }));
  ASSERT_OK_AND_ASSIGN(int64_t next, CountYear(*db, 2032));
  EXPECT_EQ(next, 1);
}

TEST_F(DatabaseTest, ATransactionSqliteRolledBackFailsItsUnitsAndNoOthers) {
  // On a full disk or an I/O error SQLite may roll the whole transaction
  // back by itself (a ROLLBACK here stands for it). The units of the batch
  // that ran before are undone with it and must not report success; the
  // units after it must not run outside a transaction (committed, one by
  // one, while reported failed): they wait for the next batch.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  RunBatchRolledBackBySqlite(*db, 3300, server::WritePriority::kNormal);
  // What each Write said is what the database holds.
  for (const auto& [year, count] : std::vector<std::pair<int64_t, int64_t>>{
           {3300, 1}, {3301, 0}, {3302, 0}, {3303, 1}}) {
    ASSERT_OK_AND_ASSIGN(const int64_t stored, CountYear(*db, year));
    EXPECT_EQ(stored, count) << year;
  }
  // The writer goes on.
  ASSERT_OK(db->Write([](Connection& c) { return InsertYear(c, 3304, 1); }));
}

TEST_F(DatabaseTest, ABatchOfFirstPriorityWritesCutShortLeavesTheQueueWhole) {
  // As above, with kFirst writes: the unit after the one whose transaction
  // was lost stays queued ahead of everything and runs next. Afterwards the
  // queue still works: a kFirst write queued behind a running batch runs
  // once, after that batch and before the normal write queued earlier.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, GatewayMigrations()));
  RunBatchRolledBackBySqlite(*db, 3400, server::WritePriority::kFirst);
  EXPECT_EQ(db->WaitingWrites(), 0u);

  absl::Mutex mu;
  std::vector<int64_t> order;
  auto unit = [&](int64_t year) {
    return [&, year](Connection& c) -> absl::Status {
      absl::MutexLock lock(&mu);
      order.push_back(year);
      return InsertYear(c, year, 1);
    };
  };
  {
    HeldBatch held(*db, 3410);
    ASSERT_TRUE(held.Queue(server::WritePriority::kNormal, unit(3411)));
    ASSERT_TRUE(held.Queue(server::WritePriority::kFirst, unit(3412)));
  }
  EXPECT_THAT(order, ElementsAre(3412, 3411));
  EXPECT_EQ(db->WaitingWrites(), 0u);
  for (const auto& [year, count] :
       std::vector<std::pair<int64_t, int64_t>>{{3400, 1},
                                                {3401, 0},
                                                {3402, 0},
                                                {3403, 1},
                                                {3410, 1},
                                                {3411, 1},
                                                {3412, 1}}) {
    ASSERT_OK_AND_ASSIGN(const int64_t stored, CountYear(*db, year));
    EXPECT_EQ(stored, count) << year;
  }
}

}  // namespace
}  // namespace casebridge::sqlite
