#include "server/audit_service.h"

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "google/protobuf/util/time_util.h"

namespace casebridge::server {

template <typename Request, typename Response>
grpc::ServerUnaryReactor* AuditServiceImpl::NotYet(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response, const char* name, const char* audit_action) {
  return handler_->Unary<Request, Response>(
      context, request, response, Action::kReadAudit, audit_action, nullptr,
      [name](const Incoming<Request>&, Response*) {
        return absl::UnimplementedError(
            absl::StrCat(name, " arrives with the verifiable audit log"));
      });
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetCheckpoint(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return NotYet<v1::GetCheckpointRequest, v1::GetCheckpointResponse>(
      context, request, response, "GetCheckpoint", "audit.get_checkpoint");
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetEntries(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::GetEntriesRequest, v1::GetEntriesResponse>(
      context, request, response, Action::kReadAudit, "audit.get_entries",
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
        const size_t max =
            page_size == 0 ? 100 : static_cast<size_t>(page_size);
        CB_ASSIGN_OR_RETURN(auto entries,
                            audit_->Read(in.request.start(), max));
        uint64_t next = in.request.start();
        for (const StoredEntry& stored : entries) {
          v1::AuditEntry* e = out->add_entries();
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
          next = stored.index + 1;
        }
        out->set_next_start(next);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetInclusionProof(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return NotYet<v1::GetInclusionProofRequest, v1::GetInclusionProofResponse>(
      context, request, response, "GetInclusionProof",
      "audit.get_inclusion_proof");
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetConsistencyProof(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return NotYet<v1::GetConsistencyProofRequest,
                v1::GetConsistencyProofResponse>(context, request, response,
                                                 "GetConsistencyProof",
                                                 "audit.get_consistency_proof");
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetEvidence(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return NotYet<v1::GetEvidenceRequest, v1::GetEvidenceResponse>(
      context, request, response, "GetEvidence", "audit.get_evidence");
}

}  // namespace casebridge::server
