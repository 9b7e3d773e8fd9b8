// Replaces the access policy in force (server/authorizer.h) while the
// gateway runs: on SIGHUP, and when the config file's content changes
// (checked every policy.reload_check_seconds; a change is taken once the
// content has stayed the same for one interval). The whole file is read and
// validated as at startup; only [[offices]], peer.offices and [policy] take
// effect (other keys need a restart). An invalid file, or one written for
// another gateway, is refused with its error, audited and logged, and the
// policy in force stays. Connections are never dropped: calls admitted
// under the old policy finish under it, and open streams the new policy no
// longer allows are ended (`on_replaced`).
#ifndef CASEBRIDGE_SERVER_POLICY_RELOADER_H_
#define CASEBRIDGE_SERVER_POLICY_RELOADER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/config.h"
#include "server/audit_log.h"
#include "server/authorizer.h"

namespace casebridge::server {

class PolicyReloader {
 public:
  struct Options {
    std::string config_path;
    v1::Country country = v1::COUNTRY_UNSPECIFIED;  // of the running gateway
    std::string identity;                           // ditto; audit actor
    // How often the file is checked; zero: only Reload() (SIGHUP).
    absl::Duration check_interval;
    // Told of each new policy after it is in force.
    std::function<void(const AccessPolicy&)> on_replaced;
  };

  // `policies` and `audit` must outlive the reloader.
  PolicyReloader(Options options, PolicyHolder* policies, AuditLog* audit);
  ~PolicyReloader();  // stops

  // Reads the config file now. True if a new policy is now in force, false
  // if the file grants what the policy in force grants; the error if the
  // file is refused (the old policy stays). `trigger` ("SIGHUP", "file
  // change") goes to the log.
  absl::StatusOr<bool> Reload(absl::string_view trigger);

  // Starts (and stops) checking the file every check_interval.
  void Start();
  void Stop();

 private:
  absl::StatusOr<bool> ReloadLocked(absl::string_view trigger,
                                    const std::string& content)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(reload_mu_);
  // ReloadLocked, with last_seen_ set to `content`'s digest unless the
  // reload failed for this gateway's own trouble (then retried at the next
  // check).
  absl::StatusOr<bool> ReloadRemembering(absl::string_view trigger,
                                         const std::string& content)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(reload_mu_);
  void Watch();

  const Options options_;
  PolicyHolder* const policies_;
  AuditLog* const audit_;

  absl::Mutex reload_mu_;  // one reload at a time
  // SHA-256 of the file content last looked at (applied, unchanged or
  // refused for what it says), so an unchanged file is not reloaded, nor an
  // invalid one refused, again.
  std::string last_seen_ ABSL_GUARDED_BY(reload_mu_);
  // SHA-256 of changed content seen once by the watcher: taken when the
  // next check finds it unchanged.
  std::string pending_ ABSL_GUARDED_BY(reload_mu_);

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watcher_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_POLICY_RELOADER_H_
