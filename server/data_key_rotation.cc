#include "server/data_key_rotation.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/field_crypto.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "server/record_keys.h"
#include "server/sqlite_case_store.h"

namespace casebridge::server {
namespace {

// Whether `path` exists (as anything, a dangling link included).
absl::StatusOr<bool> Exists(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT) return false;
  return absl::FailedPreconditionError(
      absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
}

}  // namespace

std::string PendingDataKeyPath(const std::string& key_file) {
  return key_file + ".new";
}

absl::StatusOr<InterruptedRotation> SettleInterruptedRotation(
    sqlite::Database& db, const std::string& key_file) {
  const std::string pending = PendingDataKeyPath(key_file);
  CB_ASSIGN_OR_RETURN(const bool has_pending, Exists(pending));
  if (!has_pending) return InterruptedRotation::kNone;

  // A pending file cut short by a crash does not load: it was never used.
  const absl::StatusOr<crypto::FieldKey> new_key = crypto::LoadKeyFile(pending);
  const absl::StatusOr<crypto::FieldKey> old_key =
      crypto::LoadKeyFile(key_file);
  std::string check_id;
  bool new_opens = false;
  bool old_opens = false;
  CB_RETURN_IF_ERROR(db.Read([&](sqlite::Connection& conn) -> absl::Status {
    CB_ASSIGN_OR_RETURN(check_id, StoredCheckId(conn));
    if (new_key.ok()) {
      CB_ASSIGN_OR_RETURN(new_opens, OpensCheckValue(conn, *new_key));
    }
    if (old_key.ok()) {
      CB_ASSIGN_OR_RETURN(old_opens, OpensCheckValue(conn, *old_key));
    }
    return absl::OkStatus();
  }));

  if (new_opens) {
    // Committed, not yet renamed: the pending key is the database's key.
    CB_RETURN_IF_ERROR(crypto::ReplaceKeyFile(pending, key_file));
    log::Warning("data_key.rotation_finished",
                 {{"key_file", key_file},
                  {"from", pending},
                  {"check_id", check_id},
                  {"reason",
                   "an interrupted rotation had committed; its key is now "
                   "in force"}});
    return InterruptedRotation::kFinished;
  }
  // A rotation's commit always leaves a check value sealed under the new
  // key: without one, or with one the old key opens, it never committed.
  if (old_opens || check_id.empty()) {
    CB_RETURN_IF_ERROR(crypto::RemoveKeyFile(pending));
    log::Warning("data_key.rotation_discarded",
                 {{"key_file", key_file},
                  {"removed", pending},
                  {"reason",
                   "an interrupted rotation had not committed; the old key "
                   "stays in force"}});
    return InterruptedRotation::kDiscarded;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "data_protection.key_file: neither data key ", key_file,
      " nor the key of an interrupted rotation ", pending,
      " opens the data key check value of the database ", db.path(),
      ", check id ", check_id, "; restore the data key file"));
}

