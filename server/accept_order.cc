#include "server/accept_order.h"

#include <algorithm>
#include <iterator>
#include <set>
#include <string>

namespace casebridge::server {

std::vector<Inbound::Checked> TakeAcceptBatch(
    std::vector<Inbound::Checked>& ready, size_t max) {
  std::vector<Inbound::Checked> batch;
  std::vector<Inbound::Checked> rest;
  std::set<std::string> behind;  // cases with an envelope left waiting
  for (Inbound::Checked& checked : ready) {
    const v1::CaseMessage& message = checked.envelope.message();
    if (batch.size() < max && message.priority() == v1::PRIORITY_URGENT &&
        !behind.contains(message.exchange_id())) {
      batch.push_back(std::move(checked));
    } else {
      behind.insert(message.exchange_id());
      rest.push_back(std::move(checked));
    }
  }
  if (batch.empty()) {  // nothing URGENT: the oldest, in order
    const auto n = static_cast<std::ptrdiff_t>(std::min(rest.size(), max));
    batch.assign(std::make_move_iterator(rest.begin()),
                 std::make_move_iterator(rest.begin() + n));
    rest.erase(rest.begin(), rest.begin() + n);
  }
  ready = std::move(rest);
  return batch;
}

}  // namespace casebridge::server
