#include "server/audit_service.h"

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "google/protobuf/util/time_util.h"

namespace casebridge::server {

grpc::ServerUnaryReactor* AuditServiceImpl::NotYet(
    grpc::CallbackServerContext* context,
    const google::protobuf::Message& request, const char* name) {
  return handler_->Unary(context, Action::kReadAudit,
                         absl::StrCat("audit.", name), request, {},
                         [name](const Caller&) {
                           return absl::UnimplementedError(absl::StrCat(
                               name, " arrives with the verifiable audit log"));
                         });
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetCheckpoint(
    grpc::CallbackServerContext* context,
    const v1::GetCheckpointRequest* request,
    v1::GetCheckpointResponse* /*response*/) {
  return NotYet(context, *request, "GetCheckpoint");
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetEntries(
    grpc::CallbackServerContext* context, const v1::GetEntriesRequest* request,
    v1::GetEntriesResponse* response) {
  return handler_->Unary(
      context, Action::kReadAudit, "audit.get_entries", *request, {},
      [this, request, response](const Caller&) -> absl::Status {
        if (handler_->port() == Port::kPeer) {
          return absl::PermissionDeniedError(
              "the peer gateway may fetch checkpoints and proofs, not entries");
        }
        if (request->page_size() < 0 || request->page_size() > 1000) {
          return absl::InvalidArgumentError(
              "page_size: must be between 1 and 1000 (0 for 100)");
        }
        const size_t max =
            request->page_size() == 0 ? 100 : static_cast<size_t>(request->page_size());
        CB_ASSIGN_OR_RETURN(auto entries, audit_->Read(request->start(), max));
        uint64_t next = request->start();
        for (const StoredEntry& stored : entries) {
          v1::AuditEntry* e = response->add_entries();
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
        response->set_next_start(next);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetInclusionProof(
    grpc::CallbackServerContext* context,
    const v1::GetInclusionProofRequest* request,
    v1::GetInclusionProofResponse* /*response*/) {
  return NotYet(context, *request, "GetInclusionProof");
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetConsistencyProof(
    grpc::CallbackServerContext* context,
    const v1::GetConsistencyProofRequest* request,
    v1::GetConsistencyProofResponse* /*response*/) {
  return NotYet(context, *request, "GetConsistencyProof");
}

grpc::ServerUnaryReactor* AuditServiceImpl::GetEvidence(
    grpc::CallbackServerContext* context, const v1::GetEvidenceRequest* request,
    v1::GetEvidenceResponse* /*response*/) {
  return NotYet(context, *request, "GetEvidence");
}

}  // namespace casebridge::server
