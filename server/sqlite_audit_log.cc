#include "server/sqlite_audit_log.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/crypto.h"
#include "core/grpc_status.h"
#include "core/status_macros.h"

namespace casebridge::server {
namespace {

constexpr size_t kSaltBytes = 16;
// Entries indexed per write unit when the tree catches up, so that office
// calls and the exchange never wait long behind it: a unit holds the one
// writer, and at 1,000 entries (10-15 ms under load) it was the longest wait
// in the exchange's tail (docs/performance.md, run G).
constexpr int64_t kCatchUpBatch = 100;

absl::Status InsertNode(sqlite::Connection& c, int level, uint64_t index,
                        absl::string_view hash) {
  CB_ASSIGN_OR_RETURN(
      auto insert,
      c.Prepare("INSERT INTO audit_nodes(level, idx, hash) VALUES(?, ?, ?)"));
  insert.Bind(1, level).Bind(2, static_cast<int64_t>(index)).BindBlob(3, hash);
  return insert.Run();
}

// Adds leaf `index` and every node it completes.
absl::Status AddLeaf(sqlite::Connection& c, uint64_t index,
                     absl::string_view entry_bytes) {
  std::string hash = merkle::LeafHash(entry_bytes);
  CB_RETURN_IF_ERROR(InsertNode(c, 0, index, hash));
  SqliteNodeSource nodes(c);
  int level = 0;
  for (uint64_t i = index; (i & 1) == 1; i >>= 1) {
    CB_ASSIGN_OR_RETURN(const std::string left, nodes.Node(level, i - 1));
    hash = merkle::NodeHash(left, hash);
    ++level;
    CB_RETURN_IF_ERROR(InsertNode(c, level, i >> 1, hash));
  }
  return absl::OkStatus();
}

absl::Status AddSubjects(sqlite::Connection& c, uint64_t index,
                         const std::vector<std::string>& subjects) {
  for (const std::string& subject : subjects) {
    CB_ASSIGN_OR_RETURN(
        auto insert, c.Prepare("INSERT OR IGNORE INTO audit_subjects(subject, "
                               "idx) VALUES(?, ?)"));
    insert.Bind(1, subject).Bind(2, static_cast<int64_t>(index));
    CB_RETURN_IF_ERROR(insert.Run());
  }
  return absl::OkStatus();
}

StoredCheckpoint CheckpointFromRow(const sqlite::Statement& row) {
  StoredCheckpoint checkpoint;
  checkpoint.size = static_cast<uint64_t>(row.ColumnInt(0));
  checkpoint.root = row.ColumnBlob(1);
  checkpoint.note = row.ColumnText(2);
  checkpoint.created = absl::FromUnixMicros(row.ColumnInt(3));
  checkpoint.cosigned = !row.ColumnIsNull(4);
  return checkpoint;
}

constexpr char kCheckpointColumns[] =
    "SELECT size, root, note, created_us, cosigned_us FROM checkpoints ";

}  // namespace

absl::StatusOr<std::string> SqliteNodeSource::Node(int level, uint64_t index) {
  CB_ASSIGN_OR_RETURN(
      auto stmt,
      connection_.Prepare(
          "SELECT hash FROM audit_nodes WHERE level = ? AND idx = ?"));
  stmt.Bind(1, level).Bind(2, static_cast<int64_t>(index));
  CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
  if (!row) {
    return absl::DataLossError(absl::StrCat("audit tree node (level ", level,
                                            ", index ", index, ") is missing"));
  }
  std::string hash = stmt.ColumnBlob(0);
  if (hash.size() != merkle::kHashSize) {
    return absl::DataLossError(absl::StrCat("audit tree node (level ", level,
                                            ", index ", index,
                                            ") is not 32 bytes"));
  }
  return hash;
}

absl::StatusOr<uint64_t> SqliteAuditLog::SizeOn(sqlite::Connection& c) {
  CB_ASSIGN_OR_RETURN(
      auto stmt, c.Prepare("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log"));
  CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
  return row ? static_cast<uint64_t>(stmt.ColumnInt(0)) : 0;
}

absl::StatusOr<uint64_t> SqliteAuditLog::IndexedSizeOn(sqlite::Connection& c) {
  CB_ASSIGN_OR_RETURN(auto stmt, c.Prepare("SELECT COALESCE(MAX(idx) + 1, 0) "
                                           "FROM audit_nodes WHERE level = 0"));
  CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
  return row ? static_cast<uint64_t>(stmt.ColumnInt(0)) : 0;
}

absl::StatusOr<uint64_t> SqliteAuditLog::CatchUpOn(sqlite::Connection& c,
                                                   int64_t max_entries) {
  CB_ASSIGN_OR_RETURN(const uint64_t from, IndexedSizeOn(c));
  CB_ASSIGN_OR_RETURN(
      auto entries, c.Prepare("SELECT idx, entry FROM audit_log WHERE idx >= ? "
                              "ORDER BY idx LIMIT ?"));
  entries.Bind(1, static_cast<int64_t>(from)).Bind(2, max_entries);
  uint64_t expected = from;
  while (true) {
    CB_ASSIGN_OR_RETURN(const bool more, entries.Step());
    if (!more) break;
    const auto index = static_cast<uint64_t>(entries.ColumnInt(0));
    if (index != expected) {
      return absl::DataLossError(
          absl::StrCat("audit entry ", expected, " is missing"));
    }
    const std::string bytes = entries.ColumnBlob(1);
    CB_RETURN_IF_ERROR(AddLeaf(c, index, bytes));
    // The subjects as encoded (the encoding caps their number).
    CB_ASSIGN_OR_RETURN(const audit::Entry entry, audit::Decode(bytes));
    CB_RETURN_IF_ERROR(AddSubjects(c, index, entry.subjects));
    ++expected;
  }
  return expected - from;
}

absl::Status SqliteAuditLog::CatchUpTree() {
  bool done = false;
  while (!done) {
    CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& c) -> absl::Status {
      CB_ASSIGN_OR_RETURN(const uint64_t added, CatchUpOn(c, kCatchUpBatch));
      done = added < static_cast<uint64_t>(kCatchUpBatch);
      return absl::OkStatus();
    }));
  }
  return absl::OkStatus();
}

