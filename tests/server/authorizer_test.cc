#include "server/authorizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr Action kAllActions[] = {Action::kWhoAmI,
                                  Action::kOpenCase,
                                  Action::kGetCase,
                                  Action::kListCases,
                                  Action::kUpdateCase,
                                  Action::kShareCase,
                                  Action::kSendMessage,
                                  Action::kWatchInbox,
                                  Action::kAcknowledge,
                                  Action::kGetDeliveryStatus,
                                  Action::kGrantDissemination,
                                  Action::kForwardCase,
                                  Action::kGetCheckpoint,
                                  Action::kGetEntries,
                                  Action::kGetInclusionProof,
                                  Action::kGetConsistencyProof,
                                  Action::kGetEvidence,
                                  Action::kUpdateAnyCase,
                                  Action::kShareAnyCase,
                                  Action::kReadAnyDeliveryStatus,
                                  Action::kCancelAnyMessage,
                                  Action::kReadAllCases,
                                  Action::kReadPersonalData,
                                  Action::kReadAllAudit,
                                  Action::kDeliver,
                                  Action::kAddCheckpoint};

// The built-in role table, written out independently of core/policy.cc.
// Officers read the audit log too, but the service shows them only the
// entries about their own actions and messages (ReadAllAudit: all).
const std::set<Action> kOfficerActions = {Action::kWhoAmI,
                                          Action::kOpenCase,
                                          Action::kGetCase,
                                          Action::kListCases,
                                          Action::kUpdateCase,
                                          Action::kShareCase,
                                          Action::kSendMessage,
                                          Action::kWatchInbox,
                                          Action::kAcknowledge,
                                          Action::kGetDeliveryStatus,
                                          Action::kGrantDissemination,
                                          Action::kForwardCase,
                                          Action::kGetCheckpoint,
                                          Action::kGetEntries,
                                          Action::kGetInclusionProof,
                                          Action::kGetConsistencyProof,
                                          Action::kGetEvidence,
                                          Action::kReadPersonalData};
const std::set<Action> kSupervisorActions = [] {
  std::set<Action> s = kOfficerActions;
  s.insert({Action::kUpdateAnyCase, Action::kShareAnyCase,
            Action::kReadAnyDeliveryStatus, Action::kCancelAnyMessage,
            Action::kReadAllCases});
  return s;
}();
const std::set<Action> kAuditorActions = {Action::kWhoAmI,
                                          Action::kGetCase,
                                          Action::kListCases,
                                          Action::kGetCheckpoint,
                                          Action::kGetEntries,
                                          Action::kGetInclusionProof,
                                          Action::kGetConsistencyProof,
                                          Action::kReadAllCases,
                                          Action::kReadAllAudit};
const std::set<Action> kReadOnlyActions = {Action::kWhoAmI, Action::kGetCase,
                                           Action::kListCases};

struct RoleCase {
  v1::Role role;
  std::string identity;
  const std::set<Action>* allowed;
};

config::Gateway Config() {
  config::Gateway c;
  c.offices = {
      {"spiffe://pk.casebridge/office/fia-liaison-desk", "FIA liaison desk",
       v1::ROLE_LIAISON_OFFICER},
      {"spiffe://pk.casebridge/office/embassy-beijing", "Embassy, Beijing",
       v1::ROLE_EMBASSY_OFFICER},
      {"spiffe://pk.casebridge/office/fia-director", "FIA director",
       v1::ROLE_SUPERVISOR},
      {"spiffe://pk.casebridge/auditor/pk-auditor", "PK auditor",
       v1::ROLE_AUDITOR},
      {"spiffe://pk.casebridge/office/records", "Records", v1::ROLE_READ_ONLY},
  };
  c.peer_offices = {"spiffe://cn.casebridge/office/mps-liaison"};
  return c;
}

std::unique_ptr<PolicyHolder> Holder(const config::Gateway& config) {
  return std::make_unique<PolicyHolder>(
      std::make_shared<const AccessPolicy>(config));
}

TEST(OfficeAuthorizerTest, IdentifiesConfiguredOffice) {
  const auto policies = Holder(Config());
  const OfficeAuthorizer authorizer(policies.get());
  ASSERT_OK_AND_ASSIGN(
      const Caller caller,
      authorizer.Identify("spiffe://pk.casebridge/office/embassy-beijing"));
  EXPECT_EQ(caller.identity, "spiffe://pk.casebridge/office/embassy-beijing");
  ASSERT_NE(caller.office, nullptr);
  EXPECT_EQ(caller.office->display_name, "Embassy, Beijing");
  EXPECT_EQ(caller.office->role, v1::ROLE_EMBASSY_OFFICER);
  EXPECT_EQ(caller.policy, policies->Current());
}

