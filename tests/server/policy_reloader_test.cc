// The access policy reloader against real config files and a real audit
// log.
#include "server/policy_reloader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/authorizer.h"
#include "server/sqlite_case_store.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::GatewayConfigOptions;
using ::casebridge::testing::GatewayConfigToml;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::WriteFile;

constexpr char kEmbassy[] = "spiffe://pk.casebridge/office/embassy-beijing";

constexpr char kWithoutEmbassy[] = R"(
[[offices]]
identity = "spiffe://pk.casebridge/office/fia-liaison-desk"
name = "FIA liaison desk"
role = "liaison_officer"
)";

// A gateway's config file with the embassy, the policy it started with, its
// store, and a reloader checking the file every 50 ms (not started).
class PolicyReloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = NewTempDir("policy-reloader");
    options_.data_dir = dir + "/data";
    path_ = WriteFile(dir + "/pk.toml", GatewayConfigToml(options_));
    ASSERT_OK_AND_ASSIGN(const config::Gateway started,
                         config::LoadGateway(path_));
    policies_ = std::make_unique<PolicyHolder>(
        std::make_shared<const AccessPolicy>(started));
    ASSERT_NE(policies_->Current()->Find(kEmbassy), nullptr);
    ASSERT_OK_AND_ASSIGN(
        store_, GatewayStore::Open(options_.data_dir, v1::COUNTRY_PK, &clock_));
    PolicyReloader::Options reload;
    reload.config_path = path_;
    reload.country = v1::COUNTRY_PK;
    reload.identity = started.identity;
    reload.check_interval = absl::Milliseconds(50);
    reloader_ = std::make_unique<PolicyReloader>(
        std::move(reload), policies_.get(), &store_->audit_log());
  }

  // The operator removes the embassy from the file.
  void RemoveEmbassy() {
    options_.offices = kWithoutEmbassy;
    WriteFile(path_, GatewayConfigToml(options_));
  }

  // Whether the embassy is out of the policy in force within 20 s.
  bool EmbassyGoes() {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (policies_->Current()->Find(kEmbassy) != nullptr &&
           absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));  // polling the condition
    }
    return policies_->Current()->Find(kEmbassy) == nullptr;
  }

  testing::FakeClock clock_;
  GatewayConfigOptions options_;
  std::string path_;
  std::unique_ptr<PolicyHolder> policies_;
  std::unique_ptr<GatewayStore> store_;
  std::unique_ptr<PolicyReloader> reloader_;  // last: uses the others
};

TEST_F(PolicyReloaderTest, AFileReplacedWhileTheGatewayStartedIsTakenUp) {
  // The gateway parsed its config (with the embassy) at start; before the
  // reloader was started, the operator removed the embassy from the file.
  RemoveEmbassy();
  reloader_->Start();
  EXPECT_TRUE(EmbassyGoes())
      << "the policy the gateway started with stayed in force";
}

TEST_F(PolicyReloaderTest, APolicyThatCouldNotBeAuditedIsTriedAgain) {
  // The operator removes the embassy while the audit log cannot take the
  // entry (a full disk): the old policy stays in force, and once there is
  // room the watcher puts the new one in force without another SIGHUP.
  // The audit log refuses entries (on the writer's connection alone, as a
  // full disk would make it).
  auto write = [&](const char* sql) {
    return store_->database().Write(
        [sql](sqlite::Connection& c) { return c.Exec(sql); });
  };
  ASSERT_OK(
      write("CREATE TEMP TRIGGER no_room BEFORE INSERT ON main.audit_log "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"));
  RemoveEmbassy();
  EXPECT_THAT(reloader_->Reload("SIGHUP"),
              testing::StatusIs(absl::StatusCode::kUnavailable,
                                ::testing::HasSubstr("cannot audit it")));
  EXPECT_NE(policies_->Current()->Find(kEmbassy), nullptr);

  ASSERT_OK(write("DROP TRIGGER temp.no_room"));
  reloader_->Start();
  EXPECT_TRUE(EmbassyGoes())
      << "the policy refused for want of its audit entry was never retried";
}

}  // namespace
}  // namespace casebridge::server