absl::Status SqliteAuditLog::CatchUpInTransaction(sqlite::Connection& c) {
  return CatchUpOn(c, -1).status();  // LIMIT -1: no limit
}

absl::Status SqliteAuditLog::ReadTree(
    uint64_t size, absl::string_view size_name,
    const std::function<absl::Status(sqlite::Connection&)>& read) {
  for (int attempt = 0;; ++attempt) {
    bool behind = false;
    CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
      CB_ASSIGN_OR_RETURN(const uint64_t have, SizeOn(c));
      if (size > have) {
        return absl::OutOfRangeError(absl::StrCat(size_name, " ", size,
                                                  " is larger than the log (",
                                                  have, " entries)"));
      }
      CB_ASSIGN_OR_RETURN(const uint64_t indexed, IndexedSizeOn(c));
      if (size > indexed && attempt == 0) {
        behind = true;
        return absl::OkStatus();
      }
      return read(c);
    }));
    if (!behind) return absl::OkStatus();
    CB_RETURN_IF_ERROR(CatchUpTree());
  }
}

absl::StatusOr<uint64_t> SqliteAuditLog::AppendInTransaction(
    sqlite::Connection& connection, const AuditEvent& event) {
  CB_ASSIGN_OR_RETURN(const uint64_t index, SizeOn(connection));
  const std::string salt = crypto::RandomBytes(kSaltBytes);
  audit::Entry entry;
  entry.index = index;
  // Microseconds: what the encoding keeps.
  entry.time = absl::FromUnixMicros(absl::ToUnixMicros(clock_->Now()));
  entry.actor = event.actor;
  entry.action = event.action;
  entry.subjects = event.subjects;
  entry.payload_hash = audit::PayloadHash(salt, event.payload);
  entry.status_code = static_cast<int32_t>(event.outcome.code());
  // The gateway's own detail (SQL, SQLite's error) stays in its log.
  entry.status_message = ShownMessage(event.outcome);
  const std::string bytes = audit::Encode(entry);

  // One row: the tree nodes and subject rows, derived from it, are added in
  // batches (CatchUpTree) before the next checkpoint is signed, so an
  // audited office call writes as few pages as possible.
  CB_ASSIGN_OR_RETURN(
      auto insert,
      connection.Prepare("INSERT INTO audit_log(idx, entry, time_us, actor, "
                         "action, status_code, salt) "
                         "VALUES(?, ?, ?, ?, ?, ?, ?)"));
  insert.Bind(1, static_cast<int64_t>(index))
      .BindBlob(2, bytes)
      .Bind(3, absl::ToUnixMicros(entry.time))
      .Bind(4, entry.actor)
      .Bind(5, entry.action)
      .Bind(6, static_cast<int64_t>(entry.status_code))
      .BindBlob(7, salt);
  CB_RETURN_IF_ERROR(insert.Run());
  return index;
}

