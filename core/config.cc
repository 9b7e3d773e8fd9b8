#include "core/config.h"

#include <sys/stat.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/crypto.h"
#include "core/identity.h"
#include "core/status_macros.h"

namespace casebridge::config {
namespace {

namespace fs = std::filesystem;

// Reads one TOML table, remembering which keys were used, so that unknown keys
// can be refused by name. Errors carry the dotted path of the key.
class TableReader {
 public:
  TableReader(const toml::table& table, std::string prefix, fs::path base_dir)
      : table_(table),
        prefix_(std::move(prefix)),
        base_dir_(std::move(base_dir)) {}

  std::string Path(absl::string_view key) const {
    return prefix_.empty() ? std::string(key) : absl::StrCat(prefix_, ".", key);
  }

  absl::Status Error(absl::string_view key, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(Path(key), ": ", what));
  }

  const toml::node* Get(absl::string_view key) {
    used_.insert(std::string(key));
    return table_.get(std::string_view(key.data(), key.size()));
  }

  absl::StatusOr<std::string> String(absl::string_view key, bool required,
                                     std::string fallback = "") {
    const toml::node* node = Get(key);
    if (node == nullptr) {
      if (required) return Error(key, "is required");
      return fallback;
    }
    auto value = node->value<std::string>();
    if (!node->is_string() || !value) return Error(key, "must be a string");
    if (required && value->empty()) return Error(key, "must not be empty");
    return *value;
  }

  // A file path, resolved against the config's folder, not opened.
  absl::StatusOr<std::string> FilePath(absl::string_view key, bool required) {
    CB_ASSIGN_OR_RETURN(std::string raw, String(key, required));
    if (raw.empty()) return raw;
    return Resolve(raw);
  }

  // A file path, resolved against the config's folder, that must be readable.
  absl::StatusOr<std::string> File(absl::string_view key, bool required) {
    CB_ASSIGN_OR_RETURN(std::string path, FilePath(key, required));
    if (path.empty()) return path;
    auto contents = crypto::ReadFile(path);
    if (!contents.ok()) return Error(key, contents.status().message());
    return path;
  }

  // A private key's file (File), which only its owner may read or write:
  // anyone else who can read it can act as this gateway or office.
  absl::StatusOr<std::string> PrivateKeyFile(absl::string_view key) {
    CB_ASSIGN_OR_RETURN(std::string path, File(key, true));
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return Error(key, absl::StrCat("cannot read ", path, ": ",
                                     std::generic_category().message(errno)));
    }
    if ((st.st_mode & 077) != 0) {
      return Error(key,
                   absl::StrFormat("private key %s has mode %04o: it must be "
                                   "readable by its owner only (chmod 0600)",
                                   path, st.st_mode & 07777));
    }
    return path;
  }

  absl::StatusOr<std::string> Directory(absl::string_view key, bool required,
                                        bool must_exist) {
    CB_ASSIGN_OR_RETURN(std::string raw, String(key, required));
    if (raw.empty()) return raw;
    std::string path = Resolve(raw);
    std::error_code ec;
    if (must_exist && !fs::is_directory(path, ec)) {
      return Error(key, absl::StrCat(path, " is not a directory"));
    }
    return path;
  }

  absl::StatusOr<int64_t> Integer(absl::string_view key, int64_t fallback,
                                  int64_t min, int64_t max) {
    const toml::node* node = Get(key);
    if (node == nullptr) return fallback;
    if (!node->is_integer()) return Error(key, "must be an integer");
    const int64_t value = *node->value<int64_t>();
    if (value < min || value > max) {
      return Error(key, absl::StrCat("must be between ", min, " and ", max,
                                     ", is ", value));
    }
    return value;
  }

  absl::StatusOr<const toml::table*> Table(absl::string_view key,
                                           bool required) {
    const toml::node* node = Get(key);
    if (node == nullptr) {
      if (required) return Error(key, "section is required");
      return nullptr;
    }
    if (!node->is_table()) return Error(key, "must be a table");
    return node->as_table();
  }

  absl::Status CheckNoUnknownKeys() const {
    for (const auto& [key, node] : table_) {
      if (!used_.contains(std::string(key.str()))) {
        return Error(std::string(key.str()), "unknown key");
      }
    }
    return absl::OkStatus();
  }

