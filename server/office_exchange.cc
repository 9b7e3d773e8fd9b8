// OfficeService's exchange RPCs: ShareCase, SendMessage, WatchInbox,
// Acknowledge and GetDeliveryStatus (docs/exchange.md), and the handling-code
// RPCs GrantDissemination and ForwardCase (docs/api.md#handling-codes).
#include <deque>
#include <optional>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "server/handling.h"
#include "server/office_service.h"
#include "server/peer_link.h"
#include "server/reactor_lock.h"
#include "server/validation.h"
#include "server/write_priority.h"

namespace casebridge::server {
namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

// The idempotency key of a request: its request_id, and a digest of the
// request's type and whole content, so that a reuse with other content, or
// by another RPC whose request happens to encode alike, is told apart.
RequestKey KeyOf(const std::string& request_id,
                 const google::protobuf::Message& request) {
  if (request_id.empty()) return RequestKey{request_id, ""};
  return RequestKey{request_id, crypto::Sha256(absl::StrCat(
                                    request.GetDescriptor()->full_name(), "\n",
                                    DeterministicBytes(request)))};
}

absl::Status CheckRecipient(const AccessPolicy& policy,
                            const std::string& field,
                            const std::string& recipient) {
  if (recipient.empty()) return absl::OkStatus();
  if (!policy.IsPeerOffice(recipient)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field,
        ": not an office of the peer country known to this gateway "
        "(peer.offices; WhoAmI lists them)"));
  }
  return absl::OkStatus();
}

// Output-only fields of a message an office sends.
absl::Status CheckOutputOnly(const v1::CaseMessage& m) {
  if (!m.message_id().empty())
    return absl::InvalidArgumentError("message.message_id: is output only");
  if (!m.sender_office().empty())
    return absl::InvalidArgumentError("message.sender_office: is output only");
  if (m.sender_country() != v1::COUNTRY_UNSPECIFIED)
    return absl::InvalidArgumentError("message.sender_country: is output only");
  if (m.has_sent_at())
    return absl::InvalidArgumentError("message.sent_at: is output only");
  if (m.has_received_at())
    return absl::InvalidArgumentError("message.received_at: is output only");
  if (!m.handling_notice().empty())
    return absl::InvalidArgumentError(
        "message.handling_notice: is output only");
  return absl::OkStatus();
}

