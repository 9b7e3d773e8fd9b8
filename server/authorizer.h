// Who may call what. The caller is known only by the verified URI SAN of its
// client certificate; its role comes from the office table, and what the
// role may do from the policy (core/policy.h). Deny by default.
//
// The office table, peer.offices and the role table form the access policy,
// which can be replaced while the gateway runs (SIGHUP or a changed config
// file). A call works with the snapshot it was admitted under, start to end.
#ifndef CASEBRIDGE_SERVER_AUTHORIZER_H_
#define CASEBRIDGE_SERVER_AUTHORIZER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/config.h"
#include "core/policy.h"

namespace casebridge::server {

using policy::Action;
using policy::ActionName;

// One immutable version of the access policy.
class AccessPolicy {
 public:
  // From a loaded gateway config: its [[offices]], peer.offices and
  // [policy.roles] (or the built-in table).
  explicit AccessPolicy(const config::Gateway& config);

  // The entry of `identity` in the office table, or null.
  const config::Office* Find(const std::string& identity) const;
  bool Allows(const config::Office& office, Action action) const {
    return roles_.Allows(office.role, action);
  }
  bool IsPeerOffice(const std::string& identity) const;

  const std::vector<config::Office>& offices() const { return offices_; }
  const std::vector<std::string>& peer_offices() const { return peer_offices_; }
  const policy::RoleTable& roles() const { return roles_; }

  // policy::DescribeAccessPolicy of the config it was made from.
  std::string Describe() const;
  // policy::AccessPolicyDigest: names this version in audit entries.
  const std::string& digest() const { return digest_; }

 private:
  std::vector<config::Office> offices_;
  std::vector<std::string> peer_offices_;
  policy::RoleTable roles_;
  std::map<std::string, size_t, std::less<>> by_identity_;
  std::string description_;
  std::string digest_;
};

// The policy in force; replaced whole, read without blocking writers long.
class PolicyHolder {
 public:
  explicit PolicyHolder(std::shared_ptr<const AccessPolicy> initial)
      : current_(std::move(initial)) {}

  std::shared_ptr<const AccessPolicy> Current() const {
    absl::MutexLock lock(&mu_);
    return current_;
  }
  void Replace(std::shared_ptr<const AccessPolicy> next) {
    absl::MutexLock lock(&mu_);
    current_ = std::move(next);
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const AccessPolicy> current_ ABSL_GUARDED_BY(mu_);
};

struct Caller {
  std::string identity;          // verified SPIFFE id
  const config::Office* office;  // entry in the office table; never null
  // The policy the call was admitted under (keeps `office` alive); null for
  // the peer gateway, which is outside the office policy.
  std::shared_ptr<const AccessPolicy> policy;

  bool May(Action action) const {
    return policy != nullptr && policy->Allows(*office, action);
  }
};

class OfficeAuthorizer {
 public:
  // `policies` must outlive the authorizer.
  explicit OfficeAuthorizer(const PolicyHolder* policies)
      : policies_(policies) {}

  // The configured office behind `identity` under the current policy;
  // PERMISSION_DENIED if the identity is not in the office table.
  absl::StatusOr<Caller> Identify(const std::string& identity) const;

  // PERMISSION_DENIED naming the role and action unless the role may act.
  static absl::Status Authorize(const Caller& caller, Action action);

 private:
  const PolicyHolder* policies_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_AUTHORIZER_H_
