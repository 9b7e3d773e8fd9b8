#include "server/cert_monitor.h"

#include <sys/stat.h>

#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/log.h"

namespace casebridge::server {
namespace {

namespace fs = std::filesystem;

// Parsed ids kept at most; beyond, the cache starts again (a CA issues few
// certificates to one gateway's callers).
constexpr size_t kMaxCachedIds = 4096;

std::string StatLine(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return absl::StrCat(path, " -\n");
  return absl::StrCat(path, " ", st.st_ino, " ", st.st_size, " ",
                      st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, "\n");
}

std::string Utc(absl::Time t) {
  if (t == absl::InfinitePast()) return "none";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

}  // namespace

absl::StatusOr<certs::CertificateId> Revocations::IdOf(
    absl::string_view pem) const {
  std::shared_ptr<const certs::RevocationList> list;
  uint64_t generation = 0;
  {
    absl::MutexLock lock(&mu_);
    list = list_;
    generation = generation_;
    auto it = ids_.find(pem);
    if (it != ids_.end() && it->second.generation == generation) {
      return it->second.id;
    }
  }
  auto id = certs::CertificateIdFromPem(pem, list->cas());
  if (!id.ok()) return id.status();
  absl::MutexLock lock(&mu_);
  if (ids_.size() >= kMaxCachedIds) ids_.clear();
  ids_.insert_or_assign(std::string(pem), CachedId{*id, generation});
  return id;
}

absl::Status Revocations::Check(absl::string_view peer_pem,
                                absl::string_view identity) const {
  auto id = IdOf(peer_pem);
  if (!id.ok()) {
    return absl::UnauthenticatedError(
        "the certificate shown in the handshake could not be read back");
  }
  std::shared_ptr<const certs::RevocationList> list;
  {
    absl::MutexLock lock(&mu_);
    list = list_;
  }
  if (list->IsRevoked(*id)) {
    return absl::UnauthenticatedError(absl::StrCat(
        "certificate serial ", id->serial, " of ", identity, " was revoked"));
  }
  return absl::OkStatus();
}

bool Revocations::IsRevoked(absl::string_view peer_pem) const {
  auto id = IdOf(peer_pem);
  if (!id.ok()) return false;
  absl::MutexLock lock(&mu_);
  return list_->IsRevoked(*id);
}

void Revocations::Replace(certs::RevocationList list) {
  auto next = std::make_shared<const certs::RevocationList>(std::move(list));
  absl::MutexLock lock(&mu_);
  list_ = std::move(next);
  ++generation_;
}

size_t Revocations::size() const {
  absl::MutexLock lock(&mu_);
  return list_->size();
}

uint64_t Revocations::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

CertMonitor::CertMonitor(Options options, Revocations* revocations,
                         const Clock* clock)
    : options_(std::move(options)), revocations_(revocations), clock_(clock) {}

CertMonitor::~CertMonitor() { Stop(); }

std::string CertMonitor::Fingerprint() const {
  std::string out;
  for (const std::string* path : {&options_.files.cert, &options_.files.own_ca,
                                  &options_.files.peer_ca}) {
    out += StatLine(*path);
  }
  std::vector<std::string> names;
  std::error_code ec;
  for (const fs::directory_entry& entry :
       fs::directory_iterator(options_.files.crl_dir, ec)) {
    names.push_back(entry.path().string());
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) out += StatLine(name);
  return out;
}

void CertMonitor::Check() {
  const std::string fingerprint = Fingerprint();
  if (!checked_ || fingerprint != fingerprint_) {
    certs::Inventory next = certs::ReadInventory(options_.files);
    if (checked_) {
      // A revocation, once in force, stays until the gateway restarts: a
      // CRL file half copied, unreadable, deleted or replaced by one that
      // does not verify, or a CA file caught mid-write, never takes one
      // back. (CRLs only drop serials of certificates that have expired.)
      next.revoked.Merge(inventory_.revoked);
    }
    const bool changed = !checked_ || !(next.revoked == inventory_.revoked);
    inventory_ = std::move(next);
    fingerprint_ = fingerprint;
    if (changed) {
      revocations_->Replace(inventory_.revoked);
      log::Info("certs.crl_loaded", {{"revoked", inventory_.revoked.size()},
                                     {"crl_dir", options_.files.crl_dir}});
      if (checked_ && on_revocations_) on_revocations_();
    }
  }

  const absl::Time now = clock_->Now();
  bool serving = true;
  for (const certs::Item& item : inventory_.items) {
    const certs::State state =
        certs::StateOf(item, now, options_.cert_window, options_.crl_window);
    if (certs::IsFailure(state)) serving = false;
    if (state == certs::State::kOk) continue;
    const std::string key = absl::StrCat(item.file, "|", item.subject, "|",
                                         certs::StateName(state));
    auto it = logged_.find(key);
    if (it != logged_.end() && now - it->second < options_.relog_interval) {
      continue;
    }
    logged_[key] = now;
    const bool crl = item.kind == certs::ItemKind::kCrl;
    nlohmann::json fields = {{"kind", crl ? "crl" : "certificate"},
                             {"key", item.key},
                             {"file", item.file},
                             {"subject", item.subject},
                             {"state", certs::StateName(state)}};
    if (item.problem != certs::Problem::kNone) {
      fields["reason"] = item.detail;
    } else {
      fields[crl ? "next_update" : "not_after"] = Utc(item.valid_until);
      fields["days_left"] = absl::ToInt64Hours(item.valid_until - now) / 24;
    }
    if (state == certs::State::kExpiresSoon) {
      log::Warning("certs.expiring", fields);
    } else {
      log::Error("certs.unusable", fields);
    }
  }
  checked_ = true;

  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    changed = serving != serving_ || !reported_;
    serving_ = serving;
    reported_ = true;
  }
  if (!changed) return;
  if (serving) {
    log::Info("certs.serving", {{"items", inventory_.items.size()}});
  }
  if (on_health_) on_health_(serving);
}

void CertMonitor::Start() {
  thread_ = std::thread([this] { Run(); });
}

void CertMonitor::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.interval);
      if (stopping_) return;
    }
    Check();
  }
}

void CertMonitor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool CertMonitor::serving() const {
  absl::MutexLock lock(&mu_);
  return serving_;
}

}  // namespace casebridge::server
