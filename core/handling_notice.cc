#include "core/handling_notice.h"

#include "absl/strings/str_cat.h"

namespace casebridge {

std::string HandlingNotice(v1::HandlingCode code,
                           absl::string_view restriction) {
  switch (code) {
    case v1::HANDLING_CODE_H0:
      return "H0: for law-enforcement purposes only";
    case v1::HANDLING_CODE_H1:
      return "H1: not for use as evidence in judicial proceedings without the "
             "originator's permission";
    case v1::HANDLING_CODE_H2:
      return "H2: no onward dissemination without the originator's "
             "permission";
    case v1::HANDLING_CODE_H3:
      return absl::StrCat("H3: restricted by the originator: ", restriction);
    default:
      return "";
  }
}

}  // namespace casebridge
