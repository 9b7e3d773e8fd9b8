// Validation of office requests. Every error is INVALID_ARGUMENT (or
// FAILED_PRECONDITION for a disallowed status transition) and names the
// field path, e.g. "case_reference.victims[2].pseudonym: ...". Rules are
// listed in docs/api.md.
#ifndef CASEBRIDGE_SERVER_VALIDATION_H_
#define CASEBRIDGE_SERVER_VALIDATION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "casebridge/v1/common.pb.h"
#include "casebridge/v1/exchange.pb.h"
#include "casebridge/v1/office.pb.h"
#include "google/protobuf/message.h"

namespace casebridge::server {

inline constexpr size_t kMaxLocalReferenceChars = 64;
inline constexpr size_t kMaxSummaryChars = 4000;
inline constexpr size_t kMaxVictims = 50;
inline constexpr size_t kMaxPseudonymChars = 64;
inline constexpr size_t kMaxRemarksChars = 1000;
inline constexpr size_t kMaxLocations = 50;
inline constexpr size_t kMaxLocationChars = 500;
inline constexpr size_t kMaxRestrictionChars = 1000;
inline constexpr size_t kMaxSearchTextChars = 200;
inline constexpr size_t kMaxCancelReasonChars = 200;
inline constexpr int kDefaultPageSize = 50;
inline constexpr int kMaxPageSize = 500;

// Largest encoded size of a string or bytes field of an office request,
// checked before any other field rule (docs/api.md#field-sizes): four bytes
// per character of a text field's character limit, and this for every field
// without a rule of its own (ids, tokens, cursors, identities).
inline constexpr size_t kDefaultMaxFieldBytes = 256;

// The byte limit of the field with this full name, e.g.
// "casebridge.v1.CaseMessage.body".
size_t MaxFieldBytes(absl::string_view full_name);

// INVALID_ARGUMENT for the first field of an office's `request`, at any
// depth, that is over its byte limit ("<path>: is longer than N bytes") or
// that this gateway does not know ("<path>: carries field number N, which
// this gateway does not know ..."): an unknown field would otherwise be
// kept in stored cases and sent abroad unchecked.
absl::Status CheckRequestFields(const google::protobuf::Message& request);

// Caller-supplied text for an error message: at most 64 bytes of valid
// UTF-8 cut on a character boundary, control characters shown as '?',
// in double quotes; "(not UTF-8)" for invalid input.
std::string Quote(absl::string_view text);

// UTF-8 text of `min`..`max` code points with no control characters other
// than tab and newline.
absl::Status CheckText(absl::string_view field, absl::string_view value,
                       size_t min, size_t max);

// "PK-2026-000123".
absl::Status CheckExchangeId(absl::string_view field, absl::string_view value);

// Optional idempotency key: empty, or 1-64 of [A-Za-z0-9._-].
absl::Status CheckRequestId(absl::string_view field, absl::string_view value);

absl::Status ValidateOpenCase(const v1::OpenCaseRequest& request);
absl::Status ValidateUpdateCase(const v1::UpdateCaseRequest& request);

// The content of a case as the peer shares it (CASE_SHARE): every text
// field under the same rules and limits as an office's OpenCase (no control
// characters, well-formed UTF-8, lengths; victims and locations may be
// empty, as after the peer's retention purge), the category, the handling
// code and evaluation if set, and their consistency. What the receiver
// stores is then as well-formed as what its own offices write, and shown
// to its officers as such. Field paths start with `prefix`.
absl::Status ValidateSharedCase(const v1::CaseReference& c,
                                absl::string_view prefix);
absl::Status ValidateListCases(const v1::ListCasesRequest& request);

// A google.protobuf.Timestamp in its defined range (years 1-9999, nanos
// 0-999,999,999): INVALID_ARGUMENT "<field>: is not a valid timestamp".
// Outside it, converting the time overflows.
absl::Status CheckTimestamp(absl::string_view field,
                            const google::protobuf::Timestamp& t);

// The fields of a case the peer's gateway fills in (output only for
// offices): its times valid if set, `owner_office` an office of the peer's
// country, `updated_by` empty or one. Our officers read them as the peer's
// record of the case, so they are held to what the peer's gateway writes.
absl::Status ValidatePeerRecordFields(const v1::CaseReference& c,
                                      v1::Country peer_country,
                                      absl::string_view prefix);

inline constexpr size_t kMaxMessageBodyChars = 16000;
inline constexpr size_t kMaxGrantOffices = 50;

// The content of a rescue-coordination message, as sent by an office or
// received from the peer: kind and priority required; rescue_stage exactly
// with RESCUE_UPDATE; body 1-16,000 characters (may be empty on CASE_SHARE,
// which needs case_reference instead); in_reply_to required on
// INFORMATION_RESPONSE and ACKNOWLEDGEMENT; dissemination_grant exactly with
// DISSEMINATION_GRANT (offices or any_office); handling code and evaluation
// valid if set, handling_restriction at most 1,000 characters and only with
// H3 (or no code yet). Whether a message crossing the border carries its
// handling code is checked by CheckMessageHandling (server/handling.h). Field
// paths start with `prefix` ("message").
absl::Status ValidateMessageContent(const v1::CaseMessage& message,
                                    absl::string_view prefix);

// The complete case after a change: fields that depend on each other
// (handling code and restriction).
absl::Status ValidateCaseConsistency(const v1::CaseReference& c,
                                     absl::string_view prefix);

// OK if a case may go from `from` to `to` (docs/api.md#status-transitions);
// FAILED_PRECONDITION otherwise. Staying in the same status is allowed.
absl::Status CheckTransition(v1::CaseStatus from, v1::CaseStatus to);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_VALIDATION_H_
