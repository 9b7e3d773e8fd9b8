#include "bench/exchange_bench_load.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace casebridge::bench {
namespace {

constexpr absl::string_view kBodyPrefix = "Benchmark message ";
// Deadline of each office call.
constexpr auto kCallDeadline = std::chrono::seconds(30);
// Failed office calls of one message before it is given up.
constexpr int kMaxFailures = 5;

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

// The request id a body names, or "" if it is not a benchmark message.
std::string KeyOf(absl::string_view body) {
  if (!absl::ConsumePrefix(&body, kBodyPrefix)) return "";
  const size_t end = body.find(". ");
  return std::string(body.substr(0, end));
}

}  // namespace

// --- Ledger ------------------------------------------------------------------

std::string Ledger::BodyFor(const std::string& key) const {
  std::string body = absl::StrCat(kBodyPrefix, key, ". ");
  constexpr absl::string_view kFiller =
      "Victim V1 reported seen near the bus station; family asks for a "
      "welfare check and an update on the shelter placement. ";
  while (body.size() < body_bytes_) {
    const absl::string_view part =
        kFiller.substr(0, std::min(kFiller.size(), body_bytes_ - body.size()));
    body.append(part.data(), part.size());
  }
  return body;
}

int Ledger::AddSender(std::shared_ptr<Sender> sender) {
  absl::MutexLock lock(&mu_);
  senders_.push_back(std::move(sender));
  return static_cast<int>(senders_.size()) - 1;
}

void Ledger::DropSenders() {
  absl::MutexLock lock(&mu_);
  for (auto& sender : senders_) sender.reset();
}

void Ledger::Register(SentMessage message) {
  absl::MutexLock lock(&mu_);
  ++phases_[message.phase].registered;
  std::string key = message.key;
  sent_.emplace(std::move(key), std::move(message));
}

void Ledger::Accepted(const std::string& key, const std::string& message_id,
                      absl::Time at) {
  absl::MutexLock lock(&mu_);
  auto it = sent_.find(key);
  if (it == sent_.end() || it->second.accepted) return;
  it->second.accepted = true;
  it->second.message_id = message_id;
  it->second.call_end = at;
  ++phases_[it->second.phase].accepted;
}

void Ledger::Failed(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = sent_.find(key);
  if (it == sent_.end()) return;
  it->second.failed = true;
  if (!it->second.arrived.has_value()) ++phases_[it->second.phase].settled;
}

void Ledger::CountError(const std::string& error) {
  absl::MutexLock lock(&mu_);
  if (errors_++ == 0) first_error_ = error;
}

void Ledger::OnInbox(const std::string& cursor,
                     const v1::CaseMessage& message) {
  const absl::Time now = absl::Now();
  std::shared_ptr<Sender> notify;
  {
    absl::MutexLock lock(&mu_);
    int64_t position = 0;
    if (!absl::SimpleAtoi(cursor, &position) || position <= last_cursor_) {
      ++cursor_regressions_;
    } else {
      last_cursor_ = position;
    }
    if (message.kind() == v1::MESSAGE_KIND_CASE_SHARE) {
      shares_.insert(message.exchange_id());
      return;
    }
    const std::string key = KeyOf(message.body());
    Arrival& arrival = arrivals_[message.message_id()];
    arrival.key = key;
    if (++arrival.count > 1) return;  // counted as a duplicate by Check
    auto it = key.empty() ? sent_.end() : sent_.find(key);
    if (it == sent_.end()) {
      if (absl::StartsWith(key, run_prefix_)) {
        ++unexpected_;
      } else {
        ++foreign_;
      }
      return;
    }
    SentMessage& sent = it->second;
    if (message.body() != BodyFor(key)) ++wrong_body_;
    if (sent.arrived.has_value()) {
      ++other_ids_;  // the same office call queued a second message
      return;
    }
    sent.arrived = now;
    if (sent.failed) return;
    ++phases_[sent.phase].settled;
    if (sent.slot >= 0 && static_cast<size_t>(sent.slot) < senders_.size()) {
      notify = senders_[static_cast<size_t>(sent.slot)];
    }
  }
  if (notify != nullptr) notify->OnArrived();
}

