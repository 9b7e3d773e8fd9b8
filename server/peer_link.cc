#include "server/peer_link.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "core/status_mark.h"
#include "server/peer_service.h"
#include "server/write_priority.h"

namespace casebridge::server {
namespace {

constexpr absl::Duration kIdlePoll = absl::Seconds(1);
// How long a new stream waits for the peer's admission before its first
// round goes anyway (a peer from before kDeliverAdmittedMetadata says
// nothing until it answers).
constexpr absl::Duration kAdmissionWait = absl::Seconds(2);
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(200);
// After a record the database refused, before the recorder tries again.
constexpr absl::Duration kRecordRetryDelay = absl::Milliseconds(200);

}  // namespace

absl::Duration PeerLink::Backoff(int attempts, absl::Duration cap,
                                 double jitter) {
  const int doublings = std::clamp(attempts - 1, 0, 30);
  const absl::Duration full =
      std::min(cap, kFirstBackoff * std::pow(2.0, doublings));
  return full * std::clamp(jitter, 0.5, 1.0);
}

size_t PeerLink::UrgentReserve(size_t window) {
  return std::min<size_t>(8, window / 8);
}

std::unique_ptr<PeerLink> PeerLink::Start(const config::Gateway* config,
                                          ExchangeStore* store,
                                          const exchange::KeyRing* peer_keys,
                                          PeerChannel* channel,
                                          const Clock* clock) {
  std::unique_ptr<PeerLink> link(
      new PeerLink(config, store, peer_keys, clock, channel));
  link->thread_ = std::thread([raw = link.get()] { raw->Run(); });
  return link;
}

PeerLink::PeerLink(const config::Gateway* config, ExchangeStore* store,
                   const exchange::KeyRing* peer_keys, const Clock* clock,
                   PeerChannel* channel)
    : config_(config),
      store_(store),
      peer_keys_(peer_keys),
      clock_(clock),
      channel_(channel) {
  link_.since = clock_->Now();
  link_.error = absl::UnavailableError("not connected yet");
}

PeerLink::LinkState PeerLink::link_state() const {
  absl::MutexLock lock(&link_mu_);
  return link_;
}

std::string PeerLink::DownReason(const absl::Status& error) {
  if (HasMark(error, kPeerCertRefusedMark)) {
    return "this gateway refuses the peer gateway's certificate: it is "
           "revoked";
  }
  switch (error.code()) {
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return "the peer gateway refuses this gateway's connection";
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:  // torn down, e.g. the peer stopping
      return "the peer gateway cannot be reached";
    default:
      return absl::StrCat(
          "the link to the peer gateway failed (",
          GrpcCodeName(static_cast<grpc::StatusCode>(error.code())), ")");
  }
}

void PeerLink::set_on_link_change(std::function<void(bool up)> callback) {
  absl::MutexLock lock(&link_mu_);
  on_link_change_ = std::move(callback);
  if (on_link_change_) on_link_change_(link_.up);
}

void PeerLink::MarkUp() {
  absl::MutexLock lock(&link_mu_);
  if (link_.up) return;
  link_.up = true;
  link_.since = clock_->Now();
  link_.error = absl::OkStatus();
  log::Info("peer.link_up", {{"peer", config_->peer_endpoint}});
  if (on_link_change_) on_link_change_(true);
}

void PeerLink::MarkDown(absl::Status error) {
  absl::MutexLock lock(&link_mu_);
  const bool was_up = link_.up;
  if (was_up) link_.since = clock_->Now();
  link_.up = false;
  link_.error = std::move(error);
  if (was_up && on_link_change_) on_link_change_(false);
}

PeerLink::~PeerLink() { Stop(); }

void PeerLink::Wake() {
  absl::MutexLock lock(&mu_);
  woken_ = true;
}

void PeerLink::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

absl::Duration PeerLink::NextBackoff(int attempts) {
  double jitter = 1.0;
  {
    absl::MutexLock lock(&mu_);
    jitter = absl::Uniform(random_, 0.5, 1.0);
  }
  return Backoff(attempts, absl::Seconds(config_->limits.retry_max_seconds),
                 jitter);
}

AuditEvent PeerLink::Event(std::string action, const OutboxItem& item,
                           std::string payload, Ids ids) const {
  AuditEvent event;
  event.actor = config_->identity;
  event.action = std::move(action);
  event.subjects = {item.exchange_id};
  if (ids == Ids::kAll) {
    event.subjects.push_back(item.message_id);
    event.subjects.push_back(item.envelope_id);
  }
  event.payload = std::move(payload);
  return event;
}

void PeerLink::Run() {
  // The link's rounds move accepted envelopes along: they go ahead of new
  // office calls waiting for the writer.
  const ScopedWritePriority first(WritePriority::kFirst);
  int failures = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      stream_broken_ = false;
    }
    const absl::Time started = clock_->Now();
    RunStream();
    // A stream that lived a while was healthy: start backing off afresh.
    failures = clock_->Now() - started > absl::Seconds(10) ? 1 : failures + 1;
    const absl::Duration wait = NextBackoff(failures);
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait);
    if (stopping_) return;
  }
}

