// The access policy on real gateway processes: every role against every
// office-port RPC (allowed, or refused with PERMISSION_DENIED, audited, and
// nothing stored), hot reload on SIGHUP and on file change (valid and
// invalid, connections kept, streams the new policy forbids ended),
// need-to-know across both gateways with personal data withheld and its
// reads audited, and `casebridge policy check`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "casebridge/v1/audit.grpc.pb.h"
#include "casebridge/v1/office.grpc.pb.h"
#include "client/office_client.h"
#include "server/sqlite_case_store.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kFiaId[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kEmbassy[] = "pk/offices/embassy-beijing";
constexpr char kPkAuditor[] = "pk/auditors/pk-auditor";
constexpr char kPkAuditorId[] = "spiffe://pk.casebridge/auditor/pk-auditor";
constexpr char kPkGatewayId[] = "spiffe://pk.casebridge/gateway";
constexpr char kMps[] = "cn/offices/mps-liaison";
constexpr char kMpsId[] = "spiffe://cn.casebridge/office/mps-liaison";
constexpr char kGuangzhou[] = "cn/offices/mps-guangzhou";
constexpr char kGuangzhouId[] = "spiffe://cn.casebridge/office/mps-guangzhou";
constexpr char kCnAuditor[] = "cn/auditors/cn-auditor";

// A PK office table: the FIA desk with `fia_role`, the embassy as an
// embassy officer, the auditor.
std::string PkOffices(const std::string& fia_role,
                      const std::string& embassy_role = "embassy_officer") {
  return absl::StrCat(R"([[offices]]
identity = "spiffe://pk.casebridge/office/fia-liaison-desk"
name = "FIA liaison desk"
role = ")",
                      fia_role, R"("

[[offices]]
identity = "spiffe://pk.casebridge/office/embassy-beijing"
name = "Embassy of Pakistan, Beijing"
role = ")",
                      embassy_role, R"("

[[offices]]
identity = "spiffe://pk.casebridge/auditor/pk-auditor"
name = "PK auditor"
role = "auditor"
)");
}

// Rows in the tables an office call could write, and the seed case's
// version: equal before and after a refused call.
std::string StoreSnapshot(const std::string& data_dir) {
  sqlite3* db = nullptr;
  const std::string path = absl::StrCat(
      "file:", server::GatewayStore::DatabasePath(data_dir), "?mode=ro");
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI,
                      nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return "cannot open";
  }
  std::string out;
  for (const char* sql :
       {"SELECT count(*) FROM cases", "SELECT sum(version) FROM cases",
        "SELECT count(*) FROM messages", "SELECT count(*) FROM outbox",
        "SELECT count(*) FROM inbox WHERE acknowledged_us IS NOT NULL"}) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      absl::StrAppend(&out, sqlite3_column_int64(stmt, 0), " ");
    } else {
      absl::StrAppend(&out, "? ");
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return out;
}

// Every audit entry of the gateway at `endpoint`, read by the auditor.
std::vector<v1::AuditEntry> AllEntries(const std::string& auditor_stem,
                                       const std::string& endpoint,
                                       const std::string& country) {
  return ReadAuditEntries(*OfficeClientFor(auditor_stem, endpoint, country));
}

bool HasEntry(const std::vector<v1::AuditEntry>& entries,
              const std::string& actor, const std::string& action,
              int status_code, const std::string& subject = "") {
  for (const v1::AuditEntry& e : entries) {
    if (e.actor() != actor || e.action() != action ||
        e.status_code() != status_code) {
      continue;
    }
    if (subject.empty()) return true;
    for (const std::string& s : e.subjects()) {
      if (s == subject) return true;
    }
  }
  return false;
}

grpc::ClientContext* WithDeadline(grpc::ClientContext* context,
                                  absl::Duration timeout = absl::Seconds(10)) {
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoSeconds(timeout));
  return context;
}

// One office-port RPC made with raw stubs, and the audit action of its
// entries.
struct Rpc {
  std::string name;          // as in the policy file
  std::string audit_action;  // as in the audit log
  std::function<grpc::Status(const std::shared_ptr<grpc::Channel>&,
                             const std::string& seed_case)>
      call;
};

