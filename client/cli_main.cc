// casebridge: the command-line client of a CaseBridge gateway's office port.
//
//   casebridge --config office.toml whoami
//   casebridge --config office.toml case open --local-ref FIR-1 ...
//   casebridge --config office.toml audit checkpoint
//   casebridge --config office.toml audit evidence get PK-M-... --out e.pb
//   casebridge audit verify --data-dir /var/lib/casebridge/pk
//       --keys public-keys.toml [--allow-unwitnessed]
//   casebridge audit evidence verify e.pb --keys public-keys.toml
//   casebridge certs status --config /etc/casebridge/pk.toml
//   casebridge policy check --config /etc/casebridge/pk.toml
//
// `audit verify` and `audit evidence verify` need no server: they check a
// gateway's data directory, or an evidence file, with the two gateways'
// public keys alone (core/public_keys.h). `certs status` reads a gateway's
// configuration and the certificate and CRL files it names; `policy check`
// validates its access policy and prints what each identity may do.
//
// Exit codes: 0 success; 1 the gateway refused or failed (one line naming
// the gRPC status and the reason), `certs status` found something that
// expires soon, or `policy check` found an office that may do nothing; 2 bad
// usage or configuration (including a missing keys file or data directory,
// or an invalid policy); 3 an audit log verification found damage, an evidence
// file is invalid, or `certs status` found something expired, not yet
// valid, missing or invalid.
#include <fcntl.h>
#include <grpc/support/log.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "casebridge/v1/audit.pb.h"
#include "client/cli_format.h"
#include "client/office_client.h"
#include "core/cert_status.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/evidence_check.h"
#include "core/grpc_lifetime.h"
#include "core/grpc_status.h"
#include "core/identity.h"
#include "core/policy.h"
#include "core/public_keys.h"
#include "core/tls.h"
#include "google/protobuf/util/json_util.h"
#include "server/audit_verifier.h"

namespace {

namespace cb = casebridge;
namespace v1 = casebridge::v1;

// Exit codes (docs/api.md#the-cli). A script tells a refusal (1) from no
// answer (4), which is worth trying again, and both from a lost output (5),
// after which what was asked is done.
constexpr int kExitOk = 0;
constexpr int kExitRpc = 1;
constexpr int kExitUsage = 2;
constexpr int kExitDamaged = 3;
constexpr int kExitNoAnswer = 4;
constexpr int kExitOutput = 5;
// ListCases' page size when none is given (the gateway's default too).
constexpr int kDefaultListPageSize = 50;

struct Options {
  std::string config_path;
  bool json = false;
};

// What UNAVAILABLE may mean (nothing more when the gateway answered it).
void PrintUnavailableHint(const absl::Status& status) {
  const std::string hint = cb::cli::UnavailableHint(status.message());
  if (!hint.empty()) std::cerr << "casebridge: " << hint << "\n";
}

// A gateway's configuration as the offline tools read it (certs status,
// policy check): certificates, CRLs and the office table; the private keys
// are not opened, so that a user who may not read them can run the tools.
absl::StatusOr<cb::config::Gateway> LoadGatewayForTools(
    const std::string& path) {
  return cb::config::LoadGateway(path, cb::config::PrivateKeys::kNotRead);
}

// One line: "casebridge: INVALID_ARGUMENT: case_reference.summary: is required"
// A call's failure (`exit_code` kExitRpc) that is no answer (cli::NoAnswer)
// exits kExitNoAnswer instead: trying again later may work.
int ReportStatus(const absl::Status& status, int exit_code) {
  std::cerr << "casebridge: "
            << cb::GrpcCodeName(static_cast<grpc::StatusCode>(status.code()))
            << ": " << status.message() << "\n";
  if (status.code() == absl::StatusCode::kUnavailable) {
    PrintUnavailableHint(status);
  }
  if (exit_code == kExitRpc && cb::cli::NoAnswer(status)) return kExitNoAnswer;
  return exit_code;
}

// The idempotency key of a call that changes something: the officer's
// --request-id, or one minted here ("cli-" and 24 hex digits), so that a call
// whose outcome is unknown can be repeated with the key its error names.
std::string RequestIdOrNew(const std::string& given) {
  if (!given.empty()) return given;
  return absl::StrCat("cli-",
                      absl::BytesToHexString(cb::crypto::RandomBytes(12)));
}

// ReportStatus for a call that changes something; if it may have been done
// though no answer came (its deadline passed, the connection dropped), says
// how to repeat it without doing it twice.
int ReportChangeStatus(const absl::Status& status,
                       const std::string& request_id) {
  const int rc = ReportStatus(status, kExitRpc);
  if (cb::cli::MayHaveReachedTheGateway(status)) {
    std::cerr << "casebridge: it may have been done all the same; to repeat "
                 "it without doing it twice, run the same command with "
                 "--request-id "
              << request_id << "\n";
  }
  return rc;
}

int Usage(const std::string& message) {
  std::cerr << "casebridge: " << message << "\n";
  return kExitUsage;
}

absl::StatusOr<std::unique_ptr<cb::client::OfficeClient>> MakeClient(
    const Options& options) {
  if (options.config_path.empty()) {
    return absl::InvalidArgumentError(
        "--config FILE (or CASEBRIDGE_CONFIG) is required for this command");
  }
  auto config = cb::config::LoadClient(options.config_path);
  if (!config.ok()) return config.status();
  // The gateway refuses a certificate out of its validity period at the
  // handshake, which the client only sees as UNAVAILABLE: say it here.
  auto certificates = cb::tls::ReadCertificates(config->cert);
  if (certificates.ok() && !certificates->empty()) {
    const absl::Time now = absl::Now();
    const cb::tls::CertificateInfo& own = certificates->front();
    if (now > own.not_after) {
      return absl::FailedPreconditionError(absl::StrCat(
          config->cert, ": this office's certificate expired at ",
          absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", own.not_after,
                           absl::UTCTimeZone()),
          "; the gateway will refuse it: ask its operator for a new one"));
    }
    if (now < own.not_before) {
      return absl::FailedPreconditionError(absl::StrCat(
          config->cert, ": this office's certificate is not valid before ",
          absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", own.not_before,
                           absl::UTCTimeZone()),
          " (or this computer's clock is wrong); the gateway will refuse it "
          "until then"));
    }
  }
  return cb::client::OfficeClient::Create(*config);
}

// Under a case, or a list of cases, that came without its personal data.
constexpr char kWithheldNote[] =
    "Personal data withheld: victims' remarks and last known locations are "
    "not shown to your role (ReadPersonalData)\n";

void Print(const Options& options, const google::protobuf::Message& message,
           const std::string& text) {
  if (options.json) {
    std::cout << cb::cli::ToJson(message) << "\n";
  } else {
    std::cout << text;
  }
}

// Case fields shared by `case open` and `case update`.
struct CaseFlags {
  std::string local_ref, category, summary, handling, restriction, evaluation;
  std::vector<std::string> victims, locations;
  std::string summary_file, victims_file, locations_file;

