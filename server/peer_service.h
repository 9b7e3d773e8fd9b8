#ifndef CASEBRIDGE_SERVER_PEER_SERVICE_H_
#define CASEBRIDGE_SERVER_PEER_SERVICE_H_

#include "casebridge/v1/peer.grpc.pb.h"
#include "server/call_handler.h"

namespace casebridge::server {

using PeerServiceBase = v1::PeerService::WithRawCallbackMethod_Deliver<
    v1::PeerService::WithRawCallbackMethod_AddCheckpoint<
        v1::PeerService::Service>>;

// PeerService on the peer port. Admits only the pinned peer gateway; the
// exchange and witnessing answer UNIMPLEMENTED until they land.
class PeerServiceImpl final : public PeerServiceBase {
 public:
  // `handler` must outlive the service.
  explicit PeerServiceImpl(CallHandler* handler) : handler_(handler) {}

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Deliver(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* AddCheckpoint(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;

 private:
  CallHandler* const handler_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_PEER_SERVICE_H_