// WatchInbox: writes the office's inbox after the cursor, then every new
// message as it arrives. Reads run on the work queue; the stream waits for
// news by being poked by InboxWatchers, holding no thread.
class InboxStream final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  InboxStream(ExchangeStore* store, WorkQueue* work, InboxWatchers* watchers,
              const Clock* clock)
      : store_(store), work_(work), watchers_(watchers), clock_(clock) {}

  void Begin(std::string office, int64_t cursor) {
    // Lock order: the watchers' lock, then ours (pokes come with theirs
    // held), so registering happens before taking ours.
    handle_ = watchers_->Register([this] { Poke(); });
    Locked lock(this, &state_);
    office_ = std::move(office);
    cursor_ = cursor;
    started_ = true;
    admitting_ = false;
    if (finish_pending_) {  // cancelled while being admitted
      FinishLocked(pending_status_);
      return;
    }
    FetchLocked();
  }

  // Called instead of Begin when the caller is refused.
  void Refuse(const grpc::Status& status) {
    Locked lock(this, &state_);
    admitting_ = false;
    finish_pending_ = false;
    FinishLocked(status);
  }

  void OnWriteDone(bool ok) override {
    Locked lock(this, &state_);
    writing_ = false;
    if (ok) {
      // Written: its delivery is recorded even if the stream is ending.
      cursor_ = queue_.front().first;
      RecordDeliveryLocked(queue_.front().second_message_id);
      queue_.pop_front();
    }
    if (finish_pending_) {  // cancelled or refused while this write ran
      FinishLocked(pending_status_);
      return;
    }
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream broken"));
      return;
    }
    if (!queue_.empty()) {
      WriteNextLocked();
    } else {
      FetchLocked();  // more may have come, or a page was full
    }
  }

  void OnCancel() override {
    Locked lock(this, &state_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
  }

  void OnDone() override {
    if (handle_ != 0) watchers_->Unregister(handle_);
    // No fetch can be running: Finish waits for them (fetching_).
    delete this;
  }

 private:
  void Poke() {
    Locked lock(this, &state_);
    if (!started_) return;  // Begin fetches first anyway
    if (!writing_ && !fetching_)
      FetchLocked();
    else
      stale_ = true;
  }

  void FetchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu) {
    if (finished_ || finish_pending_ || fetching_) return;
    fetching_ = true;
    stale_ = false;
    const int64_t after = cursor_;
    const std::string office = office_;
    work_->Post([this, after, office] {
      auto items = store_->ReadInbox(office, after, 100);
      Locked lock(this, &state_);
      fetching_ = false;
      if (finish_pending_) {
        FinishLocked(pending_status_);  // waits for what still holds `this`
        return;
      }
      if (!items.ok()) {
        log::Error("inbox.read_failed",
                   {{"error", std::string(items.status().message())}});
        FinishLocked(
            grpc::Status(grpc::StatusCode::UNAVAILABLE,
                         "inbox could not be read; resume from your cursor"));
        return;
      }
      for (InboxItem& item : *items) {
        v1::WatchInboxResponse response;
        response.set_cursor(absl::StrCat(item.cursor));
        *response.mutable_message() = std::move(item.message);
        MarkHandling(response.mutable_message());
        grpc::ByteBuffer buffer;
        (void)SerializeToByteBuffer(response, &buffer);
        queue_.push_back(Pending{item.cursor, std::move(buffer),
                                 response.message().message_id()});
      }
      if (!queue_.empty()) {
        WriteNextLocked();
      } else if (stale_) {
        FetchLocked();
      }
    });
  }

  // "Delivered to office" is audited once per office and message. The
  // records are written on the work queue by one task at a time, each
  // transaction taking every message written meanwhile.
  void RecordDeliveryLocked(const std::string& message_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu) {
    to_record_.push_back(message_id);
    if (recording_) return;  // the running task takes it next
    recording_ = true;
    work_->Post([this] { RecordDeliveries(); });
  }

  void RecordDeliveries() {
    std::vector<std::string> message_ids;
    std::string office;
    while (true) {
      {
        Locked lock(this, &state_);
        if (to_record_.empty()) {
          recording_ = false;
          if (finish_pending_) FinishLocked(pending_status_);
          return;
        }
        message_ids.swap(to_record_);
        office = office_;
      }
      std::vector<InboxDelivery> deliveries(message_ids.size());
      for (size_t i = 0; i < message_ids.size(); ++i) {
        deliveries[i].message_id = message_ids[i];
        deliveries[i].audit.actor = office;
        deliveries[i].audit.action = "inbox.delivered";
        deliveries[i].audit.payload = message_ids[i];
      }
      const std::vector<absl::Status> recorded =
          store_->RecordInboxDeliveries(office, deliveries, clock_->Now());
      for (size_t i = 0; i < recorded.size(); ++i) {
        if (recorded[i].ok()) continue;
        log::Error("inbox.record_failed",
                   {{"message_id", message_ids[i]},
                    {"error", std::string(recorded[i].message())}});
      }
      message_ids.clear();
    }
  }

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu) {
    if (finished_ || finish_pending_ || writing_ || queue_.empty()) return;
    writing_ = true;
    StartWrite(&queue_.front().second);
  }

  void FinishLocked(const grpc::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu) {
    if (finished_) return;
    // Admission, a fetch, a delivery record or a write still holds `this`:
    // finish once they are done. (gRPC calls OnWriteDone after Finish if a
    // write is outstanding, and OnDone, which deletes `this`, as soon as
    // that returns: a delivery record it queued would outlive the stream.)
    if (admitting_ || fetching_ || recording_ || writing_) {
      finish_pending_ = true;
      pending_status_ = status;
      return;
    }
    finished_ = true;
    state_.end = status;  // Finish is called once the Locked scope ends
  }

  using Locked = ReactorLock<InboxStream>;

  ExchangeStore* const store_;
  WorkQueue* const work_;
  InboxWatchers* const watchers_;
  const Clock* const clock_;
  int handle_ = 0;

  ReactorState state_;
  std::string office_ ABSL_GUARDED_BY(state_.mu);
  int64_t cursor_ ABSL_GUARDED_BY(state_.mu) = 0;
  struct Pending {
    int64_t first;                  // cursor
    grpc::ByteBuffer second;        // the serialized response
    std::string second_message_id;  // for the delivery record
  };
  std::deque<Pending> queue_ ABSL_GUARDED_BY(state_.mu);
  // Written to the office, delivery not yet recorded.
  std::vector<std::string> to_record_ ABSL_GUARDED_BY(state_.mu);
  bool recording_ ABSL_GUARDED_BY(state_.mu) = false;  // RecordDeliveries runs
  bool started_ ABSL_GUARDED_BY(state_.mu) = false;
  bool admitting_ ABSL_GUARDED_BY(state_.mu) = true;
  bool writing_ ABSL_GUARDED_BY(state_.mu) = false;
  bool fetching_ ABSL_GUARDED_BY(state_.mu) = false;
  bool stale_ ABSL_GUARDED_BY(state_.mu) = false;
  bool finished_ ABSL_GUARDED_BY(state_.mu) = false;
  bool finish_pending_ ABSL_GUARDED_BY(state_.mu) = false;
  grpc::Status pending_status_ ABSL_GUARDED_BY(state_.mu);
};

}  // namespace

