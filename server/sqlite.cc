#include "server/sqlite.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"
#include "core/log.h"
#include "core/status_macros.h"

namespace casebridge::sqlite {
namespace {

// The message names the SQL and SQLite's error: for the gateway log only
// (WithLogOnlyDetail), never for an office or the peer.
absl::Status SqliteError(sqlite3* db, absl::string_view what) {
  const int code = sqlite3_extended_errcode(db);
  const std::string message =
      absl::StrCat(what, ": ", sqlite3_errmsg(db), " (sqlite ", code, ")");
  switch (code & 0xFF) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return WithLogOnlyDetail(absl::UnavailableError(message));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return WithLogOnlyDetail(absl::DataLossError(message));
    case SQLITE_CONSTRAINT:
      return WithLogOnlyDetail(absl::AlreadyExistsError(message));
    case SQLITE_FULL:
      return WithLogOnlyDetail(absl::ResourceExhaustedError(message));
    default:
      return WithLogOnlyDetail(absl::InternalError(message));
  }
}

}  // namespace

// --- Statement ---------------------------------------------------------------

Statement::~Statement() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

Statement& Statement::Bind(int index, int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}

Statement& Statement::Bind(int index, absl::string_view text) {
  // An empty view may have a null data(): that would bind NULL, not ''.
  sqlite3_bind_text64(stmt_, index, text.empty() ? "" : text.data(),
                      text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  return *this;
}

Statement& Statement::BindBlob(int index, absl::string_view bytes) {
  // A zero-length blob must still be a blob, not NULL.
  sqlite3_bind_blob64(stmt_, index, bytes.empty() ? "" : bytes.data(),
                      bytes.size(), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::BindNull(int index) {
  sqlite3_bind_null(stmt_, index);
  return *this;
}

absl::StatusOr<bool> Statement::Step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(connection_->raw(),
                     absl::StrCat("executing \"", sqlite3_sql(stmt_), "\""));
}

absl::Status Statement::Run() {
  CB_ASSIGN_OR_RETURN(const bool row, Step());
  if (row) return absl::InternalError("statement returned a row unexpectedly");
  return absl::OkStatus();
}

int64_t Statement::ColumnInt(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

std::string Statement::ColumnText(int column) const {
  const auto* text = sqlite3_column_text(stmt_, column);
  const int size = sqlite3_column_bytes(stmt_, column);
  if (text == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(size));
}

std::string Statement::ColumnBlob(int column) const {
  const void* blob = sqlite3_column_blob(stmt_, column);
  const int size = sqlite3_column_bytes(stmt_, column);
  if (blob == nullptr) return "";
  return std::string(static_cast<const char*>(blob), static_cast<size_t>(size));
}

bool Statement::ColumnIsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

// --- Connection --------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(
    const std::string& path, bool create) {
  sqlite3* db = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
                    (create ? SQLITE_OPEN_CREATE : 0);
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    const std::string message =
        db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return absl::FailedPreconditionError(
        absl::StrCat("opening database ", path, ": ", message));
  }
  sqlite3_extended_result_codes(db, 1);
  std::unique_ptr<Connection> connection(new Connection(db));
  // FULL: a commit is on disk before the office is told OK. secure_delete:
  // deleted content (a shredded record key, a purged payload) is overwritten
  // with zeros, not left in free space (docs/storage.md#data-protection).
  // temp_store=MEMORY: statement journals and temporary tables, which hold
  // page images, stay in memory instead of temporary files (a file created,
  // written and unlinked per transaction cost a third of the receiving
  // gateway's writes). The WAL is reused in place, up to 64 MiB: cutting it
  // to zero at each restart made every commit allocate file blocks again;
  // old page images are overwritten as it wraps, and every run that shreds
  // (retention, data key rotation) truncates it (TruncateWal).
  // wal_autocheckpoint=8192 pages (32 MiB): fewer checkpoints, each copying a
  // page changed by many transactions once (docs/performance.md); a
  // Database's writer checkpoints on a thread of its own instead.
  CB_RETURN_IF_ERROR(
      connection->Exec(absl::StrCat("PRAGMA journal_mode=WAL;"
                                    "PRAGMA synchronous=FULL;"
                                    "PRAGMA foreign_keys=ON;"
                                    "PRAGMA secure_delete=ON;"
                                    "PRAGMA temp_store=MEMORY;"
                                    "PRAGMA journal_size_limit=67108864;"
                                    "PRAGMA wal_autocheckpoint=8192;"
                                    "PRAGMA busy_timeout=",
                                    kBusyTimeoutMs, ";")));
  return connection;
}

Connection::~Connection() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  sqlite3_close_v2(db_);
}

