#include "server/validation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Repeat(absl::string_view unit, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) absl::StrAppend(&out, unit);
  return out;
}

v1::OpenCaseRequest ValidOpen() {
  v1::OpenCaseRequest request;
  request.set_request_id("fia-2026.11-29_001");
  v1::CaseReference& c = *request.mutable_case_reference();
  c.set_local_reference("FIR-101/2026");
  c.set_category(v1::CASE_CATEGORY_FORCED_MARRIAGE_FRAUD);
  c.set_summary("متاثرہ کی بازیابی\nLured by a marriage bureau in Lahore.");
  c.add_victims()->set_pseudonym("V1");
  v1::VictimReference& second = *c.add_victims();
  second.set_pseudonym("V2");
  second.set_remarks("age 18-25, speaks Punjabi and Urdu");
  v1::Location& location = *c.add_last_known_locations();
  location.set_description("河北省邯郸市");
  location.set_country(v1::COUNTRY_CN);
  location.mutable_observed_at()->set_seconds(1795953600);
  c.set_handling_code(v1::HANDLING_CODE_H1);
  c.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
  c.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_2);
  return request;
}

struct OpenCase {
  std::string name;
  std::function<void(v1::OpenCaseRequest&)> mutate;
  std::string field_prefix;  // the message starts with it
};

TEST(ValidateOpenCaseTest, AcceptsValidRequest) {
  EXPECT_OK(ValidateOpenCase(ValidOpen()));
}

TEST(ValidateOpenCaseTest, AcceptsMinimalRequestWithoutOptionalParts) {
  v1::OpenCaseRequest request = ValidOpen();
  request.clear_request_id();
  request.mutable_case_reference()->clear_victims();
  request.mutable_case_reference()->clear_last_known_locations();
  EXPECT_OK(ValidateOpenCase(request));
}

TEST(ValidateOpenCaseTest, CountsSummaryLengthInCharacters) {
  v1::OpenCaseRequest request = ValidOpen();
  request.mutable_case_reference()->set_summary(Repeat("案", 4000));
  EXPECT_OK(ValidateOpenCase(request));
  request.mutable_case_reference()->set_summary(Repeat("ب", 4000));
  EXPECT_OK(ValidateOpenCase(request));
  request.mutable_case_reference()->set_summary(std::string(4000, 'a'));
  EXPECT_OK(ValidateOpenCase(request));
  request.mutable_case_reference()->set_summary(Repeat("案", 4001));
  EXPECT_THAT(ValidateOpenCase(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith("case_reference.summary: ")));
}

TEST(ValidateOpenCaseTest, AcceptsEmptyPseudonymsForTheGatewayToMint) {
  v1::OpenCaseRequest request = ValidOpen();
  request.mutable_case_reference()->mutable_victims(0)->clear_pseudonym();
  request.mutable_case_reference()->mutable_victims(1)->clear_pseudonym();
  EXPECT_OK(ValidateOpenCase(request));
}

TEST(ValidateOpenCaseTest, AcceptsTabAndNewlineInText) {
  v1::OpenCaseRequest request = ValidOpen();
  request.mutable_case_reference()->set_summary("line one\n\tline two");
  EXPECT_OK(ValidateOpenCase(request));
}

TEST(ValidateOpenCaseTest, AcceptsH3WithRestriction) {
  v1::OpenCaseRequest request = ValidOpen();
  request.mutable_case_reference()->set_handling_code(v1::HANDLING_CODE_H3);
  request.mutable_case_reference()->set_handling_restriction(
      "Not to be shared with provincial police");
  EXPECT_OK(ValidateOpenCase(request));
}

TEST(ValidateOpenCaseTest, AcceptsFiftyVictimsAndSixtyFourCharacterIds) {
  v1::OpenCaseRequest request = ValidOpen();
  request.set_request_id(std::string(64, 'r'));
  request.mutable_case_reference()->clear_victims();
  for (int i = 0; i < 50; ++i) {
    request.mutable_case_reference()->add_victims()->set_pseudonym(
        absl::StrCat("V", i));
  }
  request.mutable_case_reference()->set_local_reference(Repeat("ف", 64));
  EXPECT_OK(ValidateOpenCase(request));
}

