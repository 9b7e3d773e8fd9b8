#include "core/ids.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "core/crypto.h"
#include "core/identity.h"

namespace casebridge {
namespace {

constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr size_t kBodyLength = 26;

}  // namespace

std::string MintId(v1::Country country, IdKind kind, absl::Time now) {
  // 128 bits: 48 of time, 80 of randomness, written as 26 base32 digits
  // (130 bits, the top two always zero).
  const auto millis = static_cast<uint64_t>(absl::ToUnixMillis(now)) &
                      ((uint64_t{1} << 48) - 1);
  const std::string random = crypto::RandomBytes(10);
  uint64_t high = millis << 16;  // bits 127..64
  uint64_t low = 0;              // bits 63..0
  high |= static_cast<uint64_t>(static_cast<unsigned char>(random[0])) << 8 |
          static_cast<unsigned char>(random[1]);
  for (int i = 2; i < 10; ++i) {
    low = (low << 8) | static_cast<unsigned char>(random[i]);
  }
  std::string body(kBodyLength, '0');
  for (size_t i = 0; i < kBodyLength; ++i) {
    body[kBodyLength - 1 - i] = kAlphabet[low & 0x1F];
    low = (low >> 5) | ((high & 0x1F) << 59);
    high >>= 5;
  }
  return absl::StrCat(CountryCode(country), "-",
                      std::string(1, static_cast<char>(kind)), "-", body);
}

bool IsValidId(absl::string_view id, v1::Country country, IdKind kind) {
  const std::string prefix = absl::StrCat(
      CountryCode(country), "-", std::string(1, static_cast<char>(kind)), "-");
  if (id.size() != prefix.size() + kBodyLength ||
      id.substr(0, prefix.size()) != prefix) {
    return false;
  }
  for (const char c : id.substr(prefix.size())) {
    bool found = false;
    for (const char a : absl::string_view(kAlphabet)) found |= (a == c);
    if (!found) return false;
  }
  // The top two bits of 130 are zero: the first digit is 0-7.
  return id[prefix.size()] <= '7';
}

}  // namespace casebridge
