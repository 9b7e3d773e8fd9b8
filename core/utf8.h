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

// The byte length of the control character that starts at `text[i]`, 0 if
// none does: C0 (U+0000..U+001F; tab and line feed only with
// `count_tab_and_newline`), DEL (U+007F) and C1 (U+0080..U+009F, two bytes
// in UTF-8), which some terminals obey like escape sequences.
size_t ControlCharacterAt(absl::string_view text, size_t i,
                          bool count_tab_and_newline = false);

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_UTF8_H_
