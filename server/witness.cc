#include "server/witness.h"

#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/merkle.h"
#include "core/status_macros.h"

namespace casebridge::server {
namespace {

// A checkpoint note is a few hundred bytes; a proof has at most one hash
// per level of a 2^64 tree, twice.
constexpr size_t kMaxNoteBytes = 4096;
constexpr int kMaxProofHashes = 128;
// Checkpoints kept as evidence against one cosigned checkpoint.
constexpr int kMaxForksKept = 8;

struct State {
  uint64_t size = 0;
  std::string root;
  std::string note;
};

std::vector<keys::TrustedNoteKey> CheckpointKeys(
    const Witness::Options& options) {
  std::vector<keys::TrustedNoteKey> out = {{options.peer_checkpoint_key}};
  out.insert(out.end(), options.previous_peer_checkpoint_keys.begin(),
             options.previous_peer_checkpoint_keys.end());
  return out;
}

}  // namespace

Witness::Witness(Options options, sqlite::Database* db, SqliteAuditLog* audit,
                 const Clock* clock)
    : options_(std::move(options)),
      peer_checkpoint_keys_(CheckpointKeys(options_)),
      db_(db),
      audit_(audit),
      clock_(clock) {}

absl::Status Witness::Load() {
  return db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(auto stmt,
                        c.Prepare("SELECT 1 FROM checkpoint_forks LIMIT 1"));
    CB_ASSIGN_OR_RETURN(const bool any, stmt.Step());
    fork_.store(any);
    return absl::OkStatus();
  });
}

absl::Status Witness::KeepFork(const std::string& caller, uint64_t size,
                               const std::string& held_note,
                               const std::string& offered_note,
                               const std::string& offered_text,
                               const absl::Status& why) {
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& c) -> absl::Status {
    // The same checkpoint offered again is already on record, under
    // whatever other signature lines (keys nobody trusts here) it comes
    // with: one row and one entry for each contradicting signed text, and
    // a few of them prove the fork as well as many (a peer signing
    // checkpoint after checkpoint of a rewritten log must not grow the
    // evidence at will).
    CB_ASSIGN_OR_RETURN(auto known,
                        c.Prepare("SELECT offered_note FROM checkpoint_forks "
                                  "WHERE held_note = ?"));
    known.Bind(1, held_note);
    int kept_before = 0;
    while (true) {
      CB_ASSIGN_OR_RETURN(const bool row, known.Step());
      if (!row) break;
      ++kept_before;
      const absl::StatusOr<note::Note> kept = note::Parse(known.ColumnText(0));
      if (kept.ok() && kept->text == offered_text) return absl::OkStatus();
    }
    if (kept_before >= kMaxForksKept) return absl::OkStatus();
    CB_ASSIGN_OR_RETURN(
        auto insert,
        c.Prepare("INSERT INTO checkpoint_forks(origin, held_note, "
                  "offered_note, received_us) VALUES(?, ?, ?, ?)"));
    insert.Bind(1, options_.peer_origin)
        .Bind(2, held_note)
        .Bind(3, offered_note)
        .Bind(4, absl::ToUnixMicros(clock_->Now()));
    CB_RETURN_IF_ERROR(insert.Run());
    // Raised in our log with the evidence, whatever happens to the call.
    AuditEvent event;
    event.actor = caller;
    event.action = "witness.fork";
    event.subjects = {options_.peer_origin, absl::StrCat(size)};
    event.payload = offered_note;
    event.outcome = why;
    return audit_->AppendInTransaction(c, event).status();
  }));
  absl::MutexLock lock(&fork_mu_);
  if (!fork_.exchange(true) && on_fork_) on_fork_();
  return absl::OkStatus();
}

void Witness::set_on_fork(std::function<void()> on_fork) {
  absl::MutexLock lock(&fork_mu_);
  on_fork_ = std::move(on_fork);
  if (fork_.load() && on_fork_) on_fork_();
}