absl::StatusOr<int> SqliteAuditLog::PurgeRefusalSalts(absl::Time cutoff,
                                                      const std::string& actor,
                                                      int batch) {
  if (batch <= 0) return absl::InvalidArgumentError("batch: must be above 0");
  int purged = 0;
  int taken = batch;
  while (taken == batch) {
    CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& c) -> absl::Status {
      taken = 0;
      std::vector<int64_t> indexes;
      {
        CB_ASSIGN_OR_RETURN(auto find, c.Prepare(kPurgeableRefusals));
        find.Bind(1, absl::ToUnixMicros(cutoff)).Bind(2, int64_t{batch});
        while (true) {
          CB_ASSIGN_OR_RETURN(const bool row, find.Step());
          if (!row) break;
          indexes.push_back(find.ColumnInt(0));
        }
      }
      if (indexes.empty()) return absl::OkStatus();
      for (const int64_t index : indexes) {
        CB_ASSIGN_OR_RETURN(
            auto clear,
            c.Prepare("UPDATE audit_log SET salt = NULL WHERE idx = ?"));
        clear.Bind(1, index);
        CB_RETURN_IF_ERROR(clear.Run());
      }
      const auto [lowest, highest] =
          std::minmax_element(indexes.begin(), indexes.end());
      AuditEvent event;
      event.actor = actor;
      event.action = "retention.purge_refusals";
      event.subjects = {absl::StrCat(*lowest), absl::StrCat(*highest),
                        absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", cutoff,
                                         absl::UTCTimeZone())};
      CB_RETURN_IF_ERROR(AppendInTransaction(c, event).status());
      taken = static_cast<int>(indexes.size());
      return absl::OkStatus();
    }));
    purged += taken;
    if (taken > 0) db_->OweWalTruncation();
  }
  // The salts' old pages may still be in the WAL.
  if (db_->wal_truncation_owed()) CB_RETURN_IF_ERROR(db_->TruncateWal());
  return purged;
}

absl::StatusOr<uint64_t> SqliteAuditLog::Append(const AuditEvent& event) {
  uint64_t index = 0;
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(index, AppendInTransaction(c, event));
    return absl::OkStatus();
  }));
  return index;
}

absl::StatusOr<uint64_t> SqliteAuditLog::Size() {
  uint64_t size = 0;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(size, SizeOn(c));
    return absl::OkStatus();
  }));
  return size;
}

absl::StatusOr<std::vector<StoredEntry>> SqliteAuditLog::ReadRows(
    sqlite::Connection& c, const std::string& sql,
    const std::function<void(sqlite::Statement&)>& bind) {
  std::vector<StoredEntry> out;
  CB_ASSIGN_OR_RETURN(auto stmt, c.Prepare(sql));
  bind(stmt);
  while (true) {
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (!row) break;
    StoredEntry stored;
    stored.index = static_cast<uint64_t>(stmt.ColumnInt(0));
    stored.bytes = stmt.ColumnBlob(1);
    CB_ASSIGN_OR_RETURN(stored.entry, audit::Decode(stored.bytes));
    out.push_back(std::move(stored));
  }
  return out;
}

