#include "client/office_client.h"

#include "absl/time/clock.h"
#include "core/grpc_status.h"
#include "core/status_macros.h"
#include "core/tls.h"

namespace casebridge::client {

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(
    const config::Client& config, grpc::ChannelArguments args) {
  tls::ChannelOptions options;
  options.cert_file = config.cert;
  options.key_file = config.key;
  options.ca_file = config.ca;
  options.expected_server_identity = config.gateway_identity;
  CB_ASSIGN_OR_RETURN(auto creds, tls::MakeChannelCredentials(options));
  // Fail fast with UNAVAILABLE instead of waiting out the deadline when the
  // gateway refuses us or is down.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
  return grpc::CreateCustomChannel(config.endpoint, creds, args);
}

OfficeClient::OfficeClient(
    std::unique_ptr<v1::OfficeService::StubInterface> office,
    std::unique_ptr<v1::AuditService::StubInterface> audit,
    std::unique_ptr<grpc::health::v1::Health::StubInterface> health,
    absl::Duration timeout)
    : office_(std::move(office)),
      audit_(std::move(audit)),
      health_(std::move(health)),
      timeout_(timeout) {}

absl::StatusOr<std::unique_ptr<OfficeClient>> OfficeClient::Create(
    const config::Client& config) {
  CB_ASSIGN_OR_RETURN(auto channel, Connect(config));
  return std::make_unique<OfficeClient>(
      v1::OfficeService::NewStub(channel), v1::AuditService::NewStub(channel),
      grpc::health::v1::Health::NewStub(channel),
      absl::Seconds(config.timeout_seconds));
}

void OfficeClient::Prepare(grpc::ClientContext& context) const {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
}

absl::StatusOr<v1::WhoAmIResponse> OfficeClient::WhoAmI() {
  grpc::ClientContext context;
  Prepare(context);
  v1::WhoAmIResponse response;
  CB_RETURN_IF_ERROR(FromGrpcStatus(
      office_->WhoAmI(&context, v1::WhoAmIRequest(), &response)));
  return response;
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus>
OfficeClient::Health(const std::string& service) {
  grpc::ClientContext context;
  Prepare(context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(health_->Check(&context, request, &response)));
  return response.status();
}

absl::StatusOr<v1::CaseReference> OfficeClient::OpenCase(
    const v1::CaseReference& draft, const std::string& request_id) {
  grpc::ClientContext context;
  Prepare(context);
  v1::OpenCaseRequest request;
  request.set_request_id(request_id);
  *request.mutable_case_reference() = draft;
  v1::OpenCaseResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(office_->OpenCase(&context, request, &response)));
  return std::move(*response.mutable_case_reference());
}

absl::StatusOr<v1::CaseReference> OfficeClient::GetCase(
    const std::string& exchange_id) {
  CB_ASSIGN_OR_RETURN(v1::GetCaseResponse response,
                      GetCaseResponse(exchange_id));
  return std::move(*response.mutable_case_reference());
}

absl::StatusOr<v1::GetCaseResponse> OfficeClient::GetCaseResponse(
    const std::string& exchange_id) {
  grpc::ClientContext context;
  Prepare(context);
  v1::GetCaseRequest request;
  request.set_exchange_id(exchange_id);
  v1::GetCaseResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(office_->GetCase(&context, request, &response)));
  return response;
}

absl::StatusOr<v1::ListCasesResponse> OfficeClient::ListCases(
    const v1::ListCasesRequest& request) {
  grpc::ClientContext context;
  Prepare(context);
  v1::ListCasesResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(office_->ListCases(&context, request, &response)));
  return response;
}

absl::StatusOr<v1::CaseReference> OfficeClient::UpdateCase(
    const v1::UpdateCaseRequest& request) {
  grpc::ClientContext context;
  Prepare(context);
  v1::UpdateCaseResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(office_->UpdateCase(&context, request, &response)));
  return std::move(*response.mutable_case_reference());
}

absl::StatusOr<v1::GetEntriesResponse> OfficeClient::GetAuditEntries(
    uint64_t start, int page_size) {
  grpc::ClientContext context;
  Prepare(context);
  v1::GetEntriesRequest request;
  request.set_start(start);
  request.set_page_size(page_size);
  v1::GetEntriesResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(audit_->GetEntries(&context, request, &response)));
  return response;
}

absl::StatusOr<std::string> OfficeClient::GetCheckpoint() {
  grpc::ClientContext context;
  Prepare(context);
  v1::GetCheckpointResponse response;
  CB_RETURN_IF_ERROR(FromGrpcStatus(
      audit_->GetCheckpoint(&context, v1::GetCheckpointRequest(), &response)));
  return std::move(*response.mutable_checkpoint());
}

absl::StatusOr<v1::EvidenceBundle> OfficeClient::GetEvidence(
    const std::string& id) {
  // The gateway asks the peer gateway for its half and waits up to 10 s for
  // it (server/evidence.cc): the call's deadline leaves room for that wait,
  // so that a slow peer is told as the gateway's reason, not as a deadline.
  constexpr absl::Duration kPeerWait = absl::Seconds(10);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_ + kPeerWait));
  v1::GetEvidenceRequest request;
  // Offices know their messages by message id ("PK-M-..."); envelope ids
  // ("PK-E-...") work too.
  if (id.find("-M-") != std::string::npos) {
    request.set_message_id(id);
  } else {
    request.set_envelope_id(id);
  }
  v1::GetEvidenceResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(audit_->GetEvidence(&context, request, &response)));
  return std::move(*response.mutable_bundle());
}