void PeerLink::RunStream() {
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    context_ = &context;
    reader_done_ = false;
    admitted_ = false;
    peer_max_envelope_ = 0;
  }
  // A stream keeps to the channel it started on: should the channel be
  // replaced (the peer's certificate revoked), the stream ends.
  const std::shared_ptr<grpc::Channel> channel = channel_->Get();
  const std::unique_ptr<v1::PeerService::Stub> stub =
      v1::PeerService::NewStub(channel);
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::DeliverRequest, v1::DeliverResponse>>
      stream = stub->Deliver(&context);
  std::thread reader([this, &context, raw = stream.get()] {
    const ScopedWritePriority first(WritePriority::kFirst);
    ReadResponses(&context, raw);
  });
  std::thread recorder([this] {
    const ScopedWritePriority first(WritePriority::kFirst);
    RecordAnswers();
  });

  // Nothing goes out before the peer admits the stream: on a stream that
  // fails to connect, or is refused at admission, every write would fail,
  // and envelopes never transmitted would be recorded as attempts (and,
  // the first time, audited as sent).
  {
    absl::MutexLock lock(&mu_);
    auto settled = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return admitted_ || stream_broken_ || stopping_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&settled), kAdmissionWait);
  }
  const auto window = static_cast<size_t>(config_->limits.delivery_window);
  const size_t routine_window = window - UrgentReserve(window);
  while (true) {
    if (channel_->Get() != channel) break;
    std::set<std::string> busy;
    size_t in_flight = 0;
    size_t peer_max = 0;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || stream_broken_) break;
      busy = busy_cases_;
      peer_max = peer_max_envelope_;
      // Attempts not yet recorded hold room too, those a record is writing
      // among them: should the records fail, the sender stops at a window's
      // worth instead of sending on.
      in_flight = std::max(in_flight_.size(),
                           attempts_.size() + attempts_writing_.size());
      woken_ = false;
    }
    const size_t room = window > in_flight ? window - in_flight : 0;
    std::vector<OutboxItem> ready;
    if (room > 0) {
      auto items = store_->ReadyToSend(clock_->Now(), room, busy);
      if (!items.ok()) {
        log::Error("outbox.read_failed",
                   {{"error", std::string(items.status().message())}});
      } else {
        ready = *std::move(items);
      }
    }
    // An envelope larger than the peer accepts would be refused for good
    // or, over the peer port's message size, end the stream each time it
    // went out, and with it the link for every case: it never goes.
    if (peer_max > 0) {
      std::erase_if(ready, [&](const OutboxItem& item) {
        if (item.signed_envelope.envelope().size() <= peer_max) return false;
        Withhold(item, peer_max);
        return true;
      });
    }
    // URGENT comes first; the others stop at the routine part of the window.
    size_t taken = 0;
    while (taken < ready.size() &&
           (ready[taken].priority == v1::PRIORITY_URGENT ||
            in_flight + taken < routine_window)) {
      ++taken;
    }
    ready.resize(taken);

    // Each envelope goes on the stream at once; its attempt (state SENT,
    // attempts + 1, due again at once should this process die, since a
    // restarted sender holds nothing in flight) and, on a first
    // transmission, its envelope.sent entry are recorded by the recorder
    // while the envelope travels, before any answer about it (Record).
    // Should this process die before that record, the outbox still holds
    // the envelope as due and never transmitted: it goes again, audited then.
    std::vector<v1::DeliverRequest> requests;
    requests.reserve(ready.size());
    if (!ready.empty()) {
      absl::MutexLock lock(&mu_);
      for (OutboxItem& item : ready) {
        ExchangeStore::Attempt& attempt = attempts_.emplace_back();
        attempt.envelope_id = item.envelope_id;
        if (item.attempts == 0) {
          attempt.sent =
              Event("envelope.sent", item, item.signed_envelope.signature());
        }
        v1::DeliverRequest& request = requests.emplace_back();
        request.set_sequence(next_sequence_++);
        *request.mutable_signed_envelope() = item.signed_envelope;
        request.set_priority(item.priority);
        busy_cases_.insert(item.exchange_id);
        ++item.attempts;
        in_flight_[request.sequence()] = InFlight{std::move(item)};
      }
    }
    bool write_failed = false;
    for (size_t i = 0; i < requests.size(); ++i) {
      // The round goes out in as few frames as gRPC likes; the last write
      // flushes it.
      grpc::WriteOptions options;
      if (i + 1 < requests.size()) options.set_buffer_hint();
      if (!stream->Write(requests[i], options)) {
        write_failed = true;
        break;
      }
    }
    absl::MutexLock lock(&mu_);
    if (write_failed) stream_broken_ = true;
    // Sleep until an answer frees room, something is queued, the stream
    // breaks or we stop; poll the outbox at least once a second (retries
    // come due by time).
    const size_t now_in_flight = in_flight_.size();
    auto progress = [this, now_in_flight]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || stream_broken_ || woken_ ||
             in_flight_.size() < now_in_flight;
    };
    mu_.AwaitWithTimeout(absl::Condition(&progress), kIdlePoll);
  }

  context.TryCancel();
  reader.join();  // marks the reader done: the recorder drains and returns
  recorder.join();
  // Attempts of the last rounds the recorder did not take: recorded before
  // the envelopes in flight are put back.
  Record({});
  const grpc::Status finished = stream->Finish();
  std::map<uint64_t, InFlight> orphans;
  {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    orphans.swap(in_flight_);
    busy_cases_.clear();
  }
  const absl::Status error = absl::UnavailableError(absl::StrCat(
      "peer link ended before a receipt came: ",
      GrpcCodeName(finished.error_code()), " ", finished.error_message()));
  // Due again at once: the link's own reconnect delay paces the retry, and
  // a per-envelope delay here would let due ROUTINE traffic overtake a
  // waiting URGENT envelope once the link is back.
  for (const auto& [sequence, in_flight] : orphans) {
    const absl::Status recorded =
        store_->RecordRetry(in_flight.item.envelope_id, error, clock_->Now());
    if (!recorded.ok()) {
      log::Error("outbox.record_failed",
                 {{"envelope_id", in_flight.item.envelope_id},
                  {"error", std::string(recorded.message())}});
    }
  }
  bool stopping = false;
  {
    absl::MutexLock lock(&mu_);
    stopping = stopping_;
  }
  if (stopping) return;  // the gateway's own stop: no link failure
  // Our refusal of the peer's certificate is why, whatever the stream's end
  // says (UNAVAILABLE for a refused handshake, CANCELLED for a channel
  // replaced under it).
  absl::Status refused = channel_->refusal();
  const absl::Status down =
      !refused.ok() ? std::move(refused)
      : finished.ok()
          ? absl::UnavailableError("the peer ended the stream")
          : absl::Status(static_cast<absl::StatusCode>(finished.error_code()),
                         finished.error_message());
  log::Warning(
      "peer.link_down",
      {{"peer", config_->peer_endpoint},
       {"code", GrpcCodeName(static_cast<grpc::StatusCode>(down.code()))},
       {"reason", std::string(down.message())}});
  MarkDown(down);
}