absl::StatusOr<std::string> Witness::AddCheckpoint(
    const std::string& caller, const v1::AddCheckpointRequest& request) {
  const std::string& offered = request.checkpoint();
  if (offered.size() > kMaxNoteBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint: ", offered.size(), " bytes; at most ", kMaxNoteBytes));
  }
  auto parsed = note::Parse(offered);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint: ", parsed.status().message()));
  }
  auto checkpoint = note::ParseCheckpoint(parsed->text);
  if (!checkpoint.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint: ", checkpoint.status().message()));
  }
  if (checkpoint->origin != options_.peer_origin) {
    return absl::NotFoundError(absl::StrCat(
        "checkpoint: unknown origin \"", absl::CHexEscape(checkpoint->origin),
        "\"; this gateway witnesses only \"", options_.peer_origin, "\""));
  }
  // By the current key, or a previous one still trusted now: a checkpoint
  // signed before the peer switched keys is taken during the overlap only.
  if (const auto signed_by =
          keys::VerifyNote(*parsed, peer_checkpoint_keys_, clock_->Now());
      !signed_by.ok()) {
    return absl::UnauthenticatedError(
        absl::StrCat("checkpoint: no valid signature by ", options_.peer_origin,
                     "'s checkpoint key (", signed_by.status().message(), ")"));
  }
  if (checkpoint->size == 0) {
    return absl::InvalidArgumentError(
        "checkpoint: size 0 (an empty log) is not witnessed");
  }
  if (request.consistency_proof_size() > kMaxProofHashes) {
    return absl::InvalidArgumentError(
        absl::StrCat("consistency_proof: ", request.consistency_proof_size(),
                     " hashes; at most ", kMaxProofHashes));
  }
  std::vector<std::string> proof(request.consistency_proof().begin(),
                                 request.consistency_proof().end());
  for (size_t i = 0; i < proof.size(); ++i) {
    if (proof[i].size() != merkle::kHashSize) {
      return absl::InvalidArgumentError(absl::StrCat("consistency_proof[", i,
                                                     "]: ", proof[i].size(),
                                                     " bytes; a hash is 32"));
    }
  }

  absl::MutexLock lock(&mu_);
  State held;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare(
            "SELECT size, root, note FROM witness_state WHERE origin = ?"));
    stmt.Bind(1, options_.peer_origin);
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (row) {
      held.size = static_cast<uint64_t>(stmt.ColumnInt(0));
      held.root = stmt.ColumnBlob(1);
      held.note = stmt.ColumnText(2);
    }
    return absl::OkStatus();
  }));

  const uint64_t size = checkpoint->size;
  if (size < held.size) {
    return absl::OutOfRangeError(absl::StrCat(
        "rollback: checkpoint of size ", size,
        " is smaller than the size already cosigned (", held.size, ")"));
  }
  const bool same_as_held = !held.note.empty() && size == held.size;
  if (same_as_held && checkpoint->root != held.root) {
    CB_RETURN_IF_ERROR(KeepFork(
        caller, size, held.note, offered, parsed->text,
        absl::AlreadyExistsError(
            "fork: two signed checkpoints of one size with different roots")));
    log::Error(
        "witness.fork",
        {{"origin", options_.peer_origin}, {"size", size}, {"caller", caller}});
    return absl::AlreadyExistsError(
        absl::StrCat("fork: a different checkpoint of size ", size,
                     " was already cosigned; both are kept as evidence"));
  }
  if (same_as_held) {
    // The same tree again: only the very checkpoint cosigned is cosigned
    // again (not the same root under other extension lines).
    auto held_parsed = note::Parse(held.note);
    if (!held_parsed.ok() || held_parsed->text != parsed->text) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint: differs from the checkpoint cosigned at size ", size));
    }
  } else {
    if (request.old_size() != held.size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "old_size ", request.old_size(),
          " is not the size last cosigned (cosigned size: ", held.size, ")"));
    }
    if (held.size == 0) {
      // Nothing cosigned yet: the first checkpoint is taken on its
      // signature alone (there is nothing for a proof to connect it to).
      if (!proof.empty()) {
        return absl::InvalidArgumentError(
            "consistency_proof: must be empty when old_size is 0");
      }
    } else if (const absl::Status consistent = merkle::VerifyConsistency(
                   held.size, size, held.root, checkpoint->root, proof);
               !consistent.ok()) {
      // The peer signed a larger log it cannot prove grew from the one it
      // signed before: what a log restored from a backup, or rewritten,
      // and then written on looks like. Its own gateway computes the proof
      // from the tree it signed, so an honest one never fails it.
      const absl::Status unproven = absl::InvalidArgumentError(absl::StrCat(
          "consistency_proof: does not prove size ", size,
          " consistent with cosigned size ", held.size, ": ",
          consistent.message(), "; both checkpoints are kept as evidence"));
      CB_RETURN_IF_ERROR(
          KeepFork(caller, size, held.note, offered, parsed->text, unproven));
      log::Error("witness.fork", {{"origin", options_.peer_origin},
                                  {"size", size},
                                  {"cosigned_size", held.size},
                                  {"caller", caller}});
      return unproven;
    }
  }

  const uint64_t now =
      static_cast<uint64_t>(absl::ToUnixSeconds(clock_->Now()));
  CB_ASSIGN_OR_RETURN(
      note::Signature cosignature,
      note::Cosign(parsed->text, options_.witness_name, now, *options_.signer));
  note::Note cosigned;
  cosigned.text = parsed->text;
  for (const note::Signature& s : parsed->signatures) {
    if (s.name == options_.peer_origin) cosigned.signatures.push_back(s);
  }
  cosigned.signatures.push_back(cosignature);
  const std::string cosigned_note = note::Format(cosigned);
  note::Note line_only;
  line_only.text = parsed->text;
  line_only.signatures.push_back(cosignature);
  const std::string formatted = note::Format(line_only);
  const std::string line = formatted.substr(parsed->text.size() + 1);

  if (same_as_held) return line;  // already on record: nothing changes
  CB_RETURN_IF_ERROR(db_->Write([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto upsert,
        c.Prepare("INSERT INTO witness_state(origin, size, root, note, "
                  "updated_us) VALUES(?1, ?2, ?3, ?4, ?5) "
                  "ON CONFLICT(origin) DO UPDATE SET size = ?2, root = ?3, "
                  "note = ?4, updated_us = ?5 WHERE size = ?6"));
    upsert.Bind(1, options_.peer_origin)
        .Bind(2, static_cast<int64_t>(size))
        .BindBlob(3, checkpoint->root)
        .Bind(4, cosigned_note)
        .Bind(5, absl::ToUnixMicros(clock_->Now()))
        .Bind(6, static_cast<int64_t>(held.size));
    CB_RETURN_IF_ERROR(upsert.Run());
    if (c.changes() != 1) {
      return absl::AbortedError("witness state changed underneath; retry");
    }
    AuditEvent event;
    event.actor = caller;
    event.action = audit::kWitnessAction;
    event.subjects = {options_.peer_origin, absl::StrCat(size)};
    event.payload = cosigned_note;
    return audit_->AppendInTransaction(c, event).status();
  }));
  return line;
}

}  // namespace casebridge::server
