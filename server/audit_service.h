#ifndef CASEBRIDGE_SERVER_AUDIT_SERVICE_H_
#define CASEBRIDGE_SERVER_AUDIT_SERVICE_H_

#include "casebridge/v1/audit.grpc.pb.h"
#include "server/audit_log.h"
#include "server/call_handler.h"
#include "server/evidence.h"

namespace casebridge::server {

using AuditServiceBase = v1::AuditService::WithRawCallbackMethod_GetCheckpoint<
    v1::AuditService::WithRawCallbackMethod_GetEntries<
        v1::AuditService::WithRawCallbackMethod_GetInclusionProof<
            v1::AuditService::WithRawCallbackMethod_GetConsistencyProof<
                v1::AuditService::WithRawCallbackMethod_GetEvidence<
                    v1::AuditService::Service>>>>>;

// AuditService, on both ports (docs/api.md#auditservice). Who sees what:
//   auditors        everything;
//   officers        checkpoints and proofs; the entries they made and those
//                   about their own messages; evidence of their messages;
//   the peer        checkpoints, proofs, and its part of evidence (never
//                   entries).
// Proofs are served for tree sizes up to the newest checkpoint's.
class AuditServiceImpl final : public AuditServiceBase {
 public:
  // Pointers must outlive the service.
  AuditServiceImpl(CallHandler* handler, AuditLog* audit, Evidence* evidence)
      : handler_(handler), audit_(audit), evidence_(evidence) {}

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
  // The newest checkpoint's size; FAILED_PRECONDITION before the first.
  absl::StatusOr<uint64_t> CheckpointedSize();

  CallHandler* const handler_;
  AuditLog* const audit_;
  Evidence* const evidence_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_AUDIT_SERVICE_H_