absl::StatusOr<OutgoingMessage> OfficeServiceImpl::Seal(const Caller& caller,
                                                        v1::CaseMessage message,
                                                        absl::Time now) {
  message.set_message_id(MintId(config_->country, IdKind::kMessage, now));
  message.set_sender_office(caller.identity);
  message.set_sender_country(config_->country);
  *message.mutable_sent_at() = ToProto(now);
  // Notices are made by the reader's gateway, never carried.
  message.clear_handling_notice();
  if (message.has_case_reference())
    message.mutable_case_reference()->clear_handling_notice();
  CB_RETURN_IF_ERROR(ValidateMessageContent(message, "message"));
  CB_RETURN_IF_ERROR(CheckMessageHandling(message, "message"));
  OutgoingMessage outgoing;
  outgoing.envelope_id = MintId(config_->country, IdKind::kEnvelope, now);
  outgoing.message = message;
  // Runs inside the store's transaction, once the audit index is known.
  outgoing.seal =
      [this, message, now, envelope_id = outgoing.envelope_id](
          uint64_t audit_index) -> absl::StatusOr<v1::SignedEnvelope> {
    v1::Envelope envelope;
    envelope.set_envelope_id(envelope_id);
    envelope.set_origin_gateway(config_->identity);
    envelope.set_destination_gateway(config_->peer_identity);
    *envelope.mutable_created_at() = ToProto(now);
    *envelope.mutable_message() = message;
    envelope.set_origin_audit_index(audit_index);
    CB_ASSIGN_OR_RETURN(
        v1::SignedEnvelope sealed,
        exchange::SignEnvelope(envelope, *exchange_.envelope_signer));
    if (sealed.envelope().size() >
        static_cast<size_t>(config_->limits.max_envelope_bytes)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("message: ", sealed.envelope().size(),
                       " bytes once sealed, more than the limit of ",
                       config_->limits.max_envelope_bytes));
    }
    return sealed;
  };
  return outgoing;
}

absl::StatusOr<QueuedMessage> OfficeServiceImpl::Queue(const Caller& caller,
                                                       v1::CaseMessage message,
                                                       const RequestKey& key,
                                                       AuditEvent event,
                                                       bool needs_shared_case) {
  const std::string exchange_id = message.exchange_id();
  CB_ASSIGN_OR_RETURN(OutgoingMessage outgoing,
                      Seal(caller, std::move(message), exchange_.clock->Now()));
  outgoing.needs_shared_case = needs_shared_case;
  event.subjects.insert(event.subjects.begin(), exchange_id);
  // An URGENT message waits for the writer ahead of other office calls.
  const ScopedWritePriority priority(outgoing.message.priority() ==
                                             v1::PRIORITY_URGENT
                                         ? WritePriority::kFirst
                                         : ScopedWritePriority::Current());
  CB_ASSIGN_OR_RETURN(QueuedMessage queued,
                      exchange_.store->QueueOutgoing(outgoing, key, event));
  if (!queued.replayed && exchange_.wake_sender) exchange_.wake_sender();
  return queued;
}