class ValidateOpenCaseRejectTest : public ::testing::TestWithParam<OpenCase> {};

TEST_P(ValidateOpenCaseRejectTest, IsInvalidArgumentNamingTheField) {
  v1::OpenCaseRequest request = ValidOpen();
  GetParam().mutate(request);
  EXPECT_THAT(ValidateOpenCase(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(GetParam().field_prefix)));
}

using R = v1::OpenCaseRequest;
v1::CaseReference& C(R& r) { return *r.mutable_case_reference(); }

INSTANTIATE_TEST_SUITE_P(
    Fields, ValidateOpenCaseRejectTest,
    ::testing::Values(
        OpenCase{"RequestIdWithSpace", [](R& r) { r.set_request_id("req 1"); },
                 "request_id: "},
        OpenCase{"RequestIdTooLong",
                 [](R& r) { r.set_request_id(std::string(65, 'r')); },
                 "request_id: "},
        OpenCase{"RequestIdNonAscii", [](R& r) { r.set_request_id("طلب"); },
                 "request_id: "},
        OpenCase{"NoCaseReference", [](R& r) { r.clear_case_reference(); },
                 "case_reference: "},
        OpenCase{"ExchangeIdSet",
                 [](R& r) { C(r).set_exchange_id("PK-2026-000001"); },
                 "case_reference.exchange_id: "},
        OpenCase{"StatusSet",
                 [](R& r) { C(r).set_status(v1::CASE_STATUS_CLOSED); },
                 "case_reference.status: "},
        OpenCase{"OwnerSet",
                 [](R& r) {
                   C(r).set_owner_office(
                       "spiffe://pk.casebridge/office/fia-liaison-desk");
                 },
                 "case_reference.owner_office: "},
        OpenCase{"OriginCountrySet",
                 [](R& r) { C(r).set_origin_country(v1::COUNTRY_PK); },
                 "case_reference.origin_country: "},
        OpenCase{"VersionSet", [](R& r) { C(r).set_version(3); },
                 "case_reference.version: "},
        OpenCase{"CreatedAtSet",
                 [](R& r) { C(r).mutable_created_at()->set_seconds(1); },
                 "case_reference.created_at: "},
        OpenCase{"UpdatedAtSet", [](R& r) { C(r).mutable_updated_at(); },
                 "case_reference.updated_at: "},
        OpenCase{"UpdatedBySet", [](R& r) { C(r).set_updated_by("someone"); },
                 "case_reference.updated_by: "},
        OpenCase{"HandlingNoticeSet",
                 [](R& r) { C(r).set_handling_notice("H0: none"); },
                 "case_reference.handling_notice: is output only"},
        OpenCase{"PersonalDataPurgedAtSet",
                 [](R& r) {
                   C(r).mutable_personal_data_purged_at()->set_seconds(1);
                 },
                 "case_reference.personal_data_purged_at: is output only"},
        OpenCase{"LocalReferenceEmpty",
                 [](R& r) { C(r).clear_local_reference(); },
                 "case_reference.local_reference: "},
        OpenCase{"LocalReferenceTooLong",
                 [](R& r) { C(r).set_local_reference(std::string(65, 'x')); },
                 "case_reference.local_reference: "},
        OpenCase{"CategoryMissing", [](R& r) { C(r).clear_category(); },
                 "case_reference.category: "},
        OpenCase{
            "CategoryUnknown",
            [](R& r) { C(r).set_category(static_cast<v1::CaseCategory>(99)); },
            "case_reference.category: "},
        OpenCase{"SummaryEmpty", [](R& r) { C(r).clear_summary(); },
                 "case_reference.summary: "},
        OpenCase{"SummaryInvalidUtf8",
                 [](R& r) { C(r).set_summary("bad \xC0\xAF bytes"); },
                 "case_reference.summary: is not valid UTF-8"},
        OpenCase{"SummaryTruncatedUtf8",
                 [](R& r) { C(r).set_summary("受害\xE8\x80"); },
                 "case_reference.summary: is not valid UTF-8"},
        OpenCase{"SummaryControlCharacter",
                 [](R& r) { C(r).set_summary("bell \x07 here"); },
                 "case_reference.summary: contains a control character"},
        OpenCase{"SummaryCarriageReturn",
                 [](R& r) { C(r).set_summary("line\r\nline"); },
                 "case_reference.summary: contains a control character"},
        OpenCase{"SummaryDelete", [](R& r) { C(r).set_summary("del \x7F"); },
                 "case_reference.summary: contains a control character"},
        OpenCase{"SummaryNul",
                 [](R& r) { C(r).set_summary(std::string("a\0b", 3)); },
                 "case_reference.summary: contains a control character"},
        OpenCase{"Summary4001Ascii",
                 [](R& r) { C(r).set_summary(std::string(4001, 'a')); },
                 "case_reference.summary: is longer than 4000"},
        OpenCase{"Summary4001Chinese",
                 [](R& r) { C(r).set_summary(Repeat("案", 4001)); },
                 "case_reference.summary: is longer than 4000"},
        OpenCase{"VictimPseudonymControlCharacter",
                 [](R& r) { C(r).mutable_victims(1)->set_pseudonym("V\x01"); },
                 "case_reference.victims[1].pseudonym: "},
        OpenCase{"VictimPseudonymDuplicate",
                 [](R& r) { C(r).mutable_victims(1)->set_pseudonym("V1"); },
                 "case_reference.victims[1].pseudonym: is used twice"},
        OpenCase{"VictimPseudonymTooLong",
                 [](R& r) {
                   C(r).mutable_victims(0)->set_pseudonym(std::string(65, 'v'));
                 },
                 "case_reference.victims[0].pseudonym: "},
        OpenCase{"VictimRemarksTooLong",
                 [](R& r) {
                   C(r).mutable_victims(1)->set_remarks(std::string(1001, 'r'));
                 },
                 "case_reference.victims[1].remarks: "},
        OpenCase{"VictimRemarksInvalidUtf8",
                 [](R& r) { C(r).mutable_victims(1)->set_remarks("\xFF"); },
                 "case_reference.victims[1].remarks: "},
        OpenCase{"TooManyVictims",
                 [](R& r) {
                   for (int i = 2; i < 51; ++i) {
                     C(r).add_victims()->set_pseudonym(
                         absl::StrCat("V", i + 1));
                   }
                 },
                 "case_reference.victims: "},
        OpenCase{"LocationDescriptionEmpty",
                 [](R& r) {
                   C(r).mutable_last_known_locations(0)->clear_description();
                 },
                 "case_reference.last_known_locations[0].description: "},
        OpenCase{
            "LocationCountryMissing",
            [](R& r) { C(r).mutable_last_known_locations(0)->clear_country(); },
            "case_reference.last_known_locations[0].country: "},
        OpenCase{"LocationCountryUnknown",
                 [](R& r) {
                   C(r).mutable_last_known_locations(0)->set_country(
                       static_cast<v1::Country>(7));
                 },
                 "case_reference.last_known_locations[0].country: "},
        OpenCase{"LocationBadTimestamp",
                 [](R& r) {
                   C(r).mutable_last_known_locations(0)
                       ->mutable_observed_at()
                       ->set_nanos(-1);
                 },
                 "case_reference.last_known_locations[0].observed_at: "},
        OpenCase{"LocationTimestampAfterYear9999",
                 [](R& r) {
                   C(r).mutable_last_known_locations(0)
                       ->mutable_observed_at()
                       ->set_seconds(253402300800);
                 },
                 "case_reference.last_known_locations[0].observed_at: "},
        OpenCase{"HandlingCodeMissing",
                 [](R& r) { C(r).clear_handling_code(); },
                 "case_reference.handling_code: "},
        OpenCase{"HandlingCodeUnknown",
                 [](R& r) {
                   C(r).set_handling_code(static_cast<v1::HandlingCode>(99));
                 },
                 "case_reference.handling_code: "},
        OpenCase{"H3WithoutRestriction",
                 [](R& r) { C(r).set_handling_code(v1::HANDLING_CODE_H3); },
                 "case_reference.handling_restriction: "},
        OpenCase{"H0WithRestriction",
                 [](R& r) {
                   C(r).set_handling_code(v1::HANDLING_CODE_H0);
                   C(r).set_handling_restriction("only for FIA");
                 },
                 "case_reference.handling_restriction: "},
        OpenCase{"RestrictionTooLong",
                 [](R& r) {
                   C(r).set_handling_code(v1::HANDLING_CODE_H3);
                   C(r).set_handling_restriction(std::string(1001, 'x'));
                 },
                 "case_reference.handling_restriction: "},
        OpenCase{"EvaluationMissing", [](R& r) { C(r).clear_evaluation(); },
                 "case_reference.evaluation: "},
        OpenCase{
            "SourceReliabilityMissing",
            [](R& r) { C(r).mutable_evaluation()->clear_source_reliability(); },
            "case_reference.evaluation.source_reliability: "},
        OpenCase{"SourceReliabilityUnknown",
                 [](R& r) {
                   C(r).mutable_evaluation()->set_source_reliability(
                       static_cast<v1::SourceReliability>(6));
                 },
                 "case_reference.evaluation.source_reliability: "},
        OpenCase{"InformationAccuracyMissing",
                 [](R& r) {
                   C(r).mutable_evaluation()->clear_information_accuracy();
                 },
                 "case_reference.evaluation.information_accuracy: "},
        OpenCase{"InformationAccuracyUnknown",
                 [](R& r) {
                   C(r).mutable_evaluation()->set_information_accuracy(
                       static_cast<v1::InformationAccuracy>(99));
                 },
                 "case_reference.evaluation.information_accuracy: "}),
    [](const ::testing::TestParamInfo<OpenCase>& param) {
      return param.param.name;
    });