template <typename Request, typename Response>
std::function<grpc::Status(const std::shared_ptr<grpc::Channel>&,
                           const std::string&)>
OfficeUnary(grpc::Status (v1::OfficeService::Stub::*method)(
                grpc::ClientContext*, const Request&, Response*),
            std::function<Request(const std::string&)> make) {
  return [method, make](const std::shared_ptr<grpc::Channel>& channel,
                        const std::string& seed) {
    auto stub = v1::OfficeService::NewStub(channel);
    grpc::ClientContext context;
    Response response;
    return ((*stub).*method)(WithDeadline(&context), make(seed), &response);
  };
}

template <typename Request, typename Response>
std::function<grpc::Status(const std::shared_ptr<grpc::Channel>&,
                           const std::string&)>
AuditUnary(grpc::Status (v1::AuditService::Stub::*method)(grpc::ClientContext*,
                                                          const Request&,
                                                          Response*),
           std::function<Request(const std::string&)> make) {
  return [method, make](const std::shared_ptr<grpc::Channel>& channel,
                        const std::string& seed) {
    auto stub = v1::AuditService::NewStub(channel);
    grpc::ClientContext context;
    Response response;
    return ((*stub).*method)(WithDeadline(&context), make(seed), &response);
  };
}

const std::vector<Rpc>& AllRpcs() {
  using S = v1::OfficeService::Stub;
  using A = v1::AuditService::Stub;
  static const auto* rpcs = new std::vector<Rpc>{
      {"WhoAmI", "office.whoami",
       OfficeUnary<v1::WhoAmIRequest, v1::WhoAmIResponse>(
           &S::WhoAmI, [](const std::string&) { return v1::WhoAmIRequest(); })},
      {"OpenCase", "case.open",
       OfficeUnary<v1::OpenCaseRequest, v1::OpenCaseResponse>(
           &S::OpenCase,
           [](const std::string&) {
             v1::OpenCaseRequest r;
             *r.mutable_case_reference() = ValidDraft();
             return r;
           })},
      {"GetCase", "case.get",
       OfficeUnary<v1::GetCaseRequest, v1::GetCaseResponse>(
           &S::GetCase,
           [](const std::string& seed) {
             v1::GetCaseRequest r;
             r.set_exchange_id(seed);
             return r;
           })},
      {"ListCases", "case.list",
       OfficeUnary<v1::ListCasesRequest, v1::ListCasesResponse>(
           &S::ListCases,
           [](const std::string&) { return v1::ListCasesRequest(); })},
      {"UpdateCase", "case.update",
       OfficeUnary<v1::UpdateCaseRequest, v1::UpdateCaseResponse>(
           &S::UpdateCase,
           [](const std::string& seed) {
             v1::UpdateCaseRequest r;
             r.mutable_case_reference()->set_exchange_id(seed);
             r.mutable_case_reference()->set_summary("changed by the matrix");
             r.mutable_update_mask()->add_paths("summary");
             r.set_expected_version(1);
             return r;
           })},
      {"ShareCase", "case.share",
       OfficeUnary<v1::ShareCaseRequest, v1::ShareCaseResponse>(
           &S::ShareCase,
           [](const std::string& seed) {
             v1::ShareCaseRequest r;
             r.set_exchange_id(seed);
             return r;
           })},
      {"SendMessage", "message.send",
       OfficeUnary<v1::SendMessageRequest, v1::SendMessageResponse>(
           &S::SendMessage,
           [](const std::string& seed) {
             v1::SendMessageRequest r;
             v1::CaseMessage* m = r.mutable_message();
             m->set_exchange_id(seed);
             m->set_kind(v1::MESSAGE_KIND_NOTE);
             m->set_priority(v1::PRIORITY_ROUTINE);
             m->set_body("matrix");
             return r;
           })},
      {"WatchInbox", "inbox.watch",
       [](const std::shared_ptr<grpc::Channel>& channel, const std::string&) {
         auto stub = v1::OfficeService::NewStub(channel);
         grpc::ClientContext context;
         WithDeadline(&context, absl::Seconds(1));
         auto reader = stub->WatchInbox(&context, v1::WatchInboxRequest());
         v1::WatchInboxResponse item;
         while (reader->Read(&item)) {
         }
         return reader->Finish();
       }},
      {"Acknowledge", "message.acknowledge",
       OfficeUnary<v1::AcknowledgeRequest, v1::AcknowledgeResponse>(
           &S::Acknowledge,
           [](const std::string&) {
             v1::AcknowledgeRequest r;
             r.set_message_id("CN-M-20260101-000000000000000000000000");
             r.set_kind(v1::ACKNOWLEDGEMENT_KIND_READ);
             return r;
           })},
      {"GetDeliveryStatus", "message.status",
       OfficeUnary<v1::GetDeliveryStatusRequest, v1::GetDeliveryStatusResponse>(
           &S::GetDeliveryStatus,
           [](const std::string&) {
             v1::GetDeliveryStatusRequest r;
             r.set_message_id("PK-M-20260101-000000000000000000000000");
             return r;
           })},
      {"GrantDissemination", "case.grant",
       OfficeUnary<v1::GrantDisseminationRequest,
                   v1::GrantDisseminationResponse>(
           &S::GrantDissemination,
           [](const std::string& seed) {
             v1::GrantDisseminationRequest r;
             r.set_exchange_id(seed);
             r.set_any_office(true);
             return r;
           })},
      {"WithdrawDissemination", "case.withdraw_grant",
       OfficeUnary<v1::WithdrawDisseminationRequest,
                   v1::WithdrawDisseminationResponse>(
           &S::WithdrawDissemination,
           [](const std::string& seed) {
             v1::WithdrawDisseminationRequest r;
             r.set_exchange_id(seed);
             r.set_any_office(true);
             return r;
           })},
      {"ForwardCase", "case.forward",
       OfficeUnary<v1::ForwardCaseRequest, v1::ForwardCaseResponse>(
           &S::ForwardCase,
           [](const std::string& seed) {
             v1::ForwardCaseRequest r;
             r.set_exchange_id(seed);
             r.set_office("spiffe://pk.casebridge/office/embassy-beijing");
             return r;
           })},
      {"GetCheckpoint", "audit.get_checkpoint",
       AuditUnary<v1::GetCheckpointRequest, v1::GetCheckpointResponse>(
           &A::GetCheckpoint,
           [](const std::string&) { return v1::GetCheckpointRequest(); })},
      {"GetEntries", "audit.get_entries",
       AuditUnary<v1::GetEntriesRequest, v1::GetEntriesResponse>(
           &A::GetEntries,
           [](const std::string&) {
             v1::GetEntriesRequest r;
             r.set_page_size(1);
             return r;
           })},
      {"GetInclusionProof", "audit.get_inclusion_proof",
       AuditUnary<v1::GetInclusionProofRequest, v1::GetInclusionProofResponse>(
           &A::GetInclusionProof,
           [](const std::string&) {
             v1::GetInclusionProofRequest r;
             r.set_index(0);
             r.set_tree_size(1);
             return r;
           })},
      {"GetConsistencyProof", "audit.get_consistency_proof",
       AuditUnary<v1::GetConsistencyProofRequest,
                  v1::GetConsistencyProofResponse>(
           &A::GetConsistencyProof,
           [](const std::string&) {
             v1::GetConsistencyProofRequest r;
             r.set_first_size(1);
             r.set_second_size(1);
             return r;
           })},
      {"GetEvidence", "audit.get_evidence",
       AuditUnary<v1::GetEvidenceRequest, v1::GetEvidenceResponse>(
           &A::GetEvidence,
           [](const std::string&) {
             v1::GetEvidenceRequest r;
             r.set_message_id("PK-M-20260101-000000000000000000000000");
             return r;
           })},
  };
  return *rpcs;
}

