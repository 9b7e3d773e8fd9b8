// The witnessing end of mutual witnessing (docs/audit-log.md#witnessing):
// the peer gateway offers its newest signed checkpoint with a consistency
// proof from the last size we cosigned; we check it, cosign it with our
// witness key (C2SP cosignature/v1), store the new size and record the
// cosigned checkpoint in our own log, all in one transaction.
//
// Refusals, each with its own status:
//   INVALID_ARGUMENT     malformed checkpoint or proof, or a proof that does
//                        not verify ("consistency_proof: ...")
//   NOT_FOUND            unknown origin
//   UNAUTHENTICATED      no valid signature by the peer's checkpoint key,
//                        or by a previous one still trusted
//   OUT_OF_RANGE         rollback: smaller than the size already cosigned
//   FAILED_PRECONDITION  old_size is not the size we cosigned; the message
//                        ends "(cosigned size: N)" so the peer can resend
//   ALREADY_EXISTS       fork: another checkpoint of the size we cosigned;
//                        both are kept in checkpoint_forks as evidence
#ifndef CASEBRIDGE_SERVER_WITNESS_H_
#define CASEBRIDGE_SERVER_WITNESS_H_

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "casebridge/v1/peer.pb.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/note.h"
#include "core/public_keys.h"
#include "server/sqlite.h"
#include "server/sqlite_audit_log.h"

namespace casebridge::server {

class Witness {
 public:
  struct Options {
    std::string peer_origin;                // e.g. "cn.casebridge/audit"
    note::VerifierKey peer_checkpoint_key;  // signs the peer's checkpoints
    // While the peer rotates its checkpoint key: its previous keys (named
    // `peer_origin`, type 0x01), each accepted until its trusted_until.
    std::vector<keys::TrustedNoteKey> previous_peer_checkpoint_keys;
    std::string witness_name;  // e.g. "pk.casebridge/witness"
    const crypto::Ed25519Signer* signer = nullptr;  // our witness key
  };

  // Pointers must outlive the witness.
  Witness(Options options, sqlite::Database* db, SqliteAuditLog* audit,
          const Clock* clock);

  // Reads whether a fork is on record (it stays raised across restarts).
  absl::Status Load();

  // Checks and cosigns; returns the cosignature line ("— name base64\n").
  absl::StatusOr<std::string> AddCheckpoint(
      const std::string& caller, const v1::AddCheckpointRequest& request);

  bool fork_on_record() const { return fork_.load(); }
  // Called when a fork is detected, and at once if one is on record already.
  // Calls are serialised with detection, so a fork is never missed between
  // start and this call.
  void set_on_fork(std::function<void()> on_fork);

 private:
  // Keeps the pair as evidence, once per offered checkpoint text
  // (`offered_text`, the signed part of `offered_note`) and at most
  // kMaxForksKept offered checkpoints per held one, audited as
  // `witness.fork` with outcome `why`, and raises the fork.
  absl::Status KeepFork(const std::string& caller, uint64_t size,
                        const std::string& held_note,
                        const std::string& offered_note,
                        const std::string& offered_text,
                        const absl::Status& why);

  const Options options_;
  // The current checkpoint key, then the previous ones.
  const std::vector<keys::TrustedNoteKey> peer_checkpoint_keys_;
  sqlite::Database* const db_;
  SqliteAuditLog* const audit_;
  const Clock* const clock_;
  absl::Mutex fork_mu_;
  std::function<void()> on_fork_ ABSL_GUARDED_BY(fork_mu_);
  std::atomic<bool> fork_{false};
  // One offer at a time: each is checked against the state the previous
  // one left.
  absl::Mutex mu_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_WITNESS_H_