bool Ledger::WaitArrived(int phase, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto settled = [this, phase]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const PhaseCount& count = phases_[phase];
    return count.settled >= count.registered;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&settled), timeout);
}

bool Ledger::WaitShares(const std::set<std::string>& exchange_ids,
                        absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto all = [this, &exchange_ids]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const std::string& id : exchange_ids) {
      if (shares_.count(id) == 0) return false;
    }
    return true;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&all), timeout);
}

uint64_t Ledger::accepted(int phase) {
  absl::MutexLock lock(&mu_);
  return phases_[phase].accepted;
}

uint64_t Ledger::errors() {
  absl::MutexLock lock(&mu_);
  return errors_;
}

std::string Ledger::first_error() {
  absl::MutexLock lock(&mu_);
  return first_error_;
}

std::vector<SentMessage*> Ledger::AcceptedMessages() {
  absl::MutexLock lock(&mu_);
  std::vector<SentMessage*> out;
  out.reserve(sent_.size());
  for (auto& [key, sent] : sent_) {
    if (sent.accepted) out.push_back(&sent);
  }
  return out;
}

ExactlyOnce Ledger::Check() {
  absl::MutexLock lock(&mu_);
  ExactlyOnce result;
  for (const auto& [key, sent] : sent_) {
    if (!sent.accepted) {
      if (sent.failed) ++result.failed_sends;
      continue;
    }
    ++result.accepted;
    auto it = arrivals_.find(sent.message_id);
    const int count = it == arrivals_.end() ? 0 : it->second.count;
    if (count == 0) {
      ++result.lost;
    } else {
      if (count == 1) ++result.delivered;
      result.duplicated += static_cast<uint64_t>(count - 1);
    }
  }
  result.duplicated += other_ids_;
  result.unexpected = unexpected_;
  result.foreign = foreign_;
  result.wrong_body = wrong_body_;
  result.cursor_regressions = cursor_regressions_;
  return result;
}

// --- Sender ------------------------------------------------------------------

void Sender::Start() { TryIssue(); }

void Sender::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

void Sender::WaitIdle() {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !calling_ && !retry_.has_value();
  };
  mu_.Await(absl::Condition(&idle));
}

void Sender::OnArrived() {
  {
    absl::MutexLock lock(&mu_);
    --on_the_way_;
  }
  TryIssue();
}

void Sender::AddToken() {
  {
    absl::MutexLock lock(&mu_);
    tokens_ = 1;
  }
  TryIssue();
}

void Sender::TryIssue() {
  std::string key;
  v1::SendMessageRequest request;
  std::optional<SentMessage> fresh;
  {
    absl::MutexLock lock(&mu_);
    if (calling_) return;
    if (retry_.has_value()) {
      // An office call that failed is repeated with the same request id,
      // stopping or not: the gateway may have queued it already.
      key = retry_->first;
      request = retry_->second;
    } else {
      if (stopping_ || on_the_way_ >= options_.window) return;
      if (options_.paced && tokens_ == 0) return;
      if (options_.quota != nullptr && options_.quota->fetch_sub(1) <= 0) {
        stopping_ = true;
        return;
      }
      if (options_.paced) --tokens_;
      ++on_the_way_;
      const int64_t seq = next_seq_++;
      key = absl::StrCat(ledger_->run_prefix(), options_.phase, "-",
                         options_.id, "-", seq);
      request.set_request_id(key);
      v1::CaseMessage* m = request.mutable_message();
      m->set_exchange_id(
          options_.cases[static_cast<size_t>(seq) % options_.cases.size()]);
      m->set_kind(options_.kind);
      m->set_priority(options_.priority);
      m->set_recipient_office(options_.recipient_office);
      m->set_body(ledger_->BodyFor(key));
      fresh.emplace();
      fresh->key = key;
      fresh->phase = options_.phase;
      fresh->identity = options_.identity;
      fresh->priority = options_.priority;
    }
    calling_ = true;
  }
  if (fresh.has_value()) {
    fresh->slot = slot_;
    fresh->call_start = absl::Now();
    ledger_->Register(*std::move(fresh));
  }
  Issue(key, request);
}

