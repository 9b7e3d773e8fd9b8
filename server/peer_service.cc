#include "server/peer_service.h"

#include <deque>

#include "absl/synchronization/mutex.h"
#include "core/log.h"
#include "core/status_macros.h"

namespace casebridge::server {
namespace {

// One Deliver stream. Reads are started one at a time (gRPC allows one
// outstanding read and one outstanding write per stream); each request is
// handed to the work queue at once, so several envelopes are processed
// concurrently; answers are written one after the other in the order they
// finish. The reactor finishes only when the client has half-closed (or the
// call is cancelled) and no envelope is still being processed, so no queued
// task ever outlives it.
class DeliverReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  DeliverReactor(Inbound* inbound, WorkQueue* work)
      : inbound_(inbound), work_(work) {}

  // Called once the caller is admitted as the peer gateway.
  void Begin(std::string peer_identity) {
    peer_identity_ = std::move(peer_identity);
    absl::MutexLock lock(&mu_);
    admitting_ = false;
    if (broken_) {  // cancelled while being admitted
      MaybeFinishLocked();
      return;
    }
    StartRead(&incoming_);
  }

  // Called instead of Begin when the caller is refused.
  void Refuse(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    admitting_ = false;
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // half-close, or the stream broke
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    std::string bytes = ByteBufferToString(incoming_);
    incoming_.Clear();
    {
      absl::MutexLock lock(&mu_);
      ++pending_;
    }
    work_->Post([this, bytes = std::move(bytes)] {
      v1::DeliverRequest request;
      v1::DeliverResponse response;
      if (!request.ParseFromString(bytes)) {
        response.mutable_refusal()->set_code(
            static_cast<int32_t>(absl::StatusCode::kInvalidArgument));
        response.mutable_refusal()->set_message(
            "request: not a well-formed casebridge.v1.DeliverRequest");
        response.mutable_refusal()->set_permanent(true);
      } else {
        response = inbound_->Receive(peer_identity_, request);
      }
      grpc::ByteBuffer buffer;
      (void)SerializeToByteBuffer(response, &buffer);
      absl::MutexLock lock(&mu_);
      --pending_;
      outgoing_.push_back(std::move(buffer));
      if (!writing_) WriteNextLocked();
      MaybeFinishLocked();
    });
    StartRead(&incoming_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    outgoing_.pop_front();
    if (!ok) {
      // The stream is gone; answers not written are recomputed from the
      // store (as replays) when the peer sends the envelopes again.
      outgoing_.clear();
      broken_ = true;
    } else if (!outgoing_.empty()) {
      WriteNextLocked();
    }
    MaybeFinishLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    broken_ = true;
    outgoing_.clear();
    MaybeFinishLocked();
  }

  void OnDone() override { delete this; }

 private:
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_ || outgoing_.empty()) return;
    writing_ = true;
    StartWrite(&outgoing_.front());
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Never before admission has answered: its task still holds `this`.
    if (finished_ || admitting_ || pending_ > 0 || writing_) return;
    if (!(reads_done_ || broken_)) return;
    if (!broken_ && !outgoing_.empty()) return;
    finished_ = true;
    Finish(broken_ ? grpc::Status(grpc::StatusCode::CANCELLED, "stream ended")
                   : grpc::Status::OK);
  }

  Inbound* const inbound_;
  WorkQueue* const work_;
  std::string peer_identity_;
  grpc::ByteBuffer incoming_;  // used by the one outstanding read

  absl::Mutex mu_;
  std::deque<grpc::ByteBuffer> outgoing_ ABSL_GUARDED_BY(mu_);
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool admitting_ ABSL_GUARDED_BY(mu_) = true;
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
PeerServiceImpl::Deliver(grpc::CallbackServerContext* context) {
  auto* reactor = new DeliverReactor(inbound_, work_);
  handler_->Run(
      context, Action::kDeliver, "peer.deliver", "", {},
      [reactor](const Caller& caller) {
        reactor->Begin(caller.identity);
        return absl::OkStatus();
      },
      [reactor](const grpc::Status& status) {
        if (!status.ok()) reactor->Refuse(status);  // refused at admission
      });
  return reactor;
}

grpc::ServerUnaryReactor* PeerServiceImpl::AddCheckpoint(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::AddCheckpointRequest, v1::AddCheckpointResponse>(
      context, request, response, Action::kAddCheckpoint,
      audit::kWitnessRefusalAction, nullptr,
      [this](const Incoming<v1::AddCheckpointRequest>& in,
             v1::AddCheckpointResponse* out) -> absl::Status {
        CB_ASSIGN_OR_RETURN(
            *out->mutable_cosignature(),
            witness_->AddCheckpoint(in.caller.identity, in.request));
        return absl::OkStatus();
      });
}

}  // namespace casebridge::server
