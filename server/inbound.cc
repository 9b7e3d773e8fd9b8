#include "server/inbound.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/crypto.h"
#include "core/grpc_status.h"
#include "core/identity.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "server/handling.h"
#include "server/validation.h"

namespace casebridge::server {
namespace {

using google::protobuf::util::TimeUtil;

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(t));
}

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

}  // namespace

Inbound::Inbound(const config::Gateway* config, ExchangeStore* store,
                 AuditLog* audit, const exchange::KeyRing* peer_keys,
                 const crypto::Ed25519Signer* signer, const Clock* clock,
                 const PolicyHolder* policies)
    : config_(config),
      policies_(policies),
      store_(store),
      audit_(audit),
      peer_keys_(peer_keys),
      receipts_(*signer),
      clock_(clock),
      peer_country_(config->country == v1::COUNTRY_PK ? v1::COUNTRY_CN
                                                      : v1::COUNTRY_PK),
      refusal_audits_(
          CallLimiter::Options{
              .calls_per_second = static_cast<double>(
                  config->limits.peer_refusal_audits_per_second),
              .burst =
                  static_cast<double>(config->limits.peer_refusal_audit_burst),
              .rate_key = "limits.peer_refusal_audits_per_second",
              .refused = "envelopes refused",
              .beyond = " beyond limits.peer_refusal_audits_per_second"},
          clock) {}

size_t Inbound::max_envelope_bytes() const {
  return static_cast<size_t>(config_->limits.max_envelope_bytes);
}

bool Inbound::IsPermanent(const absl::Status& refusal) {
  // Malformed bytes never change. Otherwise marked where the check is made:
  // too large, a signature that does not verify, an envelope or message id
  // reused. Everything else (configuration: an unknown key, sender or
  // recipient office, destination; clock skew; this gateway's own storage
  // trouble, whatever its code) may be fixed: keep it coming.
  return refusal.code() == absl::StatusCode::kInvalidArgument ||
         exchange::IsMarkedPermanent(refusal);
}

