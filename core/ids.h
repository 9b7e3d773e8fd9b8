// Ids minted by a gateway for messages and envelopes:
//   <PK|CN>-<M|E>-<26 characters of Crockford base32>
// e.g. "PK-M-01JDX3Q4W5ZC8N6T2V9B7K1HRA": 48 bits of milliseconds since the
// Unix epoch (so ids sort by creation time) followed by 80 random bits (so
// they never collide across restarts or gateways).
#ifndef CASEBRIDGE_CORE_IDS_H_
#define CASEBRIDGE_CORE_IDS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "casebridge/v1/common.pb.h"

namespace casebridge {

enum class IdKind : char { kMessage = 'M', kEnvelope = 'E' };

std::string MintId(v1::Country country, IdKind kind, absl::Time now);

// Whether `id` has the shape MintId gives, for `country` and `kind`.
bool IsValidId(absl::string_view id, v1::Country country, IdKind kind);

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_IDS_H_
