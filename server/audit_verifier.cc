#include "server/audit_verifier.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <memory>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "casebridge/v1/exchange.pb.h"
#include "core/audit_entry.h"
#include "core/crypto.h"
#include "core/identity.h"
#include "core/merkle.h"
#include "core/note.h"
#include "core/status_macros.h"
#include "server/record_keys.h"
#include "server/schema.h"
#include "server/sqlite_case_store.h"

namespace casebridge::server {
namespace {

// The oldest schema whose tables and columns this verifier reads: record
// keys, sealed fields and case retention (migration 6).
constexpr int64_t kOldestReadable = 6;

using Digest = std::array<unsigned char, merkle::kHashSize>;

absl::string_view View(const Digest& d) {
  return absl::string_view(reinterpret_cast<const char*>(d.data()), d.size());
}

// --- Hashing -----------------------------------------------------------------

// RFC 6962 hashing into fixed arrays: the verifier hashes every entry and
// about as many inner nodes, and a heap string per hash would cost more than
// the hash of a short entry. One per thread (the context is reused).
class Hasher {
 public:
  Digest Leaf(absl::string_view entry) {
    static constexpr unsigned char kLeaf = 0x00;
    sha_.Update(&kLeaf, 1);
    sha_.Update(entry);
    return sha_.FinishDigest();
  }

  Digest Node(const Digest& left, const Digest& right) {
    static constexpr unsigned char kNode = 0x01;
    sha_.Update(&kNode, 1);
    sha_.Update(left.data(), left.size());
    sha_.Update(right.data(), right.size());
    return sha_.FinishDigest();
  }

  Digest PayloadHash(absl::string_view salt, absl::string_view payload) {
    sha_.Update(salt);
    sha_.Update(payload);
    return sha_.FinishDigest();
  }

 private:
  crypto::Sha256Hasher sha_;
};

// --- The recomputed tree -----------------------------------------------------

// Every node completed since the previous checkpoint, plus that
// checkpoint's right edge: exactly the nodes a consistency proof between the
// two reads (server/audit_verifier.h). Level l holds indexes
// [base_size >> l, ...) contiguously.
class RecentNodes final : public merkle::NodeSource {
 public:
  // Drops what was kept and starts over from a tree of `size` leaves whose
  // right edge is `edge` (edge[l] valid where bit l of size is set).
  void Restart(uint64_t size, const std::array<Digest, 64>& edge) {
    base_size_ = size;
    edge_ = edge;
    enabled_ = true;
    for (auto& level : levels_) level.clear();
  }
  // Stops keeping nodes until the next Restart (the interval is too long to
  // hold in memory).
  void Disable() {
    enabled_ = false;
    for (auto& level : levels_) {
      level.clear();
      level.shrink_to_fit();
    }
  }
  bool enabled() const { return enabled_; }

  void Add(int level, const Digest& hash) {
    if (enabled_) levels_[static_cast<size_t>(level)].push_back(hash);
  }

  absl::StatusOr<std::string> Node(int level, uint64_t index) override {
    if (level < 0 || level >= 64) {
      return absl::InternalError(absl::StrCat("no tree level ", level));
    }
    const auto l = static_cast<size_t>(level);
    const uint64_t first = base_size_ >> level;
    if (index >= first && index - first < levels_[l].size()) {
      return std::string(View(levels_[l][index - first]));
    }
    if (((base_size_ >> level) & 1) != 0 && index == first - 1) {
      return std::string(View(edge_[l]));
    }
    return absl::InternalError(absl::StrCat("the verifier kept no tree node (",
                                            level, ", ", index, ")"));
  }

 private:
  uint64_t base_size_ = 0;
  bool enabled_ = false;
  std::array<Digest, 64> edge_{};
  std::array<std::vector<Digest>, 64> levels_;
};

// The right edge of the recomputed tree: edge_[l] is the complete subtree of
// 2^l leaves on the edge when bit l of the size is set.
class Tree {
 public:
  // `inner(level, index, hash)` is told each inner node the leaf completes.
  template <class InnerSink>
  void Append(Hasher& hasher, const Digest& leaf, RecentNodes& recent,
              InnerSink&& inner) {
    Digest node = leaf;
    recent.Add(0, node);
    int level = 0;
    for (uint64_t i = size_; (i & 1) != 0; i >>= 1) {
      node = hasher.Node(edge_[static_cast<size_t>(level)], node);
      ++level;
      recent.Add(level, node);
      inner(level, size_ >> level, node);
    }
    edge_[static_cast<size_t>(level)] = node;
    ++size_;
  }

  Digest Root(Hasher& hasher) const {
    if (size_ == 0) {
      Digest empty;
      const std::string root = merkle::EmptyRoot();
      std::memcpy(empty.data(), root.data(), empty.size());
      return empty;
    }
    // Right-fold of the edge, smallest subtree first.
    Digest root{};
    bool have = false;
    for (size_t level = 0; level < 64; ++level) {
      if (((size_ >> level) & 1) == 0) continue;
      root = have ? hasher.Node(edge_[level], root) : edge_[level];
      have = true;
    }
    return root;
  }

  uint64_t size() const { return size_; }
  const std::array<Digest, 64>& edge() const { return edge_; }

 private:
  uint64_t size_ = 0;
  std::array<Digest, 64> edge_{};
};

// A consistency proof between two checkpoints needs the nodes completed
// between them: 64 bytes per entry. Longer intervals are not kept.
constexpr uint64_t kMaxConsistencyInterval = uint64_t{1} << 20;

// --- SQLite, read-only -------------------------------------------------------

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// A corrupt file is damage to report; anything else means the log could not
// be examined.
bool IsCorruption(int rc) {
  return (rc & 0xFF) == SQLITE_CORRUPT || (rc & 0xFF) == SQLITE_NOTADB;
}

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what) {
  const std::string message = absl::StrCat(
      what, ": ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  if (IsCorruption(rc)) return absl::DataLossError(message);
  if ((rc & 0xFF) == SQLITE_CANTOPEN) return absl::NotFoundError(message);
  return absl::InternalError(message);
}

// Whether a gateway may have the database at `path` open: its WAL is
// beside it. Decided once per verification, for both of its connections.
bool WalBeside(const std::string& path) {
  std::error_code error;
  return std::filesystem::exists(path + "-wal", error);
}

// Opens the database at `path` read-only (the connection stays on one
// thread, so SQLite's own locking is not needed). A file no connection has
// open (not `live`: a stopped gateway's, or a copy) is opened as immutable:
// SQLite then creates no -shm or -wal file beside it, so a copy on
// read-only media can be verified and a forensic directory is left as it
// was. Beside a live gateway, it reads as a WAL reader, which the gateway's
// writes do not block.
absl::StatusOr<DbPtr> OpenForReading(const std::string& path, bool live) {
  std::string uri = "file:";
  for (const char c : path) {
    if (c == '%' || c == '?' || c == '#') {
      absl::StrAppend(
          &uri, "%", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    } else {
      uri.push_back(c);
    }
  }
  if (!live) uri += "?immutable=1";
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(
      uri.c_str(), &raw,
      SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI, nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) {
    return SqliteError(db.get(), rc, absl::StrCat("opening ", path));
  }
  return db;
}

// `status`, a failure of the first read of a `live` database, with what to
// do when it is the directory: a WAL reader needs to create the -shm file
// beside the database.
absl::Status ExplainFirstRead(const std::string& path, bool live,
                              const absl::Status& status) {
  if (status.ok() || !live ||
      ::access(std::filesystem::path(path).parent_path().c_str(), W_OK) == 0) {
    return status;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot read ", path,
      " where it is: a WAL file is beside it, and "
      "reading it needs to create ",
      path,
      "-shm in a directory this user "
      "may not write. Verify a copy of gateway.db and gateway.db-wal in a "
      "directory of your own, or run as a user who may write there"));
}

absl::StatusOr<StmtPtr> Prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
  if (rc == SQLITE_ERROR) {
    // The statements are this release's, for the schema versions it reads
    // (checked first): a table or column missing is the file's fault.
    return absl::DataLossError(absl::StrCat(
        "a table or column its schema version promises is missing (",
        sqlite3_errmsg(db), ")"));
  }
  if (rc != SQLITE_OK) {
    return SqliteError(db, rc, absl::StrCat("preparing \"", sql, "\""));
  }
  return StmtPtr(stmt);
}

// true: a row; false: done.
absl::StatusOr<bool> Step(sqlite3* db, sqlite3_stmt* stmt) {
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(db, rc,
                     absl::StrCat("reading \"", sqlite3_sql(stmt), "\""));
}

absl::string_view Blob(sqlite3_stmt* stmt, int column) {
  const void* data = sqlite3_column_blob(stmt, column);
  const int size = sqlite3_column_bytes(stmt, column);
  if (data == nullptr || size <= 0) return absl::string_view();
  return absl::string_view(static_cast<const char*>(data),
                           static_cast<size_t>(size));
}

// The stored tree's inner nodes, compared with the recomputed ones as the
// recomputation completes them: one cursor per level, each read once in
// index order (a merge join per level). A checkpoint's proofs and the
// gateway's next checkpoint are made from these nodes, not from the leaves.
class StoredNodes {
 public:
  explicit StoredNodes(sqlite3* db) : db_(db) {}

