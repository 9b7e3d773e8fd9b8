// Certificate lifecycle on a running gateway process: a CRL that revokes an
// office while it is connected, the casebridge.certs health status, expiry
// warnings, and `casebridge certs status`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "casebridge/v1/office.grpc.pb.h"
#include "client/office_client.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_crl.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::HasSubstr;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kFiaId[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kEmbassy[] = "pk/offices/embassy-beijing";
constexpr char kAuditor[] = "pk/auditors/pk-auditor";
// The gateway's log line of an admitted WatchInbox stream.
constexpr char kWatchAdmitted[] =
    "\"event\":\"rpc.ok\",\"action\":\"inbox.watch\"";

// A PK CRL revoking `stems` (certificates of the test PKI, without .crt).
std::string PkCrl(const std::vector<std::string>& stems,
                  absl::Time next_update) {
  CrlOptions options;
  options.ca_cert = Pki("pk/ca.crt");
  options.ca_key = Pki("pk/ca.key");
  for (const std::string& stem : stems) {
    options.revoked.push_back(Pki(stem + ".crt"));
  }
  options.last_update = absl::Now();
  options.next_update = next_update;
  auto crl = IssueCrl(options);
  EXPECT_OK(crl);
  return crl.ok() ? *crl : "";
}

class CertLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("certs");
    crl_dir_ = dir_ + "/crl";
    CopyTestCrls(crl_dir_);
    pk_hash_ = SubjectHash(Pki("pk/ca.crt"));
  }

  // The config of a gateway whose CRL folder is this test's own, checked
  // every second, logging successful calls too.
  std::string WriteConfig(const std::string& extra_tls = "") {
    GatewayConfigOptions options;
    options.data_dir = dir_ + "/data";
    options.crl_dir = crl_dir_;
    options.extra_tls = "crl_refresh_seconds = 1\n" + extra_tls;
    return WriteFile(dir_ + "/pk.toml",
                     absl::StrReplaceAll(GatewayConfigToml(options),
                                         {{"log_level = \"warning\"",
                                           "log_level = \"info\""}}));
  }

  void StartGateway(const std::string& extra_tls = "") {
    config_path_ = WriteConfig(extra_tls);
    ASSERT_OK_AND_ASSIGN(gateway_, GatewayProcess::Start(config_path_));
  }

  std::unique_ptr<client::OfficeClient> Office(const std::string& stem) {
    return OfficeClientFor(stem, gateway_->office_endpoint());
  }

  std::vector<v1::AuditEntry> AuditEntries() {
    return ReadAuditEntries(*Office(kAuditor));
  }

  int CaseCount() {
    v1::ListCasesRequest request;
    request.set_page_size(500);
    auto page = Office(kAuditor)->ListCases(request);
    EXPECT_OK(page);
    return page.ok() ? page->cases_size() : -1;
  }

  // casebridge.certs as the peer port reports it (to a CN certificate, which
  // a revoked or expired PK CRL does not concern).
  HealthStatus::ServingStatus PeerPortCertsHealth() {
    auto health = grpc::health::v1::Health::NewStub(
        ChannelFor("cn/gateway", gateway_->peer_endpoint(), "PK"));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service("casebridge.certs");
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  std::string dir_;
  std::string crl_dir_;
  std::string pk_hash_;
  std::string config_path_;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(CertLifecycleTest, RevokedOfficeIsCutOffOnARunningGateway) {
  StartGateway();
  auto fia = Office(kFia);
  ASSERT_OK(fia->WhoAmI());
  ASSERT_OK(fia->OpenCase(ValidDraft()));
  // A standing inbox watch on its own connection.
  auto watcher = Office(kFia);
  auto watch = std::async(std::launch::async, [&watcher] {
    return watcher->WatchInbox(
        "", absl::Seconds(120),
        [](const v1::WatchInboxResponse&) { return true; });
  });
  ASSERT_TRUE(WaitUntil([&] {
    return absl::StrContains(gateway_->Log(), kWatchAdmitted);
  })) << gateway_->Log();

  // The PK CA revokes the FIA desk's certificate; the new CRL is installed
  // under the next free name, as docs/operations.md says.
  InstallFile(crl_dir_, pk_hash_ + ".r1",
              PkCrl({"bad/revoked", kFia}, absl::Now() + absl::Hours(24 * 30)));

  // Its open connection is refused within tls.crl_refresh_seconds.
  absl::Status last;
  EXPECT_TRUE(WaitUntil(
      [&] {
        last = fia->WhoAmI().status();
        return last.code() == absl::StatusCode::kUnauthenticated;
      },
      absl::Seconds(20)))
      << last;
  EXPECT_THAT(last, StatusIs(absl::StatusCode::kUnauthenticated,
                             HasSubstr(std::string(kFiaId) + " was revoked")));
  EXPECT_THAT(
      fia->OpenCase(ValidDraft()),
      StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("was revoked")));
  // Its open stream was ended.
  ASSERT_EQ(watch.wait_for(std::chrono::seconds(20)),
            std::future_status::ready);
  EXPECT_FALSE(watch.get().ok());
  // A new connection of that certificate fails its handshake.
  EXPECT_THAT(Office(kFia)->WhoAmI(),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  // Another office of the same CA is not concerned.
  EXPECT_OK(Office(kEmbassy)->WhoAmI());

  // Nothing stored after the revocation; every refusal audited.
  EXPECT_EQ(CaseCount(), 1);
  int refused_open = 0;
  int ended_watch = 0;
  for (const v1::AuditEntry& entry : AuditEntries()) {
    if (entry.actor() != kFiaId || entry.status_code() != 16) continue;
    EXPECT_THAT(entry.status_message(), HasSubstr("was revoked"));
    if (entry.action() == "case.open") ++refused_open;
    if (entry.action() == "inbox.watch") {
      ++ended_watch;
      EXPECT_THAT(entry.status_message(), HasSubstr("open stream was ended"));
    }
  }
  EXPECT_EQ(refused_open, 1);
  EXPECT_EQ(ended_watch, 1);
  EXPECT_EQ(PeerPortCertsHealth(), HealthStatus::SERVING);
}

TEST_F(CertLifecycleTest, CrlReplacedInPlaceStillCutsOffOpenConnections) {
  StartGateway();
  auto fia = Office(kFia);
  ASSERT_OK(fia->WhoAmI());
  // Overwriting <hash>.r0 is not seen by the TLS stack until a restart; the
  // gateway's own check sees it.
  InstallFile(crl_dir_, pk_hash_ + ".r0",
              PkCrl({kFia}, absl::Now() + absl::Hours(24 * 30)));
  absl::Status last;
  EXPECT_TRUE(WaitUntil(
      [&] {
        last = fia->OpenCase(ValidDraft()).status();
        return last.code() == absl::StatusCode::kUnauthenticated;
      },
      absl::Seconds(20)))
      << last;
  // Calls made before the monitor's next check may have gone through; none
  // after.
  const int cases = CaseCount();
  EXPECT_THAT(fia->OpenCase(ValidDraft()),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr(kFiaId)));
  EXPECT_EQ(CaseCount(), cases);
}

