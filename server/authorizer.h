// Who may call what. The caller is known only by the verified URI SAN of its
// client certificate; the role comes from the gateway's office table.
// Deny by default: an action not listed for a role is refused.
#ifndef CASEBRIDGE_SERVER_AUTHORIZER_H_
#define CASEBRIDGE_SERVER_AUTHORIZER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/config.h"

namespace grpc {
class AuthContext;
}

namespace casebridge::server {

enum class Action {
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
  kReadAudit,
  kDeliver,        // peer port only
  kAddCheckpoint,  // peer port only
};

const char* ActionName(Action action);

struct Caller {
  std::string identity;          // verified SPIFFE id
  const config::Office* office;  // entry in the office table; never null
};

class OfficeAuthorizer {
 public:
  // `offices` must outlive the authorizer.
  explicit OfficeAuthorizer(const std::vector<config::Office>& offices);

  // The configured office behind `identity`; PERMISSION_DENIED if the
  // identity is not in the office table.
  absl::StatusOr<Caller> Identify(const std::string& identity) const;

  // PERMISSION_DENIED naming the role and action unless the role may act.
  static absl::Status Authorize(const Caller& caller, Action action);

 private:
  std::map<std::string, const config::Office*, std::less<>> by_identity_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_AUTHORIZER_H_
