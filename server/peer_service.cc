#include "server/peer_service.h"

#include <algorithm>
#include <deque>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "server/accept_order.h"
#include "server/write_priority.h"

namespace casebridge::server {
namespace {

// Parses `buffer` without first copying it into one string.
bool ParseByteBuffer(grpc::ByteBuffer* buffer,
                     google::protobuf::Message* message) {
  grpc::ProtoBufferReader reader(buffer);
  return message->ParseFromZeroCopyStream(&reader);
}

// One Deliver stream. Reads are started one at a time (gRPC allows one
// outstanding read and one outstanding write per stream). Each request is
// checked on the work queue as soon as it is read (steps 1-16, the
// signature among them), so the checks of several envelopes run in
// parallel. Envelopes that pass wait in `ready_`; one task at a time takes
// what is waiting (URGENT first, at most kMaxAcceptBatch) and stores it in
// one transaction (Inbound::Accept), and while it commits the next batch
// gathers. Its writes go ahead of office calls waiting for the writer. Answers
// are written one after the other in the order they are done; a receipt is
// queued only once its transaction committed. The reactor finishes only when
// the client has half-closed (or the call is cancelled) and no envelope is
// still being processed, so no queued task ever outlives it.
constexpr size_t kMaxAcceptBatch = 32;

class DeliverReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  DeliverReactor(Inbound* inbound, WorkQueue* work)
      : inbound_(inbound), work_(work) {}

  // Called once the caller is admitted as the peer gateway.
  void Begin(std::string peer_identity) {
    peer_identity_ = std::move(peer_identity);
    std::optional<grpc::Status> end;
    {
      absl::MutexLock lock(&mu_);
      admitting_ = false;
      if (broken_) {  // cancelled while being admitted
        end = EndLocked();
      } else {
        StartRead(&incoming_);
      }
    }
    EndIf(std::move(end));
  }

  // Called instead of Begin when the caller is refused.
  void Refuse(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      admitting_ = false;
      if (finished_) return;
      finished_ = true;
    }
    Finish(status);  // the last use of `this` (see EndLocked)
  }

  void OnReadDone(bool ok) override {
    auto bytes = std::make_shared<grpc::ByteBuffer>();
    std::optional<grpc::Status> end;
    bool take = false;
    {
      absl::MutexLock lock(&mu_);
      if (!ok || finished_ || broken_) {
        // Half-close, or the stream broke. An envelope read as the stream
        // ends is dropped (the peer sends it again): a task for it could
        // outlive the reactor, which gRPC deletes once this returns.
        reads_done_ = true;
        end = EndLocked();
      } else {
        // Counted before anything else: the stream cannot end until its
        // task has answered.
        ++pending_;
        bytes->Swap(&incoming_);
        take = true;
      }
    }
    if (!take) {
      EndIf(std::move(end));
      return;
    }
    // The next read starts before the task is queued, so never after the
    // stream has ended (the task holds pending_ until it answers).
    StartRead(&incoming_);
    // Parsed on the work queue, off gRPC's thread; the slices are shared,
    // not copied.
    work_->Post([this, bytes = std::move(bytes)] {
      v1::DeliverRequest request;
      const bool parsed = ParseByteBuffer(bytes.get(), &request);
      bytes->Clear();
      if (!parsed) {
        v1::DeliverResponse response;
        response.mutable_refusal()->set_code(
            static_cast<int32_t>(absl::StatusCode::kInvalidArgument));
        response.mutable_refusal()->set_message(
            "request: not a well-formed casebridge.v1.DeliverRequest");
        response.mutable_refusal()->set_permanent(true);
        Answer({std::move(response)});
        return;
      }
      std::variant<Inbound::Checked, v1::DeliverResponse> checked =
          inbound_->Check(peer_identity_, std::move(request));
      if (auto* refused = std::get_if<v1::DeliverResponse>(&checked)) {
        Answer({std::move(*refused)});
        return;
      }
      absl::MutexLock lock(&mu_);
      ready_.push_back(std::move(std::get<Inbound::Checked>(checked)));
      if (accepting_) return;  // the running task takes it next
      accepting_ = true;
      work_->Post([this] { AcceptReady(); });
    });
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> end;
    {
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
      end = EndLocked();
    }
    EndIf(std::move(end));
  }

