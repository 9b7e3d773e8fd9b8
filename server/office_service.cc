#include "server/office_service.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/crypto.h"
#include "core/identity.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "server/case_listing.h"
#include "server/handling.h"
#include "server/validation.h"

namespace casebridge::server {
namespace {

// The owner's copy is the shared record; a local edit would be overwritten
// by (or hide) the owner's next share.
absl::Status PeerCaseUnchangeable(const std::string& id) {
  return absl::FailedPreconditionError(
      absl::StrCat("case ", id,
                   " was shared by the peer; only its owner's gateway "
                   "changes it"));
}

// Room a ListCases response keeps under limits.max_message_bytes for what
// it holds besides its cases (the page token, flags).
constexpr size_t kPageSlackBytes = 1024;

// Rows of the store one ListCases call looks at before its page ends short
// (ListingLimits::max_examined).
constexpr int64_t kMaxCasesExamined = 2000;

// Whether `c` passes `filter`'s conditions on its fields, as ListCases' SQL
// tests them (the visibility condition aside).
bool Matches(const v1::CaseReference& c, const CaseFilter& filter) {
  auto has = [&](const std::string& field) {
    return absl::StrContains(field, filter.text);
  };
  return (filter.status == v1::CASE_STATUS_UNSPECIFIED ||
          c.status() == filter.status) &&
         (filter.category == v1::CASE_CATEGORY_UNSPECIFIED ||
          c.category() == filter.category) &&
         (filter.owner_office.empty() ||
          c.owner_office() == filter.owner_office) &&
         (filter.text.empty() || has(c.exchange_id()) ||
          has(c.local_reference()) || has(c.summary()));
}

std::string FilterFingerprint(const v1::ListCasesRequest& filters) {
  v1::ListCasesRequest copy = filters;
  copy.clear_page_size();
  copy.clear_page_token();
  return crypto::HexEncode(
      crypto::Sha256(DeterministicBytes(copy)).substr(0, 8));
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
    return absl::InvalidArgumentError(
        "page_token: is not a token this gateway issued");
  }
  const std::vector<std::string> parts = absl::StrSplit(raw, ':');
  if (parts.size() != 3 || parts[0] != "v1" ||
      !absl::SimpleAtoi(parts[1], &position) || position < 0) {
    return absl::InvalidArgumentError(
        "page_token: is not a token this gateway issued");
  }
  if (parts[2] != FilterFingerprint(filters)) {
    return absl::InvalidArgumentError(
        "page_token: was issued for other filters; repeat the same filters or "
        "start again without a token");
  }
  return position;
}

absl::StatusOr<v1::CaseReference> OfficeServiceImpl::VisibleCase(
    const Caller& caller, const std::string& exchange_id) {
  CB_ASSIGN_OR_RETURN(v1::CaseReference c, cases_->GetCase(exchange_id));
  if (c.origin_country() == config_->country ||
      caller.May(Action::kReadAllCases)) {
    return c;
  }
  CB_ASSIGN_OR_RETURN(const CaseAccess access,
                      cases_->AccessOf(exchange_id, caller.identity));
  if (access == CaseAccess::kNone) {
    // The same answer as for a case that does not exist: need-to-know
    // includes knowing that the case is here at all.
    return absl::NotFoundError(
        absl::StrCat("case ", exchange_id, " not found"));
  }
  return AsGivenTo(caller.identity, std::move(c), access);
}

absl::StatusOr<v1::CaseReference> OfficeServiceImpl::AsGivenTo(
    const std::string& office, v1::CaseReference c,
    std::optional<CaseAccess> access) {
  if (c.origin_country() == config_->country ||
      c.handling_code() != v1::HANDLING_CODE_H2) {
    return c;
  }
  if (!access.has_value()) {
    CB_ASSIGN_OR_RETURN(access, cases_->AccessOf(c.exchange_id(), office));
  }
  if (*access == CaseAccess::kAddressed) return c;
  CB_ASSIGN_OR_RETURN(const bool granted, exchange_.store->DisseminationGranted(
                                              c.exchange_id(), office));
  if (granted) return c;
  CB_ASSIGN_OR_RETURN(std::optional<v1::CaseReference> given,
                      exchange_.store->NewestShareIn(c.exchange_id(), office));
  if (!given.has_value()) {
    // Retention purged every copy passed on to it: the office still knows
    // the case, by its ids and handling, and reads no version's content.
    v1::CaseReference known;
    known.set_exchange_id(c.exchange_id());
    known.set_origin_country(c.origin_country());
    known.set_owner_office(c.owner_office());
    known.set_handling_code(c.handling_code());
    known.set_handling_restriction(c.handling_restriction());
    *known.mutable_created_at() = c.created_at();
    return known;
  }
  if (given->version() >= c.version()) return c;
  given->set_handling_code(c.handling_code());
  given->set_handling_restriction(c.handling_restriction());
  if (c.has_personal_data_purged_at()) {
    given->clear_victims();
    given->clear_last_known_locations();
    *given->mutable_personal_data_purged_at() = c.personal_data_purged_at();
  }
  return *std::move(given);
}

bool OfficeServiceImpl::HasPersonalData(const v1::CaseReference& c) {
  return !c.last_known_locations().empty() ||
         std::any_of(
             c.victims().begin(), c.victims().end(),
             [](const v1::VictimReference& v) { return !v.remarks().empty(); });
}

bool OfficeServiceImpl::ReleasePersonalData(const Caller& caller,
                                            v1::CaseReference* c,
                                            std::vector<std::string>* read) {
  if (!HasPersonalData(*c)) return true;
  if (caller.May(Action::kReadPersonalData)) {
    read->push_back(c->exchange_id());
    return true;
  }
  for (v1::VictimReference& v : *c->mutable_victims()) v.clear_remarks();
  c->clear_last_known_locations();
  return false;
}

template <typename Request>
absl::Status OfficeServiceImpl::AuditPersonalRead(
    const Incoming<Request>& in, const std::string& action,
    const std::vector<std::string>& exchange_ids) {
  // Recorded before the answer leaves: no audit entry, no personal data.
  // An entry names at most audit::kMaxSubjects ids (a ListCases page holds
  // up to 500 cases): one entry for each that many.
  for (size_t i = 0; i < exchange_ids.size(); i += audit::kMaxSubjects) {
    const size_t end = std::min(exchange_ids.size(), i + audit::kMaxSubjects);
    CB_RETURN_IF_ERROR(
        audit_
            ->Append(in.Event(
                action, std::vector<std::string>(exchange_ids.begin() + i,
                                                 exchange_ids.begin() + end)))
            .status());
  }
  return absl::OkStatus();
}

OfficeServiceImpl::OfficeServiceImpl(const config::Gateway* config,
                                     CallHandler* handler, CaseStore* cases,
                                     AuditLog* audit, Exchange exchange)
    : config_(config),
      handler_(handler),
      cases_(cases),
      audit_(audit),
      exchange_(std::move(exchange)) {}

grpc::ServerUnaryReactor* OfficeServiceImpl::WhoAmI(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::WhoAmIRequest, v1::WhoAmIResponse>(
      context, request, response, Action::kWhoAmI, "office.whoami", nullptr,
      [this](const Incoming<v1::WhoAmIRequest>& in, v1::WhoAmIResponse* out) {
        out->set_identity(in.caller.identity);
        out->set_display_name(in.caller.office->display_name);
        out->set_role(in.caller.office->role);
        for (Action a :
             in.caller.policy->roles().ActionsOf(in.caller.office->role)) {
          out->add_allowed_actions(ActionName(a));
        }
        out->set_policy_digest(in.caller.policy->digest());
        for (const std::string& office : in.caller.policy->peer_offices()) {
          out->add_peer_offices(office);
        }
        out->set_country(config_->country);
        out->set_gateway_identity(config_->identity);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::OpenCase(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::OpenCaseRequest, v1::OpenCaseResponse>(
      context, request, response, Action::kOpenCase, kCaseOpenAction, nullptr,
      [this](const Incoming<v1::OpenCaseRequest>& in,
             v1::OpenCaseResponse* out) -> absl::Status {
        CB_RETURN_IF_ERROR(ValidateOpenCase(in.request));
        RequestKey key;
        key.request_id = in.request.request_id();
        if (!key.request_id.empty()) {
          // Over the parsed request: a retry from another client library
          // may encode the same request differently.
          key.request_hash = crypto::Sha256(DeterministicBytes(in.request));
        }
        CB_ASSIGN_OR_RETURN(
            OpenedCase opened,
            cases_->OpenCase(in.request.case_reference(), in.caller.identity,
                             key, in.Event(kCaseOpenAction)));
        if (opened.replayed) {
          // Not a change, but still a call worth a line in the log.
          CB_RETURN_IF_ERROR(
              audit_
                  ->Append(in.Event(kCaseOpenReplayedAction,
                                    {opened.case_reference.exchange_id()}))
                  .status());
        }
        *out->mutable_case_reference() = std::move(opened.case_reference);
        MarkHandling(out->mutable_case_reference());
        if (!opened.replayed) return absl::OkStatus();
        // A replay answers with the case as stored now, which may hold
        // personal data added since by others.
        std::vector<std::string> personal;
        ReleasePersonalData(in.caller, out->mutable_case_reference(),
                            &personal);
        return AuditPersonalRead(in, kCaseOpenPersonalDataAction, personal);
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::GetCase(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::GetCaseRequest, v1::GetCaseResponse>(
      context, request, response, Action::kGetCase, "case.get",
      [](const v1::GetCaseRequest& r) {
        return std::vector<std::string>{r.exchange_id()};
      },
      [this](const Incoming<v1::GetCaseRequest>& in,
             v1::GetCaseResponse* out) -> absl::Status {
        CB_RETURN_IF_ERROR(
            CheckExchangeId("exchange_id", in.request.exchange_id()));
        CB_ASSIGN_OR_RETURN(*out->mutable_case_reference(),
                            VisibleCase(in.caller, in.request.exchange_id()));
        std::vector<std::string> personal;
        out->set_personal_data_withheld(!ReleasePersonalData(
            in.caller, out->mutable_case_reference(), &personal));
        MarkHandling(out->mutable_case_reference());
        return AuditPersonalRead(in, "case.get.personal_data", personal);
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::ListCases(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::ListCasesRequest, v1::ListCasesResponse>(
      context, request, response, Action::kListCases, "case.list", nullptr,
      [this](const Incoming<v1::ListCasesRequest>& in,
             v1::ListCasesResponse* out) -> absl::Status {
        const v1::ListCasesRequest& r = in.request;
        CB_RETURN_IF_ERROR(ValidateListCases(r));
        int64_t after = 0;
        if (!r.page_token().empty()) {
          CB_ASSIGN_OR_RETURN(after, DecodePageToken(r.page_token(), r));
        }
        CaseFilter filter;
        filter.status = r.status();
        filter.category = r.category();
        filter.owner_office = r.owner_office();
        filter.text = r.text();
        if (!in.caller.May(Action::kReadAllCases)) {
          filter.visible_to_office = in.caller.identity;
          filter.own_prefix = absl::StrCat(CountryCode(config_->country), "-");
          filter.peer_fields_unfiltered = true;
        }
        const int page_size =
            r.page_size() == 0 ? kDefaultPageSize : r.page_size();
        // The store gives the visible peer cases whatever their fields; each
        // is tested here on the version the caller's office may read, so
        // that neither the page nor its token depends on a version held
        // back from it. A page also ends before its response would pass
        // limits.max_message_bytes (gRPC would refuse to send it), and
        // after a bounded number of rows looked at: the token continues
        // from there.
        ListingLimits limits;
        limits.page_size = page_size;
        limits.max_bytes =
            static_cast<size_t>(config_->limits.max_message_bytes) -
            kPageSlackBytes;
        limits.max_examined = kMaxCasesExamined;
        CB_ASSIGN_OR_RETURN(
            Listing listing,
            AssembleListing(
                after, limits,
                [&](int64_t from, int max) {
                  return cases_->ListCases(filter, from, max);
                },
                [&](v1::CaseReference c) -> std::optional<v1::CaseReference> {
                  if (filter.peer_fields_unfiltered &&
                      c.origin_country() != config_->country) {
                    const std::string id = c.exchange_id();
                    absl::StatusOr<v1::CaseReference> given =
                        AsGivenTo(in.caller.identity, std::move(c));
                    if (!given.ok()) {
                      // One copy that does not open must not hide the
                      // others: GetCase on it says what is wrong.
                      log::Error(
                          "case.list.unreadable",
                          {{"exchange_id", id},
                           {"error", std::string(given.status().message())}});
                      return std::nullopt;
                    }
                    if (!Matches(*given, filter)) return std::nullopt;
                    c = *std::move(given);
                  }
                  MarkHandling(&c);
                  return c;
                }));
        std::vector<v1::CaseReference>& cases = listing.cases;
        std::vector<std::string> personal;
        bool withheld = false;
        for (auto& c : cases) {
          withheld |= !ReleasePersonalData(in.caller, &c, &personal);
          *out->add_cases() = std::move(c);
        }
        out->set_personal_data_withheld(withheld);
        if (listing.next_after.has_value()) {
          out->set_next_page_token(EncodePageToken(*listing.next_after, r));
        }
        return AuditPersonalRead(in, "case.list.personal_data", personal);
      });
}

grpc::ServerUnaryReactor* OfficeServiceImpl::UpdateCase(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return handler_->Unary<v1::UpdateCaseRequest, v1::UpdateCaseResponse>(
      context, request, response, Action::kUpdateCase, kCaseUpdateAction,
      [](const v1::UpdateCaseRequest& r) {
        return std::vector<std::string>{r.case_reference().exchange_id()};
      },
      [this](const Incoming<v1::UpdateCaseRequest>& in,
             v1::UpdateCaseResponse* out) -> absl::Status {
        const v1::UpdateCaseRequest& r = in.request;
        CB_RETURN_IF_ERROR(ValidateUpdateCase(r));
        const v1::CaseReference& changes = r.case_reference();
        const std::string& id = changes.exchange_id();
        // Need-to-know first: a case the caller may not know of is NOT_FOUND.
        CB_ASSIGN_OR_RETURN(const v1::CaseReference visible,
                            VisibleCase(in.caller, id));
        if (visible.origin_country() != config_->country) {
          // Said before the store compares versions: an office held to an
          // older version (AsGivenTo) learns nothing of a newer one.
          return PeerCaseUnchangeable(id);
        }
        // An office that cannot see personal data cannot change it either
        // (it would overwrite what it was not shown).
        if (!in.caller.May(Action::kReadPersonalData)) {
          for (const std::string& path : r.update_mask().paths()) {
            if (path == "victims" || path == "last_known_locations") {
              return absl::PermissionDeniedError(absl::StrCat(
                  "update_mask: ", path,
                  " is personal data; ReadPersonalData is needed to change "
                  "it"));
            }
          }
        }
        auto apply = [&](v1::CaseReference& c) -> absl::Status {
          if (c.origin_country() != config_->country) {
            return PeerCaseUnchangeable(id);
          }
          if (c.owner_office() != in.caller.identity &&
              !in.caller.May(Action::kUpdateAnyCase)) {
            return absl::PermissionDeniedError(absl::StrCat(
                "case ", id, " is owned by ", c.owner_office(),
                "; only its owner or a role granted UpdateAnyCase may update "
                "it"));
          }
          for (const std::string& path : r.update_mask().paths()) {
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
              *c.mutable_last_known_locations() =
                  changes.last_known_locations();
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
        // The answer's personal data is on record in the update's own
        // commit.
        const auto released =
            [&](const v1::CaseReference& stored) -> std::optional<AuditEvent> {
          if (!in.caller.May(Action::kReadPersonalData) ||
              !HasPersonalData(stored)) {
            return std::nullopt;
          }
          return in.Event(kCaseUpdatePersonalDataAction,
                          {stored.exchange_id()});
        };
        CB_ASSIGN_OR_RETURN(
            *out->mutable_case_reference(),
            cases_->UpdateCase(id, r.expected_version(), apply,
                               in.caller.identity,
                               in.Event(kCaseUpdateAction, {id}), released));
        MarkHandling(out->mutable_case_reference());
        // Only strips what the caller may not read: a release is on record.
        std::vector<std::string> released_ids;
        ReleasePersonalData(in.caller, out->mutable_case_reference(),
                            &released_ids);
        return absl::OkStatus();
      });
}

}  // namespace casebridge::server
