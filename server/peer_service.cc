#include "server/peer_service.h"

namespace casebridge::server {
namespace {

class FinishOnlyBidi final
    : public grpc::ServerBidiReactor<v1::DeliverRequest, v1::DeliverResponse> {
 public:
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerBidiReactor<v1::DeliverRequest, v1::DeliverResponse>*
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
    grpc::CallbackServerContext* context,
    const v1::AddCheckpointRequest* request,
    v1::AddCheckpointResponse* /*response*/) {
  return handler_->Unary(context, Action::kAddCheckpoint, "peer.add_checkpoint",
                         *request, {}, [](const Caller&) {
                           return absl::UnimplementedError(
                               "AddCheckpoint arrives with the verifiable audit "
                               "log");
                         });
}

}  // namespace casebridge::server