v1::UpdateCaseRequest ValidUpdate() {
  v1::UpdateCaseRequest request;
  request.mutable_case_reference()->set_exchange_id("PK-2026-000123");
  request.mutable_case_reference()->set_status(v1::CASE_STATUS_VICTIM_LOCATED);
  request.mutable_case_reference()->set_summary("受害者已找到");
  request.mutable_update_mask()->add_paths("status");
  request.mutable_update_mask()->add_paths("summary");
  request.set_expected_version(3);
  return request;
}

TEST(ValidateUpdateCaseTest, AcceptsValidRequest) {
  EXPECT_OK(ValidateUpdateCase(ValidUpdate()));
  v1::UpdateCaseRequest cn = ValidUpdate();
  cn.mutable_case_reference()->set_exchange_id("CN-2027-999999");
  EXPECT_OK(ValidateUpdateCase(cn));
}

TEST(ValidateUpdateCaseTest, AcceptsEveryAllowedMaskPath) {
  v1::UpdateCaseRequest request = ValidUpdate();
  v1::CaseReference& c = *request.mutable_case_reference();
  c.set_local_reference("FIR-2");
  c.add_victims()->set_pseudonym("V1");
  c.set_handling_code(v1::HANDLING_CODE_H2);
  c.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_A);
  c.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_1);
  request.mutable_update_mask()->clear_paths();
  for (const char* path : {"status", "summary", "local_reference", "victims",
                           "last_known_locations", "handling_code",
                           "handling_restriction", "evaluation"}) {
    request.mutable_update_mask()->add_paths(path);
  }
  EXPECT_OK(ValidateUpdateCase(request));
}

