#include "server/handling.h"

#include "absl/strings/str_cat.h"
#include "core/handling_notice.h"
#include "core/status_macros.h"
#include "server/validation.h"

namespace casebridge::server {

std::string HandlingCodeName(v1::HandlingCode code) {
  switch (code) {
    case v1::HANDLING_CODE_H0:
      return "H0";
    case v1::HANDLING_CODE_H1:
      return "H1";
    case v1::HANDLING_CODE_H2:
      return "H2";
    case v1::HANDLING_CODE_H3:
      return "H3";
    default:
      return "unset";
  }
}

absl::Status ApplyCaseHandling(const v1::CaseReference& c,
                               v1::CaseMessage* message) {
  const v1::HandlingCode own = message->handling_code();
  const v1::HandlingCode inherited = c.handling_code();
  if (own != v1::HANDLING_CODE_UNSPECIFIED && own != inherited &&
      inherited != v1::HANDLING_CODE_H0) {
    const std::string name = HandlingCodeName(inherited);
    return absl::PermissionDeniedError(absl::StrCat(
        "handling code ", name, ": case ", c.exchange_id(), " is under ", name,
        " and message.handling_code ", HandlingCodeName(own),
        " would drop its restriction; a message keeps its case's code (only "
        "an H0 case's messages may set a stricter one)"));
  }
  const v1::HandlingCode code =
      own == v1::HANDLING_CODE_UNSPECIFIED ? inherited : own;
  std::string restriction = message->handling_restriction();
  if (code == v1::HANDLING_CODE_H3 && inherited == v1::HANDLING_CODE_H3) {
    if (!restriction.empty() && restriction != c.handling_restriction()) {
      return absl::InvalidArgumentError(
          absl::StrCat("message.handling_restriction: case ", c.exchange_id(),
                       " is under H3 and its restriction is carried; leave "
                       "this empty"));
    }
    restriction = c.handling_restriction();
  }
  message->set_handling_code(code);
  message->set_handling_restriction(std::move(restriction));
  if (!message->has_evaluation())
    *message->mutable_evaluation() = c.evaluation();
  return absl::OkStatus();
}

absl::Status CheckMessageHandling(const v1::CaseMessage& message,
                                  absl::string_view prefix) {
  const std::string p(prefix);
  const v1::HandlingCode code = message.handling_code();
  if (!v1::HandlingCode_IsValid(code) ||
      code == v1::HANDLING_CODE_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat(
        p,
        ".handling_code: is required on every message that crosses the "
        "border (H0, H1, H2 or H3)"));
  }
  if (!message.has_evaluation() ||
      message.evaluation().source_reliability() ==
          v1::SOURCE_RELIABILITY_UNSPECIFIED ||
      message.evaluation().information_accuracy() ==
          v1::INFORMATION_ACCURACY_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        absl::StrCat(p,
                     ".evaluation: is required on every message that crosses "
                     "the border (e.g. B2)"));
  }
  if ((code == v1::HANDLING_CODE_H3) ==
      message.handling_restriction().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, ".handling_restriction: ",
                     code == v1::HANDLING_CODE_H3
                         ? "is required with handling code H3"
                         : "is only allowed with handling code H3"));
  }
  return absl::OkStatus();
}

void MarkHandling(v1::CaseReference* c) {
  c->set_handling_notice(
      HandlingNotice(c->handling_code(), c->handling_restriction()));
}

void MarkHandling(v1::CaseMessage* message) {
  message->set_handling_notice(HandlingNotice(message->handling_code(),
                                              message->handling_restriction()));
  if (message->has_case_reference())
    MarkHandling(message->mutable_case_reference());
}

}  // namespace casebridge::server
