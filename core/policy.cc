#include "core/policy.h"

#include <algorithm>
#include <array>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/config.h"
#include "core/crypto.h"

namespace casebridge::policy {
namespace {

struct Named {
  Action action;
  const char* name;
};

constexpr std::array<Named, 26> kActions = {{
    {Action::kWhoAmI, "WhoAmI"},
    {Action::kOpenCase, "OpenCase"},
    {Action::kGetCase, "GetCase"},
    {Action::kListCases, "ListCases"},
    {Action::kUpdateCase, "UpdateCase"},
    {Action::kShareCase, "ShareCase"},
    {Action::kSendMessage, "SendMessage"},
    {Action::kWatchInbox, "WatchInbox"},
    {Action::kAcknowledge, "Acknowledge"},
    {Action::kGetDeliveryStatus, "GetDeliveryStatus"},
    {Action::kGrantDissemination, "GrantDissemination"},
    {Action::kForwardCase, "ForwardCase"},
    {Action::kGetCheckpoint, "GetCheckpoint"},
    {Action::kGetEntries, "GetEntries"},
    {Action::kGetInclusionProof, "GetInclusionProof"},
    {Action::kGetConsistencyProof, "GetConsistencyProof"},
    {Action::kGetEvidence, "GetEvidence"},
    {Action::kUpdateAnyCase, "UpdateAnyCase"},
    {Action::kShareAnyCase, "ShareAnyCase"},
    {Action::kReadAnyDeliveryStatus, "ReadAnyDeliveryStatus"},
    {Action::kCancelAnyMessage, "CancelAnyMessage"},
    {Action::kReadAllCases, "ReadAllCases"},
    {Action::kReadPersonalData, "ReadPersonalData"},
    {Action::kReadAllAudit, "ReadAllAudit"},
    {Action::kDeliver, "Deliver"},
    {Action::kAddCheckpoint, "AddCheckpoint"},
}};

bool PeerOnly(Action action) {
  return action == Action::kDeliver || action == Action::kAddCheckpoint;
}

}  // namespace

const char* ActionName(Action action) {
  for (const Named& n : kActions) {
    if (n.action == action) return n.name;
  }
  return "unknown";
}

std::optional<Action> ActionFromName(absl::string_view name) {
  for (const Named& n : kActions) {
    if (name == n.name) return n.action;
  }
  return std::nullopt;
}

const std::vector<Action>& GrantableActions() {
  static const auto* actions = [] {
    auto* v = new std::vector<Action>;
    for (const Named& n : kActions) {
      if (!PeerOnly(n.action)) v->push_back(n.action);
    }
    return v;
  }();
  return *actions;
}

const std::vector<v1::Role>& AllRoles() {
  static const auto* roles = new std::vector<v1::Role>{
      v1::ROLE_LIAISON_OFFICER, v1::ROLE_EMBASSY_OFFICER, v1::ROLE_SUPERVISOR,
      v1::ROLE_AUDITOR, v1::ROLE_READ_ONLY};
  return *roles;
}

RoleTable RoleTable::BuiltIn() {
  // Officers work their own office's cases and messages and read the audit
  // entries about their own actions.
  const std::vector<Action> officer = {Action::kWhoAmI,
                                       Action::kOpenCase,
                                       Action::kGetCase,
                                       Action::kListCases,
                                       Action::kUpdateCase,
                                       Action::kShareCase,
                                       Action::kSendMessage,
                                       Action::kWatchInbox,
                                       Action::kAcknowledge,
                                       Action::kGetDeliveryStatus,
                                       Action::kGrantDissemination,
                                       Action::kForwardCase,
                                       Action::kGetCheckpoint,
                                       Action::kGetEntries,
                                       Action::kGetInclusionProof,
                                       Action::kGetConsistencyProof,
                                       Action::kGetEvidence,
                                       Action::kReadPersonalData};
  // A supervisor may also act on any case of its country and read every
  // case held here, and follow or withdraw any of its offices' messages.
  std::vector<Action> supervisor = officer;
  supervisor.insert(supervisor.end(),
                    {Action::kUpdateAnyCase, Action::kShareAnyCase,
                     Action::kReadAnyDeliveryStatus, Action::kCancelAnyMessage,
                     Action::kReadAllCases});
  // An auditor reads every case and the whole log, but not personal data
  // (so no evidence bundles, which hold the messages themselves) and
  // nothing it could change.
  const std::vector<Action> auditor = {Action::kWhoAmI,
                                       Action::kGetCase,
                                       Action::kListCases,
                                       Action::kGetCheckpoint,
                                       Action::kGetEntries,
                                       Action::kGetInclusionProof,
                                       Action::kGetConsistencyProof,
                                       Action::kReadAllCases,
                                       Action::kReadAllAudit};
  const std::vector<Action> reader = {Action::kWhoAmI, Action::kGetCase,
                                      Action::kListCases};

  RoleTable table;
  for (const auto& [role, actions] :
       std::vector<std::pair<v1::Role, const std::vector<Action>*>>{
           {v1::ROLE_LIAISON_OFFICER, &officer},
           {v1::ROLE_EMBASSY_OFFICER, &officer},
           {v1::ROLE_SUPERVISOR, &supervisor},
           {v1::ROLE_AUDITOR, &auditor},
           {v1::ROLE_READ_ONLY, &reader}}) {
    for (Action a : *actions) table.Grant(role, a);
  }
  return table;
}

const std::vector<Action>& ActionsNeedingPersonalData() {
  static const auto* actions =
      new std::vector<Action>{Action::kWatchInbox, Action::kGetEvidence};
  return *actions;
}

bool RoleTable::Allows(v1::Role role, Action action) const {
  if (PeerOnly(action)) return false;
  auto it = allowed_.find(role);
  return it != allowed_.end() && it->second.contains(action);
}

std::vector<Action> RoleTable::ActionsOf(v1::Role role) const {
  std::vector<Action> out;
  for (Action a : GrantableActions()) {
    if (Allows(role, a)) out.push_back(a);
  }
  return out;
}

std::string RoleTable::Describe() const {
  std::string out;
  for (v1::Role role : AllRoles()) {
    std::vector<std::string> names;
    for (Action a : ActionsOf(role)) names.push_back(ActionName(a));
    absl::StrAppend(&out, config::RoleName(role), ": ",
                    names.empty() ? "(nothing)" : absl::StrJoin(names, ", "),
                    "\n");
  }
  return out;
}

std::string DescribeAccessPolicy(const config::Gateway& config) {
  std::vector<std::string> lines;
  for (const config::Office& o : config.offices) {
    lines.push_back(absl::StrCat("office ", o.identity, " \"", o.display_name,
                                 "\" ", config::RoleName(o.role)));
  }
  std::sort(lines.begin(), lines.end());
  std::vector<std::string> peers = config.peer_offices;
  std::sort(peers.begin(), peers.end());
  for (const std::string& p : peers) lines.push_back("peer_office " + p);
  return absl::StrCat(absl::StrJoin(lines, "\n"), "\n",
                      config.roles.Describe());
}

std::string AccessPolicyDigest(const config::Gateway& config) {
  return crypto::HexEncode(crypto::Sha256(DescribeAccessPolicy(config)));
}

}  // namespace casebridge::policy