absl::StatusOr<v1::ShareCaseResponse> OfficeClient::ShareCase(
    const v1::ShareCaseRequest& request) {
  grpc::ClientContext context;
  Prepare(context);
  v1::ShareCaseResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(office_->ShareCase(&context, request, &response)));
  return response;
}

absl::StatusOr<v1::GrantDisseminationResponse> OfficeClient::GrantDissemination(
    const v1::GrantDisseminationRequest& request) {
  grpc::ClientContext context;
  Prepare(context);
  v1::GrantDisseminationResponse response;
  CB_RETURN_IF_ERROR(FromGrpcStatus(
      office_->GrantDissemination(&context, request, &response)));
  return response;
}

absl::StatusOr<v1::WithdrawDisseminationResponse>
OfficeClient::WithdrawDissemination(
    const v1::WithdrawDisseminationRequest& request) {
  grpc::ClientContext context;
  Prepare(context);
  v1::WithdrawDisseminationResponse response;
  CB_RETURN_IF_ERROR(FromGrpcStatus(
      office_->WithdrawDissemination(&context, request, &response)));
  return response;
}

absl::StatusOr<v1::ForwardCaseResponse> OfficeClient::ForwardCase(
    const v1::ForwardCaseRequest& request) {
  grpc::ClientContext context;
  Prepare(context);
  v1::ForwardCaseResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(office_->ForwardCase(&context, request, &response)));
  return response;
}

absl::StatusOr<v1::SendMessageResponse> OfficeClient::SendMessage(
    const v1::SendMessageRequest& request) {
  grpc::ClientContext context;
  Prepare(context);
  v1::SendMessageResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(office_->SendMessage(&context, request, &response)));
  return response;
}

absl::StatusOr<v1::DeliveryStatus> OfficeClient::GetDeliveryStatus(
    const std::string& message_id) {
  grpc::ClientContext context;
  Prepare(context);
  v1::GetDeliveryStatusRequest request;
  request.set_message_id(message_id);
  v1::GetDeliveryStatusResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(office_->GetDeliveryStatus(&context, request, &response)));
  return std::move(*response.mutable_status());
}

absl::StatusOr<v1::DeliveryStatus> OfficeClient::CancelMessage(
    const std::string& message_id, const std::string& reason) {
  grpc::ClientContext context;
  Prepare(context);
  v1::CancelMessageRequest request;
  request.set_message_id(message_id);
  request.set_reason(reason);
  v1::CancelMessageResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(office_->CancelMessage(&context, request, &response)));
  return std::move(*response.mutable_status());
}

absl::StatusOr<std::string> OfficeClient::Acknowledge(
    const std::string& message_id, v1::AcknowledgementKind kind,
    const std::string& note) {
  grpc::ClientContext context;
  Prepare(context);
  v1::AcknowledgeRequest request;
  request.set_message_id(message_id);
  request.set_kind(kind);
  request.set_note(note);
  v1::AcknowledgeResponse response;
  CB_RETURN_IF_ERROR(
      FromGrpcStatus(office_->Acknowledge(&context, request, &response)));
  return response.acknowledgement_id();
}

absl::Status OfficeClient::WatchInbox(
    const std::string& cursor, absl::Duration max_wait,
    const std::function<bool(const v1::WatchInboxResponse&)>& on_message,
    const WatchInterrupted& on_interrupted) {
  // Every stream carries a deadline; a watch without an end is a series of
  // streams of at most kMaxWatchStream each, resumed from the last cursor.
  constexpr absl::Duration kFirstBackoff = absl::Seconds(1);
  constexpr absl::Duration kMaxBackoff = absl::Seconds(30);
  const bool forever = max_wait == absl::InfiniteDuration();
  const absl::Time end =
      forever ? absl::InfiniteFuture() : absl::Now() + max_wait;
  std::string resume = cursor;
  absl::Duration backoff = kFirstBackoff;
  while (true) {
    grpc::ClientContext context;
    const absl::Time stream_end = std::min(end, absl::Now() + kMaxWatchStream);
    context.set_deadline(absl::ToChronoTime(stream_end));
    v1::WatchInboxRequest request;
    request.set_cursor(resume);
    auto reader = office_->WatchInbox(&context, request);
    v1::WatchInboxResponse response;
    bool stopped = false;
    while (reader->Read(&response)) {
      resume = response.cursor();
      backoff = kFirstBackoff;
      if (!on_message(response)) {
        stopped = true;
        context.TryCancel();
        break;
      }
    }
    const grpc::Status status = reader->Finish();
    if (stopped) return absl::OkStatus();
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      if (stream_end >= end) return absl::OkStatus();  // waited as asked
      continue;
    }
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        !on_interrupted) {
      return FromGrpcStatus(status);
    }
    const absl::Duration wait = std::min(backoff, end - absl::Now());
    // A watch whose time runs out while the gateway cannot be reached is no
    // success: messages may be waiting that it never saw.
    const absl::Status unreached = absl::UnavailableError(absl::StrCat(
        "the watch ended while the gateway could not be reached",
        resume.empty() ? ""
                       : absl::StrCat(" (resume after cursor ", resume, ")"),
        ": ", status.error_message()));
    if (wait <= absl::ZeroDuration()) return unreached;
    on_interrupted(FromGrpcStatus(status), resume, wait);
    absl::SleepFor(wait);
    if (absl::Now() >= end) return unreached;
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

}  // namespace casebridge::client
