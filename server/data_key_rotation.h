// Rotation of the data key (docs/operations.md#the-data-key), offline: the
// gateway is stopped and the rotation holds the data directory's lock.
//
// Steps, each one durable before the next:
//
//   1. the new key is written to the pending file next to the key file
//      (`<key_file>.new`, mode 0600, file and folder synced);
//   2. in one SQLite transaction, every record key is re-wrapped under the
//      new key, the check value is replaced by one sealed under it, and the
//      rotation is audited ("data_key.rotate", subjects the old and the new
//      check id);
//   3. the pending file is renamed over the key file and the folder synced.
//
// A crash before the commit of 2 leaves the old key in force: the pending
// file is discarded at the next open. A crash between 2 and 3 leaves the
// database sealed under the pending file's key: the next open (a gateway
// starting, or another rotation) sees that it opens the check value and
// finishes the rename.
#ifndef CASEBRIDGE_SERVER_DATA_KEY_ROTATION_H_
#define CASEBRIDGE_SERVER_DATA_KEY_ROTATION_H_

#include <string>

#include "absl/status/statusor.h"
#include "core/clock.h"
#include "server/sqlite.h"

namespace casebridge::server {

struct StoreOptions;

// The audit action of a rotation.
inline constexpr char kDataKeyRotateAction[] = "data_key.rotate";

// Where a rotation writes the new key before it is in force:
// `<key_file>.new`.
std::string PendingDataKeyPath(const std::string& key_file);

// What SettleInterruptedRotation found.
enum class InterruptedRotation {
  kNone,       // no pending key file
  kFinished,   // the database was sealed under it: renamed over key_file
  kDiscarded,  // the rotation never committed: removed
};

// Settles a rotation a crash interrupted, before the data key is read; the
// caller holds the data directory's lock. The outcome is logged.
// FAILED_PRECONDITION, naming the files and the check id, if a pending key
// file exists and neither it nor `key_file` opens the database's check
// value (nothing is removed then).
absl::StatusOr<InterruptedRotation> SettleInterruptedRotation(
    sqlite::Database& db, const std::string& key_file);

struct DataKeyRotationReport {
  int record_keys = 0;       // record keys re-wrapped
  std::string old_check_id;  // empty when only an interrupted one was finished
  std::string new_check_id;  // the check id now in force
  // An interrupted rotation was found committed and finished; no new key
  // was made.
  bool finished_interrupted = false;
};

// Rotates the data key of the store `options` describes (data_dir and
// data_key_file required), auditing the rotation as `actor`. `clock` must
// outlive the call. FAILED_PRECONDITION if a gateway holds the data
// directory, if there is no database or no key file, or if the key file is
// not the database's key; DATA_LOSS if a record key does not open under it.
// On every error before the commit the old key stays in force and the
// pending file is removed.
absl::StatusOr<DataKeyRotationReport> RotateDataKey(const StoreOptions& options,
                                                    const std::string& actor,
                                                    const Clock* clock);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_DATA_KEY_ROTATION_H_