absl::Status Connection::Exec(absl::string_view sql) {
  const std::string text(sql);
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    const std::string message = error != nullptr ? error : sqlite3_errstr(rc);
    sqlite3_free(error);
    return SqliteError(db_, absl::StrCat("executing SQL: ", message));
  }
  return absl::OkStatus();
}

absl::Status Connection::Run(absl::string_view sql) {
  CB_ASSIGN_OR_RETURN(Statement stmt, Prepare(sql));
  return stmt.Run();
}

absl::StatusOr<Statement> Connection::Prepare(absl::string_view sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt* stmt = nullptr;
    const int rc =
        sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      return SqliteError(db_, absl::StrCat("preparing \"", sql, "\""));
    }
    it = cache_.emplace(std::string(sql), stmt).first;
  }
  return Statement(this, it->second);
}

// --- Database ----------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Database>> Database::Open(
    const std::string& path, const std::vector<Migration>& migrations,
    int readers) {
  std::unique_ptr<Database> db(new Database());
  db->path_ = path;
  CB_ASSIGN_OR_RETURN(auto writer, Connection::Open(path, /*create=*/true));

  // Schema version lives in PRAGMA user_version.
  int current = 0;
  {
    CB_ASSIGN_OR_RETURN(auto stmt, writer->Prepare("PRAGMA user_version"));
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (row) current = static_cast<int>(stmt.ColumnInt(0));
  }
  const int newest = migrations.empty() ? 0 : migrations.back().version;
  if (current > newest) {
    return absl::FailedPreconditionError(
        absl::StrCat("database ", path, " has schema version ", current,
                     ", newer than this gateway supports (", newest,
                     "); run the newer gateway or restore a backup"));
  }
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    CB_RETURN_IF_ERROR(writer->Exec("BEGIN IMMEDIATE"));
    absl::Status status = writer->Exec(m.sql);
    if (status.ok()) {
      status = writer->Exec(absl::StrCat("PRAGMA user_version=", m.version));
    }
    if (status.ok()) status = writer->Exec("COMMIT");
    if (!status.ok()) {
      (void)writer->Exec("ROLLBACK");
      return absl::Status(
          status.code(),
          absl::StrCat("migrating ", path, " to version ", m.version, " (",
                       m.description, "): ", status.message()));
    }
    current = m.version;
  }
  db->schema_version_ = current;
  {
    absl::MutexLock lock(&db->read_mu_);
    for (int i = 0; i < readers; ++i) {
      CB_ASSIGN_OR_RETURN(auto reader,
                          Connection::Open(path, /*create=*/false));
      db->idle_readers_.push_back(std::move(reader));
    }
  }
  CB_ASSIGN_OR_RETURN(db->checkpointer_,
                      Connection::Open(path, /*create=*/false));
  // Replaces the writer's automatic checkpoints (wal_autocheckpoint).
  sqlite3_wal_hook(writer->raw(), &Database::OnCommit, db.get());
  db->writer_ = std::move(writer);
  db->checkpoint_thread_ =
      std::thread([raw = db.get()] { raw->RunCheckpoints(); });
  return db;
}

Database::~Database() {
  {
    absl::MutexLock lock(&checkpoint_mu_);
    closing_ = true;
  }
  if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
}

int Database::OnCommit(void* db, sqlite3* /*connection*/,
                       const char* /*schema*/, int frames) {
  if (frames >= kCheckpointPages) {
    auto* self = static_cast<Database*>(db);
    absl::MutexLock lock(&self->checkpoint_mu_);
    self->checkpoint_due_ = true;
  }
  return SQLITE_OK;
}

void Database::RunCheckpoints() {
  while (true) {
    {
      absl::MutexLock lock(&checkpoint_mu_);
      auto due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(checkpoint_mu_) {
        return checkpoint_due_ || closing_;
      };
      checkpoint_mu_.Await(absl::Condition(&due));
      if (closing_) return;
      checkpoint_due_ = false;
    }
    int copied_before = -1;
    for (int pass = 0; pass < kCheckpointPasses; ++pass) {
      int frames = 0;
      int copied = 0;
      int rc = SQLITE_OK;
      {
        absl::MutexLock checkpointing(&checkpoint_run_mu_);
        rc = sqlite3_wal_checkpoint_v2(checkpointer_->raw(), nullptr,
                                       SQLITE_CHECKPOINT_PASSIVE, &frames,
                                       &copied);
      }
      // BUSY: another process checkpoints; the next commit past the mark
      // asks again. Other errors leave the WAL to grow until a checkpoint
      // succeeds; the writer is not affected.
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        log::Warning(
            "database.checkpoint_failed",
            {{"path", path_}, {"error", checkpointer_->ErrorMessage()}});
      }
      // Done, or held back: a reader of an older snapshot keeps the frames
      // after it from being copied until it ends.
      if (rc != SQLITE_OK || copied >= frames || copied == copied_before) {
        break;
      }
      copied_before = copied;
    }
  }
}