  void OnCancel() override {
    std::optional<grpc::Status> end;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      // Answers not yet written go (the peer gets them again as replays);
      // the one being written belongs to gRPC until OnWriteDone, which
      // drops it.
      const size_t keep = writing_ ? 1 : 0;
      outgoing_.erase(outgoing_.begin() + static_cast<std::ptrdiff_t>(keep),
                      outgoing_.end());
      end = EndLocked();
    }
    EndIf(std::move(end));
  }

  void OnDone() override { delete this; }

 private:
  // Stores what is ready, batch after batch, until nothing is left. Runs
  // on the work queue, one at a time (accepting_).
  void AcceptReady() {
    const ScopedWritePriority first(WritePriority::kFirst);
    while (true) {
      std::vector<Inbound::Checked> batch;
      std::optional<grpc::Status> end;
      {
        absl::MutexLock lock(&mu_);
        if (ready_.empty()) {
          accepting_ = false;
          end = EndLocked();
        } else {
          batch = TakeAcceptBatch(ready_, kMaxAcceptBatch);
        }
      }
      if (batch.empty()) {
        EndIf(std::move(end));
        return;
      }
      std::vector<v1::DeliverResponse> answers =
          inbound_->Accept(std::move(batch));
      Answer(std::move(answers), /*holds_task=*/true);
    }
  }

  // Queues `answers` for writing and counts their envelopes as done.
  // `holds_task`: the caller goes on using `this` afterwards, so the
  // reactor must not finish here.
  void Answer(std::vector<v1::DeliverResponse> answers,
              bool holds_task = false) {
    std::vector<grpc::ByteBuffer> buffers(answers.size());
    for (size_t i = 0; i < answers.size(); ++i) {
      (void)SerializeToByteBuffer(answers[i], &buffers[i]);
    }
    std::optional<grpc::Status> end;
    {
      absl::MutexLock lock(&mu_);
      pending_ -= static_cast<int>(answers.size());
      if (!broken_) {
        for (grpc::ByteBuffer& buffer : buffers) {
          outgoing_.push_back(std::move(buffer));
        }
        if (!writing_) WriteNextLocked();
      }
      if (!holds_task) end = EndLocked();
    }
    EndIf(std::move(end));
  }

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_ || outgoing_.empty()) return;
    writing_ = true;
    // No buffer hint: a hinted write may not complete until the next write
    // starts, and the next starts only once this one has completed.
    StartWrite(&outgoing_.front());
  }

  // Whether the stream ends now, and with what status; the caller passes
  // it to EndIf once mu_ is released, as its last use of `this`: once
  // Finish is called gRPC may run OnDone (which deletes the reactor) on
  // another thread at any moment, so not even unlocking mu_ may follow.
  // Never before admission has answered, nor while a task holds `this`.
  std::optional<grpc::Status> EndLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || admitting_ || pending_ > 0 || accepting_ || writing_) {
      return std::nullopt;
    }
    if (!(reads_done_ || broken_)) return std::nullopt;
    if (!broken_ && !outgoing_.empty()) return std::nullopt;
    finished_ = true;
    return broken_ ? grpc::Status(grpc::StatusCode::CANCELLED, "stream ended")
                   : grpc::Status::OK;
  }

  void EndIf(std::optional<grpc::Status> end) {
    if (end.has_value()) Finish(*end);
  }

  Inbound* const inbound_;
  WorkQueue* const work_;
  std::string peer_identity_;
  grpc::ByteBuffer incoming_;  // used by the one outstanding read

  absl::Mutex mu_;
  std::deque<grpc::ByteBuffer> outgoing_ ABSL_GUARDED_BY(mu_);
  // Checked envelopes waiting to be stored, in the order they were checked.
  std::vector<Inbound::Checked> ready_ ABSL_GUARDED_BY(mu_);
  // Envelopes read and not yet answered.
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(mu_) = false;  // AcceptReady is running
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