  // Node (`level` >= 1, `index`) recomputed as `hash`. `must_exist`: it
  // lies wholly under the newest checkpoint, so the gateway has stored it.
  void Check(int level, uint64_t index, const Digest& hash, bool must_exist) {
    if (!problem_.empty() || !error_.ok()) return;
    Cursor& c = levels_[static_cast<size_t>(level)];
    if (c.stmt == nullptr && !Open(level, c)) return;
    while (c.have && c.index < index) Advance(c);
    if (!error_.ok()) return;
    // The entries under the node: index << level and the 2^level after.
    const uint64_t first = index << level;
    const uint64_t last = ((index + 1) << level) - 1;
    if (!c.have || c.index != index) {
      if (must_exist) {
        problem_ = absl::StrCat("the stored tree has no node (level ", level,
                                ", index ", index, ") over entries ", first,
                                "-", last);
      }
      return;
    }
    if (Blob(c.stmt.get(), 1) != View(hash)) {
      problem_ = absl::StrCat(
          "the stored tree's node (level ", level, ", index ", index,
          ") over entries ", first, "-", last,
          " does not match the entries: the node was changed, or one of "
          "those entries together with its stored leaf hash; proofs and "
          "checkpoints made from it are wrong");
    }
  }

  // A node that disagrees with the entries, or is missing: damage.
  const std::string& problem() const { return problem_; }
  // The stored nodes could not be read (not damage: the caller's error).
  const absl::Status& error() const { return error_; }

 private:
  struct Cursor {
    StmtPtr stmt;
    bool have = false;
    uint64_t index = 0;
  };

  bool Open(int level, Cursor& c) {
    auto stmt = Prepare(db_,
                        "SELECT idx, hash FROM audit_nodes WHERE level = ? "
                        "ORDER BY idx");
    if (!stmt.ok()) {
      error_ = stmt.status();
      return false;
    }
    c.stmt = std::move(*stmt);
    sqlite3_bind_int(c.stmt.get(), 1, level);
    Advance(c);
    return error_.ok();
  }

  void Advance(Cursor& c) {
    auto row = Step(db_, c.stmt.get());
    if (!row.ok()) {
      error_ = row.status();
      c.have = false;
      return;
    }
    c.have = *row;
    if (c.have) {
      const int64_t index = sqlite3_column_int64(c.stmt.get(), 0);
      c.index = index < 0 ? 0 : static_cast<uint64_t>(index);
    }
  }

  sqlite3* const db_;
  std::array<Cursor, 64> levels_;
  std::string problem_;
  absl::Status error_;
};

// StoredNodes on a thread and a connection of their own: the stream hands
// over the inner nodes it completes, in batches, and the stored ones (about
// as many rows as entries) are read beside the entries, on a second core.
// The stored tree only grows, so a read transaction begun just after the
// stream's sees every node the stream's would.
class NodeChecker {
 public:
  struct Node {
    int level = 0;
    uint64_t index = 0;
    Digest hash{};
    bool must_exist = false;
  };

  // Opens `path` again, read-only (as the first connection: `live`), in a
  // read transaction of its own.
  static absl::StatusOr<std::unique_ptr<NodeChecker>> Start(
      const std::string& path, bool live) {
    CB_ASSIGN_OR_RETURN(DbPtr db, OpenForReading(path, live));
    if (const int begin =
            sqlite3_exec(db.get(), "BEGIN", nullptr, nullptr, nullptr);
        begin != SQLITE_OK) {
      return SqliteError(db.get(), begin, "BEGIN");
    }
    return std::unique_ptr<NodeChecker>(new NodeChecker(std::move(db)));
  }

  ~NodeChecker() { Finish(); }

  // From the stream's thread.
  void Add(const Node& node) {
    batch_.push_back(node);
    if (batch_.size() == kBatch) Hand();
  }

  // Waits until every node handed over is checked. Then, if one is wrong:
  // the entry whose leaf completed it (the last under it), and the problem.
  void Finish() {
    if (!batch_.empty()) Hand();
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }
  const std::optional<uint64_t>& bad_entry() const { return bad_entry_; }
  const std::string& problem() const { return nodes_.problem(); }
  const absl::Status& error() const { return nodes_.error(); }

 private:
  static constexpr size_t kBatch = 8192;
  static constexpr size_t kMaxBatches = 16;  // about 6 MB in flight

  explicit NodeChecker(DbPtr db) : db_(std::move(db)), nodes_(db_.get()) {
    batch_.reserve(kBatch);
    thread_ = std::thread([this] { Work(); });
  }

  void Hand() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::deque<std::vector<Node>>* q) {
          return q->size() < kMaxBatches;
        },
        &queue_));
    queue_.push_back(std::move(batch_));
    batch_ = std::vector<Node>();
    batch_.reserve(kBatch);
  }

  void Work() {
    while (true) {
      std::vector<Node> batch;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](NodeChecker* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
              return !c->queue_.empty() || c->done_;
            },
            this));
        if (queue_.empty()) return;  // done, and everything checked
        batch = std::move(queue_.front());
        queue_.pop_front();
      }
      // After a bad node or a read error, drained, not checked.
      if (bad_entry_.has_value() || !nodes_.error().ok()) continue;
      for (const Node& n : batch) {
        nodes_.Check(n.level, n.index, n.hash, n.must_exist);
        if (!nodes_.problem().empty()) {
          bad_entry_ = n.index << n.level;  // the first entry under it
          break;
        }
      }
    }
  }

  DbPtr db_;
  StoredNodes nodes_;        // the worker's
  std::vector<Node> batch_;  // the stream's
  absl::Mutex mu_;
  std::deque<std::vector<Node>> queue_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<uint64_t> bad_entry_;  // the worker's until joined
  std::thread thread_;
};

