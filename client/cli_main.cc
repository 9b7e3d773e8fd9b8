// casebridge: the command-line client of a CaseBridge gateway's office port.
//
//   casebridge --config office.toml whoami
//   casebridge --config office.toml case open --local-ref FIR-1 ...
//   casebridge audit verify --data-dir /var/lib/casebridge/pk
//
// Exit codes: 0 success; 1 the gateway refused or failed (one line naming
// the gRPC status and the reason); 2 bad usage or configuration; 3 an audit
// verification found damage.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli_format.h"
#include "client/office_client.h"
#include "core/config.h"
#include "core/grpc_status.h"
#include "google/protobuf/util/json_util.h"
#include "server/sqlite.h"
#include "server/sqlite_audit_log.h"
#include "server/sqlite_case_store.h"

namespace {

namespace cb = casebridge;
namespace v1 = casebridge::v1;

constexpr int kExitOk = 0;
constexpr int kExitRpc = 1;
constexpr int kExitUsage = 2;
constexpr int kExitDamaged = 3;

struct Options {
  std::string config_path;
  bool json = false;
};

// One line: "casebridge: INVALID_ARGUMENT: case_reference.summary: is required"
int ReportStatus(const absl::Status& status, int exit_code) {
  std::fprintf(stderr, "casebridge: %s: %s\n",
               cb::GrpcCodeName(static_cast<grpc::StatusCode>(status.code())),
               std::string(status.message()).c_str());
  return exit_code;
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "casebridge: %s\n", message.c_str());
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
  return cb::client::OfficeClient::Create(*config);
}

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

  void Add(CLI::App* cmd) {
    cmd->add_option("--local-ref", local_ref,
                    "your own reference (FIR number)");
    cmd->add_option(
        "--category", category,
        "forced-marriage-fraud | forced-labour | sexual-exploitation | "
        "suspected-organ-trade | other");
    cmd->add_option("--summary", summary, "what is known (UTF-8)");
    cmd->add_option("--handling", handling, "handling code: H0 | H1 | H2 | H3");
    cmd->add_option("--restriction", restriction, "restriction text (with H3)");
    cmd->add_option("--evaluation", evaluation, "4x4 evaluation code, e.g. B2");
    cmd->add_option("--victim", victims, "PSEUDONYM[:REMARKS] (repeatable)");
    cmd->add_option("--location", locations, "DESCRIPTION@PK|CN (repeatable)");
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
    if (given("--victim")) {
      for (const auto& text : victims) {
        auto v = cb::cli::ParseVictim(text);
        if (!v.ok()) return v.status();
        *c->add_victims() = *v;
      }
      paths->push_back("victims");
    }
    if (given("--location")) {
      for (const auto& text : locations) {
        auto v = cb::cli::ParseLocation(text);
        if (!v.ok()) return v.status();
        *c->add_last_known_locations() = *v;
      }
      paths->push_back("last_known_locations");
    }
    return absl::OkStatus();
  }
};

