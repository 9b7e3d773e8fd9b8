// What the gateway checks in text it is sent (core/utf8.h, core/identity.h,
// core/ids.h, core/handling_notice.h), on any bytes:
// - UTF-8 validity agrees with protobuf's, which refuses to serialize a
//   string field that is not UTF-8 (so text accepted can always be stored
//   and sent on), and the length counts code points;
// - a certificate's URI SAN parses only as one of the three identity forms
//   of the two trust domains;
// - an id accepted has the minted shape;
// - a handling restriction made to fit a limit is well-formed and fits.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "core/handling_notice.h"
#include "core/identity.h"
#include "core/ids.h"
#include "core/utf8.h"
#include "google/protobuf/stubs/common.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using casebridge::IdKind;
using casebridge::v1::Country;

size_t StartBytes(absl::string_view text) {
  size_t n = 0;
  for (const char c : text) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

void CheckId(absl::string_view text, Country country, IdKind kind) {
  if (!casebridge::IsValidId(text, country, kind)) return;
  FUZZ_CHECK(text.size() == 31);
  FUZZ_CHECK(
      absl::StartsWith(text, std::string(casebridge::CountryCode(country)) +
                                 "-" + static_cast<char>(kind) + "-"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  casebridge::fuzz::Input in(data, size);
  // " [cut to fit the limit]" itself must fit.
  const size_t max = 23 + size_t{in.U8()};
  const absl::string_view text = in.rest();

  const std::optional<size_t> length = casebridge::Utf8Length(text);
  FUZZ_CHECK(length.has_value() ==
             google::protobuf::internal::IsStructurallyValidUTF8(
                 text.data(), static_cast<int>(text.size())));
  if (length.has_value()) FUZZ_CHECK(*length == StartBytes(text));

  const std::string fitted = casebridge::FitRestriction(text, max);
  if (length.has_value()) {
    const std::optional<size_t> fitted_length = casebridge::Utf8Length(fitted);
    FUZZ_CHECK(fitted_length.has_value());
    FUZZ_CHECK(*fitted_length <= std::max(max, *length) &&
               (*length <= max ? fitted == text : *fitted_length <= max));
  } else {
    FUZZ_CHECK(fitted == text);
  }

  const absl::StatusOr<casebridge::SpiffeId> id =
      casebridge::ParseSpiffeId(text);
  if (id.ok()) {
    FUZZ_CHECK(id->uri == text);
    FUZZ_CHECK(id->country == casebridge::v1::COUNTRY_PK ||
               id->country == casebridge::v1::COUNTRY_CN);
    const std::string domain =
        std::string("spiffe://") +
        (id->country == casebridge::v1::COUNTRY_PK ? "pk" : "cn") +
        ".casebridge/";
    FUZZ_CHECK(absl::StartsWith(text, domain));
    if (id->kind == casebridge::PrincipalKind::kGateway) {
      FUZZ_CHECK(text == domain + "gateway");
    } else {
      const char* kind = id->kind == casebridge::PrincipalKind::kOffice
                             ? "office/"
                             : "auditor/";
      FUZZ_CHECK(text == domain + kind + id->name);
      FUZZ_CHECK(!id->name.empty() && id->name.size() <= 64);
      for (const char c : id->name) {
        FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-');
      }
    }
  } else {
    FUZZ_CHECK(id.status().code() == absl::StatusCode::kInvalidArgument);
  }

  for (const Country country :
       {casebridge::v1::COUNTRY_PK, casebridge::v1::COUNTRY_CN}) {
    CheckId(text, country, IdKind::kMessage);
    CheckId(text, country, IdKind::kEnvelope);
  }
  return 0;
}