// --- Checkpoints -------------------------------------------------------------

struct CheckpointRow {
  uint64_t size = 0;
  std::string stored_root;
  std::string note_text;
  bool marked_cosigned = false;
  // Parsed up front; when parsing fails, `problem` says why.
  note::Note note;
  note::Checkpoint body;
  bool parsed = false;
  std::string problem;
  // Written by the entry stream only: its roots disagree with the entries.
  std::string root_problem;
  // Written by the signature thread only (so the two never share a field).
  std::string signature_problem;
  bool cosigned = false;  // carries a valid cosignature by the peer

  // The first thing wrong with it, in the order the checks are listed.
  const std::string& Problem() const {
    if (!problem.empty()) return problem;
    if (!root_problem.empty()) return root_problem;
    return signature_problem;
  }
};

std::string Quote(absl::string_view s) {
  return absl::StrCat("\"", absl::CHexEscape(s), "\"");
}

absl::StatusOr<std::vector<CheckpointRow>> ReadCheckpoints(sqlite3* db) {
  CB_ASSIGN_OR_RETURN(StmtPtr stmt,
                      Prepare(db,
                              "SELECT size, root, note, cosigned_us IS NOT "
                              "NULL FROM checkpoints ORDER BY size"));
  std::vector<CheckpointRow> rows;
  while (true) {
    CB_ASSIGN_OR_RETURN(const bool row, Step(db, stmt.get()));
    if (!row) break;
    CheckpointRow c;
    const int64_t size = sqlite3_column_int64(stmt.get(), 0);
    c.size = size < 0 ? 0 : static_cast<uint64_t>(size);
    c.stored_root = std::string(Blob(stmt.get(), 1));
    const unsigned char* text = sqlite3_column_text(stmt.get(), 2);
    if (text != nullptr) {
      c.note_text.assign(
          reinterpret_cast<const char*>(text),
          static_cast<size_t>(sqlite3_column_bytes(stmt.get(), 2)));
    }
    c.marked_cosigned = sqlite3_column_int(stmt.get(), 3) != 0;
    if (size < 0) c.problem = absl::StrCat("negative size ", size);
    rows.push_back(std::move(c));
  }
  return rows;
}

// Parses every note and settles the log's origin (that of the first
// checkpoint, which must be one of the two gateways'). Problems are left in
// the rows; returns the origin's country (COUNTRY_UNSPECIFIED if none).
v1::Country ParseCheckpoints(std::vector<CheckpointRow>& rows,
                             std::string* origin) {
  v1::Country country = v1::COUNTRY_UNSPECIFIED;
  for (CheckpointRow& c : rows) {
    if (!c.problem.empty()) continue;
    auto note = note::Parse(c.note_text);
    if (!note.ok()) {
      c.problem = absl::StrCat("note: ", note.status().message());
      continue;
    }
    auto body = note::ParseCheckpoint(note->text);
    if (!body.ok()) {
      c.problem = absl::StrCat("note: ", body.status().message());
      continue;
    }
    if (country == v1::COUNTRY_UNSPECIFIED) {
      if (body->origin == audit::LogOrigin("PK")) {
        country = v1::COUNTRY_PK;
      } else if (body->origin == audit::LogOrigin("CN")) {
        country = v1::COUNTRY_CN;
      } else {
        c.problem = absl::StrCat("origin ", Quote(body->origin), " is neither ",
                                 audit::LogOrigin("PK"), " nor ",
                                 audit::LogOrigin("CN"));
        continue;
      }
      *origin = body->origin;
    } else if (body->origin != *origin) {
      c.problem = absl::StrCat("origin ", Quote(body->origin),
                               " differs from the log's (", *origin, ")");
      continue;
    }
    if (body->size != c.size) {
      c.problem = absl::StrCat("the signed note says size ", body->size);
      continue;
    }
    c.note = *std::move(note);
    c.body = *std::move(body);
    c.parsed = true;
  }
  return country;
}

// Signature and cosignature of every parsed checkpoint, shared among the
// threads that call Work(): each claims the next unchecked checkpoint, so
// each row's signature fields are written by one thread only.
class SignatureChecks {
 public:
  // `stop` is a size past which nothing needs checking (the entry stream
  // lowers it when it finds damage earlier). A checkpoint may be signed by
  // any of `checkpoint_keys` and cosigned by any of `witness_keys` (current
  // keys first, then those used before rotations); neither may be empty.
  SignatureChecks(std::vector<CheckpointRow>& rows,
                  std::vector<keys::TrustedNoteKey> checkpoint_keys,
                  std::vector<keys::TrustedNoteKey> witness_keys,
                  const std::atomic<uint64_t>& stop)
      : rows_(rows),
        checkpoint_keys_(std::move(checkpoint_keys)),
        witness_keys_(std::move(witness_keys)),
        stop_(stop) {}

  void Work() {
    while (true) {
      const size_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= rows_.size()) return;
      CheckpointRow& c = rows_[i];
      if (c.size > stop_.load(std::memory_order_relaxed)) continue;
      if (c.parsed && c.problem.empty()) Check(c);
    }
  }

 private:
  void Check(CheckpointRow& c) const {
    // Offline there is no overlap window: every listed key is trusted.
    if (const auto signed_ok =
            keys::VerifyNote(c.note, checkpoint_keys_, absl::InfinitePast());
        !signed_ok.ok()) {
      c.signature_problem = absl::StrCat(
          "no valid signature by ", checkpoint_keys_.front().key.name,
          "'s checkpoint key (", signed_ok.status().message(), ")");
      return;
    }
    auto cosigned = keys::VerifyNoteCosignature(c.note, witness_keys_,
                                                absl::InfinitePast());
    if (cosigned.ok()) {
      c.cosigned = true;
    } else if (cosigned.status().code() != absl::StatusCode::kNotFound) {
      c.signature_problem = absl::StrCat(
          "the cosignature by ", witness_keys_.front().key.name,
          " does not verify: the log was rewritten after the peer witnessed "
          "it, or the note was edited (",
          cosigned.status().message(), ")");
    } else if (c.marked_cosigned) {
      c.signature_problem =
          absl::StrCat("marked cosigned, but carries no cosignature by ",
                       witness_keys_.front().key.name);
    }
  }

  std::vector<CheckpointRow>& rows_;
  const std::vector<keys::TrustedNoteKey> checkpoint_keys_;
  const std::vector<keys::TrustedNoteKey> witness_keys_;
  const std::atomic<uint64_t>& stop_;
  std::atomic<size_t> next_{0};
};

// --- Received envelopes ------------------------------------------------------

struct Inbound {
  uint64_t audit_index = 0;
  std::string envelope_id;
  std::string signature;  // of the stored SignedEnvelope
  std::string problem;    // set if the stored envelope does not parse
};