int AuditVerify(const Options& options, const std::string& data_dir) {
  const std::string path = cb::server::GatewayStore::DatabasePath(data_dir);
  auto conn = cb::sqlite::Connection::Open(path, /*create=*/false);
  if (!conn.ok()) return ReportStatus(conn.status(), kExitUsage);
  absl::StatusOr<cb::server::VerifyReport> report;
  if (auto begin = (*conn)->Exec("BEGIN"); !begin.ok()) {
    return ReportStatus(begin, kExitUsage);
  }
  report = cb::server::SqliteAuditLog::VerifyTree(**conn);
  (void)(*conn)->Exec("COMMIT");
  if (!report.ok()) return ReportStatus(report.status(), kExitDamaged);
  if (options.json) {
    nlohmann::ordered_json out;
    out["ok"] = report->ok();
    out["entries"] = report->entries;
    if (!report->ok()) {
      out["first_bad_entry"] = *report->first_bad;
      out["problem"] = report->problem;
    }
    std::cout << out.dump() << "\n";
  } else if (report->ok()) {
    std::cout << "audit log " << path << ": OK, " << report->entries
              << (report->entries == 1 ? " entry" : " entries")
              << ", Merkle tree intact\n";
  } else {
    std::cout << "audit log " << path << ": DAMAGED at entry "
              << *report->first_bad << ": " << report->problem << "\n";
  }
  return report->ok() ? kExitOk : kExitDamaged;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"casebridge: client of a CaseBridge gateway"};
  app.require_subcommand(1);
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
  message_send->add_option("--body", send_body, "the text (UTF-8)")->required();
  message_send->add_option("--to", send_to, "a counterpart office (SPIFFE id)");
  message_send->add_option("--reply-to", send_reply_to, "message id answered");
  message_send->add_option("--request-id", send_request_id, "idempotency key");
  std::string status_id;
  auto* message_status =
      message_cmd->add_subcommand("status", "where an outgoing message is");
  message_status->add_option("message_id", status_id, "from message send")
      ->required();

  auto* inbox_cmd = app.add_subcommand("inbox", "your office's inbox");
  inbox_cmd->require_subcommand(1);
  std::string watch_cursor;
  int watch_count = 0;
  double watch_seconds = 0;
  auto* inbox_watch =
      inbox_cmd->add_subcommand("watch", "print messages as they arrive");
  inbox_watch->add_option("--cursor", watch_cursor, "resume after this cursor");
  inbox_watch->add_option("--count", watch_count,
                          "stop after this many messages");
  inbox_watch->add_option("--seconds", watch_seconds, "stop after this long");

  std::string ack_id, ack_note;
  bool ack_acted = false;
  auto* ack = app.add_subcommand("ack", "acknowledge a message in your inbox");
  ack->add_option("message_id", ack_id, "from inbox watch")->required();
  ack->add_flag("--acted", ack_acted, "acted on it (default: read)");
  ack->add_option("--note", ack_note, "a short remark for the sender");

  auto* audit_cmd = app.add_subcommand("audit", "the audit log");
  audit_cmd->require_subcommand(1);
  std::string data_dir;
  auto* audit_verify = audit_cmd->add_subcommand(
      "verify", "check a gateway's audit log offline (no server needed)");
  audit_verify->add_option("--data-dir", data_dir, "the gateway's data_dir")
      ->required();
  uint64_t entries_start = 0;
  int entries_page = 50;
  auto* audit_entries =
      audit_cmd->add_subcommand("entries", "read audit entries (auditors)");
  audit_entries->add_option("--start", entries_start, "first entry index");
  audit_entries->add_option("--page-size", entries_page,
                            "entries to read (1-1000)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  if (audit_verify->parsed()) return AuditVerify(options, data_dir);

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
    auto opened = c.OpenCase(draft, request_id);
    if (!opened.ok()) return ReportStatus(opened.status(), kExitRpc);
    Print(options, *opened,
          absl::StrCat("Opened case ", opened->exchange_id(), "\n",
                       cb::cli::FormatCase(*opened)));
    return kExitOk;
  }
  if (case_get->parsed()) {
    auto got = c.GetCase(get_id);
    if (!got.ok()) return ReportStatus(got.status(), kExitRpc);
    Print(options, *got, cb::cli::FormatCase(*got));
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
    v1::ListCasesResponse all;
    while (true) {
      auto page = c.ListCases(request);
      if (!page.ok()) return ReportStatus(page.status(), kExitRpc);
      for (auto& item : *page->mutable_cases())
        *all.add_cases() = std::move(item);
      all.set_next_page_token(page->next_page_token());
      if (!list_all || page->next_page_token().empty()) break;
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
    request.set_request_id(share_request_id);
    if (!share_to.empty()) request.add_recipient_offices(share_to);
    auto shared = c.ShareCase(request);
    if (!shared.ok()) return ReportStatus(shared.status(), kExitRpc);
    Print(options, *shared,
          absl::StrCat("Shared case ", share_id, " as message ",
                       shared->message_id(), " (",
                       cb::cli::EnumSpelling(
                           v1::DeliveryState_descriptor()->FindValueByNumber(
                               shared->status().state())),
                       ")\n"));
    return kExitOk;
  }
  if (message_send->parsed()) {
    v1::SendMessageRequest request;
    request.set_request_id(send_request_id);
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
    m->set_body(send_body);
    m->set_recipient_office(send_to);
    m->set_in_reply_to(send_reply_to);
    auto sent = c.SendMessage(request);
    if (!sent.ok()) return ReportStatus(sent.status(), kExitRpc);
    Print(options, *sent,
          absl::StrCat("Queued message ", sent->message_id(), "\n"));
    return kExitOk;
  }
  if (message_status->parsed()) {
    auto status = c.GetDeliveryStatus(status_id);
    if (!status.ok()) return ReportStatus(status.status(), kExitRpc);
    Print(options, *status, cb::cli::FormatDeliveryStatus(*status));
    return kExitOk;
  }
  if (inbox_watch->parsed()) {
    int seen = 0;
    const absl::Duration wait = watch_seconds > 0 ? absl::Seconds(watch_seconds)
                                                  : absl::InfiniteDuration();
    const absl::Status status = c.WatchInbox(
        watch_cursor, wait, [&](const v1::WatchInboxResponse& item) {
          if (options.json) {
            std::cout << cb::cli::ToJson(item) << std::endl;
          } else {
            std::cout << cb::cli::FormatInboxLine(item) << std::flush;
          }
          ++seen;
          return watch_count <= 0 || seen < watch_count;
        });
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
  if (audit_entries->parsed()) {
    auto entries = c.GetAuditEntries(entries_start, entries_page);
    if (!entries.ok()) return ReportStatus(entries.status(), kExitRpc);
    Print(options, *entries, cb::cli::FormatAuditEntries(*entries));
    return kExitOk;
  }
  return Usage("no command given; see --help");
}