TEST(OfficeAuthorizerTest, UnknownIdentityIsPermissionDeniedNamingIt) {
  const auto policies = Holder(Config());
  const OfficeAuthorizer authorizer(policies.get());
  for (const std::string identity :
       {"spiffe://pk.casebridge/office/unlisted-office",
        "spiffe://cn.casebridge/office/mps-liaison",
        "spiffe://pk.casebridge/gateway", ""}) {
    EXPECT_THAT(authorizer.Identify(identity),
                StatusIs(absl::StatusCode::kPermissionDenied,
                         HasSubstr(absl::StrCat("identity ", identity, " "))));
  }
}

TEST(OfficeAuthorizerTest, IdentityMatchIsExact) {
  const auto policies = Holder(Config());
  const OfficeAuthorizer authorizer(policies.get());
  for (const char* near_miss :
       {"spiffe://pk.casebridge/office/fia-liaison-desk/",
        "spiffe://pk.casebridge/office/FIA-liaison-desk",
        "spiffe://pk.casebridge/office/fia-liaison-des",
        " spiffe://pk.casebridge/office/fia-liaison-desk"}) {
    EXPECT_THAT(authorizer.Identify(near_miss),
                StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_))
        << near_miss;
  }
}

class RoleMatrixTest : public ::testing::TestWithParam<RoleCase> {};