  std::string Resolve(const std::string& raw) const {
    fs::path p(raw);
    if (p.is_absolute()) return p.lexically_normal().string();
    return (base_dir_ / p).lexically_normal().string();
  }

  const fs::path& base_dir() const { return base_dir_; }

 private:
  const toml::table& table_;
  std::string prefix_;
  fs::path base_dir_;
  std::set<std::string> used_;
};

absl::Status CheckAddress(TableReader& reader, absl::string_view key,
                          const std::string& address) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port > 65535) {
    return reader.Error(key,
                        absl::StrCat("\"", address, "\" is not host:port"));
  }
  return absl::OkStatus();
}

// [[peer.<key>]]: a peer's previous public keys during a rotation, each
// with `file` and `trusted_until` (docs/operations.md#signing-key-rotation).
absl::Status ParsePreviousKeys(TableReader& peer, absl::string_view key,
                               std::vector<Gateway::PreviousKey>& out) {
  const toml::node* previous = peer.Get(key);
  if (previous == nullptr) return absl::OkStatus();
  if (!previous->is_array_of_tables()) {
    return peer.Error(
        key, absl::StrCat("must be a list of tables: [[", peer.Path(key),
                          "]] with file and trusted_until"));
  }
  size_t i = 0;
  for (const toml::node& element : *previous->as_array()) {
    TableReader reader(*element.as_table(),
                       absl::StrCat(peer.Path(key), "[", i++, "]"),
                       peer.base_dir());
    Gateway::PreviousKey entry;
    CB_ASSIGN_OR_RETURN(entry.file, reader.File("file", true));
    CB_ASSIGN_OR_RETURN(const std::string until,
                        reader.String("trusted_until", true));
    std::string error;
    if (!absl::ParseTime(absl::RFC3339_full, until, &entry.trusted_until,
                         &error)) {
      return reader.Error("trusted_until",
                          absl::StrCat("\"", until,
                                       "\" is not a time like "
                                       "2027-01-31T00:00:00Z"));
    }
    CB_RETURN_IF_ERROR(reader.CheckNoUnknownKeys());
    out.push_back(std::move(entry));
  }
  return absl::OkStatus();
}

absl::StatusOr<toml::table> ParseToml(const std::string& text,
                                      const std::string& source_path) {
  try {
    return toml::parse(text, source_path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "line ", e.source().begin.line, ", column ", e.source().begin.column,
        ": ", std::string(e.description())));
  }
}

absl::Status WithFile(const absl::Status& status, const std::string& path) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrCat(path, ": ", status.message()));
}

// A file of the other kind (an office's client file given where a gateway's
// configuration belongs, or the other way round) is named as such rather
// than by the first key it lacks.
bool IsClientFile(const toml::table& root) {
  return root.contains("endpoint") && !root.contains("listen") &&
         !root.contains("tls");
}
bool IsGatewayFile(const toml::table& root) {
  return (root.contains("listen") || root.contains("tls")) &&
         !root.contains("endpoint");
}

