// Assembling one ListCases page from the store's pages (docs/api.md#listcases):
// the cases a caller may see and its filters keep, up to the page size, the
// response's byte limit, and a bound on the rows one call looks at.
#ifndef CASEBRIDGE_SERVER_CASE_LISTING_H_
#define CASEBRIDGE_SERVER_CASE_LISTING_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "casebridge/v1/common.pb.h"
#include "server/case_store.h"

namespace casebridge::server {

struct ListingLimits {
  int page_size = 50;
  // The page's cases, serialized with their tags, stay within this.
  size_t max_bytes = 0;
  // Rows of the store looked at before a page ends short: a filter that
  // excludes nearly every case an office may see costs one call this much,
  // not the whole table.
  int64_t max_examined = 2000;
};

struct Listing {
  std::vector<v1::CaseReference> cases;
  // Set when more cases may follow: the position the page token holds (the
  // last case returned, or the last row looked at). A page may then be
  // shorter than page_size, or empty.
  std::optional<int64_t> next_after;
};

// The cases after position `after`: `fetch(after, n)` reads the store's next
// rows (at most n, CasePage::has_more if more follow); `keep` returns a case
// as listed, or nullopt to leave it out (not visible, filtered out). A page
// always holds at least one case if any is kept, whatever its size.
absl::StatusOr<Listing> AssembleListing(
    int64_t after, const ListingLimits& limits,
    const std::function<absl::StatusOr<CasePage>(int64_t after, int max)>&
        fetch,
    const std::function<std::optional<v1::CaseReference>(v1::CaseReference)>&
        keep);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_CASE_LISTING_H_
