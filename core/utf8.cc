#include "core/utf8.h"

#include <cstdint>

namespace casebridge {

std::optional<size_t> Utf8Length(absl::string_view text) {
  size_t count = 0;
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const auto b0 = static_cast<uint8_t>(text[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (b0 < 0x80) {
      len = 1;
      cp = b0;
    } else if ((b0 & 0xE0) == 0xC0) {
      len = 2;
      cp = b0 & 0x1F;
    } else if ((b0 & 0xF0) == 0xE0) {
      len = 3;
      cp = b0 & 0x0F;
    } else if ((b0 & 0xF8) == 0xF0) {
      len = 4;
      cp = b0 & 0x07;
    } else {
      return std::nullopt;  // continuation byte or 0xF8..0xFF as a lead
    }
    if (n - i < len) return std::nullopt;
    for (size_t k = 1; k < len; ++k) {
      const auto b = static_cast<uint8_t>(text[i + k]);
      if ((b & 0xC0) != 0x80) return std::nullopt;
      cp = (cp << 6) | (b & 0x3F);
    }
    static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len]) return std::nullopt;  // overlong
    if (cp > 0x10FFFF) return std::nullopt;
    if (cp >= 0xD800 && cp <= 0xDFFF) return std::nullopt;  // surrogate
    i += len;
    ++count;
  }
  return count;
}

size_t ControlCharacterAt(absl::string_view text, size_t i,
                          bool count_tab_and_newline) {
  const auto b = static_cast<uint8_t>(text[i]);
  if (b == '\t' || b == '\n') return count_tab_and_newline ? 1 : 0;
  if (b < 0x20 || b == 0x7F) return 1;
  if (b == 0xC2 && i + 1 < text.size()) {
    const auto next = static_cast<uint8_t>(text[i + 1]);
    if (next >= 0x80 && next <= 0x9F) return 2;
  }
  return 0;
}

}  // namespace casebridge
