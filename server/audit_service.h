#ifndef CASEBRIDGE_SERVER_AUDIT_SERVICE_H_
#define CASEBRIDGE_SERVER_AUDIT_SERVICE_H_

#include "casebridge/v1/audit.grpc.pb.h"
#include "server/audit_log.h"
#include "server/call_handler.h"

namespace casebridge::server {

using AuditServiceBase = v1::AuditService::WithRawCallbackMethod_GetCheckpoint<
    v1::AuditService::WithRawCallbackMethod_GetEntries<
        v1::AuditService::WithRawCallbackMethod_GetInclusionProof<
            v1::AuditService::WithRawCallbackMethod_GetConsistencyProof<
                v1::AuditService::WithRawCallbackMethod_GetEvidence<
                    v1::AuditService::Service>>>>>;

// AuditService, on both ports. GetEntries serves the hash-chained log to
// auditors now; checkpoints, proofs and evidence answer UNIMPLEMENTED until
// the Merkle log lands.
class AuditServiceImpl final : public AuditServiceBase {
 public:
  // Pointers must outlive the service.
  AuditServiceImpl(CallHandler* handler, AuditLog* audit)
      : handler_(handler), audit_(audit) {}

  grpc::ServerUnaryReactor* GetCheckpoint(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetEntries(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetInclusionProof(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetConsistencyProof(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetEvidence(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;

 private:
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* NotYet(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response, const char* name,
                                   const char* audit_action);

  CallHandler* const handler_;
  AuditLog* const audit_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_AUDIT_SERVICE_H_