TEST_F(CertLifecycleTest, CertsHealthIsServingAndWarnsOfASoonExpiringCrl) {
  InstallFile(crl_dir_, pk_hash_ + ".r0",
              PkCrl({"bad/revoked"}, absl::Now() + absl::Hours(48)));
  StartGateway();
  EXPECT_EQ(PeerPortCertsHealth(), HealthStatus::SERVING);
  ASSERT_OK_AND_ASSIGN(auto office, Office(kFia)->Health("casebridge.certs"));
  EXPECT_EQ(office, HealthStatus::SERVING);
  // Logged at start, before the listeners opened.
  const std::string log = gateway_->Log();
  EXPECT_THAT(log, HasSubstr("\"event\":\"certs.expiring\""));
  EXPECT_THAT(log, HasSubstr(pk_hash_ + ".r0"));
  EXPECT_LT(log.find("certs.expiring"), log.find("gateway.started"));
}

TEST_F(CertLifecycleTest, CrlExpiringWhileRunningTurnsCertsHealthNotServing) {
  InstallFile(crl_dir_, pk_hash_ + ".r0",
              PkCrl({"bad/revoked"}, absl::Now() + absl::Seconds(4)));
  StartGateway();
  EXPECT_TRUE(WaitUntil(
      [&] { return PeerPortCertsHealth() == HealthStatus::NOT_SERVING; },
      absl::Seconds(20)));
  EXPECT_THAT(gateway_->Log(), HasSubstr("\"event\":\"certs.unusable\""));
  // A new CRL brings it back.
  InstallFile(crl_dir_, pk_hash_ + ".r1",
              PkCrl({"bad/revoked"}, absl::Now() + absl::Hours(24 * 30)));
  EXPECT_TRUE(
      WaitUntil([&] { return PeerPortCertsHealth() == HealthStatus::SERVING; },
                absl::Seconds(20)));
}

