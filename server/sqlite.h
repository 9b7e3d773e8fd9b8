// A thin, checked layer over the SQLite C API: connections, cached prepared
// statements, and a Database with one writer connection and a pool of
// readers (WAL lets reads proceed while the writer commits).
#ifndef CASEBRIDGE_SERVER_SQLITE_H_
#define CASEBRIDGE_SERVER_SQLITE_H_

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/write_priority.h"

namespace casebridge::sqlite {

class Connection;

// How long a connection waits for a lock another connection holds (SQLite's
// busy timeout) before the statement fails with SQLITE_BUSY.
inline constexpr int kBusyTimeoutMs = 10000;

// A prepared statement borrowed from its connection's cache. Reset and
// unbound when destroyed. Must not outlive the Connection.
class Statement {
 public:
  Statement(Connection* connection, sqlite3_stmt* stmt)
      : connection_(connection), stmt_(stmt) {}
  ~Statement();
  Statement(Statement&& other) noexcept
      : connection_(other.connection_), stmt_(other.stmt_) {
    other.stmt_ = nullptr;
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement& operator=(Statement&&) = delete;

  // Parameters are 1-based, as in SQLite.
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, absl::string_view text);  // TEXT
  Statement& BindBlob(int index, absl::string_view bytes);
  Statement& BindNull(int index);

  // true: a row is ready; false: done. Errors carry SQLite's message.
  absl::StatusOr<bool> Step();
  // Runs to completion, expecting no rows.
  absl::Status Run();

  int64_t ColumnInt(int column) const;
  std::string ColumnText(int column) const;
  std::string ColumnBlob(int column) const;
  bool ColumnIsNull(int column) const;

 private:
  Connection* connection_;
  sqlite3_stmt* stmt_;  // owned by the connection's cache
};

// One SQLite connection. Not thread-safe: used by one thread at a time.
class Connection {
 public:
  // Opens (creating if asked) the file and applies the project's pragmas:
  // WAL (reused up to 64 MiB, checkpointed every 8192 pages unless the
  // Database checkpoints it), synchronous=FULL,
  // foreign keys, secure_delete, temp_store=MEMORY,
  // a busy timeout.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(
      const std::string& path, bool create);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs SQL that returns no rows (may hold several statements).
  absl::Status Exec(absl::string_view sql);
  // A cached statement for `sql`.
  absl::StatusOr<Statement> Prepare(absl::string_view sql);
  // Runs one statement that returns no rows, prepared once and cached: for
  // the transaction statements every write and read runs (BEGIN, SAVEPOINT,
  // COMMIT...), which Exec would parse again each time.
  absl::Status Run(absl::string_view sql);

  int64_t changes() const { return sqlite3_changes64(db_); }
  // Whether a transaction is open. On some errors (a full disk, an I/O
  // error) SQLite rolls the whole transaction back by itself, its
  // savepoints with it: a ROLLBACK TO then fails, and the work done before
  // the savepoint is gone too.
  bool InTransaction() const { return sqlite3_get_autocommit(db_) == 0; }
  std::string ErrorMessage() const { return sqlite3_errmsg(db_); }
  sqlite3* raw() { return db_; }

 private:
  explicit Connection(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::map<std::string, sqlite3_stmt*, std::less<>> cache_;
};

// A schema migration: applied once, in order, inside one transaction.
struct Migration {
  int version;
  const char* description;
  const char* sql;
};

// The gateway's database file, with one writer connection and a pool of
// readers. Thread-safe.
//
// Writes are group-committed: callers of Write() queue up; the caller at the
// front leads, running up to kMaxBatch queued units of work in one
// transaction, each inside its own SAVEPOINT, and one COMMIT (one fsync)
// makes them all durable. A unit that fails is rolled back to its savepoint
// alone; if the COMMIT fails, every unit of the batch fails. Write() returns
// only once its unit is durable or has failed. Writes of the thread's
// server::WritePriority::kFirst wait ahead of kNormal ones, and a batch led
// by a kFirst write holds kFirst writes only: an URGENT message or an
// exchange round commits without waiting for the office calls queued behind
// it to run in its transaction (docs/performance.md, run F), and a batch
// of kNormal writes running gives way to a kFirst write queued meanwhile:
// it commits the units it ran and leaves the rest queued behind the kFirst
// writes, ahead of the later kNormal ones (run K). After kMaxFirstStreak
// batches of kFirst writes in a row with other writes waiting, kFirst
// writes queue at the back until one of those has run, and the batch of
// those runs whole.
//
// Read() runs on a pooled reader inside a read transaction (a consistent
// snapshot); WAL lets it proceed while the writer commits.
//
// The WAL is copied into the database file by a thread of its own, on a
// connection of its own (PASSIVE checkpoints, which never wait for the
// writer nor make it wait), once it holds kCheckpointPages frames: a commit
// never runs a checkpoint (docs/performance.md, run H).
class Database {
 public:
  // Opens or creates `path` and brings its schema up to the newest of
  // `migrations` (sorted, versions 1..N). FAILED_PRECONDITION if the file
  // was written by a newer schema than this build knows.
  static absl::StatusOr<std::unique_ptr<Database>> Open(
      const std::string& path, const std::vector<Migration>& migrations,
      int readers = 4);
  // Stops the checkpointing thread. No Write() or Read() may be running.
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs `work` in a write transaction; its changes are committed (durably)
  // if it returns OK and rolled back otherwise. Returns its status, or the
  // commit's error. `work` must not call Write() or Read().
  absl::Status Write(const std::function<absl::Status(Connection&)>& work);
  absl::Status Read(const std::function<absl::Status(Connection&)>& work);