absl::StatusOr<std::vector<Inbound>> ReadInbound(sqlite3* db) {
  // Purged envelopes are X'': nothing left to match. Sorted here, not by
  // SQLite, which would sort whole envelopes through a temporary file.
  CB_ASSIGN_OR_RETURN(
      StmtPtr stmt,
      Prepare(db,
              "SELECT audit_index, envelope_id, signed_envelope FROM inbound "
              "WHERE length(signed_envelope) > 0"));
  std::vector<Inbound> out;
  v1::SignedEnvelope signed_envelope;
  while (true) {
    CB_ASSIGN_OR_RETURN(const bool row, Step(db, stmt.get()));
    if (!row) break;
    Inbound in;
    const int64_t index = sqlite3_column_int64(stmt.get(), 0);
    in.audit_index = index < 0 ? std::numeric_limits<uint64_t>::max()
                               : static_cast<uint64_t>(index);
    in.envelope_id = std::string(Blob(stmt.get(), 1));
    const absl::string_view bytes = Blob(stmt.get(), 2);
    if (!signed_envelope.ParseFromArray(bytes.data(),
                                        static_cast<int>(bytes.size()))) {
      in.problem = absl::StrCat("the stored envelope ", Quote(in.envelope_id),
                                " does not parse");
    } else {
      in.signature = signed_envelope.signature();
    }
    out.push_back(std::move(in));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Inbound& a, const Inbound& b) {
                     return a.audit_index < b.audit_index;
                   });
  return out;
}

// --- Cases -------------------------------------------------------------------

// What the log says of one of the gateway's own cases.
struct CaseHistory {
  int64_t versions = 0;    // successful case.open and case.update entries
  uint64_t opened_at = 0;  // the index of its case.open entry
  uint64_t newest_at = 0;  // the index of the newest of those entries
  // The index of the retention.purge entry of its personal data, if any,
  // and of a second one (only possible if it was put back in between).
  std::optional<uint64_t> purged_at;
  std::optional<uint64_t> purged_again_at;
};

// A successful retention.purge entry that names no case of ours: a
// message's payload (or a peer case's personal data, not checked).
struct Purge {
  uint64_t index = 0;
  std::string subject;
};

struct CaseRow {
  std::string exchange_id;
  int64_t version = 0;
  bool purged = false;
};

// What the database holds besides the log, as "616 cases, 3 messages"
// (empty if nothing): every such record is written with an audit entry.
absl::StatusOr<std::string> RecordsHeld(sqlite3* db) {
  std::vector<std::string> held;
  for (const auto& [table, what] :
       std::vector<std::pair<const char*, const char*>>{
           {"cases", "cases"},
           {"messages", "messages"},
           {"outbox", "outgoing envelopes"},
           {"inbound", "received envelopes"},
           {"witness_state", "peer checkpoints witnessed"}}) {
    const std::string sql = absl::StrCat("SELECT COUNT(*) FROM ", table);
    CB_ASSIGN_OR_RETURN(StmtPtr stmt, Prepare(db, sql.c_str()));
    CB_ASSIGN_OR_RETURN(const bool row, Step(db, stmt.get()));
    const int64_t count = row ? sqlite3_column_int64(stmt.get(), 0) : 0;
    if (count > 0) held.push_back(absl::StrCat(count, " ", what));
  }
  return absl::StrJoin(held, ", ");
}

absl::StatusOr<std::vector<CaseRow>> ReadCases(sqlite3* db) {
  CB_ASSIGN_OR_RETURN(StmtPtr stmt,
                      Prepare(db,
                              "SELECT exchange_id, version, purged_us IS NOT "
                              "NULL FROM cases ORDER BY seq"));
  std::vector<CaseRow> out;
  while (true) {
    CB_ASSIGN_OR_RETURN(const bool row, Step(db, stmt.get()));
    if (!row) break;
    out.push_back(CaseRow{std::string(Blob(stmt.get(), 0)),
                          sqlite3_column_int64(stmt.get(), 1),
                          sqlite3_column_int(stmt.get(), 2) != 0});
  }
  return out;
}

// A message id as the verifier keeps it: 64 bits of its hash (no copy of
// the string per message; two ids sharing a key, about one chance in 10^13
// for a million messages, would only hide one missing entry).
uint64_t MessageKey(absl::string_view id) {
  return absl::Hash<absl::string_view>{}(id);
}

// The messages stored here (sent or received) that no successful entry
// names: each is stored in the transaction of the entry that records it, so
// the log lost those entries (its end cut off together with the checkpoints
// over it, say). Problems, in message id order.
absl::StatusOr<std::vector<std::string>> MessagesNotInTheLog(
    sqlite3* db, std::vector<uint64_t> logged) {
  std::sort(logged.begin(), logged.end());
  CB_ASSIGN_OR_RETURN(StmtPtr stmt,
                      Prepare(db,
                              "SELECT message_id, direction FROM messages "
                              "ORDER BY message_id"));
  std::vector<std::string> out;
  while (true) {
    CB_ASSIGN_OR_RETURN(const bool row, Step(db, stmt.get()));
    if (!row) break;
    const absl::string_view id = Blob(stmt.get(), 0);
    if (std::binary_search(logged.begin(), logged.end(), MessageKey(id))) {
      continue;
    }
    out.push_back(absl::StrCat(
        "message ", Quote(id), " is stored as ",
        sqlite3_column_int(stmt.get(), 1) == 1 ? "sent" : "received",
        " here, but no entry of the log records it: entries were removed "
        "(the end of the log cut off with the checkpoints over it?)"));
  }
  return out;
}

// Of the messages the log says retention purged, the problems: a row not
// marked purged (its payload was put back from an earlier copy), or a
// message purged twice (put back in between, and purged again by the next
// run). Subjects that are no message (a peer case's exchange id: those are
// purged again, rightly, after the peer shares them again) are left out.
absl::StatusOr<std::vector<std::string>> PurgedMessagesBack(
    sqlite3* db, std::vector<Purge> purges) {
  CB_ASSIGN_OR_RETURN(StmtPtr stmt,
                      Prepare(db,
                              "SELECT purged_us IS NULL FROM messages WHERE "
                              "message_id = ?"));
  std::stable_sort(
      purges.begin(), purges.end(),
      [](const Purge& a, const Purge& b) { return a.subject < b.subject; });
  std::vector<std::pair<uint64_t, std::string>> problems;
  for (size_t i = 0; i < purges.size(); ++i) {
    const Purge& purge = purges[i];
    const bool again = i > 0 && purges[i - 1].subject == purge.subject;
    sqlite3_reset(stmt.get());
    sqlite3_bind_text(stmt.get(), 1, purge.subject.data(),
                      static_cast<int>(purge.subject.size()), SQLITE_STATIC);
    CB_ASSIGN_OR_RETURN(const bool row, Step(db, stmt.get()));
    if (!row) continue;  // not a message
    if (again) {
      problems.emplace_back(
          purge.index,
          absl::StrCat(
              "message ", Quote(purge.subject),
              " had its payload purged under retention twice (entries ",
              purges[i - 1].index, " and ", purge.index,
              "): it was put back from an earlier copy in between"));
    } else if (sqlite3_column_int(stmt.get(), 0) != 0) {
      problems.emplace_back(
          purge.index,
          absl::StrCat("message ", Quote(purge.subject),
                       " had its payload purged under retention in entry ",
                       purge.index,
                       ", but the store holds it unpurged: it was put back "
                       "from an earlier copy"));
    }
  }
  std::sort(problems.begin(), problems.end());
  std::vector<std::string> out;
  for (auto& [index, problem] : problems) out.push_back(std::move(problem));
  return out;
}

