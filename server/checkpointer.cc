#include "server/checkpointer.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"
#include "core/log.h"
#include "core/merkle.h"
#include "core/status_macros.h"

namespace casebridge::server {
namespace {

// What evidence requests are told while this gateway refuses to sign its
// own log (DATA_LOSS); OK if it does not.
absl::Status RefusalToSign(const absl::Status& why) {
  if (why.ok()) return why;
  return absl::DataLossError(
      absl::StrCat("this gateway refuses to sign a checkpoint of its own log: ",
                   why.message()));
}

constexpr absl::Duration kPeerDeadline = absl::Seconds(10);

// The size a witness says it cosigned last, from its FAILED_PRECONDITION
// message ("... (cosigned size: N)").
std::optional<uint64_t> CosignedSizeIn(absl::string_view message) {
  constexpr absl::string_view kMarker = "(cosigned size: ";
  const size_t at = message.rfind(kMarker);
  if (at == absl::string_view::npos) return std::nullopt;
  absl::string_view rest = message.substr(at + kMarker.size());
  const size_t end = rest.find(')');
  if (end == absl::string_view::npos) return std::nullopt;
  uint64_t size = 0;
  if (!absl::SimpleAtoi(rest.substr(0, end), &size)) return std::nullopt;
  return size;
}

}  // namespace

Checkpointer::Checkpointer(Options options, sqlite::Database* db,
                           SqliteAuditLog* audit, ChannelSource peer,
                           const Clock* clock)
    : options_(std::move(options)),
      db_(db),
      audit_(audit),
      clock_(clock),
      peer_(std::move(peer)) {}

Checkpointer::~Checkpointer() { Stop(); }

void Checkpointer::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Checkpointer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (offering_ != nullptr) offering_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

absl::Status Checkpointer::CheckStoredNote(
    const StoredCheckpoint& latest) const {
  // The size and root this compares with come from columns of their own;
  // they must be those of the note signed. A signature by our current key
  // must verify; one by an earlier key is not checked here (the key is
  // gone), and the peer's cosignatures stand for it.
  auto refuse = [&latest](absl::string_view why) {
    return absl::DataLossError(
        absl::StrCat("checkpoint ", latest.size, " as stored: ", why,
                     "; the log was changed; not signing"));
  };
  auto parsed = note::Parse(latest.note);
  if (!parsed.ok()) return refuse("its note does not parse");
  auto checkpoint = note::ParseCheckpoint(parsed->text);
  if (!checkpoint.ok()) return refuse("its note is not a checkpoint");
  if (checkpoint->origin != options_.origin ||
      checkpoint->size != latest.size || checkpoint->root != latest.root) {
    return refuse("its size or root is not the one its note signs");
  }
  const absl::Status verified = note::Verify(
      *parsed, note::MakeVerifierKey(options_.origin, note::kTypeEd25519,
                                     options_.signer->public_key()));
  if (!verified.ok() && verified.code() != absl::StatusCode::kNotFound) {
    return refuse("its signature by our checkpoint key does not verify");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<StoredCheckpoint>> Checkpointer::MakeCheckpoint() {
  absl::StatusOr<std::optional<StoredCheckpoint>> made = SignIfDue();
  if (made.ok()) {
    refused_to_sign_ = absl::OkStatus();
    return made;
  }
  if (made.status().code() != absl::StatusCode::kDataLoss) return made;
  // The gateway found its own log changed behind its back: on record in
  // the log itself (once per reason, not every second), and said to those
  // who ask for evidence, who would otherwise be told to try again.
  if (made.status() != refused_to_sign_) {
    refused_to_sign_ = made.status();
    AuditEvent event;
    event.actor = options_.actor;
    event.action = "checkpoint.refused";
    event.outcome = made.status();
    if (const auto appended = audit_->Append(event); !appended.ok()) {
      log::Error("audit.append_failed",
                 {{"action", event.action},
                  {"error", std::string(appended.status().message())}});
    }
  }
  if (options_.refusal != nullptr) {
    options_.refusal->Set(RefusalToSign(refused_to_sign_));
  }
  return made;
}

absl::StatusOr<std::optional<StoredCheckpoint>> Checkpointer::SignIfDue() {
  // Appends store entries alone; their tree nodes are added here, in
  // batches, and the checkpoint covers the entries the tree then holds.
  CB_RETURN_IF_ERROR(audit_->CatchUpTree());
  std::optional<StoredCheckpoint> next;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(const uint64_t entries, SqliteAuditLog::SizeOn(c));
    CB_ASSIGN_OR_RETURN(const uint64_t size, SqliteAuditLog::IndexedSizeOn(c));
    CB_ASSIGN_OR_RETURN(const std::optional<StoredCheckpoint> latest,
                        SqliteAuditLog::LatestCheckpointOn(c, false));
    if (entries < size) {
      return absl::DataLossError(
          absl::StrCat("the log has ", entries, " entries but the tree ", size,
                       ": entries were removed; not signing"));
    }
    if (size == 0) return absl::OkStatus();
    if (latest.has_value()) {
      if (size < latest->size) {
        return absl::DataLossError(
            absl::StrCat("the log has ", size, " entries but checkpoint ",
                         latest->size, " was signed: entries were removed"));
      }
      if (size == latest->size) return absl::OkStatus();
      CB_ASSIGN_OR_RETURN(const bool work,
                          SqliteAuditLog::HasWorkSince(c, latest->size));
      // Witnessing records wait, but not for ever: they too must come
      // under a checkpoint the peer holds.
      const bool stale =
          clock_->Now() - latest->created >= options_.quiet_max_age;
      if (!work && !stale) return absl::OkStatus();
    }
    // About to sign: what the new tree is held to must be what was signed.
    if (latest.has_value()) CB_RETURN_IF_ERROR(CheckStoredNote(*latest));
    SqliteNodeSource nodes(c);
    CB_ASSIGN_OR_RETURN(std::string root, merkle::RootAt(size, nodes));
    if (latest.has_value()) {
      // Never sign a tree that contradicts what was signed before: the
      // stored nodes must still give the old root, and prove the new tree
      // an extension of it.
      CB_ASSIGN_OR_RETURN(const std::string old_root,
                          merkle::RootAt(latest->size, nodes));
      if (old_root != latest->root) {
        return absl::DataLossError(absl::StrCat(
            "the stored tree no longer gives the root of checkpoint ",
            latest->size, ": the log was changed; not signing"));
      }
      CB_ASSIGN_OR_RETURN(const auto proof,
                          merkle::ConsistencyProof(latest->size, size, nodes));
      if (const absl::Status consistent = merkle::VerifyConsistency(
              latest->size, size, latest->root, root, proof);
          !consistent.ok()) {
        return absl::DataLossError(absl::StrCat(
            "tree of size ", size, " is not consistent with checkpoint ",
            latest->size, ": ", consistent.message(), "; not signing"));
      }
    }
    StoredCheckpoint checkpoint;
    checkpoint.size = size;
    checkpoint.root = std::move(root);
    next = std::move(checkpoint);
    return absl::OkStatus();
  }));
  if (!next.has_value()) return next;