void PeerLink::ReadResponses(
    grpc::ClientContext* context,
    grpc::ClientReaderWriter<v1::DeliverRequest, v1::DeliverResponse>* stream) {
  // A refusal at admission ends the stream with its status and no such
  // metadata.
  stream->WaitForInitialMetadata();
  const auto& metadata = context->GetServerInitialMetadata();
  bool up = metadata.count(kDeliverAdmittedMetadata) > 0;
  size_t peer_max = 0;
  if (auto it = metadata.find(kDeliverMaxEnvelopeMetadata);
      it != metadata.end() &&
      !absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()),
                        &peer_max)) {
    peer_max = 0;
  }
  auto admitted = [this, peer_max] {
    MarkUp();
    absl::MutexLock lock(&mu_);
    admitted_ = true;
    peer_max_envelope_ = peer_max;
  };
  if (up) admitted();
  v1::DeliverResponse response;
  while (stream->Read(&response)) {
    // A peer from before the metadata answers all the same.
    if (!up) {
      admitted();
      up = true;
    }
    HandleResponse(std::move(response));
  }
  absl::MutexLock lock(&mu_);
  stream_broken_ = true;
  reader_done_ = true;
}

void PeerLink::Withhold(const OutboxItem& item, size_t peer_max) {
  const absl::Status status =
      exchange::Permanently(absl::ResourceExhaustedError(absl::StrCat(
          "not sent: the envelope is ", item.signed_envelope.envelope().size(),
          " bytes, more than the ", peer_max,
          " the peer gateway accepts (its limits.max_envelope_bytes)")));
  AuditEvent withheld =
      Event("envelope.withheld", item, item.signed_envelope.signature(),
            Ids::kStoreAddsThem);
  withheld.outcome = status;
  const absl::Status recorded =
      store_->RecordRefused(item.envelope_id, status, withheld);
  log::Warning("peer.envelope_too_large",
               {{"envelope_id", item.envelope_id},
                {"bytes", item.signed_envelope.envelope().size()},
                {"peer_max_envelope_bytes", peer_max}});
  if (!recorded.ok()) Retry(item, status);
}

