// Handling codes (H0-H3) as they apply to messages and to what readers are
// shown. The rules are listed in docs/api.md#handling-codes.
#ifndef CASEBRIDGE_SERVER_HANDLING_H_
#define CASEBRIDGE_SERVER_HANDLING_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "casebridge/v1/common.pb.h"
#include "casebridge/v1/exchange.pb.h"
#include "core/handling_notice.h"

namespace casebridge::server {

// "H2" for HANDLING_CODE_H2; "unset" for anything else.
std::string HandlingCodeName(v1::HandlingCode code);

// Gives `message` the handling of its case `c` before it goes abroad:
// an unset handling code or evaluation is the case's, and on a case under H3
// the case's restriction text is carried. A message may tighten an H0 case
// to H1, H2 or H3; on a case under H1, H2 or H3 it keeps that code, since a
// message has one code and any other would drop the case's restriction.
// Weakening is refused with PERMISSION_DENIED naming the case's code; a
// message's own restriction text on an H3 case that differs from the
// case's is INVALID_ARGUMENT. `message` is unchanged on error.
absl::Status ApplyCaseHandling(const v1::CaseReference& c,
                               v1::CaseMessage* message);

// What every message crossing the border must carry, checked by the sender
// before sealing and by the receiver before storing: a handling code, an
// evaluation, and restriction text exactly with H3. INVALID_ARGUMENT naming
// the field; paths start with `prefix` ("message").
absl::Status CheckMessageHandling(const v1::CaseMessage& message,
                                  absl::string_view prefix);

// Set the output-only `handling_notice` of what a reader is about to be
// sent, from its handling code (and, on a CASE_SHARE, of the case carried).
void MarkHandling(v1::CaseReference* c);
void MarkHandling(v1::CaseMessage* message);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_HANDLING_H_