// [policy]: how often the file is checked for a new policy, and the
// [policy.roles] table, which replaces the built-in role table as a whole.
absl::Status ParsePolicy(TableReader& top, const fs::path& base_dir,
                         Gateway& config) {
  CB_ASSIGN_OR_RETURN(const toml::table* t, top.Table("policy", false));
  static const toml::table kEmpty;
  TableReader policy(t != nullptr ? *t : kEmpty, "policy", base_dir);
  CB_ASSIGN_OR_RETURN(
      config.policy_reload_check_seconds,
      policy.Integer("reload_check_seconds", config.policy_reload_check_seconds,
                     0, 3600));
  CB_ASSIGN_OR_RETURN(const toml::table* roles, policy.Table("roles", false));
  config.policy_from_config = roles != nullptr;
  config.roles = policy::RoleTable::BuiltIn();
  if (roles != nullptr) {
    config.roles = policy::RoleTable();
    TableReader reader(*roles, "policy.roles", base_dir);
    for (v1::Role role : policy::AllRoles()) {
      const std::string name = RoleName(role);
      const toml::node* node = reader.Get(name);
      if (node == nullptr) continue;  // deny by default: may do nothing
      if (!node->is_array()) {
        return reader.Error(name, "must be a list of action names");
      }
      std::set<policy::Action> seen;
      for (const toml::node& element : *node->as_array()) {
        const auto value = element.value<std::string>();
        if (!element.is_string() || !value) {
          return reader.Error(name, "must be a list of action names");
        }
        const std::optional<policy::Action> action =
            policy::ActionFromName(*value);
        const auto& grantable = policy::GrantableActions();
        if (!action || std::find(grantable.begin(), grantable.end(), *action) ==
                           grantable.end()) {
          std::vector<std::string> names;
          for (policy::Action a : grantable) {
            names.push_back(policy::ActionName(a));
          }
          return reader.Error(
              name, absl::StrCat("\"", *value,
                                 "\" is not an action a role may be granted "
                                 "(one of ",
                                 absl::StrJoin(names, ", "), ")"));
        }
        if (!seen.insert(*action).second) {
          return reader.Error(name, absl::StrCat(*value, " is listed twice"));
        }
        config.roles.Grant(role, *action);
      }
    }
    // Messages go out whole: who may receive them may read personal data.
    for (v1::Role role : policy::AllRoles()) {
      for (policy::Action a : policy::ActionsNeedingPersonalData()) {
        if (config.roles.Allows(role, a) &&
            !config.roles.Allows(role, policy::Action::kReadPersonalData)) {
          return reader.Error(
              RoleName(role),
              absl::StrCat(policy::ActionName(a),
                           " hands out whole messages, personal data "
                           "included: grant ReadPersonalData too, or take ",
                           policy::ActionName(a), " away"));
        }
      }
    }
    // A misspelt role would otherwise silently grant nothing.
    for (const auto& [key, node] : *roles) {
      if (RoleFromName(std::string(key.str())) == v1::ROLE_UNSPECIFIED) {
        return reader.Error(
            std::string(key.str()),
            "is not a role (liaison_officer, embassy_officer, supervisor, "
            "auditor or read_only)");
      }
    }
    CB_RETURN_IF_ERROR(reader.CheckNoUnknownKeys());
  }
  return policy.CheckNoUnknownKeys();
}

// Days are 0 (keep for ever) to 100 years.
constexpr int64_t kMaxRetentionDays = 36500;

// [retention], after [audit]: its message_days replaces
// audit.payload_retention_days, which stays accepted alone and then gives
// message_days its value.
absl::Status ParseRetention(TableReader& top, const fs::path& base_dir,
                            Gateway& config) {
  CB_ASSIGN_OR_RETURN(const toml::table* t, top.Table("retention", false));
  static const toml::table kEmpty;
  TableReader retention(t != nullptr ? *t : kEmpty, "retention", base_dir);
  RetentionSettings& r = config.retention;
  const bool own_default = retention.Get("message_days") != nullptr;
  CB_ASSIGN_OR_RETURN(
      r.message_days,
      retention.Integer("message_days", config.audit.payload_retention_days, 0,
                        kMaxRetentionDays));
  if (own_default && config.audit.payload_retention_days != 0) {
    return retention.Error("message_days",
                           "replaces audit.payload_retention_days; set only "
                           "one of them");
  }

  static const auto* const kKinds = new std::map<std::string, int>{
      {"rescue_request", v1::MESSAGE_KIND_RESCUE_REQUEST},
      {"rescue_update", v1::MESSAGE_KIND_RESCUE_UPDATE},
      {"information_request", v1::MESSAGE_KIND_INFORMATION_REQUEST},
      {"information_response", v1::MESSAGE_KIND_INFORMATION_RESPONSE},
      {"note", v1::MESSAGE_KIND_NOTE},
      {"case_share", v1::MESSAGE_KIND_CASE_SHARE},
      {"acknowledgement", v1::MESSAGE_KIND_ACKNOWLEDGEMENT},
  };
  static const auto* const kFinalStatuses = new std::map<std::string, int>{
      {"repatriated", v1::CASE_STATUS_REPATRIATED},
      {"closed", v1::CASE_STATUS_CLOSED},
  };
  struct Section {
    const char* key;
    const std::map<std::string, int>* names;
    const char* refusal;
    std::map<int, int>* days;
  };
  for (const Section& section :
       {Section{"message_kinds", kKinds,
                "unknown key: must be a message kind (rescue_request, "
                "rescue_update, information_request, information_response, "
                "note, case_share, acknowledgement)",
                &r.message_kind_days},
        Section{"case_status", kFinalStatuses,
                "unknown key: must be a final case status (repatriated, "
                "closed); cases still in work are never purged",
                &r.case_status_days}}) {
    CB_ASSIGN_OR_RETURN(const toml::table* sub,
                        retention.Table(section.key, false));
    if (sub == nullptr) continue;
    TableReader reader(*sub, retention.Path(section.key), base_dir);
    for (const auto& [name, number] : *section.names) {
      if (reader.Get(name) == nullptr) continue;
      CB_ASSIGN_OR_RETURN((*section.days)[number],
                          reader.Integer(name, 0, 0, kMaxRetentionDays));
    }
    for (const auto& [key, node] : *sub) {
      if (section.names->count(std::string(key.str())) == 0) {
        return reader.Error(std::string(key.str()), section.refusal);
      }
    }
  }
  return retention.CheckNoUnknownKeys();
}

