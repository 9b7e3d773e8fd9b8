#ifndef CASEBRIDGE_CORE_UTF8_H_
#define CASEBRIDGE_CORE_UTF8_H_

#include <cstddef>
#include <optional>

#include "absl/strings/string_view.h"

namespace casebridge {

// Number of code points in `text` if it is well-formed UTF-8 (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), else nullopt.
std::optional<size_t> Utf8Length(absl::string_view text);

inline bool IsValidUtf8(absl::string_view text) {
  return Utf8Length(text).has_value();
}

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_UTF8_H_
