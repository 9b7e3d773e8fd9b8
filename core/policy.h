// Access policy: the RPCs and actions each role may use (docs/api.md#roles,
// docs/configuration.md#policy). Deny by default: a role may do only what is
// listed for it. The built-in table applies unless the gateway config has a
// [policy.roles] table, which then replaces it as a whole.
#ifndef CASEBRIDGE_CORE_POLICY_H_
#define CASEBRIDGE_CORE_POLICY_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "casebridge/v1/office.pb.h"

namespace casebridge::config {
struct Gateway;
}

namespace casebridge::policy {

enum class Action {
  // OfficeService RPCs.
  kWhoAmI,
  kOpenCase,
  kGetCase,
  kListCases,
  kUpdateCase,
  kShareCase,
  kSendMessage,
  kWatchInbox,
  kAcknowledge,
  kGetDeliveryStatus,
  kGrantDissemination,
  kForwardCase,
  // AuditService RPCs.
  kGetCheckpoint,
  kGetEntries,
  kGetInclusionProof,
  kGetConsistencyProof,
  kGetEvidence,
  // Actions within RPCs.
  kUpdateAnyCase,          // update a case another office of ours owns
  kShareAnyCase,           // share a case another office of ours owns
  kReadAnyDeliveryStatus,  // status of another office's outgoing message
  kCancelAnyMessage,       // cancel another office's outgoing message
  kReadAllCases,           // peer cases not shared with the caller's office
  kReadPersonalData,       // victims' remarks and last known locations
  kReadAllAudit,           // audit entries about anyone, not just the caller
  // Peer port only; never granted to a role.
  kDeliver,
  kAddCheckpoint,
};

// "OpenCase", "ReadPersonalData", ...: the names used in the policy file,
// in audit entries and in errors.
const char* ActionName(Action action);
std::optional<Action> ActionFromName(absl::string_view name);

// Every action a role may be granted, in declaration order.
const std::vector<Action>& GrantableActions();

// Actions that hand out messages whole, personal data included
// (WatchInbox, GetEvidence): a role granted one must be granted
// ReadPersonalData too, which the config loader checks.
const std::vector<Action>& ActionsNeedingPersonalData();

// The five roles, in declaration order.
const std::vector<v1::Role>& AllRoles();

// What each role may do.
class RoleTable {
 public:
  // The built-in policy (docs/api.md#roles).
  static RoleTable BuiltIn();

  void Grant(v1::Role role, Action action) { allowed_[role].insert(action); }
  bool Allows(v1::Role role, Action action) const;
  // Grantable actions of `role`, in declaration order.
  std::vector<Action> ActionsOf(v1::Role role) const;

  // One line per role, "role: Action, Action": stable, for digests and
  // `casebridge policy check`.
  std::string Describe() const;

  bool operator==(const RoleTable& other) const {
    return allowed_ == other.allowed_;
  }

 private:
  std::map<v1::Role, std::set<Action>> allowed_;
};

// The access policy of a gateway config ([[offices]], peer.offices and the
// role table) as text, one line per office, peer office and role: stable,
// so two configs granting the same give the same text whatever the order.
std::string DescribeAccessPolicy(const config::Gateway& config);
// Hex SHA-256 of DescribeAccessPolicy: names a policy version in the audit
// log, the gateway log, WhoAmI and `casebridge policy check`.
std::string AccessPolicyDigest(const config::Gateway& config);

}  // namespace casebridge::policy

#endif  // CASEBRIDGE_CORE_POLICY_H_
