#ifndef CASEBRIDGE_SERVER_PEER_SERVICE_H_
#define CASEBRIDGE_SERVER_PEER_SERVICE_H_

#include "casebridge/v1/peer.grpc.pb.h"
#include "server/call_handler.h"

namespace casebridge::server {

// PeerService on the peer port. Admits only the pinned peer gateway; the
// exchange and witnessing answer UNIMPLEMENTED until they land.
class PeerServiceImpl final : public v1::PeerService::CallbackService {
 public:
  // `handler` must outlive the service.
  explicit PeerServiceImpl(CallHandler* handler) : handler_(handler) {}

  grpc::ServerBidiReactor<v1::DeliverRequest, v1::DeliverResponse>* Deliver(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* AddCheckpoint(
      grpc::CallbackServerContext* context,
      const v1::AddCheckpointRequest* request,
      v1::AddCheckpointResponse* response) override;

 private:
  CallHandler* const handler_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_PEER_SERVICE_H_
