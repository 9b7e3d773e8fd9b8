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

TEST(PolicyReloaderTest, AFileReplacedWhileTheGatewayStartedIsTakenUp) {
  // The gateway parsed its config (with the embassy) at start; before the
  // reloader was made, the operator removed the embassy from the file.
  const std::string dir = NewTempDir("policy-reloader");
  GatewayConfigOptions options;
  options.data_dir = dir + "/data";
  const std::string path =
      WriteFile(dir + "/pk.toml", GatewayConfigToml(options));
  ASSERT_OK_AND_ASSIGN(const config::Gateway started,
                       config::LoadGateway(path));
  auto with_embassy = std::make_shared<const AccessPolicy>(started);
  ASSERT_NE(with_embassy->Find(kEmbassy), nullptr);
  options.offices = R"(
[[offices]]
identity = "spiffe://pk.casebridge/office/fia-liaison-desk"
name = "FIA liaison desk"
role = "liaison_officer"
)";
  WriteFile(path, GatewayConfigToml(options));

  testing::FakeClock clock;
  ASSERT_OK_AND_ASSIGN(
      auto store, GatewayStore::Open(dir + "/data", v1::COUNTRY_PK, &clock));
  PolicyHolder policies(with_embassy);
  PolicyReloader::Options reload;
  reload.config_path = path;
  reload.country = v1::COUNTRY_PK;
  reload.identity = started.identity;
  reload.check_interval = absl::Milliseconds(50);
  PolicyReloader reloader(std::move(reload), &policies, &store->audit_log());
  reloader.Start();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (policies.Current()->Find(kEmbassy) != nullptr &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));  // polling the condition
  }
  EXPECT_EQ(policies.Current()->Find(kEmbassy), nullptr)
      << "the policy the gateway started with stayed in force";
}

TEST(PolicyReloaderTest, APolicyThatCouldNotBeAuditedIsTriedAgain) {
  // The operator removes the embassy while the audit log cannot take the
  // entry (a full disk): the old policy stays in force, and once there is
  // room the watcher puts the new one in force without another SIGHUP.
  const std::string dir = NewTempDir("policy-reloader");
  GatewayConfigOptions options;
  options.data_dir = dir + "/data";
  const std::string path =
      WriteFile(dir + "/pk.toml", GatewayConfigToml(options));
  ASSERT_OK_AND_ASSIGN(const config::Gateway started,
                       config::LoadGateway(path));
  testing::FakeClock clock;
  ASSERT_OK_AND_ASSIGN(
      auto store, GatewayStore::Open(dir + "/data", v1::COUNTRY_PK, &clock));
  PolicyHolder policies(std::make_shared<const AccessPolicy>(started));
  PolicyReloader::Options reload;
  reload.config_path = path;
  reload.country = v1::COUNTRY_PK;
  reload.identity = started.identity;
  reload.check_interval = absl::Milliseconds(50);
  PolicyReloader reloader(std::move(reload), &policies, &store->audit_log());

  // The audit log refuses entries (on the writer's connection alone, as a
  // full disk would make it).
  auto write = [&](const char* sql) {
    return store->database().Write(
        [sql](sqlite::Connection& c) { return c.Exec(sql); });
  };
  ASSERT_OK(
      write("CREATE TEMP TRIGGER no_room BEFORE INSERT ON main.audit_log "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"));
  options.offices = R"(
[[offices]]
identity = "spiffe://pk.casebridge/office/fia-liaison-desk"
name = "FIA liaison desk"
role = "liaison_officer"
)";
  WriteFile(path, GatewayConfigToml(options));
  EXPECT_THAT(reloader.Reload("SIGHUP"),
              testing::StatusIs(absl::StatusCode::kUnavailable,
                                ::testing::HasSubstr("cannot audit it")));
  EXPECT_NE(policies.Current()->Find(kEmbassy), nullptr);

  ASSERT_OK(write("DROP TRIGGER temp.no_room"));
  reloader.Start();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (policies.Current()->Find(kEmbassy) != nullptr &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));  // polling the condition
  }
  EXPECT_EQ(policies.Current()->Find(kEmbassy), nullptr)
      << "the policy refused for want of its audit entry was never retried";
}

}  // namespace
}  // namespace casebridge::server
