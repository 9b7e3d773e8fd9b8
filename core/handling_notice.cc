#include "core/handling_notice.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/utf8.h"

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

constexpr absl::string_view kCut = " [cut to fit the limit]";

// What a handling asks, as the parts of an H3 restriction, each once.
std::vector<std::string> Parts(v1::HandlingCode code,
                               absl::string_view restriction) {
  std::vector<std::string> parts;
  switch (code) {
    case v1::HANDLING_CODE_H1:
    case v1::HANDLING_CODE_H2:
      parts.push_back(HandlingNotice(code, ""));
      break;
    case v1::HANDLING_CODE_H3:
      for (absl::string_view part : absl::StrSplit(restriction, kAndAsSent)) {
        if (std::find(parts.begin(), parts.end(), part) == parts.end()) {
          parts.emplace_back(part);
        }
      }
      break;
    default:
      break;
  }
  return parts;
}

bool AsksAll(const std::vector<std::string>& parts,
             const std::vector<std::string>& asked) {
  return std::all_of(asked.begin(), asked.end(), [&](const std::string& p) {
    return std::find(parts.begin(), parts.end(), p) != parts.end();
  });
}

// The first `max` code points of well-formed UTF-8 `text`.
absl::string_view FirstCodePoints(absl::string_view text, size_t max) {
  size_t chars = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if ((byte & 0xC0) != 0x80 && chars++ == max) return text.substr(0, i);
  }
  return text;
}

}  // namespace

bool HoldToCaseHandling(v1::HandlingCode code, absl::string_view restriction,
                        v1::CaseMessage* message) {
  // The common cases, without building parts: every message on a case
  // whose copies agree, and every message on an H0 case.
  if ((message->handling_code() == code &&
       message->handling_restriction() == restriction) ||
      code == v1::HANDLING_CODE_H0 || code == v1::HANDLING_CODE_UNSPECIFIED) {
    return false;
  }
  const std::vector<std::string> own =
      Parts(message->handling_code(), message->handling_restriction());
  std::vector<std::string> both = Parts(code, restriction);
  if (AsksAll(own, both)) return false;
  if (AsksAll(both, own)) {
    message->set_handling_code(code);
    message->set_handling_restriction(std::string(restriction));
    return true;
  }
  for (const std::string& part : own) {
    if (std::find(both.begin(), both.end(), part) == both.end()) {
      both.push_back(part);
    }
  }
  message->set_handling_code(v1::HANDLING_CODE_H3);
  message->set_handling_restriction(absl::StrJoin(both, kAndAsSent));
  return true;
}

bool HoldToHeldCase(const v1::CaseReference& held, v1::CaseMessage* message) {
  if (message->kind() == v1::MESSAGE_KIND_CASE_SHARE) return false;
  return HoldToCaseHandling(held.handling_code(), held.handling_restriction(),
                            message);
}

bool HandlingAsksAll(v1::HandlingCode code, absl::string_view restriction,
                     v1::HandlingCode other,
                     absl::string_view other_restriction) {
  if (code < v1::HANDLING_CODE_H0 || code > v1::HANDLING_CODE_H3) return false;
  return AsksAll(Parts(code, restriction), Parts(other, other_restriction));
}

std::string FitRestriction(absl::string_view restriction, size_t max) {
  const std::optional<size_t> length = Utf8Length(restriction);
  if (!length.has_value() || *length <= max) return std::string(restriction);
  const size_t budget = max > kCut.size() ? max - kCut.size() : 0;
  std::string kept;
  size_t kept_length = 0;
  for (absl::string_view part : absl::StrSplit(restriction, kAndAsSent)) {
    const size_t part_length = *Utf8Length(part);
    if (kept.empty()) {
      kept = std::string(FirstCodePoints(part, budget));
      kept_length = std::min(part_length, budget);
      continue;
    }
    if (kept_length + kAndAsSent.size() + part_length <= budget) {
      absl::StrAppend(&kept, kAndAsSent, part);
      kept_length += kAndAsSent.size() + part_length;
    }
  }
  return absl::StrCat(kept, kCut);
}

}  // namespace casebridge