// Compares the store's cases with the log's histories of the gateway's own
// cases. `own_prefix` ("PK-") is empty when the log's country is unknown (no
// checkpoint yet): cases absent from the log are then not looked for. Fills
// `report` (cases_checked; ok and problem on the first disagreement, with
// the number of cases that disagree).
void CheckCases(const std::vector<CaseRow>& rows,
                absl::flat_hash_map<std::string, CaseHistory> histories,
                const std::vector<std::string>& message_problems,
                absl::string_view own_prefix, AuditVerifyReport& report) {
  std::string first;
  uint64_t disagreeing = 0;
  auto disagree = [&](std::string problem) {
    if (disagreeing++ == 0) first = std::move(problem);
  };
  for (const CaseRow& row : rows) {
    auto it = histories.find(row.exchange_id);
    if (it == histories.end()) {
      if (!own_prefix.empty() &&
          absl::StartsWith(row.exchange_id, own_prefix)) {
        disagree(absl::StrCat(
            "case ", Quote(row.exchange_id),
            " is in the store but the log never recorded its opening: it was "
            "written outside the gateway"));
      }
      continue;
    }
    const CaseHistory& h = it->second;
    if (row.version != h.versions) {
      disagree(absl::StrCat("case ", Quote(row.exchange_id), " is at version ",
                            row.version, " in the store, but the log records ",
                            h.versions,
                            h.versions == 1 ? " version" : " versions",
                            " of it (the newest in entry ", h.newest_at, "): ",
                            row.version < h.versions
                                ? "the case was put back from an earlier copy"
                                : "the case was changed outside the gateway"));
    } else if (h.purged_again_at.has_value()) {
      disagree(absl::StrCat(
          "case ", Quote(row.exchange_id),
          " had its personal data purged under retention twice (entries ",
          *h.purged_at, " and ", *h.purged_again_at,
          "): it was put back from an earlier copy in between"));
    } else if (h.purged_at.has_value() && !row.purged) {
      disagree(absl::StrCat(
          "case ", Quote(row.exchange_id),
          " had its personal data purged under retention in entry ",
          *h.purged_at,
          ", but the store holds it unpurged: it was put back from an earlier "
          "copy"));
    } else {
      ++report.cases_checked;
    }
    histories.erase(it);
  }
  // Opened in the log, gone from the store: in the order they were opened.
  std::vector<std::pair<uint64_t, std::string>> missing;
  for (const auto& [id, h] : histories) missing.emplace_back(h.opened_at, id);
  std::sort(missing.begin(), missing.end());
  for (const auto& [opened_at, id] : missing) {
    disagree(absl::StrCat("case ", Quote(id), ", opened in entry ", opened_at,
                          ", is not in the store: it was deleted outside the "
                          "gateway"));
  }
  for (const std::string& problem : message_problems) disagree(problem);
  if (disagreeing == 0) return;
  report.ok = false;
  report.problem =
      disagreeing == 1
          ? first
          : absl::StrCat(disagreeing,
                         " records disagree with the log; the first: ", first);
}

// --- The stream --------------------------------------------------------------

struct StreamResult {
  uint64_t entries = 0;  // entries verified before `problem`
  std::optional<uint64_t> bad_entry;
  std::string problem;  // about bad_entry
  // Found after the last entry: ranks after a checkpoint beyond the log,
  // which says the same more precisely.
  std::optional<uint64_t> tail_entry;
  std::string tail_problem;
  uint64_t purged = 0;
  uint64_t payloads_checked = 0;
  uint64_t consistency_proofs = 0;
  std::vector<std::string> notes;
  // By exchange id: the cases the log records opening.
  absl::flat_hash_map<std::string, CaseHistory> cases;
  // The other successful retention.purge entries, in log order.
  std::vector<Purge> purges;
  // The message ids successful entries name, as MessageKey, in log order
  // (sorted once the stream is done: appending is cheaper than a hash set
  // at a million entries): every message stored here, sent or received,
  // was stored in the transaction of such an entry.
  std::vector<uint64_t> messages;
};

class Stream {
 public:
  // `nodes` is handed every inner node of the tree the stream recomputes.
  Stream(sqlite3* db, std::vector<CheckpointRow>& checkpoints,
         const std::vector<Inbound>& inbound, std::atomic<uint64_t>& stop,
         NodeChecker* nodes)
      : db_(db),
        checkpoints_(checkpoints),
        inbound_(inbound),
        stop_(stop),
        nodes_(nodes) {}

  absl::StatusOr<StreamResult> Run();

 private:
  // Entry `index` is bad: stops the stream there.
  void FailEntry(uint64_t index, std::string problem) {
    result_.bad_entry = index;
    result_.problem = std::move(problem);
    stop_.store(index, std::memory_order_relaxed);
  }
  // Checkpoint `c` is bad: stops the stream before the entries it does not
  // cover.
  void FailCheckpoint(CheckpointRow& c, std::string problem) {
    c.root_problem = std::move(problem);
    stop_.store(c.size, std::memory_order_relaxed);
  }
  // The root checks of checkpoint `c`, whose size the tree has reached.
  // false if it is bad.
  bool CheckRoot(CheckpointRow& c);
  // Counts entry `index` into its case's history if it opened or changed one
  // of the gateway's own cases.
  void NoteCaseChange(uint64_t index, const EntryView& view);
  // Checks the received envelopes recorded by entry `index`.
  bool CheckPayloads(uint64_t index, const EntryView& view, bool has_salt,
                     absl::string_view salt);
  // Notes what retention purged, and the entries without a payload salt;
  // once the stream is done, each of those must be one a later purge
  // cleared (else false, the entry failed).
  bool NotePurgesAndSalts(uint64_t index, const EntryView& view,
                          absl::string_view bytes, bool has_salt);
  bool EverySaltGoneWasPurged();

  // An entry whose payload salt is gone.
  struct SaltGone {
    uint64_t index = 0;
    bool refusal = false;
    std::vector<std::string> subjects;
  };
  // retention.purge_refusals: the refusals from `lowest` to `highest`.
  struct RefusalsPurged {
    uint64_t lowest = 0;
    uint64_t highest = 0;
    uint64_t at = 0;  // the purge's own entry
  };

  sqlite3* const db_;
  std::vector<CheckpointRow>& checkpoints_;
  const std::vector<Inbound>& inbound_;
  std::atomic<uint64_t>& stop_;
  NodeChecker* const nodes_;
  Hasher hasher_;
  Tree tree_;
  RecentNodes recent_;
  size_t next_checkpoint_ = 0;
  size_t next_inbound_ = 0;
  const CheckpointRow* previous_ = nullptr;  // last checkpoint passed
  std::vector<SaltGone> salts_gone_;
  // The subject of each successful retention.purge: its newest entry.
  absl::flat_hash_map<std::string, uint64_t> purged_subjects_;
  std::vector<RefusalsPurged> refusals_purged_;
  StreamResult result_;
};

bool Stream::NotePurgesAndSalts(uint64_t index, const EntryView& view,
                                absl::string_view bytes, bool has_salt) {
  const bool purge = has_salt && view.status_code == 0;
  if (purge && view.action == kRetentionPurgeAction) {
    // One subject: the message or case purged.
    if (!view.first_subject.empty()) {
      purged_subjects_[std::string(view.first_subject)] = index;
    }
    return true;
  }
  const bool refusals = purge && view.action == "retention.purge_refusals";
  if (has_salt && !refusals) return true;  // the common case
  // Decoded whole for all its subjects (the range's both ends).
  absl::StatusOr<audit::Entry> entry = audit::Decode(bytes);
  if (!entry.ok()) {  // ScanEntry took it: cannot happen
    FailEntry(index, std::string(entry.status().message()));
    return false;
  }
  if (!has_salt) {
    salts_gone_.push_back(
        SaltGone{index, entry->status_code != 0, std::move(entry->subjects)});
    return true;
  }
  RefusalsPurged range;
  range.at = index;
  if (entry->subjects.size() < 2 ||
      !absl::SimpleAtoi(entry->subjects[0], &range.lowest) ||
      !absl::SimpleAtoi(entry->subjects[1], &range.highest)) {
    return true;  // covers nothing
  }
  refusals_purged_.push_back(range);
  return true;
}