bool Database::DoneOrLeading(WaitArg* arg) {
  arg->db->queue_mu_.AssertHeld();
  return arg->write->done || arg->db->queue_.front() == arg->write;
}

absl::Status Database::Write(
    const std::function<absl::Status(Connection&)>& work) {
  PendingWrite me{.work = &work,
                  .first = server::ScopedWritePriority::Current() ==
                           server::WritePriority::kFirst};
  return Enqueue(me);
}

size_t Database::WaitingWrites() {
  absl::MutexLock lock(&queue_mu_);
  return queue_.size() - running_;
}

absl::Status Database::TruncateWal() {
  const std::function<absl::Status(Connection&)> work =
      [this](Connection& conn) -> absl::Status {
    // SQLite refuses a checkpoint at once (SQLITE_BUSY, no busy handler)
    // while another runs: wait for the checkpointing thread's pass.
    absl::MutexLock checkpointing(&checkpoint_run_mu_);
    // The checkpoint holds the writer while it waits for readers of older
    // snapshots: briefly, so that the writes queued behind it (an URGENT
    // message among them) wait for one try, not for the longest reader.
    sqlite3_busy_timeout(
        conn.raw(), static_cast<int>(absl::ToInt64Milliseconds(kTruncateTry)));
    const int rc = sqlite3_wal_checkpoint_v2(
        conn.raw(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
    sqlite3_busy_timeout(conn.raw(), kBusyTimeoutMs);
    if (rc != SQLITE_OK) {
      return SqliteError(conn.raw(), "checkpointing and truncating the WAL");
    }
    return absl::OkStatus();
  };
  // Tries again, with the writer free in between, while readers hold on,
  // for as long as one write may wait for a reader.
  const absl::Time give_up = absl::Now() + absl::Milliseconds(kBusyTimeoutMs);
  absl::Status status;
  while (true) {
    PendingWrite me{.work = &work, .alone = true};
    status = Enqueue(me);
    if (status.code() != absl::StatusCode::kUnavailable ||
        absl::Now() + kTruncateTry >= give_up) {
      break;
    }
    absl::SleepFor(kTruncateTry);
  }
  wal_truncation_owed_ = !status.ok();
  return status;
}

absl::Status Database::Enqueue(PendingWrite& me) {
  WaitArg arg{this, &me};
  queue_mu_.Lock();
  if (me.first && first_streak_.MayGoFirst()) {
    me.ahead = true;
    queue_.insert(
        queue_.begin() +
            static_cast<std::ptrdiff_t>(
                running_ + first_waiting_.load(std::memory_order_relaxed)),
        &me);
    first_waiting_.fetch_add(1, std::memory_order_relaxed);
  } else {
    queue_.push_back(&me);
  }
  queue_mu_.Await(absl::Condition(&DoneOrLeading, &arg));
  if (me.done) {  // a leader ran it
    queue_mu_.Unlock();
    return me.status;
  }
  // We lead: take the front of the queue (us first) as one batch, up to the
  // next write that runs alone.
  size_t n = 1;
  if (!me.alone) {
    // A leader queued ahead takes only the writes queued ahead (they are at
    // the front): the rest would add their work to its transaction before
    // its commit.
    const size_t limit = std::min(queue_.size(), kMaxBatch);
    while (n < limit && !queue_[n]->alone && (!me.ahead || queue_[n]->ahead)) {
      ++n;
    }
  }
  std::vector<PendingWrite*> batch(
      queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  running_ = n;
  for (const PendingWrite* write : batch) {
    if (write->ahead) first_waiting_.fetch_sub(1, std::memory_order_relaxed);
  }
  // A batch of kNormal writes gives way to kFirst writes queued meanwhile,
  // unless it was taken because the kFirst writes had gone first
  // kMaxFirstStreak times in a row: then it runs whole, so a steady stream
  // of kFirst writes leaves the others a batch, not a unit, in each turn.
  const bool gives_way = !me.ahead && first_streak_.MayGoFirst();
  first_streak_.Went(me.ahead, queue_.size() > n);
  queue_mu_.Unlock();

  size_t ran = 1;
  if (me.alone) {
    me.status = (*me.work)(*writer_);
  } else {
    ran = RunBatch(batch, gives_way);
  }

  queue_mu_.Lock();
  for (size_t i = 0; i < ran; ++i) {
    queue_.pop_front();  // the batch is still the front of the queue
    batch[i]->done = true;
  }
  if (ran < n && batch[ran]->ahead) {
    // A batch of kFirst writes cut short (its transaction was lost): the
    // units it did not run are still queued ahead, first as they came,
    // and count among the kFirst writes waiting again. (A batch is all
    // kFirst writes queued ahead, or none: see the batch's limit above.)
    first_waiting_.fetch_add(n - ran, std::memory_order_relaxed);
  } else if (ran < n) {
    // The batch gave way to kFirst writes queued meanwhile (they follow
    // it), or was cut short: they go first, then the units it did not run,
    // ahead of the rest as before.
    const auto rest = static_cast<std::ptrdiff_t>(n - ran);
    std::rotate(queue_.begin(), queue_.begin() + rest,
                queue_.begin() + rest +
                    static_cast<std::ptrdiff_t>(
                        first_waiting_.load(std::memory_order_relaxed)));
  }
  running_ = 0;
  queue_mu_.Unlock();  // wakes the batch's waiters and the next leader
  return me.status;
}

size_t Database::RunBatch(const std::vector<PendingWrite*>& batch,
                          bool gives_way) {
  const absl::Status begin = writer_->Run("BEGIN IMMEDIATE");
  if (!begin.ok()) {
    for (PendingWrite* write : batch) write->status = begin;
    return batch.size();
  }
  // Giving way, between two units, to a kFirst write queued ahead
  // meanwhile: the batch commits the units it ran and leaves the others
  // queued, so that the kFirst write waits for one unit and a commit, not
  // for the whole batch.
  size_t ran = 0;
  // Set when the transaction cannot commit what its units did: SQLite
  // rolled it back by itself, or a unit's changes could not be undone. The
  // units run so far then all fail (their changes are gone, or must go);
  // the others stay queued for the next batch.
  absl::Status lost;
  for (PendingWrite* write : batch) {
    if (ran > 0 && gives_way &&
        first_waiting_.load(std::memory_order_relaxed) > 0) {
      break;
    }
    ++ran;
    absl::Status status = writer_->Run("SAVEPOINT unit");
    if (status.ok()) status = (*write->work)(*writer_);
    if (!writer_->InTransaction()) {
      lost =
          status.ok()
              ? absl::InternalError("the database rolled the transaction back")
              : status;
    } else if (!status.ok()) {
      if (const absl::Status undone = writer_->Run("ROLLBACK TO unit");
          !undone.ok()) {
        lost = undone;
      }
    }
    if (lost.ok()) {
      const absl::Status release = writer_->Run("RELEASE unit");
      if (!release.ok()) {
        lost = release;
        if (status.ok()) status = release;
      }
    }
    write->status = status;
    if (!lost.ok()) break;
  }
  if (!lost.ok()) {
    if (writer_->InTransaction()) (void)writer_->Run("ROLLBACK");
    for (size_t i = 0; i < ran; ++i) {
      if (batch[i]->status.ok()) batch[i]->status = lost;
    }
    return ran;
  }
  const absl::Status commit = writer_->Run("COMMIT");
  if (!commit.ok()) {
    (void)writer_->Run("ROLLBACK");
    for (size_t i = 0; i < ran; ++i) {
      if (batch[i]->status.ok()) batch[i]->status = commit;
    }
  }
  return ran;
}

absl::Status Database::Read(
    const std::function<absl::Status(Connection&)>& work) {
  std::unique_ptr<Connection> reader;
  {
    absl::MutexLock lock(&read_mu_);
    read_mu_.Await(absl::Condition(
        +[](std::vector<std::unique_ptr<Connection>>* idle) {
          return !idle->empty();
        },
        &idle_readers_));
    reader = std::move(idle_readers_.back());
    idle_readers_.pop_back();
  }
  absl::Status status = reader->Run("BEGIN");
  if (status.ok()) {
    status = work(*reader);
    const absl::Status end = reader->Run("COMMIT");
    if (status.ok()) status = end;
  }
  absl::MutexLock lock(&read_mu_);
  idle_readers_.push_back(std::move(reader));
  return status;
}

}  // namespace casebridge::sqlite
