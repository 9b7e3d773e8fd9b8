// The [policy] section of a gateway config (core/config.cc, core/policy.h):
// what is accepted, what is refused and how the error names it.
#include "core/policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::policy {
namespace {

using ::casebridge::testing::GatewayConfigOptions;
using ::casebridge::testing::GatewayConfigToml;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

class PolicyConfigTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = NewTempDir("policy-config"); }

  // A valid PK gateway config with `policy` appended after the offices.
  absl::StatusOr<config::Gateway> Parse(const std::string& policy) const {
    GatewayConfigOptions options;
    options.data_dir = dir_ + "/data";
    options.extra_offices = "\n" + policy;
    return config::ParseGateway(GatewayConfigToml(options),
                                dir_ + "/gateway.toml");
  }

  std::string dir_;
};

TEST_F(PolicyConfigTest, WithoutPolicySectionTheBuiltInTableApplies) {
  ASSERT_OK_AND_ASSIGN(const config::Gateway c, Parse(""));
  EXPECT_FALSE(c.policy_from_config);
  EXPECT_TRUE(c.roles == RoleTable::BuiltIn());
  EXPECT_EQ(c.policy_reload_check_seconds, 5);
  EXPECT_TRUE(c.roles.Allows(v1::ROLE_LIAISON_OFFICER, Action::kOpenCase));
  EXPECT_FALSE(c.roles.Allows(v1::ROLE_READ_ONLY, Action::kOpenCase));
}

TEST_F(PolicyConfigTest, RolesTableReplacesTheBuiltInOneAsAWhole) {
  ASSERT_OK_AND_ASSIGN(const config::Gateway c, Parse(R"([policy]
reload_check_seconds = 0

[policy.roles]
liaison_officer = ["WhoAmI", "GetCase", "ListCases", "OpenCase"]
auditor = ["WhoAmI", "GetEntries", "ReadAllAudit"]
)"));
  EXPECT_TRUE(c.policy_from_config);
  EXPECT_EQ(c.policy_reload_check_seconds, 0);
  EXPECT_TRUE(c.roles.Allows(v1::ROLE_LIAISON_OFFICER, Action::kOpenCase));
  EXPECT_FALSE(c.roles.Allows(v1::ROLE_LIAISON_OFFICER, Action::kShareCase));
  EXPECT_TRUE(c.roles.Allows(v1::ROLE_AUDITOR, Action::kReadAllAudit));
  // Roles not listed may do nothing (deny by default).
  EXPECT_TRUE(c.roles.ActionsOf(v1::ROLE_EMBASSY_OFFICER).empty());
  EXPECT_TRUE(c.roles.ActionsOf(v1::ROLE_SUPERVISOR).empty());
  EXPECT_EQ(c.roles.Describe(),
            "liaison_officer: WhoAmI, OpenCase, GetCase, ListCases\n"
            "embassy_officer: (nothing)\n"
            "supervisor: (nothing)\n"
            "auditor: WhoAmI, GetEntries, ReadAllAudit\n"
            "read_only: (nothing)\n");
}

TEST_F(PolicyConfigTest, UnknownActionIsRefusedNamingItAndTheChoices) {
  EXPECT_THAT(Parse("[policy.roles]\nread_only = [\"WhoAmI\", \"Opencase\"]\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("gateway.toml: policy.roles.read_only: "
                                       "\"Opencase\" is not an action"),
                             HasSubstr("OpenCase, GetCase"))));
}

TEST_F(PolicyConfigTest, PeerOnlyActionsCannotBeGranted) {
  for (const char* action : {"Deliver", "AddCheckpoint"}) {
    EXPECT_THAT(
        Parse(
            absl::StrCat("[policy.roles]\nsupervisor = [\"", action, "\"]\n")),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 HasSubstr(absl::StrCat("policy.roles.supervisor: \"", action,
                                        "\" is not an action a role may be "
                                        "granted"))));
  }
}

TEST_F(PolicyConfigTest, WholeMessagesGoOnlyToRolesThatMayReadPersonalData) {
  for (const char* action : {"WatchInbox", "GetEvidence"}) {
    EXPECT_THAT(
        Parse(absl::StrCat("[policy.roles]\nembassy_officer = [\"WhoAmI\", \"",
                           action, "\"]\n")),
        StatusIs(
            absl::StatusCode::kInvalidArgument,
            AllOf(HasSubstr(absl::StrCat("policy.roles.embassy_officer: ",
                                         action, " hands out whole messages")),
                  HasSubstr("grant ReadPersonalData too"))));
    EXPECT_OK(Parse(absl::StrCat("[policy.roles]\nembassy_officer = [\"",
                                 action, "\", \"ReadPersonalData\"]\n")));
  }
  // The built-in table keeps the rule too.
  const RoleTable built_in = RoleTable::BuiltIn();
  for (v1::Role role : AllRoles()) {
    for (Action a : ActionsNeedingPersonalData()) {
      if (built_in.Allows(role, a)) {
        EXPECT_TRUE(built_in.Allows(role, Action::kReadPersonalData))
            << config::RoleName(role);
      }
    }
  }
}

TEST_F(PolicyConfigTest, UnknownRoleIsRefused) {
  EXPECT_THAT(
      Parse("[policy.roles]\nliaison_oficer = [\"WhoAmI\"]\n"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("policy.roles.liaison_oficer: is not a role")));
}

TEST_F(PolicyConfigTest, DuplicateActionIsRefused) {
  EXPECT_THAT(
      Parse("[policy.roles]\nauditor = [\"WhoAmI\", \"WhoAmI\"]\n"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("policy.roles.auditor: WhoAmI is listed twice")));
}

TEST_F(PolicyConfigTest, WrongShapesAreRefused) {
  EXPECT_THAT(Parse("[policy.roles]\nauditor = \"WhoAmI\"\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("policy.roles.auditor: must be a list of "
                                 "action names")));
  EXPECT_THAT(Parse("[policy.roles]\nauditor = [\"WhoAmI\", 3]\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("policy.roles.auditor: must be a list")));
  EXPECT_THAT(Parse("[policy]\nroles = 1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("policy.roles: must be a table")));
  EXPECT_THAT(Parse("[policy]\nreload_check_seconds = -1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("policy.reload_check_seconds: must be "
                                 "between 0 and 3600")));
  EXPECT_THAT(Parse("[policy]\nreload_seconds = 1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("policy.reload_seconds: unknown key")));
}

TEST_F(PolicyConfigTest, DigestChangesWithWhatIsGrantedOnly) {
  ASSERT_OK_AND_ASSIGN(const config::Gateway built_in, Parse(""));
  ASSERT_OK_AND_ASSIGN(const config::Gateway reordered, Parse(R"(
[policy]
reload_check_seconds = 30
)"));
  EXPECT_EQ(AccessPolicyDigest(built_in), AccessPolicyDigest(reordered));
  ASSERT_OK_AND_ASSIGN(const config::Gateway narrower,
                       Parse("[policy.roles]\nauditor = [\"WhoAmI\"]\n"));
  EXPECT_NE(AccessPolicyDigest(built_in), AccessPolicyDigest(narrower));
  EXPECT_EQ(AccessPolicyDigest(built_in).size(), 64u);
}

}  // namespace
}  // namespace casebridge::policy