bool Stream::EverySaltGoneWasPurged() {
  for (const SaltGone& gone : salts_gone_) {
    bool purged = false;
    for (const std::string& subject : gone.subjects) {
      auto it = purged_subjects_.find(subject);
      if (it != purged_subjects_.end() && it->second > gone.index) {
        purged = true;
        break;
      }
    }
    for (size_t i = 0; !purged && gone.refusal && i < refusals_purged_.size();
         ++i) {
      const RefusalsPurged& r = refusals_purged_[i];
      purged = r.at > gone.index && r.lowest <= gone.index &&
               gone.index <= r.highest;
    }
    if (purged) continue;
    FailEntry(gone.index,
              absl::StrCat("entry ", gone.index,
                           " has lost its payload salt, but no retention "
                           "purge in the log covers it: it was removed "
                           "outside the gateway, and what the entry's "
                           "payload was can no longer be proven"));
    return false;
  }
  return true;
}

bool Stream::CheckRoot(CheckpointRow& c) {
  const Digest root = tree_.Root(hasher_);
  if (c.stored_root != View(root)) {
    FailCheckpoint(c,
                   "its stored root does not match the root recomputed "
                   "from the entries");
    return false;
  }
  if (c.parsed && c.body.root != View(root)) {
    FailCheckpoint(c,
                   "the signed root does not match the root recomputed "
                   "from the entries");
    return false;
  }
  if (previous_ != nullptr && recent_.enabled()) {
    auto proof = merkle::ConsistencyProof(previous_->size, c.size, recent_);
    absl::Status consistent =
        proof.ok() ? merkle::VerifyConsistency(previous_->size, c.size,
                                               previous_->stored_root,
                                               c.stored_root, *proof)
                   : proof.status();
    if (!consistent.ok()) {
      FailCheckpoint(
          c, absl::StrCat("not consistent with checkpoint ", previous_->size,
                          ": ", consistent.message()));
      return false;
    }
    ++result_.consistency_proofs;
  } else if (previous_ != nullptr) {
    result_.notes.push_back(absl::StrCat(
        "no consistency proof between checkpoints ", previous_->size, " and ",
        c.size, " (", c.size - previous_->size,
        " entries apart, too many to keep in memory); their roots were both "
        "recomputed from the same entries"));
  }
  previous_ = &c;
  return true;
}

void Stream::NoteCaseChange(uint64_t index, const EntryView& view) {
  // Refusals change nothing; a success is appended in the transaction that
  // made the change, so each one is exactly one version.
  if (view.status_code != 0 || view.first_subject.empty()) return;
  if (view.action == kRetentionPurgeAction) {
    // Of one of our cases (opened before), or of a message.
    if (auto it = result_.cases.find(view.first_subject);
        it != result_.cases.end()) {
      CaseHistory& h = it->second;
      if (!h.purged_at.has_value()) {
        h.purged_at = index;
      } else if (!h.purged_again_at.has_value()) {
        h.purged_again_at = index;
      }
    } else {
      result_.purges.push_back(Purge{index, std::string(view.first_subject)});
    }
    return;
  }
  const bool open = view.action == kCaseOpenAction;
  if (!open && view.action != kCaseUpdateAction) return;
  auto it = result_.cases.find(view.first_subject);
  if (it == result_.cases.end()) {
    it = result_.cases.emplace(std::string(view.first_subject), CaseHistory{})
             .first;
  }
  CaseHistory& h = it->second;
  if (open && h.versions == 0) h.opened_at = index;
  ++h.versions;
  h.newest_at = index;
}

bool Stream::CheckPayloads(uint64_t index, const EntryView& view, bool has_salt,
                           absl::string_view salt) {
  for (; next_inbound_ < inbound_.size() &&
         inbound_[next_inbound_].audit_index == index;
       ++next_inbound_) {
    const Inbound& in = inbound_[next_inbound_];
    if (!in.problem.empty()) {
      FailEntry(index, in.problem);
      return false;
    }
    if (!has_salt) continue;  // purged: the link is gone on purpose
    if (View(hasher_.PayloadHash(salt, in.signature)) != view.payload_hash) {
      FailEntry(index,
                absl::StrCat("payload does not match the stored envelope ",
                             Quote(in.envelope_id),
                             ": the envelope or the entry was changed"));
      return false;
    }
    ++result_.payloads_checked;
  }
  return true;
}

absl::StatusOr<StreamResult> Stream::Run() {
  CB_ASSIGN_OR_RETURN(
      StmtPtr entries,
      Prepare(db_, "SELECT idx, entry, salt FROM audit_log ORDER BY idx"));
  CB_ASSIGN_OR_RETURN(StmtPtr leaves,
                      Prepare(db_,
                              "SELECT idx, hash FROM audit_nodes WHERE "
                              "level = 0 ORDER BY idx"));

  // The leaf cursor advances with the entries (a merge join: each table is
  // read once, in key order).
  CB_ASSIGN_OR_RETURN(bool have_leaf, Step(db_, leaves.get()));
  // The gateway adds the newest entries to its stored tree in batches, before
  // it signs a checkpoint: entries after the newest checkpoint may have no
  // leaf yet (they are recomputed like all others); every one before it must.
  const uint64_t signed_size =
      checkpoints_.empty() ? 0 : checkpoints_.back().size;
  uint64_t unindexed = 0;

  // Checkpoints of size 0 cover nothing: settled before the first entry.
  while (next_checkpoint_ < checkpoints_.size() &&
         checkpoints_[next_checkpoint_].size == 0) {
    if (!CheckRoot(checkpoints_[next_checkpoint_++])) return result_;
  }

  uint64_t expected = 0;
  EntryView view;  // reused: its message id list keeps its storage
  while (true) {
    CB_ASSIGN_OR_RETURN(const bool row, Step(db_, entries.get()));
    if (!row) break;
    const int64_t stored_index = sqlite3_column_int64(entries.get(), 0);
    if (stored_index < 0 || static_cast<uint64_t>(stored_index) != expected) {
      FailEntry(expected, absl::StrCat("entry ", expected,
                                       " is missing (the next stored is ",
                                       stored_index, ")"));
      return result_;
    }
    const absl::string_view bytes = Blob(entries.get(), 1);
    if (const absl::Status scanned = ScanEntry(bytes, &view); !scanned.ok()) {
      FailEntry(expected, std::string(scanned.message()));
      return result_;
    }
    if (view.index != expected) {
      FailEntry(expected, absl::StrCat("the entry stored at ", expected,
                                       " says it is entry ", view.index));
      return result_;
    }
    const Digest leaf = hasher_.Leaf(bytes);

    while (have_leaf && sqlite3_column_int64(leaves.get(), 0) <
                            static_cast<int64_t>(expected)) {
      CB_ASSIGN_OR_RETURN(have_leaf, Step(db_, leaves.get()));
    }
    if (!have_leaf && expected >= signed_size) {
      ++unindexed;  // the unindexed tail: nothing stored to compare
    } else if (!have_leaf || sqlite3_column_int64(leaves.get(), 0) !=
                                 static_cast<int64_t>(expected)) {
      FailEntry(expected, "the stored tree has no leaf hash for this entry");
      return result_;
    } else if (Blob(leaves.get(), 1) != View(leaf)) {
      FailEntry(expected,
                "the entry does not match its stored leaf hash: the entry, "
                "or its leaf hash, was changed after it was logged");
      return result_;
    }

    NoteCaseChange(expected, view);
    if (view.status_code == 0) {
      for (const absl::string_view id : view.message_ids) {
        result_.messages.push_back(MessageKey(id));
      }
    }
    const bool has_salt = sqlite3_column_type(entries.get(), 2) != SQLITE_NULL;
    if (!has_salt) ++result_.purged;
    if (!NotePurgesAndSalts(expected, view, bytes, has_salt)) return result_;
    if (next_inbound_ < inbound_.size() &&
        inbound_[next_inbound_].audit_index == expected &&
        !CheckPayloads(
            expected, view, has_salt,
            has_salt ? Blob(entries.get(), 2) : absl::string_view())) {
      return result_;
    }

    tree_.Append(hasher_, leaf, recent_,
                 [&](int level, uint64_t index, const Digest& hash) {
                   nodes_->Add({level, index, hash,
                                ((index + 1) << level) <= signed_size});
                 });
    ++expected;
    result_.entries = expected;
    while (next_checkpoint_ < checkpoints_.size() &&
           checkpoints_[next_checkpoint_].size == expected) {
      CheckpointRow& c = checkpoints_[next_checkpoint_++];
      if (!CheckRoot(c)) return result_;
      if (next_checkpoint_ < checkpoints_.size() &&
          checkpoints_[next_checkpoint_].size - c.size <=
              kMaxConsistencyInterval) {
        recent_.Restart(c.size, tree_.edge());
      } else {
        recent_.Disable();
      }
    }
  }

  if (!EverySaltGoneWasPurged()) return result_;
  if (unindexed > 0) {
    result_.notes.push_back(absl::StrCat(
        "the newest ", unindexed,
        " entries are not in the stored tree yet (the gateway adds them "
        "before its next checkpoint); they were recomputed"));
  }
  // Every stored leaf belongs to an entry: a leaf past the end means
  // entries were deleted from the end of the log.
  while (have_leaf && sqlite3_column_int64(leaves.get(), 0) <
                          static_cast<int64_t>(expected)) {
    CB_ASSIGN_OR_RETURN(have_leaf, Step(db_, leaves.get()));
  }
  if (have_leaf) {
    result_.tail_entry = expected;
    result_.tail_problem =
        absl::StrCat("entry ", expected,
                     " is missing but the stored tree has its leaf hash: "
                     "entries were removed from the end");
  } else if (next_inbound_ < inbound_.size()) {
    const Inbound& in = inbound_[next_inbound_];
    result_.tail_entry = expected;
    result_.tail_problem = absl::StrCat(
        "the stored envelope ", Quote(in.envelope_id),
        " was received as entry ", in.audit_index, ", which is not in the log");
  }
  return result_;
}