absl::StatusOr<DataKeyRotationReport> RotateDataKey(const StoreOptions& options,
                                                    const std::string& actor,
                                                    const Clock* clock) {
  const std::string& key_file = options.data_key_file;
  if (key_file.empty()) {
    return absl::InvalidArgumentError(
        "data_protection.key_file: no data key file to rotate");
  }
  const std::string database = GatewayStore::DatabasePath(options.data_dir);
  CB_ASSIGN_OR_RETURN(const bool has_database, Exists(database));
  if (!has_database) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data_dir: there is no database ", database, " whose key to rotate"));
  }
  const std::string pending = PendingDataKeyPath(key_file);
  CB_ASSIGN_OR_RETURN(const bool has_key, Exists(key_file));
  CB_ASSIGN_OR_RETURN(const bool has_pending, Exists(pending));
  if (!has_key && !has_pending) {
    return absl::FailedPreconditionError(
        absl::StrCat("data_protection.key_file: data key ", key_file,
                     " does not exist: there is no key to rotate"));
  }

  // Takes the data directory's lock (refused while a gateway runs), settles
  // an interrupted rotation and checks the key against the check value.
  CB_ASSIGN_OR_RETURN(std::unique_ptr<GatewayStore> store,
                      GatewayStore::Open(options, clock));
  DataKeyRotationReport report;
  if (store->finished_interrupted_rotation()) {
    report.finished_interrupted = true;
    CB_RETURN_IF_ERROR(
        store->database().Read([&](sqlite::Connection& conn) -> absl::Status {
          CB_ASSIGN_OR_RETURN(report.new_check_id, StoredCheckId(conn));
          return absl::OkStatus();
        }));
    return report;
  }

  auto old_key = crypto::LoadKeyFile(key_file);
  if (!old_key.ok()) {
    return absl::Status(
        old_key.status().code(),
        absl::StrCat("data_protection.key_file: ", old_key.status().message()));
  }
  auto new_key = crypto::CreateKeyFile(pending);
  if (!new_key.ok()) {
    return absl::Status(new_key.status().code(),
                        absl::StrCat("creating the new data key: ",
                                     new_key.status().message()));
  }

  RewrapReport rewrap;
  // Set once the transaction's work is done: a failure after it is the
  // COMMIT's, which may have reached the disk all the same.
  bool committing = false;
  const absl::Status written =
      store->database().Write([&](sqlite::Connection& conn) -> absl::Status {
        CB_ASSIGN_OR_RETURN(
            rewrap, RewrapRecordKeys(conn, *old_key, *new_key, clock->Now()));
        AuditEvent event;
        event.actor = actor;
        event.action = kDataKeyRotateAction;
        event.subjects = {rewrap.old_check_id, rewrap.new_check_id};
        event.payload = absl::StrCat(
            "old check id ", rewrap.old_check_id, "\nnew check id ",
            rewrap.new_check_id, "\nrecord keys ", rewrap.record_keys, "\n");
        CB_RETURN_IF_ERROR(
            store->audit_log().AppendInTransaction(conn, event).status());
        committing = true;
        return absl::OkStatus();
      });
  if (!written.ok() && committing) {
    // A failed COMMIT may have written its frames to the WAL without this
    // process seeing them (a failed sync); SQLite's recovery at the next
    // open would then replay it. Only that open can tell: the new key
    // stays, and the next start of the gateway (or of this command)
    // settles the rotation either way.
    return absl::Status(
        written.code(),
        absl::StrCat("rotating the data key: ", written.message(),
                     "; whether it committed is known only at the next "
                     "start, which settles ",
                     pending, ": keep both key files until then"));
  }
  if (!written.ok()) {
    // The transaction's own work failed: it was rolled back. Checked all
    // the same before the new key goes.
    bool committed = false;
    const absl::Status asked =
        store->database().Read([&](sqlite::Connection& conn) -> absl::Status {
          CB_ASSIGN_OR_RETURN(committed, OpensCheckValue(conn, *new_key));
          return absl::OkStatus();
        });
    if (!asked.ok()) {
      return absl::Status(
          written.code(),
          absl::StrCat("rotating the data key: ", written.message(),
                       "; whether it committed is unknown: the next start "
                       "settles ",
                       pending));
    }
    if (!committed) {
      CB_RETURN_IF_ERROR(crypto::RemoveKeyFile(pending));
      return absl::Status(
          written.code(),
          absl::StrCat("rotating the data key: ", written.message(),
                       "; nothing changed, data key ", key_file,
                       " stays in force"));
    }
    CB_RETURN_IF_ERROR(
        store->database().Read([&](sqlite::Connection& conn) -> absl::Status {
          CB_ASSIGN_OR_RETURN(rewrap.new_check_id, StoredCheckId(conn));
          return absl::OkStatus();
        }));
  }

  const absl::Status renamed = crypto::ReplaceKeyFile(pending, key_file);
  if (!renamed.ok()) {
    return absl::Status(
        renamed.code(),
        absl::StrCat("the database is sealed under the new data key ", pending,
                     " but it could not be put in place (", renamed.message(),
                     "): the next start finishes the rename"));
  }
  log::Info("data_key.rotated", {{"key_file", key_file},
                                 {"record_keys", rewrap.record_keys},
                                 {"old_check_id", rewrap.old_check_id},
                                 {"new_check_id", rewrap.new_check_id}});
  // Page images holding the old wrappings stay in the WAL until it is
  // truncated.
  const absl::Status truncated = store->database().TruncateWal();
  if (!truncated.ok()) {
    log::Warning("data_key.wal_not_truncated",
                 {{"error", std::string(truncated.message())}});
  }
  report.record_keys = rewrap.record_keys;
  report.old_check_id = rewrap.old_check_id;
  report.new_check_id = rewrap.new_check_id;
  return report;
}

}  // namespace casebridge::server