  void Add(CLI::App* cmd) {
    cmd->add_option("--local-ref", local_ref,
                    "your own reference (FIR number)");
    cmd->add_option(
        "--category", category,
        "forced-marriage-fraud | forced-labour | sexual-exploitation | "
        "suspected-organ-trade | other");
    auto* summary_flag =
        cmd->add_option("--summary", summary, "what is known (UTF-8)");
    cmd->add_option("--summary-file", summary_file,
                    "the summary from FILE, or - for standard input (keeps "
                    "it off the command line)")
        ->excludes(summary_flag);
    cmd->add_option("--handling", handling, "handling code: H0 | H1 | H2 | H3");
    cmd->add_option("--restriction", restriction, "restriction text (with H3)");
    cmd->add_option("--evaluation", evaluation, "4x4 evaluation code, e.g. B2");
    // One value per flag, so that a case id after a repeatable flag is not
    // taken for another of its values.
    auto* victim_flag =
        cmd->add_option("--victim", victims,
                        "PSEUDONYM[:REMARKS], or :REMARKS for a pseudonym the "
                        "gateway mints (repeatable)")
            ->allow_extra_args(false);
    cmd->add_option("--victims-file", victims_file,
                    "victims from FILE (or - for standard input), one a "
                    "line, written as for --victim")
        ->excludes(victim_flag);
    auto* location_flag = cmd->add_option("--location", locations,
                                          "DESCRIPTION@PK|CN (repeatable)")
                              ->allow_extra_args(false);
    cmd->add_option("--locations-file", locations_file,
                    "locations from FILE (or - for standard input), one a "
                    "line, written as for --location")
        ->excludes(location_flag);
  }

  // Passes each value of a repeatable `flag` (`values`), or each line of
  // its `file_flag`'s file, to `add`. Returns whether either flag was given.
  static absl::StatusOr<bool> EachEntry(
      CLI::App* cmd, const char* flag, const std::vector<std::string>& values,
      const char* file_flag, const std::string& file,
      const std::function<absl::Status(const std::string&)>& add) {
    std::vector<std::string> lines;
    if (cmd->count(file_flag) > 0) {
      auto read = cb::cli::ReadTextLines(file_flag, file);
      if (!read.ok()) return read.status();
      lines = *std::move(read);
    } else if (cmd->count(flag) > 0) {
      lines = values;
    } else {
      return false;
    }
    for (const std::string& line : lines) {
      if (absl::Status added = add(line); !added.ok()) return added;
    }
    return true;
  }

  // Copies the given flags into `c`; names of the fields set go to `paths`.
  absl::Status Fill(CLI::App* cmd, v1::CaseReference* c,
                    std::vector<std::string>* paths) const {
    auto given = [&](const char* flag) { return cmd->count(flag) > 0; };
    if (given("--local-ref")) {
      c->set_local_reference(local_ref);
      paths->push_back("local_reference");
    }
    if (given("--category")) {
      auto v = cb::cli::ParseEnum(v1::CaseCategory_descriptor(), "--category",
                                  category);
      if (!v.ok()) return v.status();
      c->set_category(static_cast<v1::CaseCategory>(*v));
    }
    if (given("--summary")) {
      c->set_summary(summary);
      paths->push_back("summary");
    }
    if (given("--summary-file")) {
      auto text = cb::cli::ReadTextFile("--summary-file", summary_file);
      if (!text.ok()) return text.status();
      c->set_summary(*std::move(text));
      paths->push_back("summary");
    }
    if (given("--handling")) {
      auto v = cb::cli::ParseEnum(v1::HandlingCode_descriptor(), "--handling",
                                  handling);
      if (!v.ok()) return v.status();
      c->set_handling_code(static_cast<v1::HandlingCode>(*v));
      paths->push_back("handling_code");
    }
    if (given("--restriction")) {
      c->set_handling_restriction(restriction);
      paths->push_back("handling_restriction");
    }
    if (given("--evaluation")) {
      auto v = cb::cli::ParseEvaluation(evaluation);
      if (!v.ok()) return v.status();
      *c->mutable_evaluation() = *v;
      paths->push_back("evaluation");
    }
    const absl::StatusOr<bool> victims_given =
        EachEntry(cmd, "--victim", victims, "--victims-file", victims_file,
                  [&](const std::string& text) -> absl::Status {
                    auto v = cb::cli::ParseVictim(text);
                    if (!v.ok()) return v.status();
                    *c->add_victims() = *v;
                    return absl::OkStatus();
                  });
    if (!victims_given.ok()) return victims_given.status();
    if (*victims_given) paths->push_back("victims");
    const absl::StatusOr<bool> locations_given =
        EachEntry(cmd, "--location", locations, "--locations-file",
                  locations_file, [&](const std::string& text) -> absl::Status {
                    auto v = cb::cli::ParseLocation(text);
                    if (!v.ok()) return v.status();
                    *c->add_last_known_locations() = *v;
                    return absl::OkStatus();
                  });
    if (!locations_given.ok()) return locations_given.status();
    if (*locations_given) paths->push_back("last_known_locations");
    return absl::OkStatus();
  }
};

absl::StatusOr<cb::keys::PublicKeys> LoadKeys(const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "--keys FILE (the gateways' public keys file) is required");
  }
  return cb::keys::LoadPublicKeys(path);
}

int AuditVerify(const Options& options, const std::string& data_dir,
                const std::string& keys_path, bool allow_unwitnessed) {
  auto keys = LoadKeys(keys_path);
  if (!keys.ok()) return ReportStatus(keys.status(), kExitUsage);
  cb::server::AuditVerifyOptions verify_options;
  verify_options.allow_unwitnessed = allow_unwitnessed;
  auto report = cb::server::VerifyDataDir(data_dir, *keys, verify_options);
  // Not examined at all (no database, unreadable): nothing was found
  // damaged, so this is the caller's to fix.
  if (!report.ok()) return ReportStatus(report.status(), kExitUsage);
  const cb::server::AuditVerifyReport& r = *report;
  if (options.json) {
    nlohmann::ordered_json out;
    out["ok"] = r.ok;
    out["data_dir"] = data_dir;
    out["origin"] = r.origin;
    out["entries"] = r.entries;
    out["checkpoints"] = r.checkpoints;
    out["cosigned"] = r.cosigned;
    out["witnessed_size"] = r.witnessed_size;
    out["consistency_proofs"] = r.consistency_proofs;
    out["purged_payloads"] = r.purged_payloads;
    out["payloads_checked"] = r.payloads_checked;
    out["cases_checked"] = r.cases_checked;
    if (r.first_bad_entry.has_value()) {
      out["first_bad_entry"] = *r.first_bad_entry;
    }
    if (r.first_bad_checkpoint.has_value()) {
      out["first_bad_checkpoint"] = *r.first_bad_checkpoint;
    }
    if (!r.ok) out["problem"] = r.problem;
    out["notes"] = r.notes;
    std::cout << cb::cli::JsonLine(out);
  } else if (r.ok) {
    std::cout << "audit log " << data_dir << ": OK, " << r.entries
              << (r.entries == 1 ? " entry, " : " entries, ") << r.checkpoints
              << (r.checkpoints == 1 ? " checkpoint (" : " checkpoints (")
              << r.cosigned << " cosigned by the peer), " << r.purged_payloads
              << (r.purged_payloads == 1 ? " payload" : " payloads")
              << " purged under retention; " << r.cases_checked
              << (r.cases_checked == 1 ? " case" : " cases")
              << " of this gateway at the version the log gives\n";
    for (const std::string& note : r.notes) {
      std::cout << "  note: " << note << "\n";
    }
  } else if (r.first_bad_entry.has_value()) {
    std::cout << "audit log " << data_dir << ": DAMAGED at entry "
              << *r.first_bad_entry << ": " << r.problem << "\n";
  } else if (r.first_bad_checkpoint.has_value()) {
    std::cout << "audit log " << data_dir << ": DAMAGED at checkpoint "
              << *r.first_bad_checkpoint << ": " << r.problem << "\n";
  } else {
    std::cout << "audit log " << data_dir << ": FAILED: " << r.problem << "\n";
  }
  return r.ok ? kExitOk : kExitDamaged;
}