absl::StatusOr<Gateway> ParseGatewayImpl(const toml::table& root,
                                         const fs::path& base_dir,
                                         PrivateKeys keys) {
  Gateway config;
  TableReader top(root, "", base_dir);
  auto private_key = [keys](TableReader& table, absl::string_view key) {
    return keys == PrivateKeys::kRead ? table.PrivateKeyFile(key)
                                      : table.FilePath(key, true);
  };

  CB_ASSIGN_OR_RETURN(const std::string country, top.String("country", true));
  config.country = CountryFromCode(country);
  if (config.country == v1::COUNTRY_UNSPECIFIED) {
    return top.Error("country", "must be \"PK\" or \"CN\"");
  }
  CB_ASSIGN_OR_RETURN(config.identity, top.String("identity", true));
  if (config.identity != GatewayIdentity(config.country)) {
    return top.Error("identity",
                     absl::StrCat("must be ", GatewayIdentity(config.country),
                                  " for country ", country));
  }
  CB_ASSIGN_OR_RETURN(config.data_dir, top.Directory("data_dir", true, false));
  CB_ASSIGN_OR_RETURN(config.log_level, top.String("log_level", false, "info"));
  if (config.log_level != "debug" && config.log_level != "info" &&
      config.log_level != "warning" && config.log_level != "error") {
    return top.Error("log_level", "must be debug, info, warning or error");
  }

  {
    CB_ASSIGN_OR_RETURN(const toml::table* t, top.Table("listen", true));
    TableReader listen(*t, "listen", base_dir);
    CB_ASSIGN_OR_RETURN(config.office_address, listen.String("office", true));
    CB_RETURN_IF_ERROR(CheckAddress(listen, "office", config.office_address));
    CB_ASSIGN_OR_RETURN(config.peer_address, listen.String("peer", true));
    CB_RETURN_IF_ERROR(CheckAddress(listen, "peer", config.peer_address));
    CB_RETURN_IF_ERROR(listen.CheckNoUnknownKeys());
  }
  {
    CB_ASSIGN_OR_RETURN(const toml::table* t, top.Table("tls", true));
    TableReader tls(*t, "tls", base_dir);
    CB_ASSIGN_OR_RETURN(config.tls_cert, tls.File("cert", true));
    CB_ASSIGN_OR_RETURN(config.tls_key, private_key(tls, "key"));
    CB_ASSIGN_OR_RETURN(config.own_ca, tls.File("own_ca", true));
    CB_ASSIGN_OR_RETURN(config.peer_ca, tls.File("peer_ca", true));
    CB_ASSIGN_OR_RETURN(config.crl_dir, tls.Directory("crl_dir", true, true));
    CB_ASSIGN_OR_RETURN(config.cert_refresh_seconds,
                        tls.Integer("refresh_seconds", 60, 1, 86400));
    CB_ASSIGN_OR_RETURN(config.crl_refresh_seconds,
                        tls.Integer("crl_refresh_seconds",
                                    config.crl_refresh_seconds, 1, 3600));
    CB_ASSIGN_OR_RETURN(config.expiry_warning_days,
                        tls.Integer("expiry_warning_days",
                                    config.expiry_warning_days, 0, 3650));
    CB_ASSIGN_OR_RETURN(config.crl_expiry_warning_days,
                        tls.Integer("crl_expiry_warning_days",
                                    config.crl_expiry_warning_days, 0, 365));
    CB_RETURN_IF_ERROR(tls.CheckNoUnknownKeys());
  }
  {
    CB_ASSIGN_OR_RETURN(const toml::table* t, top.Table("signing", true));
    TableReader signing(*t, "signing", base_dir);
    CB_ASSIGN_OR_RETURN(config.envelope_signing_key,
                        private_key(signing, "envelope_key"));
    CB_ASSIGN_OR_RETURN(config.checkpoint_signing_key,
                        private_key(signing, "checkpoint_key"));
    CB_ASSIGN_OR_RETURN(config.witness_signing_key,
                        private_key(signing, "witness_key"));
    CB_RETURN_IF_ERROR(signing.CheckNoUnknownKeys());
  }
  {
    CB_ASSIGN_OR_RETURN(const toml::table* t, top.Table("peer", true));
    TableReader peer(*t, "peer", base_dir);
    CB_ASSIGN_OR_RETURN(config.peer_identity, peer.String("identity", true));
    const v1::Country peer_country =
        config.country == v1::COUNTRY_PK ? v1::COUNTRY_CN : v1::COUNTRY_PK;
    if (config.peer_identity != GatewayIdentity(peer_country)) {
      return peer.Error(
          "identity", absl::StrCat("must be ", GatewayIdentity(peer_country)));
    }
    CB_ASSIGN_OR_RETURN(config.peer_endpoint, peer.String("endpoint", true));
    CB_RETURN_IF_ERROR(CheckAddress(peer, "endpoint", config.peer_endpoint));
    CB_ASSIGN_OR_RETURN(config.peer_envelope_public_key,
                        peer.File("envelope_public_key", true));
    CB_RETURN_IF_ERROR(ParsePreviousKeys(peer, "previous_envelope_keys",
                                         config.peer_previous_envelope_keys));
    CB_ASSIGN_OR_RETURN(config.peer_checkpoint_public_key,
                        peer.File("checkpoint_public_key", true));
    CB_RETURN_IF_ERROR(ParsePreviousKeys(peer, "previous_checkpoint_keys",
                                         config.peer_previous_checkpoint_keys));
    CB_ASSIGN_OR_RETURN(config.peer_witness_public_key,
                        peer.File("witness_public_key", true));
    CB_RETURN_IF_ERROR(ParsePreviousKeys(peer, "previous_witness_keys",
                                         config.peer_previous_witness_keys));
    const toml::node* offices = peer.Get("offices");
    if (offices == nullptr || !offices->is_array() ||
        offices->as_array()->empty()) {
      return peer.Error("offices",
                        "is required: a list of the peer country's office "
                        "identities that may send messages");
    }
    std::set<std::string> seen;
    for (const toml::node& element : *offices->as_array()) {
      const auto value = element.value<std::string>();
      if (!element.is_string() || !value) {
        return peer.Error("offices", "must be a list of strings");
      }
      auto id = ParseSpiffeId(*value);
      if (!id.ok() || id->country != peer_country ||
          id->kind != PrincipalKind::kOffice) {
        return peer.Error("offices",
                          absl::StrCat("\"", *value,
                                       "\" is not an office of the peer's "
                                       "country"));
      }
      if (!seen.insert(*value).second) {
        return peer.Error("offices", absl::StrCat(*value, " is listed twice"));
      }
      config.peer_offices.push_back(*value);
    }
    CB_RETURN_IF_ERROR(peer.CheckNoUnknownKeys());
  }
  {
    const toml::node* node = top.Get("offices");
    if (node == nullptr || !node->is_array_of_tables() ||
        node->as_array()->empty()) {
      return top.Error("offices", "at least one [[offices]] entry is required");
    }
    std::set<std::string> seen;
    size_t i = 0;
    for (const toml::node& element : *node->as_array()) {
      TableReader office(*element.as_table(), absl::StrCat("offices[", i, "]"),
                         base_dir);
      Office entry;
      CB_ASSIGN_OR_RETURN(entry.identity, office.String("identity", true));
      auto id = ParseSpiffeId(entry.identity);
      if (!id.ok()) return office.Error("identity", id.status().message());
      if (id->country != config.country ||
          id->kind == PrincipalKind::kGateway) {
        return office.Error("identity",
                            "must be an office or auditor of this gateway's "
                            "country");
      }
      if (!seen.insert(entry.identity).second) {
        return office.Error("identity", "is listed twice");
      }
      CB_ASSIGN_OR_RETURN(entry.display_name, office.String("name", true));
      CB_ASSIGN_OR_RETURN(const std::string role, office.String("role", true));
      entry.role = RoleFromName(role);
      if (entry.role == v1::ROLE_UNSPECIFIED) {
        return office.Error("role",
                            "must be liaison_officer, embassy_officer, "
                            "supervisor, auditor or read_only");
      }
      if ((entry.role == v1::ROLE_AUDITOR) !=
          (id->kind == PrincipalKind::kAuditor)) {
        return office.Error("role",
                            "auditor role goes with an /auditor/ identity, and "
                            "only there");
      }
      CB_RETURN_IF_ERROR(office.CheckNoUnknownKeys());
      config.offices.push_back(std::move(entry));
      ++i;
    }
  }
  {
    CB_ASSIGN_OR_RETURN(const toml::table* t, top.Table("limits", false));
    static const toml::table kEmpty;
    TableReader limits(t != nullptr ? *t : kEmpty, "limits", base_dir);
    Limits& l = config.limits;
    CB_ASSIGN_OR_RETURN(l.max_message_bytes,
                        limits.Integer("max_message_bytes", l.max_message_bytes,
                                       64 << 10, 64 << 20));
    CB_ASSIGN_OR_RETURN(l.max_concurrent_streams,
                        limits.Integer("max_concurrent_streams",
                                       l.max_concurrent_streams, 1, 10000));
    CB_ASSIGN_OR_RETURN(
        l.keepalive_time_seconds,
        limits.Integer("keepalive_time_seconds", l.keepalive_time_seconds,
                       Limits::kMinKeepaliveSeconds, 7200));
    CB_ASSIGN_OR_RETURN(l.keepalive_timeout_seconds,
                        limits.Integer("keepalive_timeout_seconds",
                                       l.keepalive_timeout_seconds, 1, 600));
    CB_ASSIGN_OR_RETURN(
        l.max_connection_age_seconds,
        limits.Integer("max_connection_age_seconds",
                       l.max_connection_age_seconds, 10, int64_t{7} * 86400));
    CB_ASSIGN_OR_RETURN(
        l.drain_seconds,
        limits.Integer("drain_seconds", l.drain_seconds, 0, 600));
    CB_ASSIGN_OR_RETURN(
        l.max_envelope_bytes,
        limits.Integer("max_envelope_bytes", l.max_envelope_bytes, 4 << 10,
                       l.max_message_bytes / 2));
    CB_ASSIGN_OR_RETURN(l.max_clock_skew_seconds,
                        limits.Integer("max_clock_skew_seconds",
                                       l.max_clock_skew_seconds, 1, 86400));
    CB_ASSIGN_OR_RETURN(
        l.delivery_window,
        limits.Integer("delivery_window", l.delivery_window, 1, 1024));
    CB_ASSIGN_OR_RETURN(
        l.retry_max_seconds,
        limits.Integer("retry_max_seconds", l.retry_max_seconds, 1, 3600));
    CB_ASSIGN_OR_RETURN(l.office_calls_per_second,
                        limits.Integer("office_calls_per_second",
                                       l.office_calls_per_second, 1, 1000000));
    CB_ASSIGN_OR_RETURN(
        l.office_burst,
        limits.Integer("office_burst", l.office_burst, 1, 10000000));
    CB_ASSIGN_OR_RETURN(l.peer_calls_per_second,
                        limits.Integer("peer_calls_per_second",
                                       l.peer_calls_per_second, 1, 1000000));
    CB_ASSIGN_OR_RETURN(
        l.peer_burst, limits.Integer("peer_burst", l.peer_burst, 1, 10000000));
    CB_ASSIGN_OR_RETURN(l.stranger_audits_per_second,
                        limits.Integer("stranger_audits_per_second",
                                       l.stranger_audits_per_second, 1, 10000));
    CB_ASSIGN_OR_RETURN(l.stranger_audit_burst,
                        limits.Integer("stranger_audit_burst",
                                       l.stranger_audit_burst, 1, 100000));
    CB_ASSIGN_OR_RETURN(
        l.peer_refusal_audits_per_second,
        limits.Integer("peer_refusal_audits_per_second",
                       l.peer_refusal_audits_per_second, 1, 100000));
    CB_ASSIGN_OR_RETURN(l.peer_refusal_audit_burst,
                        limits.Integer("peer_refusal_audit_burst",
                                       l.peer_refusal_audit_burst, 1, 1000000));
    CB_ASSIGN_OR_RETURN(l.refusal_summary_seconds,
                        limits.Integer("refusal_summary_seconds",
                                       l.refusal_summary_seconds, 1, 86400));
    CB_ASSIGN_OR_RETURN(
        l.office_streams_per_identity,
        limits.Integer("office_streams_per_identity",
                       l.office_streams_per_identity, 1, 10000));
    CB_ASSIGN_OR_RETURN(l.peer_streams,
                        limits.Integer("peer_streams", l.peer_streams, 1, 64));
    CB_ASSIGN_OR_RETURN(
        l.work_threads,
        limits.Integer("work_threads", l.work_threads, Limits::kMinWorkThreads,
                       Limits::kMaxWorkThreads));
    // The default must fit inside a message, whatever its size limit.
    if (limits.Get("max_envelope_bytes") == nullptr) {
      l.max_envelope_bytes =
          std::min(l.max_envelope_bytes, l.max_message_bytes / 2);
    }
    CB_RETURN_IF_ERROR(limits.CheckNoUnknownKeys());
  }
  {
    CB_ASSIGN_OR_RETURN(const toml::table* t, top.Table("audit", false));
    static const toml::table kEmpty;
    TableReader audit(t != nullptr ? *t : kEmpty, "audit", base_dir);
    AuditSettings& a = config.audit;
    CB_ASSIGN_OR_RETURN(a.checkpoint_interval_ms,
                        audit.Integer("checkpoint_interval_ms",
                                      a.checkpoint_interval_ms, 50, 60000));
    CB_ASSIGN_OR_RETURN(a.payload_retention_days,
                        audit.Integer("payload_retention_days",
                                      a.payload_retention_days, 0, 36500));
    CB_RETURN_IF_ERROR(audit.CheckNoUnknownKeys());
  }
  {
    CB_ASSIGN_OR_RETURN(const toml::table* t,
                        top.Table("data_protection", false));
    static const toml::table kEmpty;
    TableReader protection(t != nullptr ? *t : kEmpty, "data_protection",
                           base_dir);
    CB_ASSIGN_OR_RETURN(std::string key_file,
                        protection.String("key_file", false));
    config.data_protection.key_file =
        key_file.empty() ? (fs::path(config.data_dir) / "data.key").string()
                         : protection.Resolve(key_file);
    CB_RETURN_IF_ERROR(protection.CheckNoUnknownKeys());
  }
  CB_RETURN_IF_ERROR(ParseRetention(top, base_dir, config));
  CB_RETURN_IF_ERROR(ParsePolicy(top, base_dir, config));
  CB_RETURN_IF_ERROR(top.CheckNoUnknownKeys());
  return config;
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  return crypto::ReadFile(path);  // NOT_FOUND, PERMISSION_DENIED, ...
}

}  // namespace