void PeerLink::Retry(const OutboxItem& item, const absl::Status& error) {
  // The attempt was counted when it was sent.
  const absl::Status recorded = store_->RecordRetry(
      item.envelope_id, error, clock_->Now() + NextBackoff(item.attempts));
  if (!recorded.ok()) {
    log::Error("outbox.record_failed",
               {{"envelope_id", item.envelope_id},
                {"error", std::string(recorded.message())}});
  }
}

void PeerLink::HandleResponse(v1::DeliverResponse response) {
  Answer answer;
  {
    absl::MutexLock lock(&mu_);
    auto it = in_flight_.find(response.sequence());
    if (it == in_flight_.end()) {
      log::Warning("peer.unexpected_answer",
                   {{"sequence", response.sequence()}});
      return;
    }
    answer.item = std::move(it->second.item);
    // Left busy until the answer is recorded, so the next envelope of this
    // case cannot overtake it.
    in_flight_.erase(it);
  }
  answer.response = std::move(response);
  if (answer.item.priority == v1::PRIORITY_URGENT) {
    Check(answer);
    std::vector<Answer> urgent;
    urgent.push_back(std::move(answer));
    Record(urgent);
    return;
  }
  absl::MutexLock lock(&mu_);
  answers_.push_back(std::move(answer));
}

void PeerLink::Check(Answer& answer) const {
  if (!answer.response.has_receipt()) return;
  auto receipt =
      exchange::VerifyReceipt(answer.response.receipt(), *peer_keys_);
  if (!receipt.ok()) {
    answer.checked = receipt.status();
  } else {
    answer.checked = exchange::CheckReceiptMatches(
        *receipt, answer.item.signed_envelope, config_->peer_identity);
  }
}