TEST_P(RoleMatrixTest, BuiltInPolicyAllowsExactlyTheRolesActions) {
  const auto policies = Holder(Config());
  const OfficeAuthorizer authorizer(policies.get());
  ASSERT_OK_AND_ASSIGN(const Caller caller,
                       authorizer.Identify(GetParam().identity));
  ASSERT_EQ(caller.office->role, GetParam().role);
  for (const Action action : kAllActions) {
    SCOPED_TRACE(ActionName(action));
    const absl::Status status = OfficeAuthorizer::Authorize(caller, action);
    if (GetParam().allowed->contains(action)) {
      EXPECT_OK(status);
      EXPECT_TRUE(caller.May(action));
    } else {
      EXPECT_FALSE(caller.May(action));
      EXPECT_THAT(status,
                  StatusIs(absl::StatusCode::kPermissionDenied,
                           AllOf(HasSubstr(config::RoleName(GetParam().role)),
                                 HasSubstr(ActionName(action)))));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Roles, RoleMatrixTest,
    ::testing::Values(RoleCase{v1::ROLE_LIAISON_OFFICER,
                               "spiffe://pk.casebridge/office/fia-liaison-desk",
                               &kOfficerActions},
                      RoleCase{v1::ROLE_EMBASSY_OFFICER,
                               "spiffe://pk.casebridge/office/embassy-beijing",
                               &kOfficerActions},
                      RoleCase{v1::ROLE_SUPERVISOR,
                               "spiffe://pk.casebridge/office/fia-director",
                               &kSupervisorActions},
                      RoleCase{v1::ROLE_AUDITOR,
                               "spiffe://pk.casebridge/auditor/pk-auditor",
                               &kAuditorActions},
                      RoleCase{v1::ROLE_READ_ONLY,
                               "spiffe://pk.casebridge/office/records",
                               &kReadOnlyActions}),
    [](const ::testing::TestParamInfo<RoleCase>& param) {
      return config::RoleName(param.param.role);
    });

TEST(OfficeAuthorizerTest, ConfiguredRoleTableReplacesTheBuiltInOne) {
  config::Gateway config = Config();
  config.roles = policy::RoleTable();
  config.roles.Grant(v1::ROLE_READ_ONLY, Action::kWhoAmI);
  config.roles.Grant(v1::ROLE_READ_ONLY, Action::kOpenCase);
  const auto policies = Holder(config);
  const OfficeAuthorizer authorizer(policies.get());
  ASSERT_OK_AND_ASSIGN(
      const Caller records,
      authorizer.Identify("spiffe://pk.casebridge/office/records"));
  EXPECT_OK(OfficeAuthorizer::Authorize(records, Action::kOpenCase));
  EXPECT_THAT(OfficeAuthorizer::Authorize(records, Action::kGetCase),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("role read_only may not call GetCase")));
  // Roles the table does not mention may do nothing: deny by default.
  ASSERT_OK_AND_ASSIGN(
      const Caller desk,
      authorizer.Identify("spiffe://pk.casebridge/office/fia-liaison-desk"));
  for (const Action action : kAllActions) {
    EXPECT_FALSE(desk.May(action)) << ActionName(action);
  }
}

TEST(OfficeAuthorizerTest, ReplacedPolicyAppliesToNewCallsOnly) {
  const auto policies = Holder(Config());
  const OfficeAuthorizer authorizer(policies.get());
  ASSERT_OK_AND_ASSIGN(
      const Caller before,
      authorizer.Identify("spiffe://pk.casebridge/office/records"));
  const std::string old_digest = policies->Current()->digest();

  config::Gateway changed = Config();
  changed.offices.pop_back();  // records removed
  changed.offices[0].role = v1::ROLE_READ_ONLY;
  policies->Replace(std::make_shared<const AccessPolicy>(changed));
  EXPECT_NE(policies->Current()->digest(), old_digest);

  EXPECT_THAT(authorizer.Identify("spiffe://pk.casebridge/office/records"),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  ASSERT_OK_AND_ASSIGN(
      const Caller desk,
      authorizer.Identify("spiffe://pk.casebridge/office/fia-liaison-desk"));
  EXPECT_FALSE(desk.May(Action::kOpenCase));
  // A call admitted before keeps the policy (and office entry) it had.
  EXPECT_TRUE(before.May(Action::kGetCase));
  EXPECT_EQ(before.office->display_name, "Records");
  EXPECT_EQ(before.policy->digest(), old_digest);
}

TEST(AccessPolicyTest, DigestDependsOnWhatIsGrantedNotOnOrder) {
  config::Gateway a = Config();
  config::Gateway b = Config();
  std::reverse(b.offices.begin(), b.offices.end());
  EXPECT_EQ(AccessPolicy(a).digest(), AccessPolicy(b).digest());
  b.roles.Grant(v1::ROLE_READ_ONLY, Action::kReadPersonalData);
  EXPECT_NE(AccessPolicy(a).digest(), AccessPolicy(b).digest());
  config::Gateway c = Config();
  c.peer_offices.push_back("spiffe://cn.casebridge/office/mps-guangzhou");
  EXPECT_NE(AccessPolicy(a).digest(), AccessPolicy(c).digest());
  EXPECT_TRUE(AccessPolicy(c).IsPeerOffice(
      "spiffe://cn.casebridge/office/mps-guangzhou"));
  EXPECT_FALSE(AccessPolicy(a).IsPeerOffice(
      "spiffe://cn.casebridge/office/mps-guangzhou"));
}

TEST(OfficeAuthorizerTest, NoRoleMayCallPeerOnlyActions) {
  config::Gateway config = Config();
  for (v1::Role role : policy::AllRoles()) {
    config.roles.Grant(role, Action::kDeliver);
    config.roles.Grant(role, Action::kAddCheckpoint);
  }
  const auto policies = Holder(config);
  const OfficeAuthorizer authorizer(policies.get());
  for (const config::Office& office : config.offices) {
    ASSERT_OK_AND_ASSIGN(const Caller caller,
                         authorizer.Identify(office.identity));
    EXPECT_THAT(OfficeAuthorizer::Authorize(caller, Action::kDeliver),
                StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
    EXPECT_THAT(OfficeAuthorizer::Authorize(caller, Action::kAddCheckpoint),
                StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  }
}

TEST(OfficeAuthorizerTest, UnspecifiedRoleMayDoNothing) {
  config::Gateway config = Config();
  config.offices.push_back(
      {"spiffe://pk.casebridge/office/odd", "Odd", v1::ROLE_UNSPECIFIED});
  const auto policies = Holder(config);
  const OfficeAuthorizer authorizer(policies.get());
  ASSERT_OK_AND_ASSIGN(
      const Caller caller,
      authorizer.Identify("spiffe://pk.casebridge/office/odd"));
  for (const Action action : kAllActions) {
    EXPECT_THAT(OfficeAuthorizer::Authorize(caller, action),
                StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_))
        << ActionName(action);
  }
}

TEST(ActionNameTest, NamesEveryActionDistinctlyAndRoundTrips) {
  std::set<std::string> names;
  for (const Action action : kAllActions) {
    const std::string name = ActionName(action);
    EXPECT_NE(name, "unknown");
    names.insert(name);
    EXPECT_EQ(policy::ActionFromName(name), action) << name;
  }
  EXPECT_EQ(names.size(), std::size(kAllActions));
  EXPECT_EQ(policy::GrantableActions().size(), std::size(kAllActions) - 2);
  EXPECT_STREQ(ActionName(Action::kReadPersonalData), "ReadPersonalData");
  EXPECT_STREQ(ActionName(Action::kOpenCase), "OpenCase");
  EXPECT_EQ(policy::ActionFromName("opencase"), std::nullopt);
  EXPECT_EQ(policy::ActionFromName(""), std::nullopt);
}

}  // namespace
}  // namespace casebridge::server