void Sender::Issue(const std::string& key,
                   const v1::SendMessageRequest& request) {
  struct Call {
    grpc::ClientContext context;
    v1::SendMessageRequest request;
    v1::SendMessageResponse response;
    std::string key;
  };
  auto call = std::make_shared<Call>();
  call->request = request;
  call->key = key;
  call->context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  options_.stub->async()->SendMessage(
      &call->context, &call->request, &call->response,
      [self = shared_from_this(), call](const grpc::Status& status) {
        const absl::Time now = absl::Now();
        bool gave_up = false;
        if (status.ok()) {
          self->ledger_->Accepted(call->key, call->response.message_id(), now);
        } else {
          self->ledger_->CountError(
              absl::StrCat("SendMessage: ", status.error_code(), " ",
                           status.error_message()));
        }
        {
          absl::MutexLock lock(&self->mu_);
          self->calling_ = false;
          if (status.ok()) {
            self->retry_.reset();
            self->failures_ = 0;
          } else if (++self->failures_ < kMaxFailures) {
            self->retry_.emplace(call->key, call->request);
          } else {
            self->retry_.reset();
            self->failures_ = 0;
            --self->on_the_way_;
            gave_up = true;
          }
        }
        if (gave_up) self->ledger_->Failed(call->key);
        self->TryIssue();
      });
}

// --- InboxWatcher ------------------------------------------------------------

InboxWatcher::InboxWatcher(std::shared_ptr<grpc::Channel> channel,
                           Ledger* ledger)
    : stub_(v1::OfficeService::NewStub(std::move(channel))), ledger_(ledger) {}

InboxWatcher::~InboxWatcher() { Stop(); }

void InboxWatcher::Start() {
  thread_ = std::thread([this] { Run(); });
}

void InboxWatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

void InboxWatcher::Run() {
  std::string cursor;  // from the start of the inbox
  while (true) {
    grpc::ClientContext context;
    // While the gateway is away (restarting), wait for it rather than fail.
    context.set_wait_for_ready(true);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      context_ = &context;
    }
    v1::WatchInboxRequest request;
    request.set_cursor(cursor);
    auto reader = stub_->WatchInbox(&context, request);
    v1::WatchInboxResponse response;
    while (reader->Read(&response)) {
      cursor = response.cursor();
      ledger_->OnInbox(response.cursor(), response.message());
    }
    const grpc::Status status = reader->Finish();
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    if (stopping_) return;
    // The stream ended (the gateway stopped): resume after a pause.
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(50));
  }
}

// --- Delivery status ---------------------------------------------------------

namespace {

// Shared with the calls in flight, so the last completion may outlive Run.
class StatusCollector : public std::enable_shared_from_this<StatusCollector> {
 public:
  StatusCollector(const std::vector<SentMessage*>& messages,
                  const std::vector<v1::OfficeService::Stub*>& stubs,
                  const exchange::KeyRing& keys, std::string receiver,
                  size_t verify_every)
      : messages_(messages),
        stubs_(stubs),
        keys_(keys),
        receiver_(std::move(receiver)),
        verify_every_(verify_every == 0 ? 1 : verify_every) {}