struct UpdateCase {
  std::string name;
  std::function<void(v1::UpdateCaseRequest&)> mutate;
  std::string field_prefix;
};

class ValidateUpdateCaseRejectTest
    : public ::testing::TestWithParam<UpdateCase> {};

TEST_P(ValidateUpdateCaseRejectTest, IsInvalidArgumentNamingTheField) {
  v1::UpdateCaseRequest request = ValidUpdate();
  GetParam().mutate(request);
  EXPECT_THAT(ValidateUpdateCase(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(GetParam().field_prefix)));
}

using U = v1::UpdateCaseRequest;

INSTANTIATE_TEST_SUITE_P(
    Fields, ValidateUpdateCaseRejectTest,
    ::testing::Values(
        UpdateCase{"NoCaseReference", [](U& r) { r.clear_case_reference(); },
                   "case_reference: "},
        UpdateCase{
            "MissingExchangeId",
            [](U& r) { r.mutable_case_reference()->clear_exchange_id(); },
            "case_reference.exchange_id: is required"},
        UpdateCase{"ShortExchangeId",
                   [](U& r) {
                     r.mutable_case_reference()->set_exchange_id("PK-26-1");
                   },
                   "case_reference.exchange_id: "},
        UpdateCase{"ExchangeIdOfOtherCountry",
                   [](U& r) {
                     r.mutable_case_reference()->set_exchange_id(
                         "IN-2026-000123");
                   },
                   "case_reference.exchange_id: "},
        UpdateCase{"ExchangeIdWithLetters",
                   [](U& r) {
                     r.mutable_case_reference()->set_exchange_id(
                         "PK-2026-00012a");
                   },
                   "case_reference.exchange_id: "},
        UpdateCase{"ExchangeIdLowerCase",
                   [](U& r) {
                     r.mutable_case_reference()->set_exchange_id(
                         "pk-2026-000123");
                   },
                   "case_reference.exchange_id: "},
        UpdateCase{"ExchangeIdWrongSeparator",
                   [](U& r) {
                     r.mutable_case_reference()->set_exchange_id(
                         "PK-2026_000123");
                   },
                   "case_reference.exchange_id: "},
        UpdateCase{"ExpectedVersionZero",
                   [](U& r) { r.set_expected_version(0); },
                   "expected_version: "},
        UpdateCase{"ExpectedVersionNegative",
                   [](U& r) { r.set_expected_version(-1); },
                   "expected_version: "},
        UpdateCase{"MissingMask", [](U& r) { r.clear_update_mask(); },
                   "update_mask: "},
        UpdateCase{"UnknownMaskPath",
                   [](U& r) { r.mutable_update_mask()->add_paths("colour"); },
                   "update_mask: \"colour\" cannot be updated"},
        UpdateCase{
            "OutputOnlyMaskPath",
            [](U& r) { r.mutable_update_mask()->add_paths("owner_office"); },
            "update_mask: "},
        UpdateCase{"VersionMaskPath",
                   [](U& r) { r.mutable_update_mask()->add_paths("version"); },
                   "update_mask: "},
        UpdateCase{"StatusUnsetWhenUpdated",
                   [](U& r) { r.mutable_case_reference()->clear_status(); },
                   "case_reference.status: "},
        UpdateCase{"StatusUnknownWhenUpdated",
                   [](U& r) {
                     r.mutable_case_reference()->set_status(
                         static_cast<v1::CaseStatus>(42));
                   },
                   "case_reference.status: "},
        UpdateCase{"SummaryEmptyWhenUpdated",
                   [](U& r) { r.mutable_case_reference()->clear_summary(); },
                   "case_reference.summary: "},
        UpdateCase{"SummaryInvalidUtf8WhenUpdated",
                   [](U& r) {
                     r.mutable_case_reference()->set_summary("\xED\xA0\x80");
                   },
                   "case_reference.summary: "},
        UpdateCase{"VictimsInvalidWhenUpdated",
                   [](U& r) {
                     r.mutable_update_mask()->add_paths("victims");
                     r.mutable_case_reference()->add_victims()->set_pseudonym(
                         std::string(65, 'v'));
                   },
                   "case_reference.victims[0].pseudonym: "},
        UpdateCase{
            "HandlingCodeUnsetWhenUpdated",
            [](U& r) { r.mutable_update_mask()->add_paths("handling_code"); },
            "case_reference.handling_code: "},
        UpdateCase{
            "EvaluationUnsetWhenUpdated",
            [](U& r) { r.mutable_update_mask()->add_paths("evaluation"); },
            "case_reference.evaluation.source_reliability: "}),
    [](const ::testing::TestParamInfo<UpdateCase>& param) {
      return param.param.name;
    });

