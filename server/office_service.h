#ifndef CASEBRIDGE_SERVER_OFFICE_SERVICE_H_
#define CASEBRIDGE_SERVER_OFFICE_SERVICE_H_

#include "casebridge/v1/office.grpc.pb.h"
#include "core/config.h"
#include "server/call_handler.h"
#include "server/case_store.h"

namespace casebridge::server {

// OfficeService on the office port. Case references now; the exchange RPCs
// answer UNIMPLEMENTED until the cross-border exchange lands.
class OfficeServiceImpl final : public v1::OfficeService::CallbackService {
 public:
  // All pointers must outlive the service.
  OfficeServiceImpl(const config::Gateway* config, CallHandler* handler,
                    CaseStore* cases, AuditLog* audit);

  grpc::ServerUnaryReactor* WhoAmI(grpc::CallbackServerContext* context,
                                   const v1::WhoAmIRequest* request,
                                   v1::WhoAmIResponse* response) override;
  grpc::ServerUnaryReactor* OpenCase(grpc::CallbackServerContext* context,
                                     const v1::OpenCaseRequest* request,
                                     v1::OpenCaseResponse* response) override;
  grpc::ServerUnaryReactor* GetCase(grpc::CallbackServerContext* context,
                                    const v1::GetCaseRequest* request,
                                    v1::GetCaseResponse* response) override;
  grpc::ServerUnaryReactor* ListCases(grpc::CallbackServerContext* context,
                                      const v1::ListCasesRequest* request,
                                      v1::ListCasesResponse* response) override;
  grpc::ServerUnaryReactor* UpdateCase(
      grpc::CallbackServerContext* context,
      const v1::UpdateCaseRequest* request,
      v1::UpdateCaseResponse* response) override;
  grpc::ServerUnaryReactor* ShareCase(grpc::CallbackServerContext* context,
                                      const v1::ShareCaseRequest* request,
                                      v1::ShareCaseResponse* response) override;
  grpc::ServerUnaryReactor* SendMessage(
      grpc::CallbackServerContext* context,
      const v1::SendMessageRequest* request,
      v1::SendMessageResponse* response) override;
  grpc::ServerWriteReactor<v1::WatchInboxResponse>* WatchInbox(
      grpc::CallbackServerContext* context,
      const v1::WatchInboxRequest* request) override;
  grpc::ServerUnaryReactor* Acknowledge(
      grpc::CallbackServerContext* context,
      const v1::AcknowledgeRequest* request,
      v1::AcknowledgeResponse* response) override;
  grpc::ServerUnaryReactor* GetDeliveryStatus(
      grpc::CallbackServerContext* context,
      const v1::GetDeliveryStatusRequest* request,
      v1::GetDeliveryStatusResponse* response) override;

 private:
  const config::Gateway* const config_;
  CallHandler* const handler_;
  CaseStore* const cases_;
  AuditLog* const audit_;
};

// Encodes / decodes ListCases page tokens: the position after the last case
// of the page, bound to a fingerprint of the filters it was made for.
std::string EncodePageToken(int64_t position, const v1::ListCasesRequest& filters);
absl::StatusOr<int64_t> DecodePageToken(const std::string& token,
                                        const v1::ListCasesRequest& filters);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_OFFICE_SERVICE_H_