absl::Status Inbound::CheckContent(const AccessPolicy& policy,
                                   const v1::Envelope& e) const {
  if (e.origin_gateway() != config_->peer_identity) {
    return absl::PermissionDeniedError(absl::StrCat(
        "origin_gateway: envelope claims to come from ",
        Quote(e.origin_gateway()), ", not ", config_->peer_identity));
  }
  if (e.destination_gateway() != config_->identity) {
    return absl::FailedPreconditionError(absl::StrCat(
        "destination_gateway: envelope is addressed to ",
        Quote(e.destination_gateway()), ", not ", config_->identity));
  }
  if (!IsValidId(e.envelope_id(), peer_country_, IdKind::kEnvelope)) {
    return absl::InvalidArgumentError(
        "envelope_id: not an envelope id of the peer's country");
  }
  if (!e.has_created_at()) {
    return absl::InvalidArgumentError("created_at: is required");
  }
  CB_RETURN_IF_ERROR(CheckTimestamp("created_at", e.created_at()));
  const absl::Duration ahead = FromProto(e.created_at()) - clock_->Now();
  const absl::Duration skew =
      absl::Seconds(config_->limits.max_clock_skew_seconds);
  if (ahead > skew) {
    return absl::FailedPreconditionError(
        absl::StrCat("created_at: envelope is ", absl::ToInt64Seconds(ahead),
                     " s ahead of this gateway's clock (limit ",
                     config_->limits.max_clock_skew_seconds, " s)"));
  }
  if (!e.has_message())
    return absl::InvalidArgumentError("message: is required");
  const v1::CaseMessage& m = e.message();
  if (!IsValidId(m.message_id(), peer_country_, IdKind::kMessage)) {
    return absl::InvalidArgumentError(
        "message.message_id: not a message id of the peer's country");
  }
  if (m.sender_country() != peer_country_) {
    return absl::InvalidArgumentError(
        "message.sender_country: is not the peer's country");
  }
  if (!policy.IsPeerOffice(m.sender_office())) {
    return absl::PermissionDeniedError(
        absl::StrCat("message.sender_office: ", Quote(m.sender_office()),
                     " is not among the peer offices this gateway accepts "
                     "(peer.offices)"));
  }
  if (!m.recipient_office().empty()) {
    // Ours, and allowed to read an inbox under the policy in force.
    const config::Office* office = policy.Find(m.recipient_office());
    if (office == nullptr || !policy.Allows(*office, Action::kWatchInbox)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "message.recipient_office: ", Quote(m.recipient_office()),
          " is not an office of this gateway that takes messages"));
    }
  }
  CB_RETURN_IF_ERROR(ValidateMessageContent(m, "message"));
  if (m.has_sent_at()) {
    CB_RETURN_IF_ERROR(CheckTimestamp("message.sent_at", m.sent_at()));
  }
  CB_RETURN_IF_ERROR(CheckMessageHandling(m, "message"));
  if ((m.kind() == v1::MESSAGE_KIND_DISSEMINATION_GRANT ||
       m.kind() == v1::MESSAGE_KIND_DISSEMINATION_WITHDRAWAL) &&
      m.exchange_id().substr(0, 3) !=
          absl::StrCat(CountryCode(peer_country_), "-")) {
    // Only the originator may permit passing a case on, or withdraw that.
    return absl::InvalidArgumentError(
        "message.dissemination_grant: only the peer's own cases can be granted "
        "(or withdrawn) by it");
  }
  if (m.kind() == v1::MESSAGE_KIND_CASE_SHARE) {
    const v1::CaseReference& c = m.case_reference();
    if (c.exchange_id() != m.exchange_id()) {
      return absl::InvalidArgumentError(
          "message.case_reference.exchange_id: differs from "
          "message.exchange_id");
    }
    if (c.origin_country() != peer_country_ ||
        c.exchange_id().substr(0, 3) !=
            absl::StrCat(CountryCode(peer_country_), "-")) {
      return absl::InvalidArgumentError(
          "message.case_reference: only the peer's own cases can be shared by "
          "it");
    }
    if (c.version() < 1) {
      return absl::InvalidArgumentError(
          "message.case_reference.version: is required");
    }
    if (!v1::CaseStatus_IsValid(c.status()) ||
        c.status() == v1::CASE_STATUS_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          "message.case_reference.status: is required");
    }
    CB_RETURN_IF_ERROR(ValidateSharedCase(c, "message.case_reference"));
    CB_RETURN_IF_ERROR(
        ValidatePeerRecordFields(c, peer_country_, "message.case_reference"));
    // Its times are the peer's record of the case, and its updated_at sets
    // when our retention purges it: none may lie ahead of our clock by more
    // than an envelope may (a case dated 9999 would never be purged).
    const absl::Time latest =
        clock_->Now() + absl::Seconds(config_->limits.max_clock_skew_seconds);
    for (const auto& [field, time] :
         {std::pair<const char*, const google::protobuf::Timestamp*>{
              "created_at", &c.created_at()},
          {"updated_at", &c.updated_at()}}) {
      if (FromProto(*time) > latest) {
        return absl::InvalidArgumentError(absl::StrCat(
            "message.case_reference.", field,
            ": is later than this "
            "gateway's clock allows (limits.max_clock_skew_seconds)"));
      }
    }
    // The case travels under its own code, which the message repeats.
    if (c.handling_code() != m.handling_code() ||
        c.handling_restriction() != m.handling_restriction()) {
      return absl::InvalidArgumentError(
          "message.handling_code: differs from the handling of "
          "message.case_reference");
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> Inbound::InboxOffices(const AccessPolicy& policy,
                                               const v1::CaseMessage& m) {
  // A permission to pass a case on goes in no inbox: an inbox entry would
  // itself show the case to that office (need-to-know). It is kept in the
  // store and audited; ForwardCase consults it. Its withdrawal likewise.
  if (m.kind() == v1::MESSAGE_KIND_DISSEMINATION_GRANT ||
      m.kind() == v1::MESSAGE_KIND_DISSEMINATION_WITHDRAWAL) {
    return {};
  }
  if (!m.recipient_office().empty()) return {m.recipient_office()};
  // Addressed to the country: the liaison desk(s) take it, or else the
  // supervisors and embassy officers; only offices that may watch an inbox.
  std::vector<std::string> offices;
  auto take = [&](std::initializer_list<v1::Role> roles) {
    for (const config::Office& o : policy.offices()) {
      if (std::find(roles.begin(), roles.end(), o.role) != roles.end() &&
          policy.Allows(o, Action::kWatchInbox)) {
        offices.push_back(o.identity);
      }
    }
  };
  take({v1::ROLE_LIAISON_OFFICER});
  if (offices.empty()) {
    take({v1::ROLE_SUPERVISOR, v1::ROLE_EMBASSY_OFFICER});
  }
  return offices;
}

v1::DeliverResponse Inbound::Receive(const std::string& peer_identity,
                                     const v1::DeliverRequest& request) {
  std::variant<Checked, v1::DeliverResponse> checked =
      Check(peer_identity, request);
  if (auto* refused = std::get_if<v1::DeliverResponse>(&checked)) {
    return std::move(*refused);
  }
  std::vector<Checked> batch;
  batch.push_back(std::move(std::get<Checked>(checked)));
  return std::move(Accept(std::move(batch))[0]);
}

std::variant<Inbound::Checked, v1::DeliverResponse> Inbound::Check(
    const std::string& peer_identity, v1::DeliverRequest request) {
  Checked checked;
  checked.sequence = request.sequence();
  checked.signed_envelope = std::move(*request.mutable_signed_envelope());
  const v1::SignedEnvelope& signed_envelope = checked.signed_envelope;

  AuditEvent& event = checked.event;
  event.actor = peer_identity;
  event.action = "envelope.received";
  // The entry commits to the sender's signature: non-repudiation of origin.
  event.payload = signed_envelope.signature();

  std::string envelope_id;  // echoed once it has the shape of an id
  const std::shared_ptr<const AccessPolicy> policy = policies_->Current();
  const absl::Status status = [&]() -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        checked.envelope,
        exchange::VerifyEnvelope(
            signed_envelope, *peer_keys_,
            static_cast<size_t>(config_->limits.max_envelope_bytes)));
    // Echoed only once it has the shape of an id (it goes into the answer
    // and the audit log).
    if (IsValidId(checked.envelope.envelope_id(), peer_country_,
                  IdKind::kEnvelope)) {
      envelope_id = checked.envelope.envelope_id();
    }
    return CheckContent(*policy, checked.envelope);
  }();
  if (status.ok()) {
    event.subjects = {checked.envelope.message().exchange_id()};
    checked.digest = exchange::EnvelopeDigest(signed_envelope);
    checked.inbox_offices = InboxOffices(*policy, checked.envelope.message());
    return checked;
  }
  v1::DeliverResponse response;
  response.set_sequence(checked.sequence);
  if (AnswerAsReplay(signed_envelope, status, &response)) return response;
  response.set_envelope_id(envelope_id);
  Refuse(status, std::move(event), &response);
  return response;
}

