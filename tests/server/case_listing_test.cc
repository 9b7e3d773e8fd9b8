// One ListCases page from the store's pages: page size, byte limit, and the
// bound on rows looked at (server/case_listing.h).
#include "server/case_listing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::server {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Optional;

// A store of `n` cases at positions 1..n, case i with a summary of
// `summary_bytes` bytes; counts the rows it hands out.
class FakeStore {
 public:
  FakeStore(int n, size_t summary_bytes = 10) {
    for (int i = 1; i <= n; ++i) {
      v1::CaseReference c;
      c.set_exchange_id(absl::StrCat("CN-2026-", 100000 + i));
      c.set_summary(std::string(summary_bytes, 's'));
      cases_.push_back(c);
    }
  }

  absl::StatusOr<CasePage> Fetch(int64_t after, int max) {
    CasePage page;
    for (int64_t p = after + 1; p <= static_cast<int64_t>(cases_.size()); ++p) {
      if (static_cast<int>(page.cases.size()) == max) {
        page.has_more = true;
        break;
      }
      page.cases.push_back(cases_[p - 1]);
      page.positions.push_back(p);
      ++rows_;
    }
    return page;
  }

  int64_t rows() const { return rows_; }

 private:
  std::vector<v1::CaseReference> cases_;
  int64_t rows_ = 0;
};

std::vector<std::string> Ids(const Listing& listing) {
  std::vector<std::string> ids;
  for (const v1::CaseReference& c : listing.cases) {
    ids.push_back(c.exchange_id());
  }
  return ids;
}

// Keeps the cases whose id ends in one of `digits`.
auto KeepEnding(std::string digits) {
  return [digits](v1::CaseReference c) -> std::optional<v1::CaseReference> {
    if (digits.find(c.exchange_id().back()) == std::string::npos) {
      return std::nullopt;
    }
    return c;
  };
}

absl::StatusOr<Listing> List(FakeStore& store, int64_t after,
                             const ListingLimits& limits,
                             const std::string& digits = "0123456789") {
  return AssembleListing(
      after, limits,
      [&](int64_t from, int max) { return store.Fetch(from, max); },
      KeepEnding(digits));
}

ListingLimits Limits(int page_size, size_t max_bytes = 1 << 20,
                     int64_t max_examined = 2000) {
  ListingLimits limits;
  limits.page_size = page_size;
  limits.max_bytes = max_bytes;
  limits.max_examined = max_examined;
  return limits;
}

TEST(CaseListingTest, AFullPageSaysMoreFollowOnlyWhenAnotherMatches) {
  FakeStore store(6);
  ASSERT_OK_AND_ASSIGN(Listing first, List(store, 0, Limits(3)));
  EXPECT_THAT(Ids(first), ElementsAre("CN-2026-100001", "CN-2026-100002",
                                      "CN-2026-100003"));
  EXPECT_THAT(first.next_after, Optional(3));
  ASSERT_OK_AND_ASSIGN(Listing last, List(store, 3, Limits(3)));
  EXPECT_EQ(last.cases.size(), 3u);
  EXPECT_EQ(last.next_after, std::nullopt);  // no empty page after a full one
}

TEST(CaseListingTest, FilteredOutCasesAreSkippedAcrossTheStoresPages) {
  FakeStore store(30);
  // Cases ending in 7: 7, 17, 27.
  ASSERT_OK_AND_ASSIGN(Listing listing, List(store, 0, Limits(2), "7"));
  EXPECT_THAT(Ids(listing), ElementsAre("CN-2026-100007", "CN-2026-100017"));
  EXPECT_THAT(listing.next_after, Optional(17));
  ASSERT_OK_AND_ASSIGN(Listing rest, List(store, 17, Limits(2), "7"));
  EXPECT_THAT(Ids(rest), ElementsAre("CN-2026-100027"));
  EXPECT_EQ(rest.next_after, std::nullopt);
}

TEST(CaseListingTest, APageEndsBeforeItsBytesPassTheLimit) {
  FakeStore store(5, /*summary_bytes=*/1000);
  // About 1,030 bytes a case: three fit in 3,500, not four.
  ASSERT_OK_AND_ASSIGN(Listing listing, List(store, 0, Limits(50, 3500)));
  EXPECT_EQ(listing.cases.size(), 3u);
  EXPECT_THAT(listing.next_after, Optional(3));
  // A case larger than the limit on its own still makes a page.
  ASSERT_OK_AND_ASSIGN(Listing one, List(store, 3, Limits(50, 100)));
  EXPECT_THAT(Ids(one), ElementsAre("CN-2026-100004"));
  EXPECT_THAT(one.next_after, Optional(4));
}

TEST(CaseListingTest, LookingStopsAfterTheBoundWithATokenFromThere) {
  // 10,000 cases, of which the filter keeps one near the end: a call looks
  // at about 2,000 rows, not all of them, and the token moves on.
  FakeStore store(10000);
  const ListingLimits limits = Limits(50, 1 << 20, 2000);
  ASSERT_OK_AND_ASSIGN(
      Listing first,
      AssembleListing(
          0, limits,
          [&](int64_t from, int max) { return store.Fetch(from, max); },
          [](v1::CaseReference c) -> std::optional<v1::CaseReference> {
            if (c.exchange_id() != "CN-2026-109999") return std::nullopt;
            return c;
          }));
  EXPECT_THAT(first.cases, IsEmpty());
  ASSERT_TRUE(first.next_after.has_value());
  EXPECT_GE(*first.next_after, 2000);
  EXPECT_LT(*first.next_after, 2100);
  EXPECT_LT(store.rows(), 2100);

  // Following the tokens finds it, once.
  std::vector<std::string> found;
  std::optional<int64_t> after = first.next_after;
  int calls = 1;
  while (after.has_value() && calls < 20) {
    ASSERT_OK_AND_ASSIGN(
        Listing page,
        AssembleListing(
            *after, limits,
            [&](int64_t from, int max) { return store.Fetch(from, max); },
            [](v1::CaseReference c) -> std::optional<v1::CaseReference> {
              if (c.exchange_id() != "CN-2026-109999") return std::nullopt;
              return c;
            }));
    for (const std::string& id : Ids(page)) found.push_back(id);
    after = page.next_after;
    ++calls;
  }
  EXPECT_THAT(found, ElementsAre("CN-2026-109999"));
  EXPECT_EQ(calls, 5);
  EXPECT_EQ(store.rows(), 10000);  // every row looked at once in all
}

TEST(CaseListingTest, TheStoresErrorIsTheCallsError) {
  ListingLimits limits = Limits(10);
  EXPECT_THAT(AssembleListing(
                  0, limits,
                  [](int64_t, int) -> absl::StatusOr<CasePage> {
                    return absl::DataLossError(
                        "stored case CN-2026-000001 does not parse");
                  },
                  KeepEnding("0123456789")),
              casebridge::testing::StatusIs(
                  absl::StatusCode::kDataLoss,
                  "stored case CN-2026-000001 does not parse"));
}

}  // namespace
}  // namespace casebridge::server
