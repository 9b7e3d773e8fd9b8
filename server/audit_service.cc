#include "server/audit_service.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "google/protobuf/util/time_util.h"

namespace casebridge::server {
namespace {

void ToProto(const StoredEntry& stored, v1::AuditEntry* e) {
  e->set_index(stored.index);
  e->set_encoded(stored.bytes);
  *e->mutable_time() =
      google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(
          absl::ToUnixMicros(stored.entry.time));
  e->set_actor(stored.entry.actor);
  e->set_action(stored.entry.action);
  for (const auto& s : stored.entry.subjects) e->add_subjects(s);
  e->set_payload_hash(stored.entry.payload_hash);
  e->set_status_code(stored.entry.status_code);
  e->set_status_message(stored.entry.status_message);
}

bool SeesEverything(const Caller& caller) {
  return caller.May(Action::kReadAllAudit);
}

}  // namespace

absl::StatusOr<uint64_t> AuditServiceImpl::CheckpointedSize() {
  CB_ASSIGN_OR_RETURN(const auto latest, audit_->LatestCheckpoint());
  if (!latest.has_value()) {
    return absl::FailedPreconditionError(
        "no checkpoint has been signed yet; try again in a few seconds");
  }
  return latest->size;
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetCheckpoint(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::GetCheckpointRequest, v1::GetCheckpointResponse>(
      context, request, response, Action::kGetCheckpoint,
      "audit.get_checkpoint", nullptr,
      [this](const Incoming<v1::GetCheckpointRequest>&,
             v1::GetCheckpointResponse* out) -> absl::Status {
        CB_ASSIGN_OR_RETURN(const auto latest, audit_->LatestCheckpoint());
        if (!latest.has_value()) {
          return absl::NotFoundError(
              "no checkpoint has been signed yet; try again in a few seconds");
        }
        out->set_checkpoint(latest->note);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetEntries(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::GetEntriesRequest, v1::GetEntriesResponse>(
      context, request, response, Action::kGetEntries, "audit.get_entries",
      nullptr,
      [this](const Incoming<v1::GetEntriesRequest>& in,
             v1::GetEntriesResponse* out) -> absl::Status {
        if (handler_->port() == Port::kPeer) {
          return absl::PermissionDeniedError(
              "the peer gateway may fetch checkpoints and proofs, not entries");
        }
        const int page_size = in.request.page_size();
        if (page_size < 0 || page_size > 1000) {
          return absl::InvalidArgumentError(
              "page_size: must be between 1 and 1000 (0 for 100)");
        }
        if (in.request.start() >
            static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return absl::InvalidArgumentError("start: beyond any log");
        }
        const size_t max =
            page_size == 0 ? 100 : static_cast<size_t>(page_size);
        std::vector<StoredEntry> entries;
        uint64_t next = in.request.start();
        if (SeesEverything(in.caller)) {
          CB_ASSIGN_OR_RETURN(entries, audit_->Read(in.request.start(), max));
          if (!entries.empty()) next = entries.back().index + 1;
        } else {
          CB_ASSIGN_OR_RETURN(
              entries, audit_->ReadVisibleTo(in.caller.identity,
                                             in.request.start(), max, &next));
        }
        for (const StoredEntry& stored : entries) {
          ToProto(stored, out->add_entries());
        }
        out->set_next_start(next);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetInclusionProof(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_
      ->Unary<v1::GetInclusionProofRequest, v1::GetInclusionProofResponse>(
          context, request, response, Action::kGetInclusionProof,
          "audit.get_inclusion_proof", nullptr,
          [this](const Incoming<v1::GetInclusionProofRequest>& in,
                 v1::GetInclusionProofResponse* out) -> absl::Status {
            const uint64_t index = in.request.index();
            const uint64_t size = in.request.tree_size();
            CB_ASSIGN_OR_RETURN(const uint64_t checkpointed,
                                CheckpointedSize());
            if (size == 0 || size > checkpointed) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "tree_size: must be between 1 and the newest checkpoint's "
                  "size (",
                  checkpointed, ")"));
            }
            if (index >= size) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "index: ", index, " is not in a tree of size ", size));
            }
            CB_ASSIGN_OR_RETURN(const auto proof,
                                audit_->InclusionProof(index, size));
            out->set_index(index);
            out->set_tree_size(size);
            for (const std::string& hash : proof) out->add_hashes(hash);
            return absl::OkStatus();
          });
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetConsistencyProof(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::GetConsistencyProofRequest,
                         v1::GetConsistencyProofResponse>(
      context, request, response, Action::kGetConsistencyProof,
      "audit.get_consistency_proof", nullptr,
      [this](const Incoming<v1::GetConsistencyProofRequest>& in,
             v1::GetConsistencyProofResponse* out) -> absl::Status {
        const uint64_t first = in.request.first_size();
        const uint64_t second = in.request.second_size();
        CB_ASSIGN_OR_RETURN(const uint64_t checkpointed, CheckpointedSize());
        if (second == 0 || second > checkpointed) {
          return absl::InvalidArgumentError(
              absl::StrCat("second_size: must be between 1 and the newest "
                           "checkpoint's size (",
                           checkpointed, ")"));
        }
        if (first == 0 || first > second) {
          return absl::InvalidArgumentError(absl::StrCat(
              "first_size: must be between 1 and second_size (", second, ")"));
        }
        CB_ASSIGN_OR_RETURN(const auto proof,
                            audit_->ConsistencyProof(first, second));
        for (const std::string& hash : proof) out->add_hashes(hash);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetEvidence(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::GetEvidenceRequest, v1::GetEvidenceResponse>(
      context, request, response, Action::kGetEvidence, "audit.get_evidence",
      [](const v1::GetEvidenceRequest& r) {
        return std::vector<std::string>{
            r.envelope_id().empty() ? r.message_id() : r.envelope_id()};
      },
      [this](const Incoming<v1::GetEvidenceRequest>& in,
             v1::GetEvidenceResponse* out) -> absl::Status {
        std::string id = in.request.envelope_id();
        if (id.empty() && in.request.message_id().empty()) {
          return absl::InvalidArgumentError(
              "envelope_id: required (or message_id)");
        }
        if (!id.empty() && !in.request.message_id().empty()) {
          return absl::InvalidArgumentError(
              "message_id: give envelope_id or message_id, not both");
        }
        if (id.empty()) {
          CB_ASSIGN_OR_RETURN(id,
                              evidence_->EnvelopeOf(in.request.message_id()));
        }
        if (handler_->port() == Port::kPeer) {
          // The peer gets our part only; it holds its own.
          CB_ASSIGN_OR_RETURN(*out->mutable_bundle(), evidence_->LocalPart(id));
          return absl::OkStatus();
        }
        if (!SeesEverything(in.caller)) {
          CB_ASSIGN_OR_RETURN(const bool visible,
                              evidence_->VisibleTo(in.caller.identity, id));
          // Answered as a missing one, so that ids cannot be probed; the
          // audit entry of the refusal names the caller and the id.
          if (!visible) {
            return in.request.envelope_id().empty()
                       ? absl::NotFoundError(
                             absl::StrCat("message ", in.request.message_id(),
                                          " was not exchanged here"))
                       : absl::NotFoundError(absl::StrCat(
                             "envelope ", id, " was not exchanged here"));
          }
        }
        // The bundle holds the message itself: personal data, to roles
        // that may read it (the config ties GetEvidence to
        // ReadPersonalData), and on record before it leaves.
        if (!in.caller.May(Action::kReadPersonalData)) {
          return absl::PermissionDeniedError(
              "an evidence bundle holds the message itself: ReadPersonalData "
              "is needed");
        }
        CB_ASSIGN_OR_RETURN(*out->mutable_bundle(),
                            evidence_->Bundle(id, &in.context));
        return audit_
            ->Append(in.Event("audit.get_evidence.personal_data", {id}))
            .status();
      });
}

}  // namespace casebridge::server