// The built-in policy's RPCs per role, written out (docs/api.md#roles).
const std::map<std::string, std::set<std::string>>& AllowedRpcs() {
  static const auto* allowed = [] {
    const std::set<std::string> officer = {"WhoAmI",
                                           "OpenCase",
                                           "GetCase",
                                           "ListCases",
                                           "UpdateCase",
                                           "ShareCase",
                                           "SendMessage",
                                           "WatchInbox",
                                           "Acknowledge",
                                           "GetDeliveryStatus",
                                           "GrantDissemination",
                                           "WithdrawDissemination",
                                           "ForwardCase",
                                           "GetCheckpoint",
                                           "GetEntries",
                                           "GetInclusionProof",
                                           "GetConsistencyProof",
                                           "GetEvidence"};
    return new std::map<std::string, std::set<std::string>>{
        {"liaison_officer", officer},
        {"embassy_officer", officer},
        {"supervisor", officer},
        {"auditor",
         {"WhoAmI", "GetCase", "ListCases", "GetCheckpoint", "GetEntries",
          "GetInclusionProof", "GetConsistencyProof"}},
        {"read_only", {"WhoAmI", "GetCase", "ListCases"}}};
  }();
  return *allowed;
}

class RoleRpcMatrixTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RoleRpcMatrixTest, EveryRpcIsAllowedOrRefusedAuditedAndStoresNothing) {
  const std::string role = GetParam();
  const bool auditor = role == "auditor";
  const std::string dir = NewTempDir("role-matrix");
  GatewayConfigOptions options;
  options.data_dir = dir + "/data";
  // The auditor role goes with the auditor's identity; the FIA desk's
  // certificate holds each of the other roles in turn.
  options.offices = PkOffices(auditor ? "liaison_officer" : role);
  ASSERT_OK_AND_ASSIGN(auto gateway,
                       GatewayProcess::Start(WriteFile(
                           dir + "/pk.toml", GatewayConfigToml(options))));
  const std::string caller_id = auditor ? kPkAuditorId : kFiaId;
  auto channel =
      ChannelFor(auditor ? kPkAuditor : kFia, gateway->office_endpoint(), "PK");