TEST(ValidateUpdateCaseTest, IgnoresFieldsOutsideTheMask) {
  v1::UpdateCaseRequest request = ValidUpdate();
  request.mutable_update_mask()->clear_paths();
  request.mutable_update_mask()->add_paths("status");
  request.mutable_case_reference()->set_summary("\xFF not checked");
  EXPECT_OK(ValidateUpdateCase(request));
}

TEST(ValidateListCasesTest, AcceptsDefaultsAndBounds) {
  v1::ListCasesRequest request;
  EXPECT_OK(ValidateListCases(request));
  request.set_page_size(500);
  request.set_status(v1::CASE_STATUS_CLOSED);
  request.set_category(v1::CASE_CATEGORY_OTHER);
  request.set_owner_office("spiffe://pk.casebridge/office/fia-liaison-desk");
  request.set_text(Repeat("获", 200));
  EXPECT_OK(ValidateListCases(request));
  request.set_page_size(1);
  EXPECT_OK(ValidateListCases(request));
}

struct ListCase {
  std::string name;
  std::function<void(v1::ListCasesRequest&)> mutate;
  std::string field_prefix;
};

class ValidateListCasesRejectTest : public ::testing::TestWithParam<ListCase> {
};

TEST_P(ValidateListCasesRejectTest, IsInvalidArgumentNamingTheField) {
  v1::ListCasesRequest request;
  GetParam().mutate(request);
  EXPECT_THAT(ValidateListCases(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(GetParam().field_prefix)));
}

