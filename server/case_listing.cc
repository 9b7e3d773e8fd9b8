#include "server/case_listing.h"

#include <utility>

#include "core/status_macros.h"

namespace casebridge::server {

absl::StatusOr<Listing> AssembleListing(
    int64_t after, const ListingLimits& limits,
    const std::function<absl::StatusOr<CasePage>(int64_t after, int max)>&
        fetch,
    const std::function<std::optional<v1::CaseReference>(v1::CaseReference)>&
        keep) {
  Listing out;
  size_t bytes = 0;
  int64_t examined = 0;
  int64_t scanned = after;
  int64_t last = after;
  while (true) {
    CB_ASSIGN_OR_RETURN(CasePage page, fetch(scanned, limits.page_size));
    for (size_t i = 0; i < page.cases.size(); ++i) {
      std::optional<v1::CaseReference> c = keep(std::move(page.cases[i]));
      if (!c.has_value()) continue;
      // One more than the page: more follow.
      if (static_cast<int>(out.cases.size()) == limits.page_size) {
        out.next_after = last;
        return out;
      }
      // Its bytes in the response, with the field's tag and length.
      const size_t size = c->ByteSizeLong() + 6;
      if (!out.cases.empty() && bytes + size > limits.max_bytes) {
        out.next_after = last;
        return out;
      }
      bytes += size;
      last = page.positions[i];
      out.cases.push_back(*std::move(c));
    }
    if (!page.has_more) return out;
    scanned = page.last_position();
    examined += static_cast<int64_t>(page.cases.size());
    if (examined >= limits.max_examined) {
      out.next_after = scanned;
      return out;
    }
  }
}

}  // namespace casebridge::server
