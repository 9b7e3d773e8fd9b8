// The load of casebridge-bench: office clients sending messages to the PK
// gateway, the CN office's inbox stream that checks every message arrives
// exactly once, and the ledger that ties the two together
// (docs/performance.md#cross-border-exchange).
#ifndef CASEBRIDGE_BENCH_EXCHANGE_BENCH_LOAD_H_
#define CASEBRIDGE_BENCH_EXCHANGE_BENCH_LOAD_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "casebridge/v1/office.grpc.pb.h"
#include "core/envelope.h"

namespace casebridge::bench {

class Sender;

// One message sent by the benchmark, from the office call to what the
// origin gateway says about its delivery afterwards.
struct SentMessage {
  std::string key;  // request id; also written into the body
  int phase = 0;
  int slot = -1;     // the sender's slot in the ledger
  int identity = 0;  // index of the sending office's stub
  v1::Priority priority = v1::PRIORITY_ROUTINE;
  absl::Time call_start;   // the office call began (benchmark's clock)
  absl::Time call_end;     // the office got OK
  std::string message_id;  // set once accepted
  bool accepted = false;
  bool failed = false;                // given up after repeated errors
  std::optional<absl::Time> arrived;  // first seen on the CN inbox stream
  // From GetDeliveryStatus at the origin after the run.
  v1::DeliveryState state = v1::DELIVERY_STATE_UNSPECIFIED;
  absl::Time queued_at;     // the gateway accepted the office call
  absl::Time delivered_at;  // the gateway stored the peer's receipt
  bool has_receipt = false;
  // The receiver's received_at from the receipt: the moment it stored the
  // envelope (its clock; the same machine's here).
  std::optional<absl::Time> received_at;

  bool delivered() const {
    return has_receipt && (state == v1::DELIVERY_STATE_DELIVERED ||
                           state == v1::DELIVERY_STATE_ACKNOWLEDGED);
  }
};

// What the receiver saw, checked against what was sent.
struct ExactlyOnce {
  uint64_t accepted = 0;    // messages the origin accepted
  uint64_t delivered = 0;   // seen exactly once at the receiver
  uint64_t lost = 0;        // accepted, never seen at the receiver
  uint64_t duplicated = 0;  // extra copies seen (same or another message id)
  uint64_t unexpected = 0;  // seen with this run's prefix, never sent
  uint64_t foreign = 0;     // messages of other senders or earlier runs
  uint64_t wrong_body = 0;  // seen with a body other than the one sent
  uint64_t cursor_regressions = 0;  // an inbox cursor not above the last
  uint64_t failed_sends = 0;        // office calls given up
};

// Everything sent and everything received, by request id and message id.
// Thread-safe.
class Ledger {
 public:
  // Request ids of this run start with `run_prefix`; messages of earlier
  // runs on the same inbox are counted apart (foreign).
  Ledger(std::string run_prefix, size_t body_bytes)
      : run_prefix_(std::move(run_prefix)), body_bytes_(body_bytes) {}

  const std::string& run_prefix() const { return run_prefix_; }

  // The body the message with request id `key` carries.
  std::string BodyFor(const std::string& key) const;

  // Senders are told when their messages arrive; a slot is kept until
  // DropSenders.
  int AddSender(std::shared_ptr<Sender> sender);
  void DropSenders();

  void Register(SentMessage message);
  void Accepted(const std::string& key, const std::string& message_id,
                absl::Time at);
  void Failed(const std::string& key);
  void CountError(const std::string& error);

  // A message on the CN office's inbox stream.
  void OnInbox(const std::string& cursor, const v1::CaseMessage& message);

  // Waits until every message of `phase` that was accepted has arrived (or
  // failed), for up to `timeout`; whether they all did.
  bool WaitArrived(int phase, absl::Duration timeout);
  // Waits until the shares of all `exchange_ids` have arrived.
  bool WaitShares(const std::set<std::string>& exchange_ids,
                  absl::Duration timeout);

  uint64_t accepted(int phase);
  uint64_t errors();
  std::string first_error();

  // After the run: the messages, to be annotated with their delivery status.
  std::vector<SentMessage*> AcceptedMessages();
  ExactlyOnce Check();

 private:
  struct Arrival {
    int count = 0;
    std::string key;
  };
  struct PhaseCount {
    uint64_t registered = 0;
    uint64_t accepted = 0;
    uint64_t settled = 0;  // arrived or failed
  };

