#ifndef CASEBRIDGE_SERVER_AUDIT_SERVICE_H_
#define CASEBRIDGE_SERVER_AUDIT_SERVICE_H_

#include "casebridge/v1/audit.grpc.pb.h"
#include "server/audit_log.h"
#include "server/call_handler.h"

namespace casebridge::server {

// AuditService, on both ports. GetEntries serves the hash-chained log now;
// checkpoints, proofs and evidence answer UNIMPLEMENTED until the Merkle log
// lands.
class AuditServiceImpl final : public v1::AuditService::CallbackService {
 public:
  // Pointers must outlive the service.
  AuditServiceImpl(CallHandler* handler, AuditLog* audit)
      : handler_(handler), audit_(audit) {}

  grpc::ServerUnaryReactor* GetCheckpoint(
      grpc::CallbackServerContext* context,
      const v1::GetCheckpointRequest* request,
      v1::GetCheckpointResponse* response) override;
  grpc::ServerUnaryReactor* GetEntries(grpc::CallbackServerContext* context,
                                       const v1::GetEntriesRequest* request,
                                       v1::GetEntriesResponse* response) override;
  grpc::ServerUnaryReactor* GetInclusionProof(
      grpc::CallbackServerContext* context,
      const v1::GetInclusionProofRequest* request,
      v1::GetInclusionProofResponse* response) override;
  grpc::ServerUnaryReactor* GetConsistencyProof(
      grpc::CallbackServerContext* context,
      const v1::GetConsistencyProofRequest* request,
      v1::GetConsistencyProofResponse* response) override;
  grpc::ServerUnaryReactor* GetEvidence(
      grpc::CallbackServerContext* context,
      const v1::GetEvidenceRequest* request,
      v1::GetEvidenceResponse* response) override;

 private:
  grpc::ServerUnaryReactor* NotYet(grpc::CallbackServerContext* context,
                                   const google::protobuf::Message& request,
                                   const char* name);

  CallHandler* const handler_;
  AuditLog* const audit_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_AUDIT_SERVICE_H_
