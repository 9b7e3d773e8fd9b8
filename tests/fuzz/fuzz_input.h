// Reads a fuzz input as a sequence of values: integers, then bytes. Reads
// past the end give zeros and empty strings, so every input is usable.
#ifndef CASEBRIDGE_TESTS_FUZZ_FUZZ_INPUT_H_
#define CASEBRIDGE_TESTS_FUZZ_FUZZ_INPUT_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace casebridge::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size)
      : rest_(reinterpret_cast<const char*>(data), size) {}

  // The next 1, 2 or 8 bytes, big-endian (fewer at the end).
  uint8_t U8() { return static_cast<uint8_t>(Unsigned(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Unsigned(2)); }
  uint64_t U64() { return Unsigned(8); }
  // The next `n` bytes (fewer at the end).
  std::string Bytes(size_t n) {
    const absl::string_view taken = rest_.substr(0, std::min(n, rest_.size()));
    rest_.remove_prefix(taken.size());
    return std::string(taken);
  }
  absl::string_view rest() const { return rest_; }
  bool empty() const { return rest_.empty(); }

 private:
  uint64_t Unsigned(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes && !rest_.empty(); ++i) {
      v = (v << 8) | static_cast<uint8_t>(rest_.front());
      rest_.remove_prefix(1);
    }
    return v;
  }

  absl::string_view rest_;
};

}  // namespace casebridge::fuzz

#endif  // CASEBRIDGE_TESTS_FUZZ_FUZZ_INPUT_H_