  const std::string run_prefix_;
  const size_t body_bytes_;
  absl::Mutex mu_;
  std::vector<std::shared_ptr<Sender>> senders_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, SentMessage> sent_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, Arrival> arrivals_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> shares_ ABSL_GUARDED_BY(mu_);  // exchange ids
  std::map<int, PhaseCount> phases_ ABSL_GUARDED_BY(mu_);
  int64_t last_cursor_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t unexpected_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t foreign_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t wrong_body_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t other_ids_ ABSL_GUARDED_BY(mu_) = 0;  // a key seen with a 2nd id
  uint64_t cursor_regressions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t errors_ ABSL_GUARDED_BY(mu_) = 0;
  std::string first_error_ ABSL_GUARDED_BY(mu_);
};

struct SenderOptions {
  int phase = 0;
  int id = 0;  // unique within the phase
  int identity = 0;
  v1::OfficeService::Stub* stub = nullptr;  // must outlive the sender
  std::vector<std::string> cases;           // exchange ids, used in turn
  std::string recipient_office;
  v1::Priority priority = v1::PRIORITY_ROUTINE;
  v1::MessageKind kind = v1::MESSAGE_KIND_NOTE;
  // Messages sent but not yet seen at the receiver, at most.
  int window = 1;
  // If set, a message may only be sent when a token is available
  // (AddToken); for a paced sender.
  bool paced = false;
  // If set, shared by several senders: each message takes one, and a
  // sender stops when none are left.
  std::atomic<int64_t>* quota = nullptr;
};

// One office client: one call at a time, and at most `window` messages on
// their way (sent, not yet seen on the receiver's inbox stream). The next
// call starts as soon as both allow it, from gRPC's callback threads.
class Sender : public std::enable_shared_from_this<Sender> {
 public:
  Sender(Ledger* ledger, SenderOptions options)
      : ledger_(ledger), options_(std::move(options)) {}

  // Its slot in the ledger (Ledger::AddSender), before Start.
  void set_slot(int slot) { slot_ = slot; }
  void Start();
  // No new messages from now on.
  void Stop();
  // Waits until no call is in progress.
  void WaitIdle();
  // One of its messages arrived at the receiver.
  void OnArrived();
  // For a paced sender: allows one more message (at most one is banked).
  void AddToken();

 private:
  void TryIssue();
  void Issue(const std::string& key, const v1::SendMessageRequest& request);

  Ledger* const ledger_;
  const SenderOptions options_;
  int slot_ = -1;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool calling_ ABSL_GUARDED_BY(mu_) = false;
  int on_the_way_ ABSL_GUARDED_BY(mu_) = 0;
  int tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  // A message whose call failed, to be sent again with the same request id.
  std::optional<std::pair<std::string, v1::SendMessageRequest>> retry_
      ABSL_GUARDED_BY(mu_);
  int failures_ ABSL_GUARDED_BY(mu_) = 0;  // of the current message
};

// Streams the CN office's inbox into the ledger, resuming from its last
// cursor whenever the stream ends (a gateway restart), until stopped.
class InboxWatcher {
 public:
  InboxWatcher(std::shared_ptr<grpc::Channel> channel, Ledger* ledger);
  ~InboxWatcher();
  void Start();
  void Stop();

 private:
  void Run();

  std::unique_ptr<v1::OfficeService::Stub> stub_;
  Ledger* const ledger_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_;
};

// Fills in the delivery status of `messages` from the origin gateway
// (GetDeliveryStatus, `concurrency` calls in flight), and verifies the
// receipt of every `verify_every`th delivered one with the receiver's keys.
struct StatusSummary {
  uint64_t asked = 0;
  uint64_t errors = 0;  // calls that failed (asked again in a later round)
  uint64_t receipts_verified = 0;
  uint64_t receipts_bad = 0;
  std::string first_problem;
};
StatusSummary CollectDeliveryStatus(
    const std::vector<SentMessage*>& messages,
    const std::vector<v1::OfficeService::Stub*>& stubs, int concurrency,
    const exchange::KeyRing& receiver_keys, const std::string& receiver_gateway,
    size_t verify_every);

}  // namespace casebridge::bench

#endif  // CASEBRIDGE_BENCH_EXCHANGE_BENCH_LOAD_H_