  StatusSummary Run(int concurrency) {
    {
      absl::MutexLock lock(&mu_);
      lanes_ = concurrency;
    }
    for (int i = 0; i < concurrency; ++i) Next();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int* lanes) { return *lanes == 0; }, &lanes_));
    return summary_;
  }

 private:
  struct Call {
    grpc::ClientContext context;
    v1::GetDeliveryStatusRequest request;
    v1::GetDeliveryStatusResponse response;
    size_t index = 0;
  };

  void Next() {
    const size_t index = next_.fetch_add(1);
    if (index >= messages_.size()) {
      absl::MutexLock lock(&mu_);
      --lanes_;
      return;
    }
    Ask(index);
  }

  void Ask(size_t index) {
    SentMessage* m = messages_[index];
    auto call = std::make_shared<Call>();
    call->index = index;
    call->request.set_message_id(m->message_id);
    call->context.set_deadline(std::chrono::system_clock::now() +
                               kCallDeadline);
    stubs_[static_cast<size_t>(m->identity)]->async()->GetDeliveryStatus(
        &call->context, &call->request, &call->response,
        [self = shared_from_this(), call](const grpc::Status& status) {
          self->Done(*call, status);
        });
  }

  void Done(Call& call, const grpc::Status& status) {
    SentMessage* m = messages_[call.index];
    if (!status.ok()) {
      // Not retried here: the message stays without a status, and the
      // caller asks again in its next round, after a pause (the gateway
      // may be limiting the calls of one identity).
      absl::MutexLock lock(&mu_);
      ++summary_.asked;
      ++summary_.errors;
      Problem(absl::StrCat("GetDeliveryStatus ", m->message_id, ": ",
                           status.error_message()));
    } else {
      const v1::DeliveryStatus& s = call.response.status();
      m->state = s.state();
      m->queued_at = FromProto(s.queued_at());
      m->delivered_at = FromProto(s.delivered_at());
      m->has_receipt = s.has_receipt() && !s.receipt().receipt().empty();
      if (v1::Receipt r; m->has_receipt &&
                         r.ParseFromString(s.receipt().receipt()) &&
                         r.has_received_at()) {
        m->received_at = FromProto(r.received_at());
      }
      bool verified = false;
      std::string bad;
      if (m->delivered() && call.index % verify_every_ == 0) {
        auto receipt = exchange::VerifyReceipt(s.receipt(), keys_);
        if (!receipt.ok()) {
          bad = std::string(receipt.status().message());
        } else if (receipt->receiver_gateway() != receiver_ ||
                   receipt->envelope_id().empty() ||
                   receipt->envelope_sha256().size() != 32) {
          bad = "receipt does not name the receiver and an envelope";
        } else {
          verified = true;
        }
      }
      absl::MutexLock lock(&mu_);
      ++summary_.asked;
      if (verified) ++summary_.receipts_verified;
      if (!bad.empty()) {
        ++summary_.receipts_bad;
        Problem(absl::StrCat("receipt of ", m->message_id, ": ", bad));
      }
    }
    Next();
  }

  void Problem(std::string what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (summary_.first_problem.empty())
      summary_.first_problem = std::move(what);
  }

  const std::vector<SentMessage*> messages_;
  const std::vector<v1::OfficeService::Stub*> stubs_;
  const exchange::KeyRing& keys_;  // must outlive the calls: see Run
  const std::string receiver_;
  const size_t verify_every_;
  std::atomic<size_t> next_{0};

  absl::Mutex mu_;
  int lanes_ ABSL_GUARDED_BY(mu_) = 0;
  StatusSummary summary_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

StatusSummary CollectDeliveryStatus(
    const std::vector<SentMessage*>& messages,
    const std::vector<v1::OfficeService::Stub*>& stubs, int concurrency,
    const exchange::KeyRing& receiver_keys, const std::string& receiver_gateway,
    size_t verify_every) {
  auto collector = std::make_shared<StatusCollector>(
      messages, stubs, receiver_keys, receiver_gateway, verify_every);
  return collector->Run(concurrency);
}

}  // namespace casebridge::bench