// --- casebridge certs status --------------------------------------------

CommandResult CertsStatus(const std::string& config, bool json = false) {
  std::vector<std::string> args = {CliBinary(), "certs", "status", "--config",
                                   config};
  if (json) args.push_back("--json");
  return RunCommand(args);
}

TEST_F(CertLifecycleTest, CertsStatusListsEveryCertificateAndCrl) {
  const std::string config = WriteConfig();
  const CommandResult r = CertsStatus(config);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("tls.cert"));
  EXPECT_THAT(r.out, HasSubstr("tls.own_ca"));
  EXPECT_THAT(r.out, HasSubstr("tls.peer_ca"));
  EXPECT_THAT(r.out, HasSubstr(pk_hash_ + ".r0"));
  EXPECT_THAT(r.out, HasSubstr("certificates: OK\n"));

  const CommandResult j = CertsStatus(config, true);
  EXPECT_EQ(j.exit_code, 0) << j.err;
  const auto parsed = nlohmann::json::parse(j.out, nullptr, false);
  ASSERT_FALSE(parsed.is_discarded()) << j.out;
  EXPECT_EQ(parsed["ok"], true);
  ASSERT_EQ(parsed["items"].size(), 6u);
  int crls = 0;
  for (const auto& item : parsed["items"]) {
    EXPECT_EQ(item["state"], "ok") << item.dump();
    EXPECT_GT(item["days_left"].get<int>(), 0);
    if (item["kind"] == "crl") {
      ++crls;
      EXPECT_TRUE(item.contains("next_update"));
    }
  }
  EXPECT_EQ(crls, 2);
}

TEST_F(CertLifecycleTest, CertsStatusExitCodesSaySoonExpiredOrMissing) {
  // A CRL within crl_expiry_warning_days: exit 1.
  InstallFile(crl_dir_, pk_hash_ + ".r0",
              PkCrl({}, absl::Now() + absl::Hours(48)));
  const std::string config = WriteConfig();
  CommandResult r = CertsStatus(config);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("expires soon"));

  // Certificates within expiry_warning_days (the test PKI's last a year).
  CopyTestCrls(crl_dir_);
  r = CertsStatus(WriteConfig("expiry_warning_days = 400\n"));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;

  // An expired CRL: exit 3.
  InstallFile(crl_dir_, pk_hash_ + ".r0",
              PkCrl({}, absl::Now() - absl::Hours(1)));
  r = CertsStatus(WriteConfig());
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("expired"));

  // No CRL at all: exit 3, naming the file expected.
  std::filesystem::remove_all(crl_dir_);
  std::filesystem::create_directories(crl_dir_);
  r = CertsStatus(WriteConfig(), true);
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"state\":\"missing\""));
  EXPECT_THAT(r.out, HasSubstr(pk_hash_ + ".r0"));

  // No configuration: exit 2.
  r = CertsStatus(dir_ + "/none.toml");
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;

  // An office's client file (what CASEBRIDGE_CONFIG names for the office
  // commands, and the global --config): exit 2, saying what it is.
  const std::string client = WriteFile(
      dir_ + "/office.toml",
      ClientConfigToml("127.0.0.1:7443", "pk/offices/fia-liaison-desk"));
  r = RunCommand({CliBinary(), "--config", client, "certs", "status"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr(client + ": this is an office's client "
                                        "configuration"));
  EXPECT_EQ(r.out, "");
}

}  // namespace
}  // namespace casebridge::testing
