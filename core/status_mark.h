// Marks an absl::Status carries as payloads: facts about a status that
// decide what the gateway does with it (a refusal that is final, a message
// for the gateway log only), so that nothing depends on its wording.
// Payloads stay in this process: no status is sent with them.
#ifndef CASEBRIDGE_CORE_STATUS_MARK_H_
#define CASEBRIDGE_CORE_STATUS_MARK_H_

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace casebridge {

// `status` marked `type_url`; an OK status stays OK (absl ignores payloads
// on OK).
inline absl::Status WithMark(absl::Status status, absl::string_view type_url) {
  status.SetPayload(type_url, absl::Cord("1"));
  return status;
}

inline bool HasMark(const absl::Status& status, absl::string_view type_url) {
  return status.GetPayload(type_url).has_value();
}

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_STATUS_MARK_H_