bool PeerLink::Record(const std::vector<Answer>& answers) {
  ExchangeStore::Sending sending;
  {
    absl::MutexLock lock(&mu_);
    // An answer is recorded after the attempt of its envelope, never before
    // (a receipt stored first would leave the envelope.sent entry out):
    // wait while another record is writing one of these attempts, then
    // take every attempt waiting, theirs among them.
    auto attempts_ready = [this,
                           &answers]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return std::none_of(
          answers.begin(), answers.end(),
          [this](const Answer& answer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return attempts_writing_.contains(answer.item.envelope_id);
          });
    };
    mu_.Await(absl::Condition(&attempts_ready));
    sending.attempts.swap(attempts_);
    for (const ExchangeStore::Attempt& attempt : sending.attempts) {
      attempts_writing_.insert(attempt.envelope_id);
    }
  }
  sending.next_attempt = clock_->Now();
  // Verified receipts, stored with the attempts, each with its
  // receipt.stored entry.
  std::vector<const Answer*> delivered;
  for (const Answer& answer : answers) {
    if (!answer.response.has_receipt() || !answer.checked.ok()) continue;
    ExchangeStore::Delivery& delivery = sending.deliveries.emplace_back();
    delivery.envelope_id = answer.item.envelope_id;
    delivery.receipt = answer.response.receipt();
    delivery.audit =
        Event("receipt.stored", answer.item,
              answer.response.receipt().receipt(), Ids::kStoreAddsThem);
    delivered.push_back(&answer);
  }
  const auto recorded = store_->RecordSending(sending);
  {
    absl::MutexLock lock(&mu_);
    for (const ExchangeStore::Attempt& attempt : sending.attempts) {
      // Each was inserted by this record (above), so each is found.
      const auto it = attempts_writing_.find(attempt.envelope_id);
      if (it != attempts_writing_.end()) attempts_writing_.erase(it);
    }
    if (!recorded.ok()) {
      // The envelopes are on their way all the same: their attempts go with
      // the next record, still ahead of any answer about them.
      attempts_.insert(attempts_.begin(), sending.attempts.begin(),
                       sending.attempts.end());
    }
  }
  if (!recorded.ok()) {
    log::Error("outbox.record_failed",
               {{"envelopes", sending.attempts.size()},
                {"receipts", sending.deliveries.size()},
                {"error", std::string(recorded.status().message())}});
    // Nothing of these answers is recorded, and their envelopes' attempts
    // may not be yet: each envelope goes again after its backoff, and its
    // answer is recorded then.
    for (const Answer& answer : answers) Retry(answer.item, recorded.status());
  } else {
    for (size_t i = 0; i < sending.attempts.size(); ++i) {
      const absl::Status& status = recorded->attempts[i];
      if (status.ok()) continue;
      // Sent although no longer pending (delivered or refused meanwhile, or
      // purged): the peer answers it as a replay.
      log::Warning("outbox.attempt_not_recorded",
                   {{"envelope_id", sending.attempts[i].envelope_id},
                    {"error", std::string(status.message())}});
    }
    for (size_t i = 0; i < delivered.size(); ++i) {
      const absl::Status& status = recorded->deliveries[i];
      if (status.ok()) continue;
      const OutboxItem& item = delivered[i]->item;
      log::Error("outbox.record_failed",
                 {{"envelope_id", item.envelope_id},
                  {"error", std::string(status.message())}});
      Retry(item, status);
    }
    for (const Answer& answer : answers) {
      if (!answer.response.has_receipt()) {
        RecordRefusal(answer);
      } else if (!answer.checked.ok()) {
        log::Error("peer.bad_receipt",
                   {{"envelope_id", answer.item.envelope_id},
                    {"error", std::string(answer.checked.message())}});
        Retry(answer.item,
              absl::Status(
                  answer.checked.code(),
                  absl::StrCat("receipt refused: ", answer.checked.message())));
      }
    }
  }
  absl::MutexLock lock(&mu_);
  for (const Answer& answer : answers) {
    busy_cases_.erase(answer.item.exchange_id);
  }
  woken_ = true;  // the cases' next envelopes may go now
  return recorded.ok();
}

void PeerLink::RecordAnswers() {
  while (true) {
    std::vector<Answer> answers;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !answers_.empty() || !attempts_.empty() || reader_done_;
      };
      mu_.Await(absl::Condition(&ready));
      // The reader is done and every answer recorded: RunStream records
      // the attempts still waiting (also those of a record that failed, so
      // a failing database cannot keep this thread, and Stop, waiting).
      if (answers_.empty() && (attempts_.empty() || reader_done_)) return;
      answers.swap(answers_);
    }
    for (Answer& answer : answers) Check(answer);
    if (!Record(answers)) {
      // The database refused the record: try again a little later, not in
      // a tight loop.
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), kRecordRetryDelay);
    }
  }
}

absl::Status PeerLink::RefusalStatus(const v1::DeliveryRefusal& refusal) {
  const int32_t code = refusal.code();
  const bool an_error =
      code > 0 &&
      code <= static_cast<int32_t>(absl::StatusCode::kUnauthenticated);
  return absl::Status(
      an_error ? static_cast<absl::StatusCode>(code)
               : absl::StatusCode::kUnknown,
      absl::StrCat("peer refused: ", refusal.message(),
                   an_error ? "" : absl::StrCat(" (code ", code, ")")));
}

void PeerLink::RecordRefusal(const Answer& answer) {
  const OutboxItem& item = answer.item;
  const v1::DeliveryRefusal& refusal = answer.response.refusal();
  const absl::Status status = RefusalStatus(refusal);
  if (refusal.permanent()) {
    AuditEvent refused =
        Event("envelope.refused_by_peer", item,
              item.signed_envelope.signature(), Ids::kStoreAddsThem);
    refused.outcome = status;  // the peer's code and reason
    const absl::Status recorded =
        store_->RecordRefused(item.envelope_id, status, refused);
    if (!recorded.ok()) Retry(item, status);
  } else {
    Retry(item, status);
  }
  log::Warning("peer.refused", {{"envelope_id", item.envelope_id},
                                {"permanent", refusal.permanent()},
                                {"reason", refusal.message()}});
}

}  // namespace casebridge::server
