#include "server/authorizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/crypto.h"

namespace casebridge::server {

AccessPolicy::AccessPolicy(const config::Gateway& config)
    : offices_(config.offices),
      peer_offices_(config.peer_offices),
      roles_(config.roles) {
  for (size_t i = 0; i < offices_.size(); ++i) {
    by_identity_[offices_[i].identity] = i;
  }
  description_ = policy::DescribeAccessPolicy(config);
  digest_ = crypto::HexEncode(crypto::Sha256(description_));
}

const config::Office* AccessPolicy::Find(const std::string& identity) const {
  auto it = by_identity_.find(identity);
  return it == by_identity_.end() ? nullptr : &offices_[it->second];
}

bool AccessPolicy::IsPeerOffice(const std::string& identity) const {
  return std::find(peer_offices_.begin(), peer_offices_.end(), identity) !=
         peer_offices_.end();
}

std::string AccessPolicy::Describe() const { return description_; }

absl::StatusOr<Caller> OfficeAuthorizer::Identify(
    const std::string& identity) const {
  std::shared_ptr<const AccessPolicy> policy = policies_->Current();
  const config::Office* office = policy->Find(identity);
  if (office == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(
        "identity ", identity, " is not in this gateway's office table"));
  }
  return Caller{identity, office, std::move(policy)};
}

absl::Status OfficeAuthorizer::Authorize(const Caller& caller, Action action) {
  if (!caller.May(action)) {
    return absl::PermissionDeniedError(
        absl::StrCat("role ", config::RoleName(caller.office->role),
                     " may not call ", ActionName(action)));
  }
  return absl::OkStatus();
}

}  // namespace casebridge::server