using L = v1::ListCasesRequest;

INSTANTIATE_TEST_SUITE_P(
    Fields, ValidateListCasesRejectTest,
    ::testing::Values(
        ListCase{"PageSizeTooLarge", [](L& r) { r.set_page_size(501); },
                 "page_size: "},
        ListCase{"PageSizeNegative", [](L& r) { r.set_page_size(-1); },
                 "page_size: "},
        ListCase{"OwnerNotSpiffe",
                 [](L& r) { r.set_owner_office("fia-liaison-desk"); },
                 "owner_office: "},
        ListCase{
            "OwnerIsGateway",
            [](L& r) { r.set_owner_office("spiffe://pk.casebridge/gateway"); },
            "owner_office: "},
        ListCase{
            "OwnerOfUnknownDomain",
            [](L& r) { r.set_owner_office("spiffe://in.casebridge/office/x"); },
            "owner_office: "},
        ListCase{"StatusUnknown",
                 [](L& r) { r.set_status(static_cast<v1::CaseStatus>(99)); },
                 "status: "},
        ListCase{
            "CategoryUnknown",
            [](L& r) { r.set_category(static_cast<v1::CaseCategory>(99)); },
            "category: "},
        ListCase{"TextTooLong", [](L& r) { r.set_text(Repeat("获", 201)); },
                 "text: "},
        ListCase{"TextInvalidUtf8", [](L& r) { r.set_text("\xC0\xAF"); },
                 "text: "},
        ListCase{"TextControlCharacter", [](L& r) { r.set_text("a\x1b"); },
                 "text: "}),
    [](const ::testing::TestParamInfo<ListCase>& param) {
      return param.param.name;
    });

TEST(CheckTextTest, CountsCodePointsAgainstBounds) {
  EXPECT_OK(CheckText("f", "受害者", 3, 3));
  EXPECT_THAT(CheckText("f", "受害", 3, 10),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith("f: needs at least 3")));
  EXPECT_THAT(CheckText("f", "", 1, 10),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith("f: is required")));
  EXPECT_OK(CheckText("f", "", 0, 10));
}

