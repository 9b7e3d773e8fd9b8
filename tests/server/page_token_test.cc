#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/office_service.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

v1::ListCasesRequest Filters() {
  v1::ListCasesRequest request;
  request.set_status(v1::CASE_STATUS_OPEN);
  request.set_category(v1::CASE_CATEGORY_FORCED_LABOUR);
  request.set_owner_office("spiffe://pk.casebridge/office/fia-liaison-desk");
  request.set_text("受害者");
  request.set_page_size(20);
  return request;
}

// Rebuilds a token with the same fingerprint and another position text.
std::string TokenWithPosition(const v1::ListCasesRequest& filters,
                              const std::string& position) {
  std::string raw;
  EXPECT_TRUE(absl::WebSafeBase64Unescape(EncodePageToken(1, filters), &raw));
  const std::vector<std::string> parts = absl::StrSplit(raw, ':');
  EXPECT_EQ(parts.size(), 3u);
  std::string token;
  absl::WebSafeBase64Escape(
      absl::StrCat(parts[0], ":", position, ":", parts.back()), &token);
  return token;
}

TEST(PageTokenTest, RoundTripsPosition) {
  for (const int64_t position :
       {int64_t{0}, int64_t{1}, int64_t{42}, int64_t{9007199254740993}}) {
    const std::string token = EncodePageToken(position, Filters());
    EXPECT_FALSE(token.empty());
    ASSERT_OK_AND_ASSIGN(const int64_t decoded,
                         DecodePageToken(token, Filters()));
    EXPECT_EQ(decoded, position);
  }
}

TEST(PageTokenTest, TokenIsUrlSafe) {
  const std::string token = EncodePageToken(123456789, Filters());
  EXPECT_EQ(token.find_first_not_of(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                "0123456789-_"),
            std::string::npos)
      << token;
}

TEST(PageTokenTest, PageSizeAndTokenDoNotBindTheToken) {
  const std::string token = EncodePageToken(7, Filters());
  v1::ListCasesRequest next = Filters();
  next.set_page_size(500);
  next.set_page_token(token);
  ASSERT_OK_AND_ASSIGN(const int64_t decoded, DecodePageToken(token, next));
  EXPECT_EQ(decoded, 7);
}

TEST(PageTokenTest, TokenForOtherFiltersIsInvalidArgument) {
  const std::string token = EncodePageToken(7, Filters());
  std::vector<v1::ListCasesRequest> others(5, Filters());
  others[0].set_status(v1::CASE_STATUS_CLOSED);
  others[1].set_category(v1::CASE_CATEGORY_OTHER);
  others[2].set_owner_office("spiffe://pk.casebridge/office/embassy-beijing");
  others[3].set_text("受害");
  others[4].clear_text();
  for (const v1::ListCasesRequest& other : others) {
    EXPECT_THAT(
        DecodePageToken(token, other),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 AllOf(StartsWith("page_token: "), HasSubstr("other filters"))))
        << other.ShortDebugString();
  }
}

TEST(PageTokenTest, GarbageIsInvalidArgument) {
  for (const std::string& garbage :
       {std::string("!!!not base64!!!"), std::string("djE6MTI="),
        std::string("v1:7:abc"), std::string(1, '\0'),
        absl::WebSafeBase64Escape("v2:7:0011223344556677"),
        absl::WebSafeBase64Escape("v1:seven:0011223344556677"),
        absl::WebSafeBase64Escape("v1:7"),
        absl::WebSafeBase64Escape("v1:7:00:11")}) {
    EXPECT_THAT(DecodePageToken(garbage, Filters()),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         StartsWith("page_token: ")))
        << garbage;
  }
}

TEST(PageTokenTest, NegativePositionIsRejected) {
  EXPECT_THAT(
      DecodePageToken(EncodePageToken(-1, Filters()), Filters()),
      StatusIs(absl::StatusCode::kInvalidArgument, StartsWith("page_token: ")));
  EXPECT_THAT(
      DecodePageToken(TokenWithPosition(Filters(), "-5"), Filters()),
      StatusIs(absl::StatusCode::kInvalidArgument, StartsWith("page_token: ")));
}

TEST(PageTokenTest, OverflowingPositionIsRejected) {
  EXPECT_THAT(
      DecodePageToken(TokenWithPosition(Filters(), "99999999999999999999"),
                      Filters()),
      StatusIs(absl::StatusCode::kInvalidArgument, StartsWith("page_token: ")));
  ASSERT_OK_AND_ASSIGN(
      const int64_t position,
      DecodePageToken(TokenWithPosition(Filters(), "12"), Filters()));
  EXPECT_EQ(position, 12);
}

TEST(PageTokenTest, EmptyFiltersRoundTrip) {
  const v1::ListCasesRequest none;
  ASSERT_OK_AND_ASSIGN(const int64_t position,
                       DecodePageToken(EncodePageToken(3, none), none));
  EXPECT_EQ(position, 3);
  EXPECT_THAT(
      DecodePageToken(EncodePageToken(3, none), Filters()),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("other filters")));
}

}  // namespace
}  // namespace casebridge::server