int RetentionSettings::DaysFor(v1::MessageKind kind) const {
  const auto it = message_kind_days.find(kind);
  return it != message_kind_days.end() ? it->second : message_days;
}

int RetentionSettings::ShortestDays() const {
  int shortest = 0;
  auto consider = [&shortest](int days) {
    if (days > 0 && (shortest == 0 || days < shortest)) shortest = days;
  };
  consider(message_days);
  for (const auto& [kind, days] : message_kind_days) consider(days);
  for (const auto& [status, days] : case_status_days) consider(days);
  return shortest;
}

bool RetentionSettings::enabled() const { return ShortestDays() > 0; }

v1::Role RoleFromName(const std::string& name) {
  if (name == "liaison_officer") return v1::ROLE_LIAISON_OFFICER;
  if (name == "embassy_officer") return v1::ROLE_EMBASSY_OFFICER;
  if (name == "supervisor") return v1::ROLE_SUPERVISOR;
  if (name == "auditor") return v1::ROLE_AUDITOR;
  if (name == "read_only") return v1::ROLE_READ_ONLY;
  return v1::ROLE_UNSPECIFIED;
}

std::string RoleName(v1::Role role) {
  switch (role) {
    case v1::ROLE_LIAISON_OFFICER:
      return "liaison_officer";
    case v1::ROLE_EMBASSY_OFFICER:
      return "embassy_officer";
    case v1::ROLE_SUPERVISOR:
      return "supervisor";
    case v1::ROLE_AUDITOR:
      return "auditor";
    case v1::ROLE_READ_ONLY:
      return "read_only";
    default:
      return "unspecified";
  }
}