absl::StatusOr<std::vector<StoredEntry>> SqliteAuditLog::Read(uint64_t start,
                                                              size_t max) {
  std::vector<StoredEntry> out;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        out, ReadRows(c,
                      "SELECT idx, entry FROM audit_log WHERE idx >= ? "
                      "ORDER BY idx LIMIT ?",
                      [&](sqlite::Statement& s) {
                        s.Bind(1, static_cast<int64_t>(start))
                            .Bind(2, static_cast<int64_t>(max));
                      }));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<StoredEntry>> SqliteAuditLog::ReadVisibleTo(
    const std::string& office, uint64_t start, size_t max, uint64_t* next) {
  // Entries about an office's messages are found through their subject
  // rows, which the newest entries may not have yet.
  CB_RETURN_IF_ERROR(CatchUpTree());
  std::vector<StoredEntry> out;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    // Only entries whose subject rows exist in this read are examined:
    // one appended after the catch-up above has none yet, and a page that
    // went past it would skip it for good. It is the next page's.
    CB_ASSIGN_OR_RETURN(const uint64_t indexed, IndexedSizeOn(c));
    CB_ASSIGN_OR_RETURN(
        out,
        ReadRows(c,
                 "SELECT idx, entry FROM audit_log WHERE idx IN ("
                 "SELECT idx FROM audit_log WHERE actor = ?2 AND idx >= ?1 "
                 "AND idx < ?4 "
                 "UNION SELECT s.idx FROM audit_subjects s WHERE s.idx >= ?1 "
                 "AND s.idx < ?4 "
                 "AND s.subject IN (SELECT message_id FROM messages WHERE "
                 "sender_office = ?2 UNION SELECT message_id FROM inbox "
                 "WHERE office = ?2 AND forwarded_by IS NULL)) "
                 "ORDER BY idx LIMIT ?3",
                 [&](sqlite::Statement& s) {
                   s.Bind(1, static_cast<int64_t>(start))
                       .Bind(2, office)
                       .Bind(3, static_cast<int64_t>(max))
                       .Bind(4, static_cast<int64_t>(indexed));
                 }));
    // A short page examined everything indexed.
    *next = out.size() < max ? std::max(indexed, start) : out.back().index + 1;
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::string> SqliteAuditLog::RootAt(uint64_t size) {
  std::string root;
  CB_RETURN_IF_ERROR(
      ReadTree(size, "tree size", [&](sqlite::Connection& c) -> absl::Status {
        SqliteNodeSource nodes(c);
        CB_ASSIGN_OR_RETURN(root, merkle::RootAt(size, nodes));
        return absl::OkStatus();
      }));
  return root;
}

absl::StatusOr<std::vector<std::string>> SqliteAuditLog::InclusionProof(
    uint64_t index, uint64_t size) {
  std::vector<std::string> proof;
  CB_RETURN_IF_ERROR(
      ReadTree(size, "tree_size", [&](sqlite::Connection& c) -> absl::Status {
        SqliteNodeSource nodes(c);
        CB_ASSIGN_OR_RETURN(proof, merkle::InclusionProof(index, size, nodes));
        return absl::OkStatus();
      }));
  return proof;
}

absl::StatusOr<std::vector<std::string>> SqliteAuditLog::ConsistencyProof(
    uint64_t size1, uint64_t size2) {
  std::vector<std::string> proof;
  CB_RETURN_IF_ERROR(
      ReadTree(size2, "tree size", [&](sqlite::Connection& c) -> absl::Status {
        SqliteNodeSource nodes(c);
        CB_ASSIGN_OR_RETURN(proof,
                            merkle::ConsistencyProof(size1, size2, nodes));
        return absl::OkStatus();
      }));
  return proof;
}

absl::StatusOr<std::optional<StoredCheckpoint>>
SqliteAuditLog::LatestCheckpointOn(sqlite::Connection& c, bool cosigned_only) {
  CB_ASSIGN_OR_RETURN(auto stmt,
                      c.Prepare(absl::StrCat(
                          kCheckpointColumns,
                          cosigned_only ? "WHERE cosigned_us IS NOT NULL " : "",
                          "ORDER BY size DESC LIMIT 1")));
  CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
  if (!row) return std::optional<StoredCheckpoint>();
  return std::optional<StoredCheckpoint>(CheckpointFromRow(stmt));
}

absl::StatusOr<std::optional<StoredCheckpoint>>
SqliteAuditLog::LatestCheckpoint() {
  std::optional<StoredCheckpoint> out;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(out, LatestCheckpointOn(c, false));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::optional<StoredCheckpoint>>
SqliteAuditLog::LatestCosignedCheckpoint() {
  std::optional<StoredCheckpoint> out;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(out, LatestCheckpointOn(c, true));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::optional<StoredCheckpoint>>
SqliteAuditLog::CosignedCheckpointCovering(uint64_t index) {
  std::optional<StoredCheckpoint> out;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(auto latest, LatestCheckpointOn(c, true));
    if (latest.has_value() && latest->size > index) out = std::move(latest);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::optional<std::string>> SqliteAuditLog::PayloadSalt(
    uint64_t index) {
  std::optional<std::string> out;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(auto stmt,
                        c.Prepare("SELECT salt FROM audit_log WHERE idx = ?"));
    stmt.Bind(1, static_cast<int64_t>(index));
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (row && !stmt.ColumnIsNull(0)) out = stmt.ColumnBlob(0);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<bool> SqliteAuditLog::HasWorkSince(sqlite::Connection& c,
                                                  uint64_t from) {
  CB_ASSIGN_OR_RETURN(auto stmt,
                      c.Prepare("SELECT 1 FROM audit_log WHERE idx >= ? AND "
                                "action NOT IN (?, ?) LIMIT 1"));
  stmt.Bind(1, static_cast<int64_t>(from))
      .Bind(2, audit::kWitnessAction)
      .Bind(3, audit::kWitnessRefusalAction);
  return stmt.Step();
}

absl::Status SqliteAuditLog::StoreCheckpoint(
    const StoredCheckpoint& checkpoint) {
  return db_->Write([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(auto latest, LatestCheckpointOn(c, false));
    if (latest.has_value() && latest->size >= checkpoint.size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a checkpoint of size ", latest->size, " is already stored; ",
          checkpoint.size, " is not newer"));
    }
    CB_ASSIGN_OR_RETURN(
        auto insert,
        c.Prepare("INSERT INTO checkpoints(size, root, note, created_us) "
                  "VALUES(?, ?, ?, ?)"));
    insert.Bind(1, static_cast<int64_t>(checkpoint.size))
        .BindBlob(2, checkpoint.root)
        .Bind(3, checkpoint.note)
        .Bind(4, absl::ToUnixMicros(checkpoint.created));
    return insert.Run();
  });
}

absl::Status SqliteAuditLog::StoreCosigned(uint64_t size,
                                           const std::string& note) {
  return db_->Write([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto update,
        c.Prepare("UPDATE checkpoints SET note = ?, cosigned_us = ? "
                  "WHERE size = ?"));
    update.Bind(1, note)
        .Bind(2, absl::ToUnixMicros(clock_->Now()))
        .Bind(3, static_cast<int64_t>(size));
    CB_RETURN_IF_ERROR(update.Run());
    if (c.changes() != 1) {
      return absl::NotFoundError(
          absl::StrCat("no checkpoint of size ", size, " is stored"));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<VerifyReport> SqliteAuditLog::VerifyTree(
    sqlite::Connection& reader) {
  VerifyReport report;
  auto fail = [&](uint64_t at, std::string why) {
    report.first_bad = at;
    report.problem = std::move(why);
    return report;
  };
  // The newest entries may not be in the stored tree yet (CatchUpTree adds
  // them before each checkpoint); their nodes are recomputed, not compared.
  CB_ASSIGN_OR_RETURN(const uint64_t indexed, IndexedSizeOn(reader));
  CB_ASSIGN_OR_RETURN(
      auto stmt,
      reader.Prepare("SELECT idx, entry FROM audit_log ORDER BY idx"));
  SqliteNodeSource nodes(reader);
  merkle::CompactRange range;
  uint64_t expected = 0;
  while (true) {
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (!row) break;
    const auto index = static_cast<uint64_t>(stmt.ColumnInt(0));
    const std::string bytes = stmt.ColumnBlob(1);
    if (index != expected) {
      return fail(expected,
                  absl::StrCat("entry ", expected,
                               " is missing (next stored is ", index, ")"));
    }
    auto entry = audit::Decode(bytes);
    if (!entry.ok()) return fail(index, std::string(entry.status().message()));
    if (entry->index != index) {
      return fail(index, absl::StrCat("entry stored at ", index,
                                      " says it is entry ", entry->index));
    }
    std::string mismatch;
    range.Append(merkle::LeafHash(bytes), [&](int level, uint64_t node,
                                              absl::string_view hash) {
      if (!mismatch.empty() || ((node + 1) << level) > indexed) return;
      auto stored = nodes.Node(level, node);
      if (!stored.ok()) {
        mismatch = std::string(stored.status().message());
      } else if (*stored != hash) {
        mismatch = absl::StrCat(level == 0 ? "leaf hash" : "tree node",
                                " does not match the entry's bytes (level ",
                                level, ", index ", node, ")");
      }
    });
    if (!mismatch.empty()) return fail(index, mismatch);
    ++expected;
    report.entries = expected;
  }
  return report;
}

absl::StatusOr<VerifyReport> SqliteAuditLog::Verify() {
  VerifyReport report;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(report, VerifyTree(c));
    return absl::OkStatus();
  }));
  return report;
}

}  // namespace casebridge::server
