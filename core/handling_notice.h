// What a handling code asks of the reader, as every reader (gateway answers,
// CLI output, evidence bundles) shows it.
#ifndef CASEBRIDGE_CORE_HANDLING_NOTICE_H_
#define CASEBRIDGE_CORE_HANDLING_NOTICE_H_

#include <string>

#include "absl/strings/string_view.h"
#include "casebridge/v1/common.pb.h"
#include "casebridge/v1/exchange.pb.h"

namespace casebridge {

// The notice a reader is shown for a code, e.g. "H1: not for use as evidence
// in judicial proceedings without the originator's permission"; with H3 the
// restriction text follows. Empty for an unset code.
std::string HandlingNotice(v1::HandlingCode code,
                           absl::string_view restriction);

// Where an H3 restriction stating two handlings joins them ("<the case's>;
// and as sent: <the message's>").
inline constexpr absl::string_view kAndAsSent = "; and as sent: ";

// Holds `message` to the handling (`code`, `restriction`) of its case as
// well as to its own, and returns whether that changed it. A handling asks
// nothing more under H0; H1 and H2 ask their notice's words; H3 asks each
// part of its text (parts joined by kAndAsSent). The codes are not a ladder
// (H1 and H2 restrict different things, H3 states its own), so:
//   - a message whose own handling asks every part the case's asks (the
//     same code and text, or any code on an H0 case) is left unchanged;
//   - one asking no part the case's does not (an H0 message) takes the
//     case's code and restriction;
//   - any other becomes H3 stating both, the case's parts first, each part
//     once. Its text may then be longer than one restriction may be.
bool HoldToCaseHandling(v1::HandlingCode code, absl::string_view restriction,
                        v1::CaseMessage* message);

// The handling a message from the peer is stored and delivered under, on a
// case this gateway holds (`held`, as last stored here). The peer gives each
// message its own copy of the case's code, which may be older than ours (our
// case changed by UpdateCase and not shared again) or newer (its case
// changed and not shared again), so a code that differs is no proof of a
// peer weakening anything, and refusing it would lose the message for good.
// The message is kept, held to both (HoldToCaseHandling): unchanged when
// its handling asks all the case's does, the case's for an H0 message, and
// otherwise H3 stating both, e.g. "no press; and as sent: H2: no onward
// dissemination without the originator's permission". A CASE_SHARE carries
// the case itself and is left as sent. Returns whether the message was
// changed; the envelope keeps what the peer signed.
bool HoldToHeldCase(const v1::CaseReference& held, v1::CaseMessage* message);

// Whether handling (`code`, `restriction`) asks every part (`other`,
// `other_restriction`) asks, as HoldToCaseHandling counts parts. False for a
// `code` that is not one of H0-H3.
bool HandlingAsksAll(v1::HandlingCode code, absl::string_view restriction,
                     v1::HandlingCode other,
                     absl::string_view other_restriction);

// `restriction` (well-formed UTF-8) made to fit in `max` code points: parts
// joined by kAndAsSent are kept whole from the first on, a part that does
// not fit is left out (the first is cut if it alone does not fit), and
// " [cut to fit the limit]" ends a text that lost anything. Unchanged if it
// fits or is not well-formed.
std::string FitRestriction(absl::string_view restriction, size_t max);

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_HANDLING_NOTICE_H_