// The big-endian u32 at `at` (the caller checked there are 4 bytes).
uint64_t ReadU32At(absl::string_view b, size_t at) {
  uint64_t v = 0;
  for (size_t i = 0; i < 4; ++i) {
    v = (v << 8) | static_cast<uint8_t>(b[at + i]);
  }
  return v;
}

}  // namespace

absl::Status ScanEntry(absl::string_view bytes, EntryView* view) {
  // The rules of audit::Decode, without copying strings out. Any failure
  // defers to Decode for its exact message.
  auto fail = [&]() -> absl::Status {
    auto decoded = audit::Decode(bytes);
    if (!decoded.ok()) return decoded.status();
    return absl::InternalError(
        "audit entry scanner and decoder disagree; this is a bug");
  };
  size_t pos = 0;
  auto need = [&](size_t n) { return bytes.size() - pos >= n; };
  auto string = [&](absl::string_view* out) {
    if (!need(4)) return false;
    const uint64_t len = ReadU32At(bytes, pos);
    pos += 4;
    if (len > audit::kMaxStringBytes || !need(len)) return false;
    if (out != nullptr) *out = bytes.substr(pos, len);
    pos += len;
    return true;
  };
  // version (1), index (8), time (8), status code (4)
  if (!need(21) || static_cast<uint8_t>(bytes[0]) != audit::kEntryVersion) {
    return fail();
  }
  uint64_t index = 0;
  for (size_t i = 1; i < 9; ++i) {
    index = (index << 8) | static_cast<uint8_t>(bytes[i]);
  }
  const auto status_code =
      static_cast<int32_t>(static_cast<uint32_t>(ReadU32At(bytes, 17)));
  pos = 21;
  absl::string_view action;
  if (!string(nullptr) || !string(&action) || !need(4)) return fail();
  const uint64_t subjects = ReadU32At(bytes, pos);
  pos += 4;
  if (subjects > audit::kMaxSubjects) return fail();
  absl::string_view first_subject;
  view->message_ids.clear();
  for (uint64_t i = 0; i < subjects; ++i) {
    absl::string_view subject;
    if (!string(&subject)) return fail();
    if (i == 0) first_subject = subject;
    if (subject.size() > 5 && subject.substr(2, 3) == "-M-") {
      view->message_ids.push_back(subject);
    }
  }
  absl::string_view payload_hash;
  if (!string(&payload_hash) || !string(nullptr) || pos != bytes.size()) {
    return fail();
  }
  view->index = index;
  view->status_code = status_code;
  view->action = action;
  view->first_subject = first_subject;
  view->payload_hash = payload_hash;
  return absl::OkStatus();
}

