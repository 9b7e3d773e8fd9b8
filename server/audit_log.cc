#include "server/audit_log.h"

#include "core/log.h"

namespace casebridge::server {

void AppendOrLog(AuditLog& audit, const AuditEvent& event) {
  if (auto appended = audit.Append(event); !appended.ok()) {
    log::Error("audit.append_failed",
               {{"action", event.action},
                {"error", std::string(appended.status().message())}});
  }
}

}  // namespace casebridge::server