// Creates the new file `path`, readable by the owner only (a bundle names
// envelopes and offices), before the call that fills it, so that a file
// that cannot be written is said before anything is asked of the gateway.
// Never over an existing file, nor through a symbolic link (one planted in
// a shared folder would have the bundle overwrite whatever it points at).
absl::StatusOr<int> CreatePrivateFile(const std::string& path) {
  const int fd = ::open(
      path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST) {
    return absl::AlreadyExistsError(absl::StrCat(
        path, ": exists already; choose another --out, or remove it first"));
  }
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", std::strerror(errno)));
  }
  return fd;
}

// Writes `bytes` to `fd`, made for `path` by CreatePrivateFile, and closes
// it; a file left half written is removed.
absl::Status WritePrivateFile(int fd, const std::string& path,
                              const std::string& bytes) {
  bool ok = true;
  size_t written = 0;
  while (ok && written < bytes.size()) {
    const ssize_t n =
        ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) written += static_cast<size_t>(n);
  }
  int error = ok ? 0 : errno;
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error != 0) {
    ::unlink(path.c_str());
    return absl::InternalError(absl::StrCat(path, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

// The handling marking's fields in --json output.
void AddMarking(const cb::cli::HandlingMarking& marking,
                nlohmann::ordered_json& out) {
  out["handling_code"] = v1::HandlingCode_Name(marking.code);
  if (!marking.restriction.empty()) {
    out["handling_restriction"] = marking.restriction;
  }
  out["handling_notice"] = marking.notice;
  if (!marking.held_notice.empty()) {
    out["held_handling_code"] = v1::HandlingCode_Name(marking.held_code);
    if (!marking.held_restriction.empty()) {
      out["held_handling_restriction"] = marking.held_restriction;
    }
    out["held_handling_notice"] = marking.held_notice;
    out["held_handling_signed"] = false;
  } else if (!marking.held_problem.empty()) {
    out["held_handling_problem"] = marking.held_problem;
  }
}

int EvidenceVerify(const Options& options, const std::string& path,
                   const std::string& keys_path) {
  auto keys = LoadKeys(keys_path);
  if (!keys.ok()) return ReportStatus(keys.status(), kExitUsage);
  auto bytes = cb::crypto::ReadFile(path);
  if (!bytes.ok()) return ReportStatus(bytes.status(), kExitUsage);
  v1::EvidenceBundle bundle;
  cb::evidence::EvidenceReport report;
  const bool parsed = bundle.ParseFromString(*bytes);
  if (!parsed) {
    report.problem = "bundle: not a casebridge.v1.EvidenceBundle";
  } else {
    report = cb::evidence::VerifyEvidence(bundle, *keys);
  }
  auto lower = [](v1::Country c) {
    return absl::AsciiStrToLower(cb::CountryCode(c));
  };
  // The handling of the message proved, from the signed envelope: shown
  // first, also when the bundle does not verify.
  absl::StatusOr<cb::cli::HandlingMarking> marking =
      parsed ? cb::cli::EvidenceMarking(bundle)
             : absl::InvalidArgumentError("bundle: does not parse");
  if (options.json) {
    nlohmann::ordered_json out;
    out["ok"] = report.ok();
    out["file"] = path;
    if (marking.ok()) AddMarking(*marking, out);
    if (report.ok()) {
      out["envelope_id"] = report.envelope_id;
      out["message_id"] = report.message_id;
      out["origin"] = lower(report.origin);
      out["receiver"] = lower(report.receiver);
      out["sent_index"] = report.sent_index;
      out["sent_checkpoint_size"] = report.sent_checkpoint_size;
      out["received_index"] = report.received_index;
      out["received_checkpoint_size"] = report.received_checkpoint_size;
    } else {
      out["problem"] = report.problem;
    }
    out["notes"] = report.notes;
    std::cout << cb::cli::JsonLine(out);
    return report.ok() ? kExitOk : kExitDamaged;
  }
  if (marking.ok()) {
    std::cout << cb::cli::FormatMarking(*marking, report.ok());
  }
  if (report.ok()) {
    const std::string origin = lower(report.origin);
    const std::string receiver = lower(report.receiver);
    std::cout << "evidence " << path << ": OK: envelope " << report.envelope_id
              << ", sent entry " << report.sent_index << " in " << origin
              << "'s log under checkpoint " << report.sent_checkpoint_size
              << " cosigned by " << receiver << ", received entry "
              << report.received_index << " in " << receiver
              << "'s log under checkpoint " << report.received_checkpoint_size
              << " cosigned by " << origin << "\n";
    for (const std::string& note : report.notes) {
      std::cout << "  note: " << note << "\n";
    }
  } else {
    std::cout << "evidence " << path << ": INVALID: " << report.problem << "\n";
  }
  return report.ok() ? kExitOk : kExitDamaged;
}

std::string FormatUtc(absl::Time t) {
  if (t == absl::InfinitePast()) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

// Every certificate and CRL a gateway configuration names, with its state
// (docs/operations.md#certificate-and-crl-status). Exit 0 all ok, 1 something
// expires within the warning window, 3 something expired, not yet valid,
// missing or invalid; 2 if the configuration cannot be read.
int CertsStatus(const Options& options, const std::string& config_path) {
  if (config_path.empty()) {
    return Usage("certs status: --config GATEWAY_TOML is required");
  }
  auto config = LoadGatewayForTools(config_path);
  if (!config.ok()) return ReportStatus(config.status(), kExitUsage);
  const absl::Time now = absl::Now();
  const absl::Duration cert_window =
      absl::Hours(24) * config->expiry_warning_days;
  const absl::Duration crl_window =
      absl::Hours(24) * config->crl_expiry_warning_days;
  const cb::certs::Inventory inventory =
      cb::certs::ReadInventory(cb::certs::FilesOf(*config));
  bool soon = false;
  bool failed = false;
  nlohmann::ordered_json items = nlohmann::ordered_json::array();
  std::vector<std::vector<std::string>> rows = {
      {"WHAT", "FILE", "SUBJECT", "VALID UNTIL", "DAYS LEFT", "STATE"}};
  for (const cb::certs::Item& item : inventory.items) {
    const cb::certs::State state =
        cb::certs::StateOf(item, now, cert_window, crl_window);
    soon = soon || state == cb::certs::State::kExpiresSoon;
    failed = failed || cb::certs::IsFailure(state);
    const bool crl = item.kind == cb::certs::ItemKind::kCrl;
    const bool dated = item.problem == cb::certs::Problem::kNone;
    const int64_t days_left =
        dated ? absl::ToInt64Hours(item.valid_until - now) / 24 : 0;
    nlohmann::ordered_json out;
    out["kind"] = crl ? "crl" : "certificate";
    out["key"] = item.key;
    out["file"] = item.file;
    out["subject"] = item.subject;
    out["issuer"] = item.issuer;
    if (dated) {
      out[crl ? "last_update" : "not_before"] = FormatUtc(item.valid_from);
      out[crl ? "next_update" : "not_after"] = FormatUtc(item.valid_until);
      out["days_left"] = days_left;
    }
    if (crl && dated) out["revoked"] = item.revoked;
    out["state"] = cb::certs::StateName(state);
    if (!dated) out["problem"] = item.detail;
    items.push_back(std::move(out));
    std::string state_text = cb::certs::StateName(state);
    if (!dated) state_text += ": " + item.detail;
    rows.push_back({crl ? "crl" : item.key, item.file, item.subject,
                    dated ? FormatUtc(item.valid_until) : "-",
                    dated ? absl::StrCat(days_left) : "-", state_text});
  }
  const int exit_code = failed ? kExitDamaged : soon ? kExitRpc : kExitOk;
  if (options.json) {
    nlohmann::ordered_json out;
    out["config"] = config_path;
    out["ok"] = !failed && !soon;
    out["expiry_warning_days"] = config->expiry_warning_days;
    out["crl_expiry_warning_days"] = config->crl_expiry_warning_days;
    out["items"] = std::move(items);
    std::cout << cb::cli::JsonLine(out);
  } else {
    std::cout << cb::cli::FormatTable(rows);
    std::cout << (failed ? "certificates: FAILED (expired, not yet valid, "
                           "missing or invalid items above)\n"
                  : soon ? "certificates: OK, but some expire soon\n"
                         : "certificates: OK\n");
  }
  return exit_code;
}

// Validates a gateway configuration's access policy and prints what each
// identity may do (docs/operations.md#access-policy). Exit 0 valid, 2 invalid
// (the error names the file and key), 1 valid but an office may do nothing.
int PolicyCheck(const Options& options, const std::string& config_path) {
  if (config_path.empty()) {
    return Usage("policy check: --config GATEWAY_TOML is required");
  }
  auto config = LoadGatewayForTools(config_path);
  if (!config.ok()) return ReportStatus(config.status(), kExitUsage);
  const std::string source =
      config->policy_from_config
          ? absl::StrCat("[policy.roles] of ", config_path)
          : "built-in (no [policy.roles] in the file)";
  const std::string digest = cb::policy::AccessPolicyDigest(*config);
  std::vector<std::string> idle;  // offices whose role grants nothing
  nlohmann::ordered_json offices = nlohmann::ordered_json::array();
  std::vector<std::vector<std::string>> rows = {
      {"IDENTITY", "NAME", "ROLE", "MAY"}};
  for (const cb::config::Office& office : config->offices) {
    std::vector<std::string> may;
    for (cb::policy::Action a : config->roles.ActionsOf(office.role)) {
      may.push_back(cb::policy::ActionName(a));
    }
    if (may.empty()) idle.push_back(office.identity);
    nlohmann::ordered_json o;
    o["identity"] = office.identity;
    o["name"] = office.display_name;
    o["role"] = cb::config::RoleName(office.role);
    o["may"] = may;
    offices.push_back(std::move(o));
    rows.push_back({office.identity, office.display_name,
                    cb::config::RoleName(office.role),
                    may.empty() ? "(nothing)" : absl::StrJoin(may, ", ")});
  }
  if (options.json) {
    nlohmann::ordered_json out;
    out["config"] = config_path;
    out["valid"] = true;
    out["source"] = config->policy_from_config ? "config" : "built-in";
    out["digest"] = digest;
    out["offices"] = std::move(offices);
    out["peer_offices"] = config->peer_offices;
    out["offices_without_permissions"] = idle;
    std::cout << cb::cli::JsonLine(out);
  } else {
    std::cout << cb::cli::FormatTable(rows);
    std::cout << "peer offices that may send messages here: "
              << absl::StrJoin(config->peer_offices, ", ") << "\n"
              << "role table: " << source << "\n"
              << "policy digest: " << digest << "\n";
    for (const std::string& identity : idle) {
      std::cout << "warning: " << identity
                << " may do nothing: its role is granted no action\n";
    }
    std::cout << "policy: valid\n";
  }
  return idle.empty() ? kExitOk : kExitRpc;
}

}  // namespace

namespace {

// After a failed parse: a word where a command was expected that names
// none (a misspelt "whoami", "case opne"), said with the commands there are.
// CLI11 itself reports only that a command is required.
std::optional<std::string> UnknownCommand(const CLI::App& app) {
  const CLI::App* at = &app;
  std::string path = "casebridge";
  for (bool deeper = true; deeper;) {
    deeper = false;
    for (const CLI::App* sub : at->get_subcommands({})) {
      if (sub->parsed()) {
        at = sub;
        absl::StrAppend(&path, " ", sub->get_name());
        deeper = true;
        break;
      }
    }
  }
  const std::vector<const CLI::App*> commands = at->get_subcommands({});
  if (commands.empty()) return std::nullopt;
  for (const std::string& word : app.remaining(true)) {
    if (word.empty() || word[0] == '-') continue;
    std::vector<std::string> names;
    for (const CLI::App* sub : commands) names.push_back(sub->get_name());
    return absl::StrCat("unknown command \"", word, "\" after \"", path,
                        "\"; the commands there: ", absl::StrJoin(names, ", "),
                        " (see --help)");
  }
  return std::nullopt;
}

// The process, run by main with the gRPC library held (RunWithGrpc).
int Main(int argc, char** argv) {
  CLI::App app{"casebridge: client of a CaseBridge gateway"};
  app.require_subcommand(1);
  // --config and --json may come after the command too (subcommands made
  // from here on inherit this).
  app.fallthrough();
  Options options;
  app.add_option("--config", options.config_path, "client configuration (TOML)")
      ->envname("CASEBRIDGE_CONFIG");
  app.add_flag("--json", options.json, "print JSON instead of tables");

  auto* whoami = app.add_subcommand("whoami", "who the gateway says you are");
  std::string health_service;
  auto* health = app.add_subcommand("health", "is the gateway serving?");
  health->add_option("--service", health_service,
                     "a service name, e.g. casebridge.v1.OfficeService");

  auto* case_cmd = app.add_subcommand("case", "case references");
  case_cmd->require_subcommand(1);

  CaseFlags open_flags;
  std::string request_id;
  auto* case_open = case_cmd->add_subcommand("open", "open a new case");
  open_flags.Add(case_open);
  case_open->add_option("--request-id", request_id,
                        "idempotency key: retrying with it never opens twice");

  std::string get_id;
  auto* case_get = case_cmd->add_subcommand("get", "show one case");
  case_get->add_option("exchange_id", get_id, "e.g. PK-2026-000123")
      ->required();

  std::string list_status, list_category, list_owner, list_text, list_token;
  int list_page_size = 0;
  bool list_all = false;
  auto* case_list = case_cmd->add_subcommand("list", "list cases");
  case_list->add_option("--status", list_status, "only cases in this status");
  case_list->add_option("--category", list_category, "only this category");
  case_list->add_option("--owner", list_owner,
                        "only cases of this office (SPIFFE id)");
  case_list->add_option("--text", list_text,
                        "text in id, reference or summary");
  case_list->add_option("--page-size", list_page_size,
                        "cases per page (1-500)");
  case_list->add_option("--page-token", list_token,
                        "continue from a previous page");
  case_list->add_flag("--all", list_all, "fetch every page");

  CaseFlags update_flags;
  std::string update_id, update_status;
  int64_t expected_version = 0;
  auto* case_update = case_cmd->add_subcommand("update", "change a case");
  case_update->add_option("exchange_id", update_id, "e.g. PK-2026-000123")
      ->required();
  case_update
      ->add_option("--expected-version", expected_version,
                   "the version you read (from case get)")
      ->required();
  case_update->add_option("--status", update_status,
                          "open | under-investigation | victim-located | "
                          "victim-rescued | repatriated | closed");
  update_flags.Add(case_update);

  // --- the exchange -----------------------------------------------------
  std::string share_id, share_to, share_request_id;
  auto* case_share = case_cmd->add_subcommand(
      "share", "send a case reference to the counterpart country");
  case_share->add_option("exchange_id", share_id, "e.g. PK-2026-000123")
      ->required();
  case_share->add_option("--to", share_to, "a counterpart office (SPIFFE id)");
  case_share->add_option("--request-id", share_request_id, "idempotency key");

  std::string grant_id, grant_request_id;
  std::vector<std::string> grant_to;
  bool grant_any = false;
  auto* case_grant = case_cmd->add_subcommand(
      "grant",
      "permit passing one of our H2 cases on inside the counterpart country "
      "(--withdraw: withdraw that permission)");
  case_grant->add_option("exchange_id", grant_id, "e.g. PK-2026-000123")
      ->required();
  case_grant
      ->add_option("--to", grant_to,
                   "a counterpart office (SPIFFE id); repeatable")
      ->allow_extra_args(false);
  case_grant->add_flag("--any-office", grant_any,
                       "any office of the counterpart country");
  case_grant->add_option("--request-id", grant_request_id, "idempotency key");
  bool grant_withdraw = false;
  case_grant->add_flag("--withdraw", grant_withdraw,
                       "withdraw the permission instead (with --any-office: "
                       "every permission given for the case)");

  std::string forward_id, forward_to;
  auto* case_forward = case_cmd->add_subcommand(
      "forward", "pass a case from the peer on to another office of ours");
  case_forward->add_option("exchange_id", forward_id, "e.g. CN-2026-000123")
      ->required();
  case_forward->add_option("--to", forward_to, "our office (SPIFFE id)")
      ->required();

  auto* message_cmd =
      app.add_subcommand("message", "rescue-coordination messages");
  message_cmd->require_subcommand(1);
  std::string send_case, send_kind, send_priority = "routine", send_stage,
                                    send_body, send_to, send_reply_to,
                                    send_request_id;
  auto* message_send = message_cmd->add_subcommand(
      "send", "send a message within a shared case");
  message_send->add_option("exchange_id", send_case, "the case")->required();
  message_send
      ->add_option("--kind", send_kind,
                   "rescue-request | rescue-update | information-request | "
                   "information-response | note")
      ->required();
  message_send->add_option("--priority", send_priority,
                           "routine | priority | urgent");
  message_send->add_option(
      "--stage", send_stage,
      "with rescue-update: located | rescued | in-shelter | "
      "in-medical-care | repatriated | closed");
  std::string send_body_file;
  auto* body_flag =
      message_send->add_option("--body", send_body, "the text (UTF-8)");
  message_send
      ->add_option("--body-file", send_body_file,
                   "the text from FILE, or - for standard input (keeps it "
                   "off the command line)")
      ->excludes(body_flag);
  message_send->add_option("--to", send_to, "a counterpart office (SPIFFE id)");
  message_send->add_option("--reply-to", send_reply_to, "message id answered");
  message_send->add_option("--request-id", send_request_id, "idempotency key");
  std::string send_handling, send_restriction, send_evaluation;
  message_send->add_option(
      "--handling", send_handling,
      "this message's handling code (default: the case's); on an H0 case H1, "
      "H2 or H3");
  message_send->add_option("--restriction", send_restriction,
                           "this message's restriction text (with H3)");
  message_send->add_option("--evaluation", send_evaluation,
                           "this message's 4x4 evaluation code (default: the "
                           "case's), e.g. A1");
  std::string status_id;
  auto* message_status =
      message_cmd->add_subcommand("status", "where an outgoing message is");
  message_status->add_option("message_id", status_id, "from message send")
      ->required();
  std::string cancel_id;
  std::string cancel_reason;
  auto* message_cancel = message_cmd->add_subcommand(
      "cancel",
      "withdraw a message of yours not yet delivered (later messages of its "
      "case then go on)");
  message_cancel->add_option("message_id", cancel_id, "from message send")
      ->required();
  message_cancel->add_option("--reason", cancel_reason, "why, for the record");

  auto* inbox_cmd = app.add_subcommand("inbox", "your office's inbox");
  inbox_cmd->require_subcommand(1);
  std::string watch_cursor;
  int watch_count = 0;
  double watch_seconds = 0;
  auto* inbox_watch =
      inbox_cmd->add_subcommand("watch", "print messages as they arrive");
  inbox_watch->add_option("--cursor", watch_cursor, "resume after this cursor");
  // Zero or less would read as "for ever": refused rather than guessed.
  const CLI::Validator more_than_zero(
      [](std::string& text) -> std::string {
        double value = 0;
        if (absl::SimpleAtod(text, &value) && value > 0) return "";
        return "must be more than 0 (leave the flag out for no limit)";
      },
      "> 0");
  inbox_watch
      ->add_option("--count", watch_count,
                   "stop after this many messages (default: no limit)")
      ->check(more_than_zero);
  inbox_watch
      ->add_option("--seconds", watch_seconds,
                   "stop after this long (default: until interrupted)")
      ->check(more_than_zero);

  std::string ack_id, ack_note;
  bool ack_acted = false;
  auto* ack = app.add_subcommand("ack", "acknowledge a message in your inbox");
  ack->add_option("message_id", ack_id, "from inbox watch")->required();
  ack->add_flag("--acted", ack_acted, "acted on it (default: read)");
  ack->add_option("--note", ack_note, "a short remark for the sender");

  auto* audit_cmd = app.add_subcommand("audit", "the audit log");
  audit_cmd->require_subcommand(1);
  // `casebridge audit verify ... --json` as well as `casebridge --json ...`.
  audit_cmd->fallthrough();
  std::string data_dir, keys_path;
  bool allow_unwitnessed = false;
  auto* audit_verify = audit_cmd->add_subcommand(
      "verify", "check a gateway's audit log offline (no server needed)");
  audit_verify->fallthrough();
  audit_verify->add_option("--data-dir", data_dir, "the gateway's data_dir")
      ->required();
  audit_verify
      ->add_option("--keys", keys_path,
                   "the gateways' public keys file (public-keys.toml)")
      ->required();
  audit_verify->add_flag(
      "--allow-unwitnessed", allow_unwitnessed,
      "accept a log no checkpoint of which the peer cosigned");
  auto* audit_checkpoint = audit_cmd->add_subcommand(
      "checkpoint", "print the gateway's newest signed checkpoint");
  audit_checkpoint->fallthrough();
  auto* evidence_cmd = audit_cmd->add_subcommand(
      "evidence", "proof of one envelope's exchange, checkable offline");
  evidence_cmd->require_subcommand(1);
  evidence_cmd->fallthrough();
  std::string evidence_id, evidence_out;
  auto* evidence_get = evidence_cmd->add_subcommand(
      "get", "fetch the evidence of a message's envelope");
  evidence_get->fallthrough();
  evidence_get
      ->add_option("id", evidence_id,
                   "message id (PK-M-...) or envelope id (PK-E-...)")
      ->required();
  evidence_get->add_option("--out", evidence_out, "file to write (mode 0600)")
      ->required();
  std::string evidence_file, evidence_keys;
  auto* evidence_verify = evidence_cmd->add_subcommand(
      "verify", "check an evidence file offline (no server needed)");
  evidence_verify->fallthrough();
  evidence_verify->add_option("file", evidence_file, "from audit evidence get")
      ->required();
  evidence_verify
      ->add_option("--keys", evidence_keys,
                   "the gateways' public keys file (public-keys.toml)")
      ->required();
  uint64_t entries_start = 0;
  int entries_page = 50;
  auto* audit_entries =
      audit_cmd->add_subcommand("entries", "read audit entries (auditors)");
  audit_entries->add_option("--start", entries_start, "first entry index");
  audit_entries->add_option("--page-size", entries_page,
                            "entries to read (1-1000)");

  auto* certs_cmd =
      app.add_subcommand("certs", "the gateway's certificates and CRLs");
  certs_cmd->require_subcommand(1);
  certs_cmd->fallthrough();
  std::string certs_config;
  auto* certs_status = certs_cmd->add_subcommand(
      "status",
      "expiry of every certificate and CRL a gateway configuration names "
      "(offline)");
  certs_status->fallthrough();
  certs_status->add_option("--config", certs_config,
                           "the gateway's configuration (TOML)");

  auto* policy_cmd = app.add_subcommand("policy", "the access policy");
  policy_cmd->require_subcommand(1);
  policy_cmd->fallthrough();
  std::string policy_config;
  auto* policy_check = policy_cmd->add_subcommand(
      "check",
      "validate a gateway configuration's access policy and print what each "
      "identity may do (offline)");
  policy_check->fallthrough();
  policy_check->add_option("--config", policy_config,
                           "the gateway's configuration (TOML)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (std::optional<std::string> unknown = UnknownCommand(app)) {
      return Usage(*unknown);
    }
    // --help and its kin print and exit 0; a usage error is one line in
    // the format of every other error.
    if (e.get_exit_code() == 0) {
      app.exit(e);
      return kExitOk;
    }
    return Usage(absl::StrCat(e.what(), " (--help lists the options)"));
  }

  if (audit_verify->parsed()) {
    return AuditVerify(options, data_dir, keys_path, allow_unwitnessed);
  }
  if (evidence_verify->parsed()) {
    return EvidenceVerify(options, evidence_file, evidence_keys);
  }
  if (policy_check->parsed()) {
    return PolicyCheck(
        options, policy_config.empty() ? options.config_path : policy_config);
  }
  if (certs_status->parsed()) {
    return CertsStatus(
        options, certs_config.empty() ? options.config_path : certs_config);
  }

  auto client = MakeClient(options);
  if (!client.ok()) return Usage(std::string(client.status().message()));
  cb::client::OfficeClient& c = **client;

  if (whoami->parsed()) {
    auto who = c.WhoAmI();
    if (!who.ok()) return ReportStatus(who.status(), kExitRpc);
    Print(options, *who, cb::cli::FormatWhoAmI(*who));
    return kExitOk;
  }
  if (health->parsed()) {
    auto status = c.Health(health_service);
    if (!status.ok()) return ReportStatus(status.status(), kExitRpc);
    const bool serving =
        *status == grpc::health::v1::HealthCheckResponse::SERVING;
    const std::string name =
        grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
    if (options.json) {
      std::cout << "{\"status\":\"" << name << "\"}\n";
    } else {
      std::cout << (health_service.empty() ? "gateway" : health_service) << ": "
                << name << "\n";
    }
    return serving ? kExitOk : kExitRpc;
  }
  if (case_open->parsed()) {
    v1::CaseReference draft;
    std::vector<std::string> paths;
    if (auto s = open_flags.Fill(case_open, &draft, &paths); !s.ok()) {
      return Usage(std::string(s.message()));
    }
    const std::string key = RequestIdOrNew(request_id);
    auto opened = c.OpenCase(draft, key);
    if (!opened.ok()) return ReportChangeStatus(opened.status(), key);
    Print(options, *opened,
          absl::StrCat("Opened case ", opened->exchange_id(), "\n",
                       cb::cli::FormatCase(*opened)));
    return kExitOk;
  }
  if (case_get->parsed()) {
    auto got = c.GetCaseResponse(get_id);
    if (!got.ok()) return ReportStatus(got.status(), kExitRpc);
    const v1::CaseReference& got_case = got->case_reference();
    if (options.json) {
      // The case as JSON, as ever; a withheld part is said beside it.
      nlohmann::ordered_json out =
          nlohmann::ordered_json::parse(cb::cli::ToJson(got_case));
      if (got->personal_data_withheld()) out["personal_data_withheld"] = true;
      std::cout << cb::cli::JsonLine(out);
    } else {
      std::cout << cb::cli::FormatCase(got_case);
      if (got->personal_data_withheld()) std::cout << kWithheldNote;
    }
    return kExitOk;
  }
  if (case_list->parsed()) {
    v1::ListCasesRequest request;
    if (!list_status.empty()) {
      auto v = cb::cli::ParseEnum(v1::CaseStatus_descriptor(), "--status",
                                  list_status);
      if (!v.ok()) return Usage(std::string(v.status().message()));
      request.set_status(static_cast<v1::CaseStatus>(*v));
    }
    if (!list_category.empty()) {
      auto v = cb::cli::ParseEnum(v1::CaseCategory_descriptor(), "--category",
                                  list_category);
      if (!v.ok()) return Usage(std::string(v.status().message()));
      request.set_category(static_cast<v1::CaseCategory>(*v));
    }
    request.set_owner_office(list_owner);
    request.set_text(list_text);
    request.set_page_size(list_page_size);
    request.set_page_token(list_token);
    // The gateway may end a page short, even empty, with a token (large
    // cases, or filters that exclude most): without --all, tokens are
    // followed until the page asked for is full or none is left.
    const int wanted =
        list_page_size == 0 ? kDefaultListPageSize : list_page_size;
    v1::ListCasesResponse all;
    while (true) {
      auto page = c.ListCases(request);
      if (!page.ok()) return ReportStatus(page.status(), kExitRpc);
      for (auto& item : *page->mutable_cases())
        *all.add_cases() = std::move(item);
      all.set_next_page_token(page->next_page_token());
      if (page->personal_data_withheld()) all.set_personal_data_withheld(true);
      if (page->next_page_token().empty()) break;
      if (!list_all) {
        if (all.cases_size() >= wanted) break;
        request.set_page_size(wanted - all.cases_size());
      }
      request.set_page_token(page->next_page_token());
    }
    std::vector<v1::CaseReference> cases(all.cases().begin(),
                                         all.cases().end());
    std::string text = cb::cli::FormatCaseTable(cases);
    text += absl::StrCat(cases.size(), cases.size() == 1 ? " case" : " cases");
    if (!all.next_page_token().empty()) {
      text += absl::StrCat("; more with --page-token ", all.next_page_token());
    }
    text += "\n";
    if (all.personal_data_withheld()) text += kWithheldNote;
    Print(options, all, text);
    return kExitOk;
  }
  if (case_update->parsed()) {
    v1::UpdateCaseRequest request;
    v1::CaseReference* changes = request.mutable_case_reference();
    changes->set_exchange_id(update_id);
    request.set_expected_version(expected_version);
    std::vector<std::string> paths;
    if (!update_status.empty()) {
      auto v = cb::cli::ParseEnum(v1::CaseStatus_descriptor(), "--status",
                                  update_status);
      if (!v.ok()) return Usage(std::string(v.status().message()));
      changes->set_status(static_cast<v1::CaseStatus>(*v));
      paths.push_back("status");
    }
    if (auto s = update_flags.Fill(case_update, changes, &paths); !s.ok()) {
      return Usage(std::string(s.message()));
    }
    if (case_update->count("--category") > 0) {
      return Usage("--category cannot be changed once a case is open");
    }
    if (paths.empty())
      return Usage("case update: give at least one field to change");
    for (const auto& p : paths) request.mutable_update_mask()->add_paths(p);
    auto updated = c.UpdateCase(request);
    if (!updated.ok()) return ReportStatus(updated.status(), kExitRpc);
    Print(
        options, *updated,
        absl::StrCat("Updated case ", updated->exchange_id(), " to version ",
                     updated->version(), "\n", cb::cli::FormatCase(*updated)));
    return kExitOk;
  }
  if (case_share->parsed()) {
    v1::ShareCaseRequest request;
    request.set_exchange_id(share_id);
    request.set_request_id(RequestIdOrNew(share_request_id));
    if (!share_to.empty()) request.add_recipient_offices(share_to);
    auto shared = c.ShareCase(request);
    if (!shared.ok()) {
      return ReportChangeStatus(shared.status(), request.request_id());
    }
    Print(options, *shared,
          absl::StrCat("Shared case ", share_id, " as message ",
                       shared->message_id(), " (",
                       cb::cli::EnumSpelling(
                           v1::DeliveryState_descriptor()->FindValueByNumber(
                               shared->status().state())),
                       ")\n"));
    return kExitOk;
  }
  if (case_grant->parsed()) {
    if (grant_any == !grant_to.empty()) {
      return Usage("case grant: give --to OFFICE (repeatable) or --any-office");
    }
    if (grant_withdraw) {
      v1::WithdrawDisseminationRequest request;
      request.set_exchange_id(grant_id);
      request.set_request_id(RequestIdOrNew(grant_request_id));
      for (const std::string& office : grant_to) request.add_offices(office);
      request.set_any_office(grant_any);
      auto withdrawn = c.WithdrawDissemination(request);
      if (!withdrawn.ok()) {
        return ReportChangeStatus(withdrawn.status(), request.request_id());
      }
      Print(options, *withdrawn,
            absl::StrCat(
                "Withdrew the permission to pass case ", grant_id, " on from ",
                grant_any ? "every office" : absl::StrJoin(grant_to, ", "),
                " as message ", withdrawn->message_id(), " (",
                cb::cli::EnumSpelling(
                    v1::DeliveryState_descriptor()->FindValueByNumber(
                        withdrawn->status().state())),
                "); copies already passed on stay where they are\n"));
      return kExitOk;
    }
    v1::GrantDisseminationRequest request;
    request.set_exchange_id(grant_id);
    request.set_request_id(RequestIdOrNew(grant_request_id));
    for (const std::string& office : grant_to) request.add_offices(office);
    request.set_any_office(grant_any);
    auto granted = c.GrantDissemination(request);
    if (!granted.ok()) {
      return ReportChangeStatus(granted.status(), request.request_id());
    }
    Print(
        options, *granted,
        absl::StrCat("Granted onward dissemination of case ", grant_id, " to ",
                     grant_any ? "any office" : absl::StrJoin(grant_to, ", "),
                     " as message ", granted->message_id(), " (",
                     cb::cli::EnumSpelling(
                         v1::DeliveryState_descriptor()->FindValueByNumber(
                             granted->status().state())),
                     ")\n"));
    return kExitOk;
  }
  if (case_forward->parsed()) {
    v1::ForwardCaseRequest request;
    request.set_exchange_id(forward_id);
    request.set_office(forward_to);
    auto forwarded = c.ForwardCase(request);
    if (!forwarded.ok()) return ReportStatus(forwarded.status(), kExitRpc);
    Print(
        options, *forwarded,
        absl::StrCat("Forwarded case ", forward_id, " to ", forward_to, " (",
                     forwarded->forwarded_messages(), " new inbox entries)\n"));
    return kExitOk;
  }
  if (message_send->parsed()) {
    v1::SendMessageRequest request;
    request.set_request_id(RequestIdOrNew(send_request_id));
    v1::CaseMessage* m = request.mutable_message();
    m->set_exchange_id(send_case);
    auto kind =
        cb::cli::ParseEnum(v1::MessageKind_descriptor(), "--kind", send_kind);
    if (!kind.ok()) return Usage(std::string(kind.status().message()));
    m->set_kind(static_cast<v1::MessageKind>(*kind));
    auto priority = cb::cli::ParseEnum(v1::Priority_descriptor(), "--priority",
                                       send_priority);
    if (!priority.ok()) return Usage(std::string(priority.status().message()));
    m->set_priority(static_cast<v1::Priority>(*priority));
    if (!send_stage.empty()) {
      auto stage = cb::cli::ParseEnum(v1::RescueStage_descriptor(), "--stage",
                                      send_stage);
      if (!stage.ok()) return Usage(std::string(stage.status().message()));
      m->set_rescue_stage(static_cast<v1::RescueStage>(*stage));
    }
    if (!send_handling.empty()) {
      auto code = cb::cli::ParseEnum(v1::HandlingCode_descriptor(),
                                     "--handling", send_handling);
      if (!code.ok()) return Usage(std::string(code.status().message()));
      m->set_handling_code(static_cast<v1::HandlingCode>(*code));
    }
    m->set_handling_restriction(send_restriction);
    if (!send_evaluation.empty()) {
      auto evaluation = cb::cli::ParseEvaluation(send_evaluation);
      if (!evaluation.ok()) {
        return Usage(std::string(evaluation.status().message()));
      }
      *m->mutable_evaluation() = *evaluation;
    }
    if (message_send->count("--body-file") > 0) {
      auto text = cb::cli::ReadTextFile("--body-file", send_body_file);
      if (!text.ok()) return Usage(std::string(text.status().message()));
      send_body = *std::move(text);
    } else if (message_send->count("--body") == 0) {
      return Usage("message send: --body or --body-file is required");
    }
    m->set_body(send_body);
    m->set_recipient_office(send_to);
    m->set_in_reply_to(send_reply_to);
    auto sent = c.SendMessage(request);
    if (!sent.ok()) {
      return ReportChangeStatus(sent.status(), request.request_id());
    }
    // A retry of an accepted request gets the message as it is now, which
    // may be delivered, failed or cancelled: say which.
    const v1::DeliveryState state = sent->status().state();
    Print(options, *sent,
          state == v1::DELIVERY_STATE_QUEUED ||
                  state == v1::DELIVERY_STATE_UNSPECIFIED
              ? absl::StrCat("Queued message ", sent->message_id(), "\n")
              : absl::StrCat("Message ", sent->message_id(),
                             " was already accepted for this request id:\n",
                             cb::cli::FormatDeliveryStatus(sent->status())));
    return kExitOk;
  }
  if (message_status->parsed()) {
    auto status = c.GetDeliveryStatus(status_id);
    if (!status.ok()) return ReportStatus(status.status(), kExitRpc);
    Print(options, *status, cb::cli::FormatDeliveryStatus(*status));
    return kExitOk;
  }
  if (message_cancel->parsed()) {
    auto status = c.CancelMessage(cancel_id, cancel_reason);
    if (!status.ok()) return ReportStatus(status.status(), kExitRpc);
    Print(options, *status, cb::cli::FormatDeliveryStatus(*status));
    return kExitOk;
  }
  if (inbox_watch->parsed()) {
    int seen = 0;
    // The newest message written out: where a watch whose output failed
    // is to be resumed, so that none goes unseen.
    std::string shown_cursor = watch_cursor;
    bool output_failed = false;
    const absl::Duration wait = watch_seconds > 0 ? absl::Seconds(watch_seconds)
                                                  : absl::InfiniteDuration();
    const absl::Status status = c.WatchInbox(
        watch_cursor, wait,
        [&](const v1::WatchInboxResponse& item) {
          if (options.json) {
            std::cout << cb::cli::ToJson(item) << std::endl;
          } else {
            std::cout << cb::cli::FormatInboxLine(item) << std::flush;
          }
          if (!std::cout) {
            output_failed = true;
            return false;
          }
          shown_cursor = item.cursor();
          ++seen;
          return watch_count <= 0 || seen < watch_count;
        },
        [hinted = false](const absl::Status& why, const std::string& cursor,
                         absl::Duration retry_in) mutable {
          // Said on stderr, so that the output stays the messages alone.
          std::cerr << "casebridge: inbox watch: the stream ended ("
                    << absl::StatusCodeToString(why.code()) << ": "
                    << why.message() << "); opening it again "
                    << (cursor.empty() ? std::string("from the start")
                                       : "after cursor " + cursor)
                    << " in " << absl::FormatDuration(retry_in) << std::endl;
          // Once: the first end that has a hint (a gateway going away for a
          // restart ends the stream with words that have none).
          if (!hinted && why.code() == absl::StatusCode::kUnavailable) {
            hinted = !cb::cli::UnavailableHint(why.message()).empty();
            PrintUnavailableHint(why);
          }
        });
    if (output_failed) {
      std::cerr << "casebridge: inbox watch: the output could not be written "
                   "(a full disk, or a closed file?); the messages after "
                << (shown_cursor.empty() ? std::string("the start")
                                         : "cursor " + shown_cursor)
                << " were not all shown: run it again "
                << (shown_cursor.empty() ? std::string("without --cursor")
                                         : "with --cursor " + shown_cursor)
                << std::endl;
      return kExitOutput;
    }
    if (!status.ok()) return ReportStatus(status, kExitRpc);
    return kExitOk;
  }
  if (ack->parsed()) {
    auto id = c.Acknowledge(ack_id,
                            ack_acted ? v1::ACKNOWLEDGEMENT_KIND_ACTED
                                      : v1::ACKNOWLEDGEMENT_KIND_READ,
                            ack_note);
    if (!id.ok()) return ReportStatus(id.status(), kExitRpc);
    v1::AcknowledgeResponse response;
    response.set_acknowledgement_id(*id);
    Print(options, response,
          absl::StrCat("Acknowledged ", ack_id, "; acknowledgement ", *id,
                       " is on its way back\n"));
    return kExitOk;
  }
  if (audit_checkpoint->parsed()) {
    auto checkpoint = c.GetCheckpoint();
    if (!checkpoint.ok()) return ReportStatus(checkpoint.status(), kExitRpc);
    v1::GetCheckpointResponse response;
    response.set_checkpoint(*checkpoint);
    Print(options, response, *checkpoint);
    return kExitOk;
  }
  if (evidence_get->parsed()) {
    const absl::StatusOr<int> file = CreatePrivateFile(evidence_out);
    if (!file.ok()) return ReportStatus(file.status(), kExitUsage);
    auto bundle = c.GetEvidence(evidence_id);
    if (!bundle.ok()) {
      ::close(*file);
      ::unlink(evidence_out.c_str());  // empty, and ours (O_EXCL)
      return ReportStatus(bundle.status(), kExitRpc);
    }
    const std::string bytes = bundle->SerializeAsString();
    if (auto written = WritePrivateFile(*file, evidence_out, bytes);
        !written.ok()) {
      return ReportStatus(written, kExitOutput);
    }
    // The envelope id, also when the message id was given.
    v1::Envelope envelope;
    const std::string envelope_id =
        envelope.ParseFromString(bundle->envelope().envelope())
            ? envelope.envelope_id()
            : evidence_id;
    // The marking travels inside the signed envelope of the file written.
    const absl::StatusOr<cb::cli::HandlingMarking> marking =
        cb::cli::EvidenceMarking(*bundle);
    if (options.json) {
      nlohmann::ordered_json out;
      out["envelope_id"] = envelope_id;
      if (marking.ok()) AddMarking(*marking, out);
      out["file"] = evidence_out;
      out["bytes"] = bytes.size();
      std::cout << cb::cli::JsonLine(out);
    } else {
      if (marking.ok()) std::cout << cb::cli::FormatMarking(*marking);
      std::cout << "evidence of envelope " << envelope_id << " written to "
                << evidence_out << " (" << bytes.size() << " bytes)\n";
    }
    return kExitOk;
  }
  if (audit_entries->parsed()) {
    auto entries = c.GetAuditEntries(entries_start, entries_page);
    if (!entries.ok()) return ReportStatus(entries.status(), kExitRpc);
    Print(options, *entries, cb::cli::FormatAuditEntries(*entries));
    return kExitOk;
  }
  return Usage("no command given; see --help");
}

// gRPC's own diagnostics (a refused handshake's "Handshake failed with fatal
// error ...") would follow the CLI's one-line error, saying the same less
// plainly; they are shown only when GRPC_VERBOSITY asks for them.
void DropGrpcLog(gpr_log_func_args* /*args*/) {}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) {
    gpr_set_log_function(&DropGrpcLog);
  }
  // Everything printed passes through a filter of control characters
  // (TerminalFilter); the streams get their own buffers back before the
  // filters go.
  cb::cli::TerminalFilter out(std::cout.rdbuf());
  cb::cli::TerminalFilter err(std::cerr.rdbuf());
  std::streambuf* const stdout_buffer = std::cout.rdbuf(&out);
  std::streambuf* const stderr_buffer = std::cerr.rdbuf(&err);
  int rc = casebridge::RunWithGrpc([&] { return Main(argc, argv); });
  std::cout.flush();
  if (!std::cout && rc == kExitOk) {
    // What was asked was done; only its answer is lost.
    std::cerr << "casebridge: the output could not be written (a full disk, "
                 "or a closed file?); the gateway did what was asked"
              << std::endl;
    rc = kExitOutput;
  }
  std::cerr.flush();
  std::cout.rdbuf(stdout_buffer);
  std::cerr.rdbuf(stderr_buffer);
  return rc;
}
