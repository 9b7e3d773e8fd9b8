#include "server/authorizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

constexpr Action kAllActions[] = {
    Action::kWhoAmI,       Action::kOpenCase,
    Action::kGetCase,      Action::kListCases,
    Action::kUpdateCase,   Action::kShareCase,
    Action::kSendMessage,  Action::kWatchInbox,
    Action::kAcknowledge,  Action::kGetDeliveryStatus,
    Action::kReadAudit,    Action::kDeliver,
    Action::kAddCheckpoint};

// The role table, written out: each role and the actions it may call.
// Officers read the audit log too, but the service shows them only the
// entries about their own actions and messages (auditors see all).
const std::set<Action> kOfficeActions = {
    Action::kWhoAmI,      Action::kOpenCase,
    Action::kGetCase,     Action::kListCases,
    Action::kUpdateCase,  Action::kShareCase,
    Action::kSendMessage, Action::kWatchInbox,
    Action::kAcknowledge, Action::kGetDeliveryStatus,
    Action::kReadAudit};
const std::set<Action> kAuditorActions = {
    Action::kWhoAmI, Action::kGetCase, Action::kListCases, Action::kReadAudit};
const std::set<Action> kReadOnlyActions = {Action::kWhoAmI, Action::kGetCase,
                                           Action::kListCases};

struct RoleCase {
  v1::Role role;
  std::string identity;
  const std::set<Action>* allowed;
};

std::vector<config::Office> Offices() {
  return {
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
}

TEST(OfficeAuthorizerTest, IdentifiesConfiguredOffice) {
  const std::vector<config::Office> offices = Offices();
  const OfficeAuthorizer authorizer(offices);
  ASSERT_OK_AND_ASSIGN(
      const Caller caller,
      authorizer.Identify("spiffe://pk.casebridge/office/embassy-beijing"));
  EXPECT_EQ(caller.identity, "spiffe://pk.casebridge/office/embassy-beijing");
  ASSERT_NE(caller.office, nullptr);
  EXPECT_EQ(caller.office, &offices[1]);
  EXPECT_EQ(caller.office->role, v1::ROLE_EMBASSY_OFFICER);
}

TEST(OfficeAuthorizerTest, UnknownIdentityIsPermissionDeniedNamingIt) {
  const std::vector<config::Office> offices = Offices();
  const OfficeAuthorizer authorizer(offices);
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
  const std::vector<config::Office> offices = Offices();
  const OfficeAuthorizer authorizer(offices);
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

TEST_P(RoleMatrixTest, AllowsExactlyTheRolesActions) {
  const std::vector<config::Office> offices = Offices();
  const OfficeAuthorizer authorizer(offices);
  ASSERT_OK_AND_ASSIGN(const Caller caller,
                       authorizer.Identify(GetParam().identity));
  ASSERT_EQ(caller.office->role, GetParam().role);
  for (const Action action : kAllActions) {
    SCOPED_TRACE(ActionName(action));
    const absl::Status status = OfficeAuthorizer::Authorize(caller, action);
    if (GetParam().allowed->contains(action)) {
      EXPECT_OK(status);
    } else {
      EXPECT_THAT(status,
                  StatusIs(absl::StatusCode::kPermissionDenied,
                           AllOf(HasSubstr(config::RoleName(GetParam().role)),
                                 HasSubstr(ActionName(action)))));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Roles, RoleMatrixTest,
    ::testing::Values(
        RoleCase{v1::ROLE_LIAISON_OFFICER,
                 "spiffe://pk.casebridge/office/fia-liaison-desk",
                 &kOfficeActions},
        RoleCase{v1::ROLE_EMBASSY_OFFICER,
                 "spiffe://pk.casebridge/office/embassy-beijing",
                 &kOfficeActions},
        RoleCase{v1::ROLE_SUPERVISOR,
                 "spiffe://pk.casebridge/office/fia-director", &kOfficeActions},
        RoleCase{v1::ROLE_AUDITOR, "spiffe://pk.casebridge/auditor/pk-auditor",
                 &kAuditorActions},
        RoleCase{v1::ROLE_READ_ONLY, "spiffe://pk.casebridge/office/records",
                 &kReadOnlyActions}),
    [](const ::testing::TestParamInfo<RoleCase>& param) {
      return config::RoleName(param.param.role);
    });

TEST(OfficeAuthorizerTest, NoRoleMayCallPeerOnlyActions) {
  const std::vector<config::Office> offices = Offices();
  for (const config::Office& office : offices) {
    const Caller caller{office.identity, &office};
    EXPECT_THAT(OfficeAuthorizer::Authorize(caller, Action::kDeliver),
                StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
    EXPECT_THAT(OfficeAuthorizer::Authorize(caller, Action::kAddCheckpoint),
                StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  }
}

TEST(OfficeAuthorizerTest, UnspecifiedRoleMayDoNothing) {
  const config::Office office{"spiffe://pk.casebridge/office/odd", "Odd",
                              v1::ROLE_UNSPECIFIED};
  const Caller caller{office.identity, &office};
  for (const Action action : kAllActions) {
    EXPECT_THAT(OfficeAuthorizer::Authorize(caller, action),
                StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_))
        << ActionName(action);
  }
}

TEST(ActionNameTest, NamesEveryActionDistinctly) {
  std::set<std::string> names;
  for (const Action action : kAllActions) {
    const std::string name = ActionName(action);
    EXPECT_NE(name, "unknown");
    names.insert(name);
  }
  EXPECT_EQ(names.size(), std::size(kAllActions));
  EXPECT_STREQ(ActionName(Action::kReadAudit), "ReadAudit");
  EXPECT_STREQ(ActionName(Action::kOpenCase), "OpenCase");
}

}  // namespace
}  // namespace casebridge::server
