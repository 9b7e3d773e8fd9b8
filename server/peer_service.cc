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
#include "server/reactor_lock.h"
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
// parallel; a request whose priority copy says URGENT is checked ahead of
// the others waiting. Envelopes that pass wait in `ready_`; one task at a
// time takes what is waiting (URGENT first, at most kMaxAcceptBatch) and
// stores it in one transaction (Inbound::Accept), and while it commits the
// next batch gathers. Its writes go ahead of office calls waiting for the
// writer. Answers are written one after the other in the order they are
// done, an URGENT envelope's ahead of those waiting; a receipt is
// queued only once its transaction committed. The reactor finishes only when
// the client has half-closed (or the call is cancelled) and no envelope is
// still being processed, so no queued task ever outlives it.
//
// Reading pauses while kMaxUnanswered envelopes, or kMaxUnansweredBytes of
// requests, are read and not yet answered (answers waiting to be written
// count): a peer that writes without reading its answers meets HTTP/2 flow
// control instead of growing this gateway's memory and work queue. The
// largest delivery window a sender may configure fits.
constexpr size_t kMaxAcceptBatch = 32;
constexpr size_t kMaxUnanswered = 1024;
constexpr size_t kMaxUnansweredBytes = size_t{64} << 20;

class DeliverReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  DeliverReactor(Inbound* inbound, WorkQueue* work)
      : inbound_(inbound), work_(work) {}

  // Called once the caller is admitted as the peer gateway: tells it so
  // (kDeliverAdmittedMetadata) and starts reading.
  void Begin(std::string peer_identity) {
    peer_identity_ = std::move(peer_identity);
    Locked lock(this, &state_);
    admitting_ = false;
    if (broken_) {  // cancelled while being admitted
      EndIfDoneLocked();
    } else {
      StartSendInitialMetadata();
      StartRead(&incoming_);
    }
  }

  // Called instead of Begin when the caller is refused.
  void Refuse(const grpc::Status& status) {
    Locked lock(this, &state_);
    admitting_ = false;
    if (finished_) return;
    finished_ = true;
    state_.end = status;
  }

  void OnReadDone(bool ok) override {
    auto bytes = std::make_unique<grpc::ByteBuffer>();
    size_t size = 0;
    bool read_next = false;
    {
      Locked lock(this, &state_);
      if (!ok || finished_ || broken_) {
        // Half-close, or the stream broke. An envelope read as the stream
        // ends is dropped (the peer sends it again): a task for it could
        // outlive the reactor, which gRPC deletes once this returns.
        reads_done_ = true;
        EndIfDoneLocked();
        return;
      }
      // Counted before anything else: the stream cannot end until its task
      // has answered.
      ++pending_;
      size = incoming_.Length();
      pending_bytes_ += size;
      bytes->Swap(&incoming_);
      read_paused_ = !RoomLocked();
      read_next = !read_paused_;
    }
    // The next read starts before the task is queued, so never after the
    // stream has ended (the task holds pending_ until it answers); or, if
    // paused, once a written answer makes room (OnWriteDone).
    if (read_next) StartRead(&incoming_);
    // Parsed here for the priority copy, which orders the checks: an URGENT
    // envelope is checked before the others read (its signed priority is
    // only known once checked). The slices are shared, not copied.
    v1::DeliverRequest request;
    const bool parsed = ParseByteBuffer(bytes.get(), &request);
    bytes.reset();
    const bool urgent = parsed && request.priority() == v1::PRIORITY_URGENT;
    auto check = [this, parsed, size, request = std::move(request)]() mutable {
      if (!parsed) {
        v1::DeliverResponse response;
        response.mutable_refusal()->set_code(
            static_cast<int32_t>(absl::StatusCode::kInvalidArgument));
        response.mutable_refusal()->set_message(
            "request: not a well-formed casebridge.v1.DeliverRequest");
        response.mutable_refusal()->set_permanent(true);
        Answer({std::move(response)}, size);
        return;
      }
      std::variant<Inbound::Checked, v1::DeliverResponse> checked =
          inbound_->Check(peer_identity_, std::move(request));
      if (auto* refused = std::get_if<v1::DeliverResponse>(&checked)) {
        Answer({std::move(*refused)}, size);
        return;
      }
      std::get<Inbound::Checked>(checked).request_bytes = size;
      const bool urgent_checked =
          std::get<Inbound::Checked>(checked).envelope.message().priority() ==
          v1::PRIORITY_URGENT;
      Locked lock(this, &state_);  // pending_ > 0: the stream cannot end here
      ready_.push_back(std::move(std::get<Inbound::Checked>(checked)));
      if (accepting_) return;  // the running task takes it next
      accepting_ = true;
      if (urgent_checked) {
        work_->PostFirst([this] { AcceptReady(); });
      } else {
        work_->Post([this] { AcceptReady(); });
      }
    };
    if (urgent) {
      work_->PostFirst(std::move(check));
    } else {
      work_->Post(std::move(check));
    }
  }

  void OnWriteDone(bool ok) override {
    Locked lock(this, &state_);
    writing_ = false;
    written_.Clear();
    if (!ok) {
      // The stream is gone; answers not written are recomputed from the
      // store (as replays) when the peer sends the envelopes again.
      outgoing_.clear();
      broken_ = true;
    } else if (!outgoing_.empty()) {
      WriteNextLocked();
    }
    if (read_paused_ && !broken_ && RoomLocked()) {
      read_paused_ = false;
      StartRead(&incoming_);
    }
    EndIfDoneLocked();
  }

  void OnCancel() override {
    Locked lock(this, &state_);
    broken_ = true;
    // Answers not yet written go (the peer gets them again as replays); the
    // one being written (written_) belongs to gRPC until OnWriteDone.
    outgoing_.clear();
    EndIfDoneLocked();
  }

  void OnDone() override {
    // Refusals counted but not yet summarized are audited now.
    if (!peer_identity_.empty()) inbound_->EndRefusalBurst(peer_identity_);
    delete this;
  }

 private:
  // Stores what is ready, batch after batch, until nothing is left. Runs
  // on the work queue, one at a time (accepting_).
  void AcceptReady() {
    const ScopedWritePriority first(WritePriority::kFirst);
    while (true) {
      std::vector<Inbound::Checked> batch;
      {
        Locked lock(this, &state_);
        if (ready_.empty()) {
          accepting_ = false;
          EndIfDoneLocked();
          return;
        }
        batch = TakeAcceptBatch(ready_, kMaxAcceptBatch);
      }
      size_t bytes = 0;
      for (const Inbound::Checked& checked : batch) {
        bytes += checked.request_bytes;
      }
      // TakeAcceptBatch takes URGENT envelopes alone: their receipts go
      // out ahead of those still waiting to be written.
      const bool urgent =
          batch.front().envelope.message().priority() == v1::PRIORITY_URGENT;
      std::vector<v1::DeliverResponse> answers =
          inbound_->Accept(std::move(batch));
      Answer(std::move(answers), bytes, /*holds_task=*/true, /*ahead=*/urgent);
    }
  }

  // Queues `answers` for writing and counts their envelopes, whose requests
  // were `request_bytes` in all, as done. `holds_task`: the caller goes on
  // using `this` afterwards, so the reactor must not finish here. `ahead`:
  // written before the answers already waiting (not before the one being
  // written).
  void Answer(std::vector<v1::DeliverResponse> answers, size_t request_bytes,
              bool holds_task = false, bool ahead = false) {
    std::vector<grpc::ByteBuffer> buffers(answers.size());
    for (size_t i = 0; i < answers.size(); ++i) {
      (void)SerializeToByteBuffer(answers[i], &buffers[i]);
    }
    Locked lock(this, &state_);
    pending_ -= static_cast<int>(answers.size());
    pending_bytes_ -= request_bytes;
    if (!broken_) {
      if (ahead) {
        for (auto it = buffers.rbegin(); it != buffers.rend(); ++it) {
          outgoing_.emplace_front().Swap(&*it);
        }
      } else {
        for (grpc::ByteBuffer& buffer : buffers) {
          outgoing_.emplace_back().Swap(&buffer);
        }
      }
      if (!writing_) WriteNextLocked();
    }
    if (!holds_task) EndIfDoneLocked();
  }

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu) {
    if (broken_ || outgoing_.empty()) return;
    writing_ = true;
    // Moved out of the queue: gRPC holds a pointer to it until OnWriteDone,
    // while answers are still queued (some ahead of the others).
    written_.Swap(&outgoing_.front());
    outgoing_.pop_front();
    // No buffer hint: a hinted write may not complete until the next write
    // starts, and the next starts only once this one has completed.
    StartWrite(&written_);
  }

  // Whether another envelope may be read now (see kMaxUnanswered).
  bool RoomLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu) {
    const size_t unanswered =
        static_cast<size_t>(pending_) + outgoing_.size() + (writing_ ? 1 : 0);
    return unanswered < kMaxUnanswered && pending_bytes_ < kMaxUnansweredBytes;
  }

  // Ends the stream if it is done: the Locked scope finishes it once the
  // mutex is released (reactor_lock.h). Never before admission has
  // answered, nor while a task holds `this`.
  void EndIfDoneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu) {
    if (finished_ || admitting_ || pending_ > 0 || accepting_ || writing_) {
      return;
    }
    if (!(reads_done_ || broken_)) return;
    if (!broken_ && !outgoing_.empty()) return;
    finished_ = true;
    state_.end = broken_
                     ? grpc::Status(grpc::StatusCode::CANCELLED, "stream ended")
                     : grpc::Status::OK;
  }

  using Locked = ReactorLock<DeliverReactor>;

  Inbound* const inbound_;
  WorkQueue* const work_;
  std::string peer_identity_;
  grpc::ByteBuffer incoming_;  // used by the one outstanding read

  ReactorState state_;
  // Answers waiting to be written, and the one being written.
  std::deque<grpc::ByteBuffer> outgoing_ ABSL_GUARDED_BY(state_.mu);
  grpc::ByteBuffer written_ ABSL_GUARDED_BY(state_.mu);
  // Checked envelopes waiting to be stored, in the order they were checked.
  std::vector<Inbound::Checked> ready_ ABSL_GUARDED_BY(state_.mu);
  // Envelopes read and not yet answered, and the size of their requests.
  int pending_ ABSL_GUARDED_BY(state_.mu) = 0;
  size_t pending_bytes_ ABSL_GUARDED_BY(state_.mu) = 0;
  // No read is outstanding: too much is unanswered (RoomLocked).
  bool read_paused_ ABSL_GUARDED_BY(state_.mu) = false;
  bool accepting_ ABSL_GUARDED_BY(state_.mu) = false;  // AcceptReady is running
  bool writing_ ABSL_GUARDED_BY(state_.mu) = false;
  bool reads_done_ ABSL_GUARDED_BY(state_.mu) = false;
  bool broken_ ABSL_GUARDED_BY(state_.mu) = false;
  bool finished_ ABSL_GUARDED_BY(state_.mu) = false;
  bool admitting_ ABSL_GUARDED_BY(state_.mu) = true;
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
PeerServiceImpl::Deliver(grpc::CallbackServerContext* context) {
  auto* reactor = new DeliverReactor(inbound_, work_);
  handler_->Run(
      context, Action::kDeliver, "peer.deliver", "", {},
      [context, reactor,
       max_envelope = inbound_->max_envelope_bytes()](const Caller& caller) {
        context->AddInitialMetadata(kDeliverAdmittedMetadata, "1");
        context->AddInitialMetadata(kDeliverMaxEnvelopeMetadata,
                                    absl::StrCat(max_envelope));
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