absl::StatusOr<AuditVerifyReport> VerifyDataDir(
    const std::string& data_dir, const keys::PublicKeys& keys,
    const AuditVerifyOptions& options) {
  const std::string path = GatewayStore::DatabasePath(data_dir);
  // Read-only: verification never writes, and may run beside a live
  // gateway.
  const bool live = WalBeside(path);
  CB_ASSIGN_OR_RETURN(DbPtr db, OpenForReading(path, live));
  sqlite3_busy_timeout(db.get(), 5000);
  // Reading the file through a memory map saves copying every page out of
  // the page cache: a third of the time of a sequential scan.
  (void)sqlite3_exec(db.get(), "PRAGMA mmap_size = 2147418112", nullptr,
                     nullptr, nullptr);
  AuditVerifyReport report;
  auto damaged = [&](const absl::Status& status) -> AuditVerifyReport {
    report.ok = false;
    report.problem =
        absl::StrCat("the database file is corrupt: ", status.message());
    return report;
  };

  {
    // The tables and columns read are those of schema version
    // kOldestReadable on; the later migrations add indexes, tables and
    // columns this verifier does not read. A backup taken before an upgrade
    // verifies as it is: it must never be opened by a gateway, which would
    // sign checkpoints of its old history (a fork to the peer).
    absl::StatusOr<StmtPtr> version = Prepare(db.get(), "PRAGMA user_version");
    if (version.status().code() == absl::StatusCode::kDataLoss) {
      return damaged(version.status());
    }
    CB_RETURN_IF_ERROR(version.status());
    const absl::StatusOr<bool> row = Step(db.get(), version->get());
    if (row.status().code() == absl::StatusCode::kDataLoss) {
      return damaged(row.status());
    }
    CB_RETURN_IF_ERROR(ExplainFirstRead(path, live, row.status()));
    const int64_t have = *row ? sqlite3_column_int64(version->get(), 0) : 0;
    const int newest = GatewayMigrations().back().version;
    if (have < kOldestReadable || have > newest) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " has schema version ", have, "; this verifier reads versions ",
          kOldestReadable, " to ", newest,
          " (use the casebridge release of the gateway that wrote it)"));
    }
  }
  // One read transaction: every table as of the same moment.
  if (const int begin =
          sqlite3_exec(db.get(), "BEGIN", nullptr, nullptr, nullptr);
      begin != SQLITE_OK) {
    return SqliteError(db.get(), begin, "BEGIN");
  }
  auto checkpoints = ReadCheckpoints(db.get());
  if (!checkpoints.ok()) {
    if (checkpoints.status().code() == absl::StatusCode::kDataLoss) {
      return damaged(checkpoints.status());
    }
    return checkpoints.status();
  }
  auto inbound = ReadInbound(db.get());
  if (!inbound.ok()) {
    if (inbound.status().code() == absl::StatusCode::kDataLoss) {
      return damaged(inbound.status());
    }
    return inbound.status();
  }

  const v1::Country country = ParseCheckpoints(*checkpoints, &report.origin);
  const keys::GatewayKeys* own = keys.For(country);
  const keys::GatewayKeys* peer =
      keys.For(country == v1::COUNTRY_PK ? v1::COUNTRY_CN : v1::COUNTRY_PK);

  // Signatures are checked on a second thread beside the entry stream, and
  // by both threads once the stream is done: two Ed25519 verifications per
  // checkpoint cost as much as hashing a few hundred entries, and a quiet
  // gateway checkpoints every few entries.
  std::atomic<uint64_t> stop{std::numeric_limits<uint64_t>::max()};
  std::optional<SignatureChecks> signature_checks;
  std::thread signatures;
  if (own != nullptr) {
    signature_checks.emplace(*checkpoints, own->CheckpointKeys(),
                             peer->WitnessKeys(), stop);
    signatures = std::thread([&] { signature_checks->Work(); });
  }
  // The stored tree's inner nodes are checked on a third thread.
  CB_ASSIGN_OR_RETURN(std::unique_ptr<NodeChecker> nodes,
                      NodeChecker::Start(path, live));
  Stream stream(db.get(), *checkpoints, *inbound, stop, nodes.get());
  absl::StatusOr<StreamResult> streamed = stream.Run();
  nodes->Finish();
  if (streamed.ok() && !nodes->error().ok()) streamed = nodes->error();
  if (streamed.ok() && nodes->bad_entry().has_value() &&
      (!streamed->bad_entry.has_value() ||
       *nodes->bad_entry() < *streamed->bad_entry)) {
    // Found under an earlier entry than anything the stream found.
    streamed->bad_entry = nodes->bad_entry();
    streamed->problem = nodes->problem();
    streamed->entries = std::min(streamed->entries, *nodes->bad_entry());
  }
  if (signature_checks.has_value()) signature_checks->Work();
  if (signatures.joinable()) signatures.join();
  absl::StatusOr<std::vector<CaseRow>> cases =
      streamed.ok() ? ReadCases(db.get())
                    : absl::StatusOr<std::vector<CaseRow>>();
  absl::StatusOr<std::vector<std::string>> messages_back =
      streamed.ok() ? PurgedMessagesBack(db.get(), std::move(streamed->purges))
                    : absl::StatusOr<std::vector<std::string>>();
  absl::StatusOr<std::vector<std::string>> unlogged =
      streamed.ok()
          ? MessagesNotInTheLog(db.get(), std::move(streamed->messages))
          : absl::StatusOr<std::vector<std::string>>();
  (void)sqlite3_exec(db.get(), "COMMIT", nullptr, nullptr, nullptr);
  for (const absl::Status& read : {streamed.status(), cases.status(),
                                   messages_back.status(), unlogged.status()}) {
    if (read.ok()) continue;
    if (read.code() == absl::StatusCode::kDataLoss) return damaged(read);
    return read;
  }

  report.purged_payloads = streamed->purged;
  report.payloads_checked = streamed->payloads_checked;
  report.consistency_proofs = streamed->consistency_proofs;
  report.notes = std::move(streamed->notes);

  // The first problem in log order: checkpoint S stands between entry S - 1
  // and entry S.
  const uint64_t reached = streamed->bad_entry.has_value()
                               ? *streamed->bad_entry
                               : streamed->entries;
  report.entries = streamed->entries;
  for (const CheckpointRow& c : *checkpoints) {
    if (c.size > reached) {
      if (!streamed->bad_entry.has_value()) {
        report.ok = false;
        report.first_bad_checkpoint = c.size;
        report.problem =
            absl::StrCat("log truncated: checkpoint ", c.size,
                         " covers entries beyond the last (",
                         reached == 0 ? std::string("there are none")
                                      : absl::StrCat(reached - 1),
                         ")");
        return report;
      }
      break;
    }
    if (!c.Problem().empty()) {
      report.ok = false;
      report.first_bad_checkpoint = c.size;
      report.entries = std::min(report.entries, c.size);
      report.problem = c.Problem();
      return report;
    }
    ++report.checkpoints;
    if (c.cosigned) {
      ++report.cosigned;
      report.witnessed_size = c.size;
    }
  }
  if (streamed->bad_entry.has_value()) {
    report.ok = false;
    report.first_bad_entry = streamed->bad_entry;
    report.problem = streamed->problem;
    return report;
  }
  if (streamed->tail_entry.has_value()) {
    report.ok = false;
    report.first_bad_entry = streamed->tail_entry;
    report.problem = streamed->tail_problem;
    return report;
  }
  CheckCases(*cases, std::move(streamed->cases), *messages_back,
             country == v1::COUNTRY_UNSPECIFIED
                 ? std::string()
                 : absl::StrCat(CountryCode(country), "-"),
             report);
  if (!report.ok) return report;
  if (!unlogged->empty()) {
    report.ok = false;
    report.problem =
        unlogged->size() == 1
            ? unlogged->front()
            : absl::StrCat(unlogged->size(),
                           " stored messages are not in the log; the first: ",
                           unlogged->front());
    return report;
  }

  if (report.checkpoints > 0 && report.cosigned == 0) {
    if (!options.allow_unwitnessed) {
      report.ok = false;
      report.problem =
          "log not witnessed: no checkpoint carries the peer's cosignature";
      return report;
    }
    report.notes.push_back(
        "no checkpoint carries the peer's cosignature (accepted: "
        "--allow-unwitnessed)");
  } else if (report.checkpoints == 0 && report.entries > 0) {
    // A gateway signs its first checkpoint within about a second of its
    // first entry: a log with entries and none was rebuilt with its
    // checkpoints removed, or was never served by a gateway.
    if (!options.allow_unwitnessed) {
      report.ok = false;
      report.problem =
          "log not witnessed: it has entries but no signed checkpoint";
      return report;
    }
    report.notes.push_back(
        "no checkpoint has been signed: the entries are checked against "
        "each other only (accepted: --allow-unwitnessed)");
  } else if (report.entries == 0) {
    // Nothing a gateway stores comes without an entry: records beside an
    // empty log mean the log was emptied.
    absl::StatusOr<std::string> held = RecordsHeld(db.get());
    if (!held.ok()) return held.status();
    if (!held->empty()) {
      report.ok = false;
      report.problem = absl::StrCat(
          "the audit log is empty, but the database holds ", *held,
          ": every one of them is written with an entry, so the entries "
          "were removed");
      return report;
    }
  }
  if (report.cosigned > 0 && report.witnessed_size < report.entries) {
    report.notes.push_back(absl::StrCat(
        report.entries - report.witnessed_size,
        " entries after the newest cosigned checkpoint (",
        report.witnessed_size, ") are not yet witnessed by the peer"));
  }
  return report;
}

}  // namespace casebridge::server