  note::Note signed_note;
  signed_note.text =
      note::FormatCheckpoint({options_.origin, next->size, next->root, {}});
  CB_ASSIGN_OR_RETURN(
      note::Signature signature,
      note::Sign(signed_note.text, options_.origin, *options_.signer));
  signed_note.signatures.push_back(std::move(signature));
  next->note = note::Format(signed_note);
  next->created = absl::FromUnixMicros(absl::ToUnixMicros(clock_->Now()));
  CB_RETURN_IF_ERROR(audit_->StoreCheckpoint(*next));
  return next;
}

absl::Status Checkpointer::Offer(const StoredCheckpoint& checkpoint,
                                 uint64_t old_size) {
  v1::AddCheckpointRequest request;
  request.set_checkpoint(checkpoint.note);
  request.set_old_size(old_size);
  if (old_size > 0) {
    CB_ASSIGN_OR_RETURN(const auto proof,
                        audit_->ConsistencyProof(old_size, checkpoint.size));
    for (const std::string& hash : proof) request.add_consistency_proof(hash);
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kPeerDeadline));
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::CancelledError("the gateway is stopping");
    offering_ = &context;
  }
  v1::AddCheckpointResponse response;
  const grpc::Status status = v1::PeerService::NewStub(peer_())->AddCheckpoint(
      &context, request, &response);
  {
    absl::MutexLock lock(&mu_);
    offering_ = nullptr;
  }
  if (!status.ok()) return FromGrpcStatus(status);

  // Exactly one signature line, checked against our own text: a line that
  // starts with a newline would otherwise move where the parsed note's text
  // ends, and the peer could cosign something other than our checkpoint.
  const std::string& line = response.cosignature();
  if (line.empty() || line.find('\n') != line.size() - 1) {
    return absl::InvalidArgumentError(
        "the peer's cosignature is not exactly one signature line");
  }
  CB_ASSIGN_OR_RETURN(note::Note ours, note::Parse(checkpoint.note));
  auto with_line = note::Parse(checkpoint.note + line);
  if (!with_line.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the peer's cosignature is malformed: ", with_line.status().message()));
  }
  if (with_line->text != ours.text ||
      with_line->signatures.size() != ours.signatures.size() + 1) {
    return absl::InvalidArgumentError(
        "the peer's cosignature line does not extend our checkpoint");
  }
  note::Note cosignature_only;
  cosignature_only.text = ours.text;
  cosignature_only.signatures.push_back(with_line->signatures.back());
  std::vector<keys::TrustedNoteKey> witness_keys = {
      {options_.peer_witness_key}};
  witness_keys.insert(witness_keys.end(),
                      options_.previous_peer_witness_keys.begin(),
                      options_.previous_peer_witness_keys.end());
  if (auto verified = keys::VerifyNoteCosignature(cosignature_only,
                                                  witness_keys, clock_->Now());
      !verified.ok()) {
    return absl::UnauthenticatedError(
        absl::StrCat("the peer's cosignature does not verify with its "
                     "witness key: ",
                     verified.status().message()));
  }
  // Our note as signed, plus the one verified cosignature.
  note::Note kept = ours;
  kept.signatures.push_back(with_line->signatures.back());
  return audit_->StoreCosigned(checkpoint.size, note::Format(kept));
}

