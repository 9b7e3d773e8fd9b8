#include "server/policy_reloader.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/crypto.h"
#include "core/log.h"

namespace casebridge::server {

PolicyReloader::PolicyReloader(Options options, PolicyHolder* policies,
                               AuditLog* audit)
    : options_(std::move(options)), policies_(policies), audit_(audit) {
  // The file as it is now, if it grants what is in force: the gateway
  // parsed it at start. If it was replaced since (the gateway's start can
  // take seconds), it is not taken as seen, so the first check takes it up
  // like any change instead of leaving the old policy in force unnoticed.
  if (auto content = crypto::ReadFile(options_.config_path); content.ok()) {
    const absl::StatusOr<config::Gateway> parsed =
        config::ParseGateway(*content, options_.config_path);
    if (parsed.ok() &&
        AccessPolicy(*parsed).digest() == policies_->Current()->digest()) {
      last_seen_ = crypto::Sha256(*content);
    }
  }
}

PolicyReloader::~PolicyReloader() { Stop(); }

absl::StatusOr<bool> PolicyReloader::Reload(absl::string_view trigger) {
  absl::MutexLock lock(&reload_mu_);
  auto content = crypto::ReadFile(options_.config_path);
  if (!content.ok()) {
    // Not remembered: the next check tries again once the file is back.
    return ReloadLocked(trigger, "");
  }
  return ReloadRemembering(trigger, *content);
}

absl::StatusOr<bool> PolicyReloader::ReloadRemembering(
    absl::string_view trigger, const std::string& content) {
  last_seen_ = crypto::Sha256(content);
  absl::StatusOr<bool> result = ReloadLocked(trigger, content);
  // A file refused for what it says is not read again until it changes; one
  // refused for this gateway's own trouble (its audit log could not take
  // the entry) is, at the next check.
  if (!result.ok() &&
      result.status().code() != absl::StatusCode::kInvalidArgument) {
    last_seen_.clear();
  }
  return result;
}

absl::StatusOr<bool> PolicyReloader::ReloadLocked(absl::string_view trigger,
                                                  const std::string& content) {
  absl::StatusOr<config::Gateway> loaded =
      content.empty()
          ? absl::StatusOr<config::Gateway>(absl::NotFoundError(absl::StrCat(
                options_.config_path, ": cannot be read or is empty")))
          : config::ParseGateway(content, options_.config_path);
  if (loaded.ok() && (loaded->country != options_.country ||
                      loaded->identity != options_.identity)) {
    loaded = absl::InvalidArgumentError(absl::StrCat(
        options_.config_path, ": is the config of ", loaded->identity,
        ", not of this gateway (", options_.identity, ")"));
  }
  AuditEvent event;
  event.actor = options_.identity;
  event.action = "policy.reload";
  if (!loaded.ok()) {
    const absl::Status refused(
        loaded.status().code(),
        absl::StrCat("new policy refused, the one in force stays: ",
                     loaded.status().message()));
    event.outcome = refused;
    AppendOrLog(*audit_, event);
    log::Error("policy.reload_refused",
               {{"trigger", std::string(trigger)},
                {"error", std::string(loaded.status().message())},
                {"in_force", policies_->Current()->digest()}});
    return refused;
  }
  auto next = std::make_shared<const AccessPolicy>(*loaded);
  const std::shared_ptr<const AccessPolicy> current = policies_->Current();
  if (next->digest() == current->digest()) {
    log::Info("policy.unchanged", {{"trigger", std::string(trigger)},
                                   {"in_force", current->digest()}});
    return false;
  }
  // On record before it is in force: no unaudited policy ever decides.
  event.subjects = {next->digest()};
  event.payload = next->Describe();
  if (auto appended = audit_->Append(event); !appended.ok()) {
    log::Error("policy.reload_refused",
               {{"trigger", std::string(trigger)},
                {"error", absl::StrCat("cannot audit the new policy: ",
                                       appended.status().message())},
                {"in_force", current->digest()}});
    return absl::UnavailableError(
        absl::StrCat("new policy not put in force: cannot audit it: ",
                     appended.status().message()));
  }
  policies_->Replace(next);
  log::Info("policy.reloaded", {{"trigger", std::string(trigger)},
                                {"previous", current->digest()},
                                {"in_force", next->digest()},
                                {"offices", next->offices().size()}});
  if (options_.on_replaced) options_.on_replaced(*next);
  return true;
}

void PolicyReloader::Start() {
  if (options_.check_interval <= absl::ZeroDuration() || watcher_.joinable()) {
    return;
  }
  watcher_ = std::thread([this] { Watch(); });
}

void PolicyReloader::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
}

void PolicyReloader::Watch() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_;
      };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping),
                               options_.check_interval)) {
        return;
      }
    }
    // Read under the lock: a file read before a Reload() took a newer one
    // would otherwise be applied over it.
    absl::MutexLock lock(&reload_mu_);
    auto content = crypto::ReadFile(options_.config_path);
    if (!content.ok()) continue;  // being replaced; look again next time
    const std::string digest = crypto::Sha256(*content);
    if (digest == last_seen_) {
      pending_.clear();
      continue;
    }
    // A file written in place may be read half-written, and a prefix can
    // be a valid config (one without its [policy.roles], say): only content
    // that stayed the same for a whole interval is taken.
    if (digest != pending_) {
      pending_ = digest;
      continue;
    }
    pending_.clear();
    // The outcome is logged and audited by ReloadLocked.
    (void)ReloadRemembering("file change", *content);
  }
}

}  // namespace casebridge::server