  // A case with personal data: the caller's own if it may open cases (so
  // that the allowed UpdateCase and ShareCase go through), else the
  // embassy's.
  const std::set<std::string>& allowed = AllowedRpcs().at(role);
  auto opener = OfficeClientFor(allowed.contains("OpenCase") ? kFia : kEmbassy,
                                gateway->office_endpoint());
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference seed,
                       opener->OpenCase(ValidDraft()));

  std::vector<const Rpc*> denied;
  for (const Rpc& rpc : AllRpcs()) {
    if (!allowed.contains(rpc.name)) {
      denied.push_back(&rpc);
      continue;
    }
    SCOPED_TRACE(rpc.name + " (allowed)");
    const grpc::Status status = rpc.call(channel, seed.exchange_id());
    EXPECT_NE(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << status.error_message();
    EXPECT_NE(status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << status.error_message();
  }

  const std::string before = StoreSnapshot(options.data_dir);
  for (const Rpc* rpc : denied) {
    SCOPED_TRACE(rpc->name + " (denied)");
    const grpc::Status status = rpc->call(channel, seed.exchange_id());
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << status.error_message();
    // Withdrawing a permission takes the permission to grant it.
    const std::string action =
        rpc->name == "WithdrawDissemination" ? "GrantDissemination" : rpc->name;
    EXPECT_THAT(
        status.error_message(),
        HasSubstr(absl::StrCat("role ", role, " may not call ", action)));
  }
  EXPECT_EQ(StoreSnapshot(options.data_dir), before);

  const std::vector<v1::AuditEntry> entries =
      AllEntries(kPkAuditor, gateway->office_endpoint(), "PK");
  for (const Rpc* rpc : denied) {
    EXPECT_TRUE(HasEntry(entries, caller_id, rpc->audit_action,
                         grpc::StatusCode::PERMISSION_DENIED))
        << rpc->name << " refusal not audited";
  }
}

INSTANTIATE_TEST_SUITE_P(BuiltInPolicy, RoleRpcMatrixTest,
                         ::testing::Values("liaison_officer", "embassy_officer",
                                           "supervisor", "auditor",
                                           "read_only"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           return p.param;
                         });

class PolicyReloadTest : public ::testing::Test {
 protected:
  void StartGateway(int reload_check_seconds) {
    dir_ = NewTempDir("policy-reload");
    config_path_ = dir_ + "/pk.toml";
    reload_check_seconds_ = reload_check_seconds;
    WriteConfig(PkOffices("liaison_officer", "read_only"), "");
    ASSERT_OK_AND_ASSIGN(gateway_, GatewayProcess::Start(config_path_));
  }

  // Rewrites the config file in place (a rename, as editors and config
  // management tools do).
  void WriteConfig(const std::string& offices, const std::string& policy) {
    GatewayConfigOptions options;
    options.data_dir = dir_ + "/data";
    options.offices = offices;
    options.extra_offices = absl::StrCat("\n[policy]\nreload_check_seconds = ",
                                         reload_check_seconds_, "\n", policy);
    const std::string text = absl::StrReplaceAll(
        GatewayConfigToml(options),
        {{"log_level = \"warning\"", "log_level = \"info\""}});
    WriteFile(config_path_ + ".new", text);
    std::filesystem::rename(config_path_ + ".new", config_path_);
  }

  void Hangup() { ASSERT_EQ(::kill(gateway_->pid(), SIGHUP), 0); }

  std::unique_ptr<client::OfficeClient> Office(const std::string& stem) {
    return OfficeClientFor(stem, gateway_->office_endpoint());
  }

  v1::Role RoleOf(client::OfficeClient& office) {
    auto who = office.WhoAmI();
    return who.ok() ? who->role() : v1::ROLE_UNSPECIFIED;
  }

  std::vector<v1::AuditEntry> PolicyEntries() {
    std::vector<v1::AuditEntry> out;
    for (const v1::AuditEntry& e :
         AllEntries(kPkAuditor, gateway_->office_endpoint(), "PK")) {
      if (e.action() == "policy.reload") out.push_back(e);
    }
    return out;
  }

  std::string dir_;
  std::string config_path_;
  int reload_check_seconds_ = 0;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(PolicyReloadTest, SighupAppliesAValidPolicyAndKeepsTheOldOneOnAnError) {
  StartGateway(/*reload_check_seconds=*/0);
  auto embassy = Office(kEmbassy);  // one channel for the whole test
  auto fia = Office(kFia);
  EXPECT_THAT(embassy->OpenCase(ValidDraft()),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("role read_only may not call OpenCase")));

  // The FIA desk's inbox stream, open across the reloads.
  std::promise<absl::Status> watch_ended;
  std::future<absl::Status> watch = watch_ended.get_future();
  std::thread watcher([&] {
    watch_ended.set_value(
        fia->WatchInbox("", absl::Seconds(120),
                        [](const v1::WatchInboxResponse&) { return true; }));
  });
  ASSERT_TRUE(WaitUntil([&] {
    return absl::StrContains(gateway_->Log(), "\"action\":\"inbox.watch\"");
  })) << gateway_->Log();

  // A valid change: the embassy becomes an embassy officer.
  WriteConfig(PkOffices("liaison_officer", "embassy_officer"), "");
  Hangup();
  ASSERT_TRUE(WaitUntil([&] {
    return RoleOf(*embassy) == v1::ROLE_EMBASSY_OFFICER;
  })) << gateway_->Log();
  EXPECT_OK(embassy->OpenCase(ValidDraft()));
  ASSERT_OK_AND_ASSIGN(const v1::WhoAmIResponse who, embassy->WhoAmI());
  EXPECT_THAT(who.allowed_actions(), ::testing::Contains("OpenCase"));
  std::vector<v1::AuditEntry> reloads = PolicyEntries();
  ASSERT_EQ(reloads.size(), 1u);
  EXPECT_EQ(reloads[0].actor(), kPkGatewayId);
  EXPECT_EQ(reloads[0].status_code(), 0);
  ASSERT_EQ(reloads[0].subjects_size(), 1);
  EXPECT_EQ(reloads[0].subjects(0), who.policy_digest());
  // The FIA desk may still watch its inbox: its stream was left open.
  EXPECT_EQ(watch.wait_for(std::chrono::seconds(0)),
            std::future_status::timeout);

  // An invalid policy is refused, audited, and the one in force stays.
  WriteConfig(PkOffices("liaison_officer", "read_only"),
              "[policy.roles]\nread_only = [\"WhoAmI\", \"OpenCas\"]\n");
  Hangup();
  ASSERT_TRUE(WaitUntil([&] { return PolicyEntries().size() == 2; }))
      << gateway_->Log();
  reloads = PolicyEntries();
  EXPECT_EQ(reloads[1].status_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(
      reloads[1].status_message(),
      HasSubstr("policy.roles.read_only: \"OpenCas\" is not an action"));
  EXPECT_THAT(gateway_->Log(), HasSubstr("policy.reload_refused"));
  EXPECT_EQ(RoleOf(*embassy), v1::ROLE_EMBASSY_OFFICER);
  EXPECT_OK(embassy->OpenCase(ValidDraft()));

  // A policy that takes WatchInbox from the FIA desk ends its open stream.
  WriteConfig(PkOffices("read_only", "embassy_officer"), "");
  Hangup();
  ASSERT_EQ(watch.wait_for(std::chrono::seconds(30)), std::future_status::ready)
      << gateway_->Log();
  // Cancelled from the server's side (gRPC sends no reason with that); the
  // reason is in the audit log.
  EXPECT_THAT(watch.get(),
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  watcher.join();
  EXPECT_THAT(fia->OpenCase(ValidDraft()),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("role read_only may not call OpenCase")));
  const std::vector<v1::AuditEntry> entries =
      AllEntries(kPkAuditor, gateway_->office_endpoint(), "PK");
  bool ended_audited = false;
  for (const v1::AuditEntry& e : entries) {
    ended_audited |=
        e.actor() == kFiaId && e.action() == "inbox.watch" &&
        e.status_code() == grpc::StatusCode::PERMISSION_DENIED &&
        absl::StrContains(e.status_message(),
                          "role read_only may no longer call WatchInbox");
  }
  EXPECT_TRUE(ended_audited);
}

TEST_F(PolicyReloadTest, ABurstOfSighupsNeverStopsTheGateway) {
  // SIGHUP's default action ends a process: every thread of the gateway,
  // gRPC's own included, must leave it to the one that waits for it, also
  // while that one is busy with the reload before.
  StartGateway(/*reload_check_seconds=*/0);
  for (int i = 0; i < 200; ++i) Hangup();
  ASSERT_TRUE(WaitUntil([&] {
    return absl::StrContains(gateway_->Log(), "\"event\":\"policy.unchanged\"");
  })) << gateway_->Log();
  EXPECT_OK(Office(kFia)->WhoAmI());
  EXPECT_EQ(gateway_->Stop(), 0) << gateway_->Log();
}

TEST_F(PolicyReloadTest, AChangedFileIsPickedUpWithoutASignal) {
  StartGateway(/*reload_check_seconds=*/1);
  auto embassy = Office(kEmbassy);
  EXPECT_THAT(embassy->OpenCase(ValidDraft()),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  // A role table of our own: read_only may now open cases, and nothing
  // else but WhoAmI.
  WriteConfig(PkOffices("liaison_officer", "read_only"),
              "[policy.roles]\nread_only = [\"WhoAmI\", \"OpenCase\"]\n"
              "liaison_officer = [\"WhoAmI\"]\n");
  ASSERT_TRUE(WaitUntil([&] { return embassy->OpenCase(ValidDraft()).ok(); }))
      << gateway_->Log();
  EXPECT_THAT(embassy->ListCases(v1::ListCasesRequest()),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("role read_only may not call ListCases")));
  EXPECT_THAT(Office(kFia)->ListCases(v1::ListCasesRequest()),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  EXPECT_THAT(gateway_->Log(), HasSubstr("\"trigger\":\"file change\""));
}

TEST_F(PolicyReloadTest, WithoutReadPersonalDataAnUpdateNeitherSeesNorWipesIt) {
  StartGateway(/*reload_check_seconds=*/0);
  // The embassy (read_only) may update cases, not read personal data.
  WriteConfig(PkOffices("liaison_officer", "read_only"),
              "[policy.roles]\n"
              "liaison_officer = [\"WhoAmI\", \"OpenCase\", \"GetCase\", "
              "\"ReadPersonalData\"]\n"
              "read_only = [\"WhoAmI\", \"GetCase\", \"UpdateCase\", "
              "\"UpdateAnyCase\"]\n");
  Hangup();
  auto embassy = Office(kEmbassy);
  ASSERT_TRUE(WaitUntil([&] {
    auto who = embassy->WhoAmI();
    return who.ok() &&
           std::count(who->allowed_actions().begin(),
                      who->allowed_actions().end(), "UpdateCase") == 1;
  })) << gateway_->Log();
  auto fia = Office(kFia);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference opened,
                       fia->OpenCase(ValidDraft()));
  ASSERT_FALSE(opened.victims(0).remarks().empty());

  v1::UpdateCaseRequest update;
  update.mutable_case_reference()->set_exchange_id(opened.exchange_id());
  update.mutable_case_reference()->set_summary("seen at the bus station");
  update.mutable_update_mask()->add_paths("summary");
  update.set_expected_version(1);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference updated,
                       embassy->UpdateCase(update));
  EXPECT_EQ(updated.summary(), "seen at the bus station");
  EXPECT_EQ(updated.victims(0).remarks(), "");  // withheld in the answer
  EXPECT_EQ(updated.last_known_locations_size(), 0);

  update.mutable_case_reference()->add_victims()->set_pseudonym("V1");
  update.mutable_update_mask()->clear_paths();
  update.mutable_update_mask()->add_paths("victims");
  update.set_expected_version(2);
  EXPECT_THAT(embassy->UpdateCase(update),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("update_mask: victims is personal data")));
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference now,
                       fia->GetCase(opened.exchange_id()));
  EXPECT_EQ(now.version(), 2);
  EXPECT_EQ(now.victims(0).remarks(), opened.victims(0).remarks());
}

