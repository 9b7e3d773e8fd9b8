#include "server/authorizer.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace casebridge::server {

const char* ActionName(Action action) {
  switch (action) {
    case Action::kWhoAmI:
      return "WhoAmI";
    case Action::kOpenCase:
      return "OpenCase";
    case Action::kGetCase:
      return "GetCase";
    case Action::kListCases:
      return "ListCases";
    case Action::kUpdateCase:
      return "UpdateCase";
    case Action::kShareCase:
      return "ShareCase";
    case Action::kSendMessage:
      return "SendMessage";
    case Action::kWatchInbox:
      return "WatchInbox";
    case Action::kAcknowledge:
      return "Acknowledge";
    case Action::kGetDeliveryStatus:
      return "GetDeliveryStatus";
    case Action::kReadAudit:
      return "ReadAudit";
    case Action::kDeliver:
      return "Deliver";
    case Action::kAddCheckpoint:
      return "AddCheckpoint";
  }
  return "unknown";
}

OfficeAuthorizer::OfficeAuthorizer(const std::vector<config::Office>& offices) {
  for (const config::Office& office : offices) {
    by_identity_[office.identity] = &office;
  }
}

absl::StatusOr<Caller> OfficeAuthorizer::Identify(
    const std::string& identity) const {
  auto it = by_identity_.find(identity);
  if (it == by_identity_.end()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "identity ", identity, " is not in this gateway's office table"));
  }
  return Caller{identity, it->second};
}

absl::Status OfficeAuthorizer::Authorize(const Caller& caller, Action action) {
  // Built-in role table (docs/api.md#roles).
  static const auto* kReaders = new std::set<Action>{
      Action::kWhoAmI, Action::kGetCase, Action::kListCases};
  static const auto* kOfficers =
      new std::set<Action>{Action::kWhoAmI,      Action::kOpenCase,
                           Action::kGetCase,     Action::kListCases,
                           Action::kUpdateCase,  Action::kShareCase,
                           Action::kSendMessage, Action::kWatchInbox,
                           Action::kAcknowledge, Action::kGetDeliveryStatus,
                           Action::kReadAudit};
  static const auto* kAuditors =
      new std::set<Action>{Action::kWhoAmI, Action::kGetCase,
                           Action::kListCases, Action::kReadAudit};

  const std::set<Action>* allowed = nullptr;
  switch (caller.office->role) {
    case v1::ROLE_LIAISON_OFFICER:
    case v1::ROLE_EMBASSY_OFFICER:
    case v1::ROLE_SUPERVISOR:
      allowed = kOfficers;
      break;
    case v1::ROLE_AUDITOR:
      allowed = kAuditors;
      break;
    case v1::ROLE_READ_ONLY:
      allowed = kReaders;
      break;
    default:
      break;
  }
  if (allowed == nullptr || !allowed->contains(action)) {
    return absl::PermissionDeniedError(
        absl::StrCat("role ", config::RoleName(caller.office->role),
                     " may not call ", ActionName(action)));
  }
  return absl::OkStatus();
}

}  // namespace casebridge::server
