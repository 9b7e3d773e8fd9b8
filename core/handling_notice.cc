#include "core/handling_notice.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

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

namespace {

// What a handling asks, as the parts of an H3 restriction.
std::vector<std::string> Parts(v1::HandlingCode code,
                               absl::string_view restriction) {
  switch (code) {
    case v1::HANDLING_CODE_H1:
    case v1::HANDLING_CODE_H2:
      return {HandlingNotice(code, "")};
    case v1::HANDLING_CODE_H3:
      return absl::StrSplit(restriction, kAndAsSent);
    default:
      return {};
  }
}

bool AsksAll(const std::vector<std::string>& parts,
             const std::vector<std::string>& asked) {
  return std::all_of(asked.begin(), asked.end(), [&](const std::string& p) {
    return std::find(parts.begin(), parts.end(), p) != parts.end();
  });
}

}  // namespace

bool HoldToCaseHandling(v1::HandlingCode code, absl::string_view restriction,
                        v1::CaseMessage* message) {
  const std::vector<std::string> own =
      Parts(message->handling_code(), message->handling_restriction());
  std::vector<std::string> both = Parts(code, restriction);
  if (AsksAll(own, both)) return false;
  if (AsksAll(both, own)) {
    message->set_handling_code(code);
    message->set_handling_restriction(std::string(restriction));
    return true;
  }
  for (std::string& part :
       Parts(message->handling_code(), message->handling_restriction())) {
    if (std::find(both.begin(), both.end(), part) == both.end()) {
      both.push_back(std::move(part));
    }
  }
  message->set_handling_code(v1::HANDLING_CODE_H3);
  message->set_handling_restriction(absl::StrJoin(both, kAndAsSent));
  return true;
}

}  // namespace casebridge
