#include "core/identity.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "tests/testing/status_matchers.h"

namespace casebridge {
namespace {

using ::casebridge::testing::StatusIs;
using ::testing::HasSubstr;

TEST(SpiffeIdTest, ParsesGatewaysOfBothCountries) {
  ASSERT_OK_AND_ASSIGN(const SpiffeId pk,
                       ParseSpiffeId("spiffe://pk.casebridge/gateway"));
  EXPECT_EQ(pk.uri, "spiffe://pk.casebridge/gateway");
  EXPECT_EQ(pk.country, v1::COUNTRY_PK);
  EXPECT_EQ(pk.kind, PrincipalKind::kGateway);
  EXPECT_EQ(pk.name, "");

  ASSERT_OK_AND_ASSIGN(const SpiffeId cn,
                       ParseSpiffeId("spiffe://cn.casebridge/gateway"));
  EXPECT_EQ(cn.country, v1::COUNTRY_CN);
  EXPECT_EQ(cn.kind, PrincipalKind::kGateway);
}

TEST(SpiffeIdTest, ParsesOfficesOfBothCountries) {
  ASSERT_OK_AND_ASSIGN(
      const SpiffeId pk,
      ParseSpiffeId("spiffe://pk.casebridge/office/fia-liaison-desk"));
  EXPECT_EQ(pk.country, v1::COUNTRY_PK);
  EXPECT_EQ(pk.kind, PrincipalKind::kOffice);
  EXPECT_EQ(pk.name, "fia-liaison-desk");

  ASSERT_OK_AND_ASSIGN(
      const SpiffeId cn,
      ParseSpiffeId("spiffe://cn.casebridge/office/mps-liaison"));
  EXPECT_EQ(cn.country, v1::COUNTRY_CN);
  EXPECT_EQ(cn.kind, PrincipalKind::kOffice);
  EXPECT_EQ(cn.name, "mps-liaison");
}

TEST(SpiffeIdTest, ParsesAuditorsOfBothCountries) {
  ASSERT_OK_AND_ASSIGN(
      const SpiffeId pk,
      ParseSpiffeId("spiffe://pk.casebridge/auditor/pk-auditor"));
  EXPECT_EQ(pk.country, v1::COUNTRY_PK);
  EXPECT_EQ(pk.kind, PrincipalKind::kAuditor);
  EXPECT_EQ(pk.name, "pk-auditor");

  ASSERT_OK_AND_ASSIGN(
      const SpiffeId cn,
      ParseSpiffeId("spiffe://cn.casebridge/auditor/cn-auditor"));
  EXPECT_EQ(cn.country, v1::COUNTRY_CN);
  EXPECT_EQ(cn.kind, PrincipalKind::kAuditor);
  EXPECT_EQ(cn.name, "cn-auditor");
}

TEST(SpiffeIdTest, AcceptsNamesOfOneAndSixtyFourCharacters) {
  EXPECT_OK(ParseSpiffeId("spiffe://pk.casebridge/office/a"));
  EXPECT_OK(ParseSpiffeId("spiffe://pk.casebridge/office/0"));
  ASSERT_OK_AND_ASSIGN(const SpiffeId id, ParseSpiffeId(absl::StrCat(
                                              "spiffe://cn.casebridge/office/",
                                              std::string(64, 'x'))));
  EXPECT_EQ(id.name.size(), 64u);
}

class SpiffeIdRejectTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SpiffeIdRejectTest, RejectsWithInvalidArgumentQuotingTheId) {
  EXPECT_THAT(ParseSpiffeId(GetParam()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(absl::StrCat("\"", GetParam(), "\""))));
}

INSTANTIATE_TEST_SUITE_P(OtherSchemes, SpiffeIdRejectTest,
                         ::testing::Values("", "spiffe:/", "spiffe://",
                                           "https://pk.casebridge/gateway",
                                           "SPIFFE://pk.casebridge/gateway",
                                           "pk.casebridge/gateway",
                                           " spiffe://pk.casebridge/gateway",
                                           "spiffe:pk.casebridge/gateway"));

INSTANTIATE_TEST_SUITE_P(
    OtherTrustDomains, SpiffeIdRejectTest,
    ::testing::Values("spiffe://in.casebridge/gateway",
                      "spiffe://PK.casebridge/gateway",
                      "spiffe://pk.casebridge.evil/gateway",
                      "spiffe://evilpk.casebridge/gateway",
                      "spiffe://pk.CaseBridge/office/fia-liaison-desk",
                      "spiffe://casebridge/gateway", "spiffe:///gateway"));

INSTANTIATE_TEST_SUITE_P(
    BadNames, SpiffeIdRejectTest,
    ::testing::Values(
        "spiffe://pk.casebridge/office/FIA-liaison-desk",
        "spiffe://pk.casebridge/office/Fia", "spiffe://pk.casebridge/office/",
        "spiffe://cn.casebridge/auditor/",
        "spiffe://pk.casebridge/office/fia_liaison",
        "spiffe://pk.casebridge/office/fia.liaison",
        "spiffe://pk.casebridge/office/fia liaison",
        "spiffe://pk.casebridge/office/fia?x=1",
        "spiffe://pk.casebridge/office/fia%2f",
        "spiffe://pk.casebridge/office/متاثرہ",
        "spiffe://pk.casebridge/office/"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));

INSTANTIATE_TEST_SUITE_P(
    BadPaths, SpiffeIdRejectTest,
    ::testing::Values("spiffe://pk.casebridge", "spiffe://pk.casebridge/",
                      "spiffe://pk.casebridge/gateway/",
                      "spiffe://pk.casebridge/gateway/extra",
                      "spiffe://pk.casebridge/Gateway",
                      "spiffe://pk.casebridge/office",
                      "spiffe://pk.casebridge/office/fia/extra",
                      "spiffe://pk.casebridge/office/fia/",
                      "spiffe://pk.casebridge//office/fia",
                      "spiffe://pk.casebridge/admin/fia",
                      "spiffe://pk.casebridge/offices/fia",
                      "spiffe://pk.casebridge/gateway/office/fia"));

TEST(SpiffeIdTest, SixtyFiveCharacterNameIsRejected) {
  const std::string name(65, 'a');
  EXPECT_THAT(
      ParseSpiffeId(absl::StrCat("spiffe://pk.casebridge/office/", name)),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1-64")));
}

TEST(CountryTest, CodesRoundTrip) {
  EXPECT_EQ(CountryCode(v1::COUNTRY_PK), "PK");
  EXPECT_EQ(CountryCode(v1::COUNTRY_CN), "CN");
  EXPECT_EQ(CountryFromCode("PK"), v1::COUNTRY_PK);
  EXPECT_EQ(CountryFromCode("CN"), v1::COUNTRY_CN);
  EXPECT_EQ(CountryFromCode(CountryCode(v1::COUNTRY_PK)), v1::COUNTRY_PK);
  EXPECT_EQ(CountryFromCode(CountryCode(v1::COUNTRY_CN)), v1::COUNTRY_CN);
}

TEST(CountryTest, UnspecifiedAndUnknownCountriesHaveNoCode) {
  EXPECT_EQ(CountryCode(v1::COUNTRY_UNSPECIFIED), "");
  EXPECT_EQ(CountryCode(static_cast<v1::Country>(99)), "");
}

TEST(CountryTest, UnknownCodesAreUnspecified) {
  for (const char* code : {"", "pk", "cn", "IN", "PAK", "CHN", " PK", "PK "}) {
    EXPECT_EQ(CountryFromCode(code), v1::COUNTRY_UNSPECIFIED) << code;
  }
}

TEST(GatewayIdentityTest, NamesEachCountrysGateway) {
  EXPECT_EQ(GatewayIdentity(v1::COUNTRY_PK), "spiffe://pk.casebridge/gateway");
  EXPECT_EQ(GatewayIdentity(v1::COUNTRY_CN), "spiffe://cn.casebridge/gateway");
}

TEST(GatewayIdentityTest, ParsesBackToAGatewayOfThatCountry) {
  for (const v1::Country country : {v1::COUNTRY_PK, v1::COUNTRY_CN}) {
    ASSERT_OK_AND_ASSIGN(const SpiffeId id,
                         ParseSpiffeId(GatewayIdentity(country)));
    EXPECT_EQ(id.country, country);
    EXPECT_EQ(id.kind, PrincipalKind::kGateway);
  }
}

}  // namespace
}  // namespace casebridge