bool Inbound::AnswerAsReplay(const v1::SignedEnvelope& signed_envelope,
                             const absl::Status& checks_now,
                             v1::DeliverResponse* response) const {
  // Accepted before with these very bytes (its receipt lost with a stream,
  // or at a stop): answered with its receipt whatever the checks say now.
  // A configuration, key or rule changed since must not turn what was
  // delivered into a refusal, which the sender would hold its case back
  // for, or fail the messages waiting for the share with.
  v1::Envelope parsed;
  if (!parsed.ParseFromString(signed_envelope.envelope()) ||
      parsed.envelope_id().empty()) {
    return false;
  }
  const std::string& envelope_id = parsed.envelope_id();
  absl::StatusOr<std::optional<v1::SignedReceipt>> receipt = store_->ReceiptFor(
      envelope_id, exchange::EnvelopeDigest(signed_envelope));
  if (!receipt.ok()) {
    log::Error("envelope.replay_unreadable",
               {{"envelope_id", envelope_id},
                {"error", std::string(receipt.status().message())}});
    return false;  // the refusal stands
  }
  if (!receipt->has_value()) return false;
  UnderCurrentKey(envelope_id, &**receipt);
  response->set_envelope_id(envelope_id);
  *response->mutable_receipt() = **std::move(receipt);
  log::Info("envelope.replayed",
            {{"envelope_id", envelope_id},
             {"checks_now", std::string(checks_now.message())}});
  return true;
}

void Inbound::UnderCurrentKey(const std::string& envelope_id,
                              v1::SignedReceipt* receipt) const {
  if (receipt->key_id() == receipts_.key_id()) return;
  // Stored under a key rotated out since: the sender may trust it no
  // longer (peer.previous_envelope_keys end), and would refuse it and send
  // again for ever. The same receipt, signed again.
  absl::StatusOr<v1::SignedReceipt> again = receipts_.SignAgain(*receipt);
  if (again.ok()) {
    *receipt = *std::move(again);
    return;
  }
  log::Error("receipt.sign_again_failed",
             {{"envelope_id", envelope_id},
              {"error", std::string(again.status().message())}});
}