grpc::ServerUnaryReactor* OfficeServiceImpl::ShareCase(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::ShareCaseRequest, v1::ShareCaseResponse>(
      context, request, response, Action::kShareCase, "case.share",
      [](const v1::ShareCaseRequest& r) {
        return std::vector<std::string>{r.exchange_id()};
      },
      [this](const Incoming<v1::ShareCaseRequest>& in,
             v1::ShareCaseResponse* out) -> absl::Status {
        const v1::ShareCaseRequest& r = in.request;
        CB_RETURN_IF_ERROR(CheckRequestId("request_id", r.request_id()));
        CB_RETURN_IF_ERROR(CheckExchangeId("exchange_id", r.exchange_id()));
        if (r.recipient_offices_size() > 1) {
          return absl::InvalidArgumentError(
              "recipient_offices: at most one office for now; share once per "
              "office");
        }
        const std::string recipient =
            r.recipient_offices_size() == 1 ? r.recipient_offices(0) : "";
        CB_RETURN_IF_ERROR(CheckRecipient(*in.caller.policy,
                                          "recipient_offices[0]", recipient));
        CB_ASSIGN_OR_RETURN(v1::CaseReference c,
                            VisibleCase(in.caller, r.exchange_id()));
        if (c.origin_country() != config_->country) {
          return absl::FailedPreconditionError(
              absl::StrCat("case ", c.exchange_id(),
                           " came from the peer; only cases opened "
                           "on this side can be shared"));
        }
        if (c.owner_office() != in.caller.identity &&
            !in.caller.May(Action::kShareAnyCase)) {
          return absl::PermissionDeniedError(absl::StrCat(
              "case ", c.exchange_id(), " is owned by ", c.owner_office(),
              "; only its owner or a role granted ShareAnyCase may share it"));
        }
        v1::CaseMessage message;
        message.set_exchange_id(c.exchange_id());
        message.set_kind(v1::MESSAGE_KIND_CASE_SHARE);
        message.set_priority(v1::PRIORITY_PRIORITY);
        message.set_recipient_office(recipient);
        CB_RETURN_IF_ERROR(ApplyCaseHandling(c, &message));
        *message.mutable_case_reference() = c;
        const RequestKey key = KeyOf(r.request_id(), r);
        CB_ASSIGN_OR_RETURN(
            QueuedMessage queued,
            Queue(in.caller, std::move(message), key, in.Event("case.share")));
        out->set_message_id(queued.message_id);
        *out->mutable_status() = std::move(queued.status);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::SendMessage(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::SendMessageRequest, v1::SendMessageResponse>(
      context, request, response, Action::kSendMessage, "message.send",
      [](const v1::SendMessageRequest& r) {
        return std::vector<std::string>{r.message().exchange_id()};
      },
      [this](const Incoming<v1::SendMessageRequest>& in,
             v1::SendMessageResponse* out) -> absl::Status {
        const v1::SendMessageRequest& r = in.request;
        CB_RETURN_IF_ERROR(CheckRequestId("request_id", r.request_id()));
        if (!r.has_message())
          return absl::InvalidArgumentError("message: is required");
        const v1::CaseMessage& m = r.message();
        CB_RETURN_IF_ERROR(CheckOutputOnly(m));
        if (m.kind() == v1::MESSAGE_KIND_CASE_SHARE ||
            m.kind() == v1::MESSAGE_KIND_ACKNOWLEDGEMENT ||
            m.kind() == v1::MESSAGE_KIND_DISSEMINATION_GRANT ||
            m.kind() == v1::MESSAGE_KIND_DISSEMINATION_WITHDRAWAL) {
          return absl::InvalidArgumentError(
              "message.kind: CASE_SHARE, ACKNOWLEDGEMENT, "
              "DISSEMINATION_GRANT and DISSEMINATION_WITHDRAWAL are sent with "
              "ShareCase, Acknowledge, GrantDissemination and "
              "WithdrawDissemination");
        }
        CB_RETURN_IF_ERROR(ValidateMessageContent(m, "message"));
        CB_RETURN_IF_ERROR(CheckRecipient(*in.caller.policy,
                                          "message.recipient_office",
                                          m.recipient_office()));
        // The case must be known here (opened here, or shared by the peer)
        // and to the caller (need-to-know).
        CB_ASSIGN_OR_RETURN(v1::CaseReference c,
                            VisibleCase(in.caller, m.exchange_id()));
        // Every message crosses with a handling code and evaluation, never
        // weaker than its case's.
        v1::CaseMessage message = m;
        CB_RETURN_IF_ERROR(ApplyCaseHandling(c, &message));
        const RequestKey key = KeyOf(r.request_id(), r);
        // A message on one of our own cases follows the case's share; the
        // peer's cases are known to it.
        const bool own_case = c.origin_country() == config_->country;
        CB_ASSIGN_OR_RETURN(QueuedMessage queued,
                            Queue(in.caller, std::move(message), key,
                                  in.Event("message.send"), own_case));
        out->set_message_id(queued.message_id);
        *out->mutable_status() = std::move(queued.status);
        return absl::OkStatus();
      },
      SendsUrgent);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* OfficeServiceImpl::WatchInbox(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  auto* stream = new InboxStream(exchange_.store, exchange_.work,
                                 exchange_.watchers, exchange_.clock);
  const std::string bytes = ByteBufferToString(*request);
  handler_->Run(
      context, Action::kWatchInbox, "inbox.watch", bytes, {},
      [this, stream, bytes](const Caller& caller) -> absl::Status {
        v1::WatchInboxRequest r;
        CB_RETURN_IF_ERROR(ParseRequest(bytes, &r));
        CB_RETURN_IF_ERROR(CheckRequestFields(r));
        int64_t cursor = 0;
        // Cursors are issued in increasing order; one beyond the newest
        // would silently skip the messages to come until they passed it.
        // Past the in-memory head, the database decides (the head follows
        // each commit by a moment).
        bool issued = r.cursor().empty() ||
                      (absl::SimpleAtoi(r.cursor(), &cursor) && cursor >= 0);
        if (issued && cursor > exchange_.store->InboxHead()) {
          CB_ASSIGN_OR_RETURN(const int64_t newest,
                              exchange_.store->NewestInboxCursor());
          issued = cursor <= newest;
        }
        if (!issued) {
          return absl::InvalidArgumentError(
              "cursor: not a cursor this gateway issued (resume after the "
              "cursor of the last message received, or start without one)");
        }
        stream->Begin(caller.identity, cursor);
        return absl::OkStatus();
      },
      [stream](const grpc::Status& status) {
        if (!status.ok()) stream->Refuse(status);
      });
  return stream;
}

grpc::ServerUnaryReactor* OfficeServiceImpl::Acknowledge(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::AcknowledgeRequest, v1::AcknowledgeResponse>(
      context, request, response, Action::kAcknowledge, "message.acknowledge",
      [](const v1::AcknowledgeRequest& r) {
        return std::vector<std::string>{r.message_id()};
      },
      [this](const Incoming<v1::AcknowledgeRequest>& in,
             v1::AcknowledgeResponse* out) -> absl::Status {
        const v1::AcknowledgeRequest& r = in.request;
        if (r.message_id().empty()) {
          return absl::InvalidArgumentError("message_id: is required");
        }
        if (r.message_id().size() > 64) {
          return absl::InvalidArgumentError(
              "message_id: is longer than 64 characters");
        }
        if (!v1::AcknowledgementKind_IsValid(r.kind()) ||
            r.kind() == v1::ACKNOWLEDGEMENT_KIND_UNSPECIFIED) {
          return absl::InvalidArgumentError(
              "kind: is required (READ or ACTED)");
        }
        CB_RETURN_IF_ERROR(CheckText("note", r.note(), 0, 1000));
        const absl::Time now = exchange_.clock->Now();
        CB_ASSIGN_OR_RETURN(
            QueuedMessage queued,
            exchange_.store->AcknowledgeAndReply(
                in.caller.identity, r.message_id(), now,
                in.Event("message.acknowledge"),
                [&](const v1::CaseMessage& acknowledged)
                    -> absl::StatusOr<OutgoingMessage> {
                  // The acknowledgement goes back to the office that sent
                  // the message.
                  v1::CaseMessage ack;
                  ack.set_exchange_id(acknowledged.exchange_id());
                  ack.set_kind(v1::MESSAGE_KIND_ACKNOWLEDGEMENT);
                  ack.set_priority(acknowledged.priority());
                  ack.set_in_reply_to(acknowledged.message_id());
                  ack.set_recipient_office(acknowledged.sender_office());
                  // Handled as the message acknowledged.
                  ack.set_handling_code(acknowledged.handling_code());
                  ack.set_handling_restriction(
                      acknowledged.handling_restriction());
                  *ack.mutable_evaluation() = acknowledged.evaluation();
                  ack.set_body(absl::StrCat(
                      r.kind() == v1::ACKNOWLEDGEMENT_KIND_ACTED ? "Acted on"
                                                                 : "Read",
                      r.note().empty() ? "" : ": ", r.note()));
                  return Seal(in.caller, std::move(ack), now);
                },
                in.Event("message.send")));
        if (exchange_.wake_sender) exchange_.wake_sender();
        out->set_acknowledgement_id(queued.message_id);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::GetDeliveryStatus(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::GetDeliveryStatusRequest,
                         v1::GetDeliveryStatusResponse>(
      context, request, response, Action::kGetDeliveryStatus, "message.status",
      [](const v1::GetDeliveryStatusRequest& r) {
        return std::vector<std::string>{r.message_id()};
      },
      [this](const Incoming<v1::GetDeliveryStatusRequest>& in,
             v1::GetDeliveryStatusResponse* out) -> absl::Status {
        CB_ASSIGN_OR_RETURN(
            const v1::CaseMessage m,
            OutgoingMessageOf(in.caller, in.request.message_id(),
                              Action::kReadAnyDeliveryStatus));
        CB_ASSIGN_OR_RETURN(*out->mutable_status(),
                            exchange_.store->GetDeliveryStatus(m.message_id()));
        TellPeerLink(out->mutable_status());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::CancelMessage(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::CancelMessageRequest, v1::CancelMessageResponse>(
      context, request, response, Action::kSendMessage, "message.cancel",
      [](const v1::CancelMessageRequest& r) {
        return std::vector<std::string>{r.message_id()};
      },
      [this](const Incoming<v1::CancelMessageRequest>& in,
             v1::CancelMessageResponse* out) -> absl::Status {
        const v1::CancelMessageRequest& r = in.request;
        if (r.message_id().empty()) {
          return absl::InvalidArgumentError("message_id: is required");
        }
        CB_RETURN_IF_ERROR(
            CheckText("reason", r.reason(), 0, kMaxCancelReasonChars));
        // Its sender may withdraw a message, and a supervisor any of this
        // gateway's (CancelAnyMessage).
        CB_ASSIGN_OR_RETURN(const v1::CaseMessage m,
                            OutgoingMessageOf(in.caller, r.message_id(),
                                              Action::kCancelAnyMessage));
        const std::string why =
            r.reason().empty()
                ? absl::StrCat("cancelled by ", in.caller.identity)
                : absl::StrCat("cancelled by ", in.caller.identity, ": ",
                               r.reason());
        // A refusal names other offices' messages to a supervisor only.
        const std::optional<std::string> viewer =
            in.caller.May(Action::kCancelAnyMessage)
                ? std::nullopt
                : std::optional<std::string>(in.caller.identity);
        CB_RETURN_IF_ERROR(exchange_.store->CancelOutgoing(
            r.message_id(), why, viewer,
            in.Event("message.cancel", {m.exchange_id(), r.message_id()})));
        // The case's next message need not wait for the next round.
        if (exchange_.wake_sender) exchange_.wake_sender();
        absl::StatusOr<v1::DeliveryStatus> status =
            exchange_.store->GetDeliveryStatus(r.message_id());
        if (status.ok()) {
          *out->mutable_status() = *std::move(status);
          return absl::OkStatus();
        }
        // The cancel is committed: answered from what it wrote, not as an
        // error whose retry would be refused as "is cancelled".
        log::Error("message.status_unreadable",
                   {{"message_id", r.message_id()},
                    {"error", std::string(status.status().message())}});
        out->mutable_status()->set_message_id(r.message_id());
        out->mutable_status()->set_state(v1::DELIVERY_STATE_CANCELLED);
        out->mutable_status()->set_last_error(why);
        return absl::OkStatus();
      });
}

absl::StatusOr<v1::CaseMessage> OfficeServiceImpl::OutgoingMessageOf(
    const Caller& caller, const std::string& message_id,
    std::optional<Action> any_office) const {
  // Its head only: the body is neither needed nor unsealed to decide, so
  // another office's message whose body cannot be read is still NOT_FOUND.
  absl::StatusOr<v1::CaseMessage> m =
      exchange_.store->GetOutgoingHead(message_id);
  // Another office's message is answered as a missing one, so that message
  // ids cannot be probed; the audit entry of the refusal names the caller
  // and the id.
  if (m.ok() && m->sender_office() != caller.identity &&
      !(any_office.has_value() && caller.May(*any_office))) {
    return absl::NotFoundError(
        absl::StrCat("outgoing message ", message_id, " not found"));
  }
  return m;
}

void OfficeServiceImpl::TellPeerLink(v1::DeliveryStatus* status) const {
  if (exchange_.peer_link == nullptr ||
      (status->state() != v1::DELIVERY_STATE_QUEUED &&
       status->state() != v1::DELIVERY_STATE_SENT)) {
    return;
  }
  const PeerLink::LinkState link = exchange_.peer_link->link_state();
  if (link.up) return;
  *status->mutable_peer_link_down_since() = ToProto(link.since);
  status->set_peer_link_down_reason(PeerLink::DownReason(link.error));
}

absl::StatusOr<v1::CaseMessage> OfficeServiceImpl::DisseminationMessage(
    const Caller& caller, const std::string& request_id,
    const std::string& exchange_id,
    const google::protobuf::RepeatedPtrField<std::string>& offices,
    bool any_office, bool withdraw) {
  CB_RETURN_IF_ERROR(CheckRequestId("request_id", request_id));
  CB_RETURN_IF_ERROR(CheckExchangeId("exchange_id", exchange_id));
  if (any_office == (offices.size() > 0)) {
    return absl::InvalidArgumentError(
        "offices: name the counterpart offices, or set any_office "
        "(exactly one)");
  }
  if (static_cast<size_t>(offices.size()) > kMaxGrantOffices) {
    return absl::InvalidArgumentError(
        absl::StrCat("offices: at most ", kMaxGrantOffices, " entries"));
  }
  for (int i = 0; i < offices.size(); ++i) {
    const std::string field = absl::StrCat("offices[", i, "]");
    if (offices.Get(i).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": is empty"));
    }
    CB_RETURN_IF_ERROR(CheckRecipient(*caller.policy, field, offices.Get(i)));
  }
  CB_ASSIGN_OR_RETURN(v1::CaseReference c, VisibleCase(caller, exchange_id));
  const absl::string_view what =
      withdraw ? "withdraw a permission to pass it on" : "permit passing it on";
  // Only the originator gives permissions, so only it takes them back.
  if (c.origin_country() != config_->country) {
    return absl::FailedPreconditionError(
        absl::StrCat("case ", c.exchange_id(),
                     " came from the peer; only its originator can ", what));
  }
  if (c.owner_office() != caller.identity &&
      !caller.May(Action::kShareAnyCase)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "case ", c.exchange_id(), " is owned by ", c.owner_office(),
        "; only its owner or a role granted ShareAnyCase may ", what));
  }
  v1::CaseMessage message;
  message.set_exchange_id(c.exchange_id());
  message.set_kind(withdraw ? v1::MESSAGE_KIND_DISSEMINATION_WITHDRAWAL
                            : v1::MESSAGE_KIND_DISSEMINATION_GRANT);
  // Ahead of routine traffic: a permission is awaited, and the sooner a
  // withdrawal lands, the fewer copies are passed on meanwhile.
  message.set_priority(v1::PRIORITY_PRIORITY);
  v1::DisseminationGrant* grant = message.mutable_dissemination_grant();
  *grant->mutable_offices() = offices;
  grant->set_any_office(any_office);
  const std::string named = absl::StrJoin(offices.begin(), offices.end(), ", ");
  message.set_body(withdraw
                       ? absl::StrCat("Permission to pass case ",
                                      c.exchange_id(), " on withdrawn for ",
                                      any_office ? "every office" : named)
                       : absl::StrCat("Onward dissemination of case ",
                                      c.exchange_id(), " permitted to ",
                                      any_office ? "any office" : named));
  CB_RETURN_IF_ERROR(ApplyCaseHandling(c, &message));
  return message;
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* OfficeServiceImpl::DisseminationCall(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response, std::string action, bool withdraw) {
  return handler_->Unary<Request, Response>(
      context, request, response, Action::kGrantDissemination, action,
      [](const Request& r) {
        return std::vector<std::string>{r.exchange_id()};
      },
      [this, action, withdraw](const Incoming<Request>& in,
                               Response* out) -> absl::Status {
        const Request& r = in.request;
        CB_ASSIGN_OR_RETURN(
            v1::CaseMessage message,
            DisseminationMessage(in.caller, r.request_id(), r.exchange_id(),
                                 r.offices(), r.any_office(), withdraw));
        const RequestKey key = KeyOf(r.request_id(), r);
        CB_ASSIGN_OR_RETURN(
            QueuedMessage queued,
            Queue(in.caller, std::move(message), key, in.Event(action)));
        out->set_message_id(queued.message_id);
        *out->mutable_status() = std::move(queued.status);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::GrantDissemination(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return DisseminationCall<v1::GrantDisseminationRequest,
                           v1::GrantDisseminationResponse>(
      context, request, response, "case.grant", /*withdraw=*/false);
}

grpc::ServerUnaryReactor* OfficeServiceImpl::WithdrawDissemination(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  // Authorized as the grant it takes back.
  return DisseminationCall<v1::WithdrawDisseminationRequest,
                           v1::WithdrawDisseminationResponse>(
      context, request, response, "case.withdraw_grant", /*withdraw=*/true);
}

grpc::ServerUnaryReactor* OfficeServiceImpl::ForwardCase(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::ForwardCaseRequest, v1::ForwardCaseResponse>(
      context, request, response, Action::kForwardCase, "case.forward",
      [](const v1::ForwardCaseRequest& r) {
        return std::vector<std::string>{r.exchange_id(), r.office()};
      },
      [this](const Incoming<v1::ForwardCaseRequest>& in,
             v1::ForwardCaseResponse* out) -> absl::Status {
        const v1::ForwardCaseRequest& r = in.request;
        CB_RETURN_IF_ERROR(CheckExchangeId("exchange_id", r.exchange_id()));
        const config::Office* office = in.caller.policy->Find(r.office());
        if (office == nullptr ||
            !in.caller.policy->Allows(*office, Action::kWatchInbox)) {
          return absl::InvalidArgumentError(
              "office: not an office of this gateway that takes messages");
        }
        if (r.office() == in.caller.identity) {
          return absl::InvalidArgumentError("office: is the caller itself");
        }
        // The shares passed on are those received up to now: one that
        // arrives while the checks below run (a version marked H2, say)
        // was not checked, and stays behind.
        CB_ASSIGN_OR_RETURN(
            const int64_t through,
            exchange_.store->NewestShareReceived(r.exchange_id()));
        CB_ASSIGN_OR_RETURN(v1::CaseReference c,
                            VisibleCase(in.caller, r.exchange_id()));
        if (c.origin_country() == config_->country) {
          return absl::FailedPreconditionError(absl::StrCat(
              "case ", c.exchange_id(),
              " was opened on this side and is known to all its offices; only "
              "cases from the peer are forwarded"));
        }
        // Offices the originator addressed have it already; anyone else
        // needs the originator's permission for what is marked H2: the case
        // as it stands, and each older version marked H2 (which stays
        // behind when the case no longer is). A copy passed on before
        // (ForwardCase) is no addressing: once a permission is withdrawn,
        // newer versions do not follow it.
        CB_ASSIGN_OR_RETURN(const CaseAccess access,
                            cases_->AccessOf(c.exchange_id(), r.office()));
        bool may_pass_h2 = access == CaseAccess::kAddressed;
        if (!may_pass_h2) {
          CB_ASSIGN_OR_RETURN(may_pass_h2,
                              exchange_.store->DisseminationGranted(
                                  c.exchange_id(), r.office()));
        }
        if (c.handling_code() == v1::HANDLING_CODE_H2 && !may_pass_h2) {
          return absl::PermissionDeniedError(absl::StrCat(
              "handling code H2: case ", c.exchange_id(),
              " may not be passed on to ", r.office(),
              " without the originator's permission (no dissemination grant "
              "from ",
              c.owner_office(), ")"));
        }
        CB_ASSIGN_OR_RETURN(
            const int added,
            exchange_.store->ForwardCase(
                c.exchange_id(), r.office(), through, may_pass_h2,
                in.Event("case.forward", {c.exchange_id(), r.office()})));
        out->set_forwarded_messages(added);
        return absl::OkStatus();
      });
}

}  // namespace casebridge::server
