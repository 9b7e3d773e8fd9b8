// Makes our signed checkpoints and has the peer witness them
// (docs/audit-log.md#checkpoints).
//
// One thread: while entries arrive it signs a checkpoint of the whole log at
// most every `interval` (the office path never waits for a signature), after
// checking that the new tree is consistent with the previous checkpoint; a
// gateway never signs a tree that contradicts one it signed before. It then
// offers the newest checkpoint to the peer's witness with a consistency
// proof from the last size the peer cosigned, verifies the cosignature with
// the peer's witness key (or a previous one still trusted, while the peer
// rotates it) and stores it with the checkpoint. A peer that is away is
// asked again with capped backoff.
#ifndef CASEBRIDGE_SERVER_CHECKPOINTER_H_
#define CASEBRIDGE_SERVER_CHECKPOINTER_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "casebridge/v1/peer.grpc.pb.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/note.h"
#include "core/public_keys.h"
#include "server/peer_channel.h"
#include "server/sqlite.h"
#include "server/sqlite_audit_log.h"

namespace casebridge::server {

// The peer's standing refusal of our checkpoints (rollback, fork, a proof it
// does not accept...): this log no longer extends what the peer cosigned,
// and no new entry is covered by a cosigned checkpoint until the operators
// settle it. Set by the checkpointer after each offer, read by evidence
// requests, which say so instead of "try again". Thread-safe.
class WitnessRefusal {
 public:
  // OK: the peer cosigned our newest checkpoint.
  void Set(absl::Status refusal) {
    absl::MutexLock lock(&mu_);
    refusal_ = std::move(refusal);
  }
  absl::Status Get() const {
    absl::MutexLock lock(&mu_);
    return refusal_;
  }
  // Whether an offer's failure is the peer's refusal, not a link that is
  // down or slow (which says nothing about our log).
  static bool IsRefusal(const absl::Status& status);

 private:
  mutable absl::Mutex mu_;
  absl::Status refusal_ ABSL_GUARDED_BY(mu_);
};

class Checkpointer {
 public:
  struct Options {
    std::string origin;  // our log's origin line and checkpoint key name
    const crypto::Ed25519Signer* signer = nullptr;  // our checkpoint key
    note::VerifierKey peer_witness_key;  // verifies the peer's cosignatures
    // While the peer rotates its witness key: its previous keys (the peer's
    // witness name, type 0x04), each accepted until its trusted_until.
    std::vector<keys::TrustedNoteKey> previous_peer_witness_keys;
    absl::Duration interval = absl::Seconds(1);
    // Entries that record witnessing alone get a checkpoint once the newest
    // one is this old.
    absl::Duration quiet_max_age = absl::Minutes(10);
    absl::Duration retry_max = absl::Seconds(60);
    // Run every `maintenance_every` (retention); may be empty.
    std::function<void()> maintenance;
    absl::Duration maintenance_every = absl::Hours(1);
    // Told the outcome of each offer to the peer, or that this gateway
    // refuses to sign its own log; may be null.
    WitnessRefusal* refusal = nullptr;
    // This gateway's identity: the actor of its checkpoint.refused entries.
    std::string actor;
  };

  // Pointers must outlive the checkpointer. `peer` may be empty (no
  // witnessing: tests of checkpoint making alone).
  Checkpointer(Options options, sqlite::Database* db, SqliteAuditLog* audit,
               ChannelSource peer, const Clock* clock);
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Starts the thread.
  void Start();
  // Cancels an offer to the peer in flight (the peer may take its full
  // deadline), makes the last checkpoint, and joins the thread. Idempotent.
  void Stop();

  // One round of each job, also used by tests. MakeCheckpoint signs and
  // stores a checkpoint if entries arrived since the last one (returns it),
  // or returns nullopt. Refuses (DATA_LOSS) if the stored tree contradicts
  // the newest checkpoint, or that checkpoint's size and root are not
  // those of its signed note (CheckStoredNote). Such a refusal is audited
  // (checkpoint.refused, once for each new reason until a checkpoint is
  // signed again) and told to `refusal`. One caller at a time.
  absl::StatusOr<std::optional<StoredCheckpoint>> MakeCheckpoint();
  // Offers the newest checkpoint to the peer unless it is cosigned already.
  // OK if nothing was to do or the cosignature is stored.
  absl::Status Witness();

 private:
  void Run();
  // MakeCheckpoint's work.
  absl::StatusOr<std::optional<StoredCheckpoint>> SignIfDue();
  absl::Status Offer(const StoredCheckpoint& checkpoint, uint64_t old_size);
  // DATA_LOSS unless `latest`'s size and root are those its stored note
  // signs (and its signature by our current key, if it has one, verifies).
  absl::Status CheckStoredNote(const StoredCheckpoint& latest) const;

  const Options options_;
  sqlite::Database* const db_;
  SqliteAuditLog* const audit_;
  const Clock* const clock_;
  const ChannelSource peer_;  // empty: no peer

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The offer to the peer in flight, for Stop to cancel.
  grpc::ClientContext* offering_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_;
  // Why MakeCheckpoint last refused to sign (OK: it did not), as audited.
  absl::Status refused_to_sign_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_CHECKPOINTER_H_