std::vector<v1::DeliverResponse> Inbound::Accept(std::vector<Checked> batch) {
  std::vector<InboundEnvelope> envelopes(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    envelopes[i].signed_envelope = &batch[i].signed_envelope;
    envelopes[i].parsed = &batch[i].envelope;
    envelopes[i].inbox_offices = std::move(batch[i].inbox_offices);
    envelopes[i].audit = batch[i].event;
    envelopes[i].held_audit.actor = config_->identity;
    envelopes[i].held_audit.action = "message.held_to_case";
  }
  std::vector<absl::StatusOr<InboundResult>> results =
      store_->AcceptInboundBatch(
          envelopes,
          [&](size_t i, uint64_t audit_index,
              absl::Time received_at) -> absl::StatusOr<v1::SignedReceipt> {
            v1::Receipt receipt;
            receipt.set_envelope_id(batch[i].envelope.envelope_id());
            receipt.set_envelope_sha256(batch[i].digest);
            *receipt.mutable_received_at() = ToProto(received_at);
            receipt.set_receiver_audit_index(audit_index);
            receipt.set_receiver_gateway(config_->identity);
            return receipts_.SignReceipt(receipt);
          });

  std::vector<v1::DeliverResponse> responses(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    v1::DeliverResponse& response = responses[i];
    response.set_sequence(batch[i].sequence);
    response.set_envelope_id(batch[i].envelope.envelope_id());
    absl::StatusOr<InboundResult>& result = results[i];
    if (result.ok() && result->replay) {
      UnderCurrentKey(batch[i].envelope.envelope_id(), &result->receipt);
    }
    if (result.ok()) {
      *response.mutable_receipt() = std::move(result->receipt);
      log::Info(result->replay ? "envelope.replayed" : "envelope.received",
                {{"envelope_id", response.envelope_id()}});
      if (result->held.has_value()) {
        const v1::CaseMessage& sent = batch[i].envelope.message();
        log::Info("envelope.held_to_case",
                  {{"envelope_id", response.envelope_id()},
                   {"message_id", sent.message_id()},
                   {"exchange_id", sent.exchange_id()},
                   {"sent_under", HandlingCodeName(sent.handling_code())},
                   {"case_under", HandlingCodeName(result->held->case_code)},
                   {"held_under", HandlingCodeName(result->held->held_code)}});
      }
      continue;
    }
    Refuse(result.status(), std::move(batch[i].event), &response);
  }
  return responses;
}

void Inbound::Refuse(const absl::Status& refusal, AuditEvent event,
                     v1::DeliverResponse* response) {
  v1::DeliveryRefusal* r = response->mutable_refusal();
  r->set_code(static_cast<int32_t>(refusal.code()));
  const bool internal = refusal.code() == absl::StatusCode::kInternal ||
                        refusal.code() == absl::StatusCode::kDataLoss ||
                        refusal.code() == absl::StatusCode::kUnknown;
  r->set_message(internal ? "internal error at the receiving gateway"
                          : ShownMessage(refusal));
  r->set_permanent(IsPermanent(refusal));
  // An envelope id reused with other bytes was audited (and kept as
  // evidence) by the store itself.
  const bool by_store = IsAuditedByStore(refusal);
  // The others are audited on their own while the bucket allows, else
  // counted into the burst's summary.
  CallLimiter::Decision decision;
  if (!by_store) decision = refusal_audits_.AdmitCall(event.actor);
  const bool on_its_own = decision.status.ok() || decision.audit;
  log::Write(
      on_its_own ? log::Level::kWarning : log::Level::kDebug,
      "envelope.refused",
      {{"envelope_id", response->envelope_id()},
       {"code", GrpcCodeName(static_cast<grpc::StatusCode>(refusal.code()))},
       {"reason", std::string(refusal.message())}});
  if (by_store || !on_its_own) return;
  event.outcome = absl::Status(refusal.code(), r->message());
  if (!response->envelope_id().empty()) {
    event.subjects.push_back(response->envelope_id());
  }
  AppendOrLog(*audit_, event);
  if (decision.status.ok()) EndRefusalBurst(event.actor);
}

void Inbound::EndRefusalBurst(const std::string& peer_identity) {
  refusal_audits_.Summarize(*audit_, peer_identity,
                            refusal_audits_.CloseBurst(peer_identity));
}

}  // namespace casebridge::server