absl::StatusOr<Gateway> ParseGateway(const std::string& toml_text,
                                     const std::string& source_path,
                                     PrivateKeys keys) {
  auto root = ParseToml(toml_text, source_path);
  if (!root.ok()) return WithFile(root.status(), source_path);
  if (IsClientFile(*root)) {
    return WithFile(
        absl::InvalidArgumentError(
            "this is an office's client configuration (it has endpoint, and "
            "no [listen] or [tls]), not a gateway's: give the gateway's own "
            "configuration file"),
        source_path);
  }
  const fs::path base_dir = fs::absolute(source_path).parent_path();
  auto config = ParseGatewayImpl(*root, base_dir, keys);
  if (!config.ok()) return WithFile(config.status(), source_path);
  config->source_path = source_path;
  return config;
}

absl::StatusOr<Gateway> LoadGateway(const std::string& path, PrivateKeys keys) {
  CB_ASSIGN_OR_RETURN(const std::string text, ReadConfigFile(path));
  return ParseGateway(text, path, keys);
}

absl::StatusOr<Client> LoadClient(const std::string& path) {
  CB_ASSIGN_OR_RETURN(const std::string text, ReadConfigFile(path));
  auto root = ParseToml(text, path);
  if (!root.ok()) return WithFile(root.status(), path);
  if (IsGatewayFile(*root)) {
    return WithFile(
        absl::InvalidArgumentError(
            "this is a gateway's configuration (it has [listen] or [tls]), "
            "not an office's: give the office's client configuration "
            "(endpoint, gateway_identity, cert, key, ca)"),
        path);
  }
  TableReader top(*root, "", fs::absolute(path).parent_path());
  Client client;
  client.source_path = path;
  auto read = [&]() -> absl::Status {
    CB_ASSIGN_OR_RETURN(client.endpoint, top.String("endpoint", true));
    CB_RETURN_IF_ERROR(CheckAddress(top, "endpoint", client.endpoint));
    CB_ASSIGN_OR_RETURN(client.gateway_identity,
                        top.String("gateway_identity", true));
    auto id = ParseSpiffeId(client.gateway_identity);
    if (!id.ok() || id->kind != PrincipalKind::kGateway) {
      return top.Error("gateway_identity", "must be a gateway SPIFFE id");
    }
    CB_ASSIGN_OR_RETURN(client.cert, top.File("cert", true));
    CB_ASSIGN_OR_RETURN(client.key, top.PrivateKeyFile("key"));
    CB_ASSIGN_OR_RETURN(client.ca, top.File("ca", true));
    CB_ASSIGN_OR_RETURN(client.timeout_seconds,
                        top.Integer("timeout_seconds", 10, 1, 3600));
    return top.CheckNoUnknownKeys();
  };
  CB_RETURN_IF_ERROR(WithFile(read(), path));
  return client;
}

}  // namespace casebridge::config
