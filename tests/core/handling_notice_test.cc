#include "core/handling_notice.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "core/utf8.h"

namespace casebridge {
namespace {

constexpr char kH2[] =
    "H2: no onward dissemination without the originator's permission";

TEST(HandlingNoticeTest, AsksAllCountsPartsAndH0AsNothing) {
  EXPECT_TRUE(
      HandlingAsksAll(v1::HANDLING_CODE_H2, "", v1::HANDLING_CODE_H2, ""));
  EXPECT_TRUE(
      HandlingAsksAll(v1::HANDLING_CODE_H1, "", v1::HANDLING_CODE_H0, ""));
  EXPECT_FALSE(
      HandlingAsksAll(v1::HANDLING_CODE_H0, "", v1::HANDLING_CODE_H1, ""));
  // Not a ladder.
  EXPECT_FALSE(
      HandlingAsksAll(v1::HANDLING_CODE_H2, "", v1::HANDLING_CODE_H1, ""));
  // A text stating both asks each.
  const std::string both = absl::StrCat("no press", kAndAsSent, kH2);
  EXPECT_TRUE(
      HandlingAsksAll(v1::HANDLING_CODE_H3, both, v1::HANDLING_CODE_H2, ""));
  EXPECT_TRUE(HandlingAsksAll(v1::HANDLING_CODE_H3, both, v1::HANDLING_CODE_H3,
                              "no press"));
  EXPECT_FALSE(HandlingAsksAll(v1::HANDLING_CODE_H3, "no press",
                               v1::HANDLING_CODE_H3, both));
  // No code at all asks nothing, and a number that is no code is refused.
  EXPECT_FALSE(HandlingAsksAll(static_cast<v1::HandlingCode>(9), "",
                               v1::HANDLING_CODE_H0, ""));
}

TEST(HandlingNoticeTest, HoldingTakesAPartTheCaseAlreadyStatesAsTheCase) {
  // An H2 message on an H3 case whose text already states H2's words: the
  // case's handling asks all the message's.
  const std::string both = absl::StrCat("no press", kAndAsSent, kH2);
  v1::CaseMessage m;
  m.set_handling_code(v1::HANDLING_CODE_H2);
  EXPECT_TRUE(HoldToCaseHandling(v1::HANDLING_CODE_H3, both, &m));
  EXPECT_EQ(m.handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(m.handling_restriction(), both);
  // A case text repeating a part states it once when joined with another.
  m.set_handling_code(v1::HANDLING_CODE_H1);
  m.clear_handling_restriction();
  EXPECT_TRUE(
      HoldToCaseHandling(v1::HANDLING_CODE_H3,
                         absl::StrCat("no press", kAndAsSent, "no press"), &m));
  EXPECT_EQ(m.handling_restriction(),
            absl::StrCat("no press", kAndAsSent,
                         HandlingNotice(v1::HANDLING_CODE_H1, "")));
}

TEST(HandlingNoticeTest, FitRestrictionKeepsWholePartsFromTheFirst) {
  EXPECT_EQ(FitRestriction("no press", 1000), "no press");
  const std::string first(600, 'a');
  const std::string second(300, 'b');
  const std::string third(600, 'c');
  // The third does not fit: left out, the second kept.
  EXPECT_EQ(
      FitRestriction(absl::StrCat(first, kAndAsSent, third, kAndAsSent, second),
                     1000),
      absl::StrCat(first, kAndAsSent, second, " [cut to fit the limit]"));
}

TEST(HandlingNoticeTest, FitRestrictionCutsAFirstPartByCodePoints) {
  // 1,000 Chinese characters (3 bytes each) and a second part: the first is
  // cut to leave room for the note, never inside a character.
  std::string chinese;
  for (int i = 0; i < 1000; ++i) chinese += "禁";
  const std::string fitted =
      FitRestriction(absl::StrCat(chinese, kAndAsSent, "no press"), 1000);
  ASSERT_TRUE(Utf8Length(fitted).has_value());
  EXPECT_EQ(*Utf8Length(fitted), 1000u);
  EXPECT_THAT(fitted, ::testing::EndsWith("禁 [cut to fit the limit]"));
  // Not well-formed: left as it is, for validation to refuse.
  const std::string broken = std::string(1200, 'a') + "\xff";
  EXPECT_EQ(FitRestriction(broken, 1000), broken);
}

}  // namespace
}  // namespace casebridge