TEST(CheckRequestIdTest, AcceptsEmptyAndAllowedCharacters) {
  EXPECT_OK(CheckRequestId("request_id", ""));
  EXPECT_OK(CheckRequestId("request_id", "Az09._-"));
  EXPECT_THAT(
      CheckRequestId("request_id", "a/b"),
      StatusIs(absl::StatusCode::kInvalidArgument, StartsWith("request_id: ")));
}

// The allowed status transitions, written out; staying put is always allowed.
const std::set<std::pair<v1::CaseStatus, v1::CaseStatus>>& AllowedMoves() {
  static const auto* allowed =
      new std::set<std::pair<v1::CaseStatus, v1::CaseStatus>>{
          {v1::CASE_STATUS_OPEN, v1::CASE_STATUS_UNDER_INVESTIGATION},
          {v1::CASE_STATUS_OPEN, v1::CASE_STATUS_VICTIM_LOCATED},
          {v1::CASE_STATUS_OPEN, v1::CASE_STATUS_CLOSED},
          {v1::CASE_STATUS_UNDER_INVESTIGATION, v1::CASE_STATUS_VICTIM_LOCATED},
          {v1::CASE_STATUS_UNDER_INVESTIGATION, v1::CASE_STATUS_CLOSED},
          {v1::CASE_STATUS_VICTIM_LOCATED, v1::CASE_STATUS_VICTIM_RESCUED},
          {v1::CASE_STATUS_VICTIM_LOCATED, v1::CASE_STATUS_UNDER_INVESTIGATION},
          {v1::CASE_STATUS_VICTIM_LOCATED, v1::CASE_STATUS_CLOSED},
          {v1::CASE_STATUS_VICTIM_RESCUED, v1::CASE_STATUS_REPATRIATED},
          {v1::CASE_STATUS_VICTIM_RESCUED, v1::CASE_STATUS_CLOSED},
          {v1::CASE_STATUS_REPATRIATED, v1::CASE_STATUS_CLOSED},
          {v1::CASE_STATUS_CLOSED, v1::CASE_STATUS_UNDER_INVESTIGATION},
      };
  return *allowed;
}

TEST(CheckTransitionTest, FollowsTheTransitionTableExactly) {
  const v1::CaseStatus statuses[] = {
      v1::CASE_STATUS_OPEN,           v1::CASE_STATUS_UNDER_INVESTIGATION,
      v1::CASE_STATUS_VICTIM_LOCATED, v1::CASE_STATUS_VICTIM_RESCUED,
      v1::CASE_STATUS_REPATRIATED,    v1::CASE_STATUS_CLOSED};
  int allowed_seen = 0;
  for (const v1::CaseStatus from : statuses) {
    for (const v1::CaseStatus to : statuses) {
      SCOPED_TRACE(absl::StrCat(v1::CaseStatus_Name(from), " -> ",
                                v1::CaseStatus_Name(to)));
      const absl::Status status = CheckTransition(from, to);
      if (from == to || AllowedMoves().contains({from, to})) {
        EXPECT_OK(status);
        if (from != to) ++allowed_seen;
      } else {
        EXPECT_THAT(status,
                    StatusIs(absl::StatusCode::kFailedPrecondition,
                             AllOf(StartsWith("case_reference.status: "),
                                   HasSubstr(v1::CaseStatus_Name(from)),
                                   HasSubstr(v1::CaseStatus_Name(to)))));
      }
    }
  }
  EXPECT_EQ(allowed_seen, static_cast<int>(AllowedMoves().size()));
}

TEST(CheckTransitionTest, RefusesMovesIntoOrOutOfUnspecified) {
  EXPECT_THAT(
      CheckTransition(v1::CASE_STATUS_OPEN, v1::CASE_STATUS_UNSPECIFIED),
      StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_THAT(
      CheckTransition(v1::CASE_STATUS_UNSPECIFIED, v1::CASE_STATUS_CLOSED),
      StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
}

}  // namespace
}  // namespace casebridge::server