TEST(PolicyCheckCliTest, PrintsWhatEachIdentityMayDoAndRefusesAnInvalidPolicy) {
  const std::string dir = NewTempDir("policy-check");
  GatewayConfigOptions options;
  options.data_dir = dir + "/data";
  const std::string valid =
      WriteFile(dir + "/pk.toml", GatewayConfigToml(options));
  CommandResult ok =
      RunCommand({CliBinary(), "policy", "check", "--config", valid});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr(kFiaId));
  EXPECT_THAT(ok.out, HasSubstr("liaison_officer"));
  EXPECT_THAT(ok.out, HasSubstr("ReadPersonalData"));
  EXPECT_THAT(ok.out, HasSubstr("role table: built-in"));
  EXPECT_THAT(ok.out, HasSubstr("policy: valid"));

  options.extra_offices = "\n[policy.roles]\nauditor = [\"WhoAmI\"]\n";
  const std::string narrow =
      WriteFile(dir + "/narrow.toml", GatewayConfigToml(options));
  CommandResult idle = RunCommand(
      {CliBinary(), "--json", "policy", "check", "--config", narrow});
  EXPECT_EQ(idle.exit_code, 1) << idle.err;  // offices that may do nothing
  EXPECT_THAT(idle.out, HasSubstr("\"offices_without_permissions\":[\""));
  EXPECT_THAT(idle.out, HasSubstr("\"source\":\"config\""));

  options.extra_offices = "\n[policy.roles]\nauditor = [\"Everything\"]\n";
  const std::string invalid =
      WriteFile(dir + "/invalid.toml", GatewayConfigToml(options));
  CommandResult bad =
      RunCommand({CliBinary(), "policy", "check", "--config", invalid});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("policy.roles.auditor: \"Everything\" is "
                                 "not an action"));
}