bool WitnessRefusal::IsRefusal(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      return false;
    default:
      return true;
  }
}

absl::Status Checkpointer::Witness() {
  if (!peer_) return absl::OkStatus();
  CB_ASSIGN_OR_RETURN(const auto latest, audit_->LatestCheckpoint());
  if (!latest.has_value() || latest->cosigned) {
    // Nothing to offer: what stands is our own refusal to sign, if any.
    if (options_.refusal != nullptr) {
      options_.refusal->Set(RefusalToSign(refused_to_sign_));
    }
    return absl::OkStatus();
  }
  CB_ASSIGN_OR_RETURN(const auto cosigned, audit_->LatestCosignedCheckpoint());
  const uint64_t old_size = cosigned.has_value() ? cosigned->size : 0;
  absl::Status status = Offer(*latest, old_size);
  if (status.code() == absl::StatusCode::kFailedPrecondition) {
    // The witness holds another size (we lost a cosignature it gave, say):
    // prove consistency from what it holds instead.
    const std::optional<uint64_t> held = CosignedSizeIn(status.message());
    if (held.has_value() && *held != old_size && *held <= latest->size) {
      status = Offer(*latest, *held);
    }
  }
  if (status.ok()) {
    log::Info("checkpoint.cosigned", {{"size", latest->size}});
  }
  // A link down or slow leaves what the peer last said standing.
  if (options_.refusal != nullptr &&
      (status.ok() || WitnessRefusal::IsRefusal(status))) {
    options_.refusal->Set(status);
  }
  return status;
}

void Checkpointer::Run() {
  absl::Time next_witness = absl::InfinitePast();
  absl::Time next_maintenance = absl::InfinitePast();
  int failures = 0;
  std::string last_error;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                               options_.interval)) {
        break;
      }
    }
    if (auto made = MakeCheckpoint(); !made.ok()) {
      log::Error("checkpoint.failed",
                 {{"error", std::string(made.status().message())}});
    } else if (made->has_value()) {
      log::Write(log::Level::kDebug, "checkpoint.signed",
                 {{"size", (*made)->size}});
    }
    const absl::Time now = absl::Now();
    if (now >= next_witness) {
      const absl::Status status = Witness();
      if (status.ok()) {
        failures = 0;
        last_error.clear();
      } else {
        ++failures;
        const absl::Duration delay =
            std::min(options_.retry_max,
                     absl::Milliseconds(500) * (1 << std::min(failures, 10)));
        next_witness = now + delay;
        const std::string error(status.ToString());
        if (error != last_error) {  // one line per new reason, not per retry
          log::Warning("checkpoint.witness_failed", {{"error", error}});
          last_error = error;
        }
      }
    }
    if (options_.maintenance && now >= next_maintenance) {
      options_.maintenance();
      next_maintenance = now + options_.maintenance_every;
    }
  }
  // Stopping: the entries of the last interval go into the stored tree and
  // under a signed checkpoint, so that the log at rest is covered up to its
  // end (the peer witnesses it after the next start).
  if (auto made = MakeCheckpoint(); !made.ok()) {
    log::Error("checkpoint.failed",
               {{"error", std::string(made.status().message())}});
  }
}

}  // namespace casebridge::server
