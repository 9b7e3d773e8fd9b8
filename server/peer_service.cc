#include "server/peer_service.h"

namespace casebridge::server {
namespace {

class FinishOnlyBidi final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
PeerServiceImpl::Deliver(grpc::CallbackServerContext* context) {
  auto* reactor = new FinishOnlyBidi();
  handler_->Run(
      context, Action::kDeliver, "peer.deliver", "", {},
      [](const Caller&) {
        return absl::UnimplementedError(
            "Deliver arrives with the cross-border exchange");
      },
      [reactor](const grpc::Status& status) { reactor->Finish(status); });
  return reactor;
}

grpc::ServerUnaryReactor* PeerServiceImpl::AddCheckpoint(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::AddCheckpointRequest, v1::AddCheckpointResponse>(
      context, request, response, Action::kAddCheckpoint, "peer.add_checkpoint",
      nullptr,
      [](const Incoming<v1::AddCheckpointRequest>&,
         v1::AddCheckpointResponse*) {
        return absl::UnimplementedError(
            "AddCheckpoint arrives with the verifiable audit log");
      });
}

}  // namespace casebridge::server