// Need-to-know across both gateways: a PK case shared with one MPS office
// is visible there, not to another MPS office, and to the CN auditor without
// personal data; every read of personal data is audited.
class NeedToKnowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("need-to-know");
    const GatewayPairConfigs configs =
        WriteGatewayPairConfigs(dir_, 1, [](GatewayConfigOptions& o) {
          o.offices = o.country == "PK" ? PkOffices("liaison_officer")
                                        : CnOfficesWithGuangzhou();
        });
    ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(configs.pk));
    ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(configs.cn));
  }

  std::unique_ptr<client::OfficeClient> Pk(const std::string& stem) {
    return OfficeClientFor(stem, pk_->office_endpoint(), "PK");
  }
  std::unique_ptr<client::OfficeClient> Cn(const std::string& stem) {
    return OfficeClientFor(stem, cn_->office_endpoint(), "CN");
  }

  std::string dir_;
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<GatewayProcess> cn_;
};

TEST_F(NeedToKnowTest, SharedCaseIsVisibleOnlyToTheOfficesItWasSharedWith) {
  auto fia = Pk(kFia);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference opened,
                       fia->OpenCase(ValidDraft()));
  const std::string id = opened.exchange_id();
  ASSERT_FALSE(opened.last_known_locations().empty());
  // The other PK office sees its own country's case.
  EXPECT_OK(Pk(kEmbassy)->GetCase(id));

  v1::ShareCaseRequest share;
  share.set_exchange_id(id);
  share.add_recipient_offices(kMpsId);
  ASSERT_OK(fia->ShareCase(share));

  auto mps = Cn(kMps);
  ASSERT_TRUE(WaitUntil([&] { return mps->GetCase(id).ok(); }))
      << pk_->Log() << cn_->Log();
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference at_mps, mps->GetCase(id));
  EXPECT_EQ(at_mps.last_known_locations_size(),
            opened.last_known_locations_size());
  EXPECT_EQ(at_mps.victims(0).remarks(), opened.victims(0).remarks());

  // Another MPS office: as if the case did not exist, for every call.
  auto guangzhou = Cn(kGuangzhou);
  const absl::Status missing = guangzhou->GetCase("PK-2026-999999").status();
  const absl::Status hidden = guangzhou->GetCase(id).status();
  EXPECT_THAT(hidden, StatusIs(absl::StatusCode::kNotFound,
                               absl::StrCat("case ", id, " not found")));
  EXPECT_EQ(missing.code(), hidden.code());
  ASSERT_OK_AND_ASSIGN(const v1::ListCasesResponse listed,
                       guangzhou->ListCases(v1::ListCasesRequest()));
  EXPECT_EQ(listed.cases_size(), 0);
  v1::SendMessageRequest send;
  send.mutable_message()->set_exchange_id(id);
  send.mutable_message()->set_kind(v1::MESSAGE_KIND_NOTE);
  send.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
  send.mutable_message()->set_body("we can help");
  send.mutable_message()->set_handling_code(v1::HANDLING_CODE_H0);
  send.mutable_message()->set_recipient_office(kFiaId);
  EXPECT_THAT(guangzhou->SendMessage(send),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(id)));
  // The desk it was shared with lists it.
  ASSERT_OK_AND_ASSIGN(const v1::ListCasesResponse mps_list,
                       mps->ListCases(v1::ListCasesRequest()));
  ASSERT_EQ(mps_list.cases_size(), 1);
  EXPECT_EQ(mps_list.cases(0).exchange_id(), id);
  EXPECT_FALSE(mps_list.personal_data_withheld());

  // The CN auditor sees every case, without personal data.
  auto cn_auditor = Cn(kCnAuditor);
  v1::GetCaseRequest get;
  get.set_exchange_id(id);
  auto stub = v1::OfficeService::NewStub(
      ChannelFor(kCnAuditor, cn_->office_endpoint(), "CN"));
  grpc::ClientContext context;
  v1::GetCaseResponse got;
  ASSERT_TRUE(stub->GetCase(WithDeadline(&context), get, &got).ok());
  EXPECT_TRUE(got.personal_data_withheld());
  EXPECT_EQ(got.case_reference().last_known_locations_size(), 0);
  ASSERT_GT(got.case_reference().victims_size(), 0);
  EXPECT_EQ(got.case_reference().victims(0).remarks(), "");
  EXPECT_EQ(got.case_reference().victims(0).pseudonym(),
            opened.victims(0).pseudonym());

  // Reads of personal data are audited, per office and case; the auditor's
  // withheld read is not one.
  const std::vector<v1::AuditEntry> entries =
      AllEntries(kCnAuditor, cn_->office_endpoint(), "CN");
  EXPECT_TRUE(HasEntry(entries, kMpsId, "case.get.personal_data", 0, id));
  EXPECT_TRUE(HasEntry(entries, kMpsId, "case.list.personal_data", 0, id));
  EXPECT_FALSE(HasEntry(entries, "spiffe://cn.casebridge/auditor/cn-auditor",
                        "case.get.personal_data", 0));
  EXPECT_TRUE(HasEntry(entries, kGuangzhouId, "case.get",
                       grpc::StatusCode::NOT_FOUND, id));
}

}  // namespace
}  // namespace casebridge::testing
