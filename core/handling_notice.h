// What a handling code asks of the reader, as every reader (gateway answers,
// CLI output, evidence bundles) shows it.
#ifndef CASEBRIDGE_CORE_HANDLING_NOTICE_H_
#define CASEBRIDGE_CORE_HANDLING_NOTICE_H_

#include <string>

#include "absl/strings/string_view.h"
#include "casebridge/v1/common.pb.h"

namespace casebridge {

// The notice a reader is shown for a code, e.g. "H1: not for use as evidence
// in judicial proceedings without the originator's permission"; with H3 the
// restriction text follows. Empty for an unset code.
std::string HandlingNotice(v1::HandlingCode code,
                           absl::string_view restriction);

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_HANDLING_NOTICE_H_
