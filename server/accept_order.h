// The order in which a receiving gateway stores the envelopes it has
// checked: URGENT first, without changing any case's order.
#ifndef CASEBRIDGE_SERVER_ACCEPT_ORDER_H_
#define CASEBRIDGE_SERVER_ACCEPT_ORDER_H_

#include <cstddef>
#include <vector>

#include "server/inbound.h"

namespace casebridge::server {

// Takes the next batch to store out of `ready` (in the order checked): the
// URGENT envelopes waiting, if any, alone (a rescue request does not wait
// for ROUTINE ones checked before it), except one behind another envelope of
// its own case, which keeps its place; else the oldest waiting. At most
// `max` (> 0) envelopes, so one arriving meanwhile waits for a bounded
// batch. What is left stays in `ready`, in order.
std::vector<Inbound::Checked> TakeAcceptBatch(
    std::vector<Inbound::Checked>& ready, size_t max);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_ACCEPT_ORDER_H_
