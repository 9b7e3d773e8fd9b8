#include "server/office_service.h"

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/crypto.h"
#include "core/status_macros.h"
#include "server/validation.h"

namespace casebridge::server {
namespace {

constexpr absl::string_view kUnimplementedExchange =
    "arrives with the cross-border exchange; not served by this gateway "
    "version";

// Finishes a server-streaming call with a status and nothing else.
class FinishOnlyWriter final
    : public grpc::ServerWriteReactor<v1::WatchInboxResponse> {
 public:
  void OnDone() override { delete this; }
};

std::string FilterFingerprint(const v1::ListCasesRequest& filters) {
  v1::ListCasesRequest copy = filters;
  copy.clear_page_size();
  copy.clear_page_token();
  return crypto::HexEncode(crypto::Sha256(DeterministicBytes(copy)).substr(0, 8));
}

}  // namespace

std::string EncodePageToken(int64_t position,
                            const v1::ListCasesRequest& filters) {
  std::string token;
  absl::WebSafeBase64Escape(
      absl::StrCat("v1:", position, ":", FilterFingerprint(filters)), &token);
  return token;
}

absl::StatusOr<int64_t> DecodePageToken(const std::string& token,
                                        const v1::ListCasesRequest& filters) {
  std::string raw;
  int64_t position = 0;
  if (!absl::WebSafeBase64Unescape(token, &raw)) {
    return absl::InvalidArgumentError("page_token: is not a token this gateway issued");
  }
  const std::vector<std::string> parts = absl::StrSplit(raw, ':');
  if (parts.size() != 3 || parts[0] != "v1" ||
      !absl::SimpleAtoi(parts[1], &position) || position < 0) {
    return absl::InvalidArgumentError("page_token: is not a token this gateway issued");
  }
  if (parts[2] != FilterFingerprint(filters)) {
    return absl::InvalidArgumentError(
        "page_token: was issued for other filters; repeat the same filters or "
        "start again without a token");
  }
  return position;
}

OfficeServiceImpl::OfficeServiceImpl(const config::Gateway* config,
                                     CallHandler* handler, CaseStore* cases,
                                     AuditLog* audit)
    : config_(config), handler_(handler), cases_(cases), audit_(audit) {}

grpc::ServerUnaryReactor* OfficeServiceImpl::WhoAmI(
    grpc::CallbackServerContext* context, const v1::WhoAmIRequest* request,
    v1::WhoAmIResponse* response) {
  return handler_->Unary(
      context, Action::kWhoAmI, "office.whoami", *request, {},
      [this, response](const Caller& caller) {
        response->set_identity(caller.identity);
        response->set_display_name(caller.office->display_name);
        response->set_role(caller.office->role);
        response->set_country(config_->country);
        response->set_gateway_identity(config_->identity);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::OpenCase(
    grpc::CallbackServerContext* context, const v1::OpenCaseRequest* request,
    v1::OpenCaseResponse* response) {
  return handler_->Unary(
      context, Action::kOpenCase, "case.open", *request, {},
      [this, request, response](const Caller& caller) -> absl::Status {
        CB_RETURN_IF_ERROR(ValidateOpenCase(*request));
        RequestKey key;
        key.request_id = request->request_id();
        if (!key.request_id.empty()) {
          key.request_hash = crypto::Sha256(DeterministicBytes(*request));
        }
        CB_ASSIGN_OR_RETURN(
            OpenedCase opened,
            cases_->OpenCase(request->case_reference(), caller.identity, key,
                             CallHandler::Event(caller, "case.open", *request)));
        if (opened.replayed) {
          // Not a change, but still a call worth a line in the log.
          CB_RETURN_IF_ERROR(
              audit_
                  ->Append(CallHandler::Event(
                      caller, "case.open.replayed", *request,
                      {opened.case_reference.exchange_id()}))
                  .status());
        }
        *response->mutable_case_reference() = std::move(opened.case_reference);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::GetCase(
    grpc::CallbackServerContext* context, const v1::GetCaseRequest* request,
    v1::GetCaseResponse* response) {
  return handler_->Unary(
      context, Action::kGetCase, "case.get", *request, {request->exchange_id()},
      [this, request, response](const Caller&) -> absl::Status {
        CB_RETURN_IF_ERROR(CheckExchangeId("exchange_id", request->exchange_id()));
        CB_ASSIGN_OR_RETURN(*response->mutable_case_reference(),
                            cases_->GetCase(request->exchange_id()));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::ListCases(
    grpc::CallbackServerContext* context, const v1::ListCasesRequest* request,
    v1::ListCasesResponse* response) {
  return handler_->Unary(
      context, Action::kListCases, "case.list", *request, {},
      [this, request, response](const Caller&) -> absl::Status {
        CB_RETURN_IF_ERROR(ValidateListCases(*request));
        int64_t after = 0;
        if (!request->page_token().empty()) {
          CB_ASSIGN_OR_RETURN(after,
                              DecodePageToken(request->page_token(), *request));
        }
        CaseFilter filter;
        filter.status = request->status();
        filter.category = request->category();
        filter.owner_office = request->owner_office();
        filter.text = request->text();
        const int page_size =
            request->page_size() == 0 ? kDefaultPageSize : request->page_size();
        CB_ASSIGN_OR_RETURN(CasePage page,
                            cases_->ListCases(filter, after, page_size));
        for (auto& c : page.cases) *response->add_cases() = std::move(c);
        if (page.has_more) {
          response->set_next_page_token(
              EncodePageToken(page.last_position, *request));
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::UpdateCase(
    grpc::CallbackServerContext* context, const v1::UpdateCaseRequest* request,
    v1::UpdateCaseResponse* response) {
  const std::string& id = request->case_reference().exchange_id();
  return handler_->Unary(
      context, Action::kUpdateCase, "case.update", *request, {id},
      [this, request, response, id](const Caller& caller) -> absl::Status {
        CB_RETURN_IF_ERROR(ValidateUpdateCase(*request));
        const v1::CaseReference& changes = request->case_reference();
        auto apply = [&](v1::CaseReference& c) -> absl::Status {
          if (c.owner_office() != caller.identity &&
              caller.office->role != v1::ROLE_SUPERVISOR) {
            return absl::PermissionDeniedError(absl::StrCat(
                "case ", id, " is owned by ", c.owner_office(),
                "; only its owner or a supervisor may update it"));
          }
          for (const std::string& path : request->update_mask().paths()) {
            if (path == "status") {
              CB_RETURN_IF_ERROR(CheckTransition(c.status(), changes.status()));
              c.set_status(changes.status());
            } else if (path == "summary") {
              c.set_summary(changes.summary());
            } else if (path == "local_reference") {
              c.set_local_reference(changes.local_reference());
            } else if (path == "victims") {
              *c.mutable_victims() = changes.victims();
            } else if (path == "last_known_locations") {
              *c.mutable_last_known_locations() = changes.last_known_locations();
            } else if (path == "handling_code") {
              c.set_handling_code(changes.handling_code());
            } else if (path == "handling_restriction") {
              c.set_handling_restriction(changes.handling_restriction());
            } else if (path == "evaluation") {
              *c.mutable_evaluation() = changes.evaluation();
            }
          }
          return ValidateCaseConsistency(c, "case_reference");
        };
        CB_ASSIGN_OR_RETURN(
            *response->mutable_case_reference(),
            cases_->UpdateCase(id, request->expected_version(), apply,
                               caller.identity,
                               CallHandler::Event(caller, "case.update",
                                                  *request, {id})));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::ShareCase(
    grpc::CallbackServerContext* context, const v1::ShareCaseRequest* request,
    v1::ShareCaseResponse* /*response*/) {
  return handler_->Unary(context, Action::kShareCase, "case.share", *request,
                         {request->exchange_id()}, [](const Caller&) {
                           return absl::UnimplementedError(
                               absl::StrCat("ShareCase ", kUnimplementedExchange));
                         });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::SendMessage(
    grpc::CallbackServerContext* context, const v1::SendMessageRequest* request,
    v1::SendMessageResponse* /*response*/) {
  return handler_->Unary(context, Action::kSendMessage, "message.send",
                         *request, {request->message().exchange_id()},
                         [](const Caller&) {
                           return absl::UnimplementedError(absl::StrCat(
                               "SendMessage ", kUnimplementedExchange));
                         });
}

grpc::ServerWriteReactor<v1::WatchInboxResponse>* OfficeServiceImpl::WatchInbox(
    grpc::CallbackServerContext* context, const v1::WatchInboxRequest* request) {
  auto* reactor = new FinishOnlyWriter();
  handler_->Run(context, Action::kWatchInbox, "inbox.watch",
                DeterministicBytes(*request), {},
                [](const Caller&) {
                  return absl::UnimplementedError(
                      absl::StrCat("WatchInbox ", kUnimplementedExchange));
                },
                [reactor](const grpc::Status& status) { reactor->Finish(status); });
  return reactor;
}

grpc::ServerUnaryReactor* OfficeServiceImpl::Acknowledge(
    grpc::CallbackServerContext* context, const v1::AcknowledgeRequest* request,
    v1::AcknowledgeResponse* /*response*/) {
  return handler_->Unary(context, Action::kAcknowledge, "message.acknowledge",
                         *request, {request->message_id()}, [](const Caller&) {
                           return absl::UnimplementedError(absl::StrCat(
                               "Acknowledge ", kUnimplementedExchange));
                         });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::GetDeliveryStatus(
    grpc::CallbackServerContext* context,
    const v1::GetDeliveryStatusRequest* request,
    v1::GetDeliveryStatusResponse* /*response*/) {
  return handler_->Unary(context, Action::kGetDeliveryStatus, "message.status",
                         *request, {request->message_id()}, [](const Caller&) {
                           return absl::UnimplementedError(absl::StrCat(
                               "GetDeliveryStatus ", kUnimplementedExchange));
                         });
}

}  // namespace casebridge::server