  // Copies every committed frame of the WAL into the database file and
  // truncates the WAL to zero bytes (a TRUNCATE checkpoint on the writer, in
  // its turn among the writes): page images of deleted content, which a
  // plain checkpoint leaves in the WAL, are gone from it. Waits for readers
  // of older snapshots up to the busy timeout, in short tries with the
  // writer free in between: the writes queued meanwhile run between them.
  // UNAVAILABLE if the readers do not finish.
  absl::Status TruncateWal();
  // Set once content was shredded (or a truncation failed) and cleared by
  // the next TruncateWal that succeeds: a run that fails half-way, or a
  // truncation refused while a reader held on, is made good by the next
  // retention run or start.
  void OweWalTruncation() { wal_truncation_owed_ = true; }
  bool wal_truncation_owed() const { return wal_truncation_owed_; }

  // Writes queued behind the batch now running (for monitoring).
  size_t WaitingWrites();

  int schema_version() const { return schema_version_; }
  const std::string& path() const { return path_; }

 private:
  Database() = default;

  static constexpr size_t kMaxBatch = 64;
  // How long one try of TruncateWal holds the writer waiting for readers.
  static constexpr absl::Duration kTruncateTry = absl::Milliseconds(50);
  // WAL frames (pages) after which the checkpointing thread copies them.
  static constexpr int kCheckpointPages = 4096;
  // Checkpoints in a row at most, each taking the frames committed while
  // the one before ran, so the WAL catches up and can start over.
  static constexpr int kCheckpointPasses = 8;
  // Batches of kFirst writes in a row while other writes wait, after which
  // new kFirst writes queue at the back until one of those has run: a
  // steady stream of exchange writes never holds office calls (or a WAL
  // truncation) back for good.
  static constexpr int kMaxFirstStreak = 8;

  struct PendingWrite {
    const std::function<absl::Status(Connection&)>* work = nullptr;
    absl::Status status = absl::OkStatus();
    bool done = false;
    // Runs alone, outside any transaction (a checkpoint).
    bool alone = false;
    bool first = false;  // server::WritePriority::kFirst
    // Queued ahead of the kNormal writes (a kFirst write, unless they had
    // waited through kMaxFirstStreak batches: then it queues at the back).
    bool ahead = false;
  };
  struct WaitArg {
    Database* db;
    PendingWrite* write;
  };
  static bool DoneOrLeading(WaitArg* arg);
  // Queues `me` and returns once it ran, leading a batch if its turn comes.
  absl::Status Enqueue(PendingWrite& me);
  // Runs `batch` in one transaction on writer_, or, if it `gives_way`, the
  // units of it before a kFirst write was queued ahead; returns how many
  // ran. Called by the leader only.
  size_t RunBatch(const std::vector<PendingWrite*>& batch, bool gives_way);
  // The writer's WAL hook: after each commit, with the WAL's size in frames.
  static int OnCommit(void* db, sqlite3* connection, const char* schema,
                      int frames);
  // The checkpointing thread.
  void RunCheckpoints();

  std::string path_;
  int schema_version_ = 0;
  absl::Mutex queue_mu_;
  // The running batch (its leader first), then the kFirst writes waiting,
  // then the kNormal ones.
  std::deque<PendingWrite*> queue_ ABSL_GUARDED_BY(queue_mu_);
  size_t running_ ABSL_GUARDED_BY(queue_mu_) = 0;  // batch at the front
  // The kFirst writes queued after the running batch. Changed only under
  // queue_mu_; atomic so that the running batch can read it between its
  // units without taking the lock.
  std::atomic<size_t> first_waiting_{0};
  server::FirstLaneStreak first_streak_ ABSL_GUARDED_BY(queue_mu_){
      kMaxFirstStreak};
  std::atomic<bool> wal_truncation_owed_{false};  // see OweWalTruncation
  // Used only by the leader of the write queue, one at a time.
  std::unique_ptr<Connection> writer_;
  // Checkpoints: the thread, its connection, and when it is due.
  std::unique_ptr<Connection> checkpointer_;
  std::thread checkpoint_thread_;
  absl::Mutex checkpoint_mu_;
  bool checkpoint_due_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  bool closing_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  // Held while a checkpoint runs in this process (a pass of the thread, or
  // TruncateWal's).
  absl::Mutex checkpoint_run_mu_;
  absl::Mutex read_mu_;
  std::vector<std::unique_ptr<Connection>> idle_readers_
      ABSL_GUARDED_BY(read_mu_);
};

}  // namespace casebridge::sqlite

#endif  // CASEBRIDGE_SERVER_SQLITE_H_
