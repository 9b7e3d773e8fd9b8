#include "core/utf8.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace casebridge {
namespace {

TEST(Utf8Test, EmptyTextHasLengthZero) {
  EXPECT_EQ(Utf8Length(""), std::optional<size_t>(0));
}

TEST(Utf8Test, CountsAsciiBytesAsCodePoints) {
  EXPECT_EQ(Utf8Length("FIR-12/2026 Lahore"), std::optional<size_t>(18));
}

TEST(Utf8Test, AcceptsEmbeddedNulAsOneCodePoint) {
  EXPECT_EQ(Utf8Length(absl::string_view("a\0b", 3)), std::optional<size_t>(3));
}

TEST(Utf8Test, CountsUrduInCodePointsNotBytes) {
  const std::string urdu = "متاثرہ کی بازیابی";
  ASSERT_EQ(urdu.size(), 32u);
  EXPECT_EQ(Utf8Length(urdu), std::optional<size_t>(17));
}

TEST(Utf8Test, CountsChineseInCodePointsNotBytes) {
  const std::string chinese = "受害者已获救";
  ASSERT_EQ(chinese.size(), 18u);
  EXPECT_EQ(Utf8Length(chinese), std::optional<size_t>(6));
}

TEST(Utf8Test, CountsFourByteEmojiAsOneCodePoint) {
  EXPECT_EQ(Utf8Length("\xF0\x9F\x98\x80"), std::optional<size_t>(1));
  EXPECT_EQ(Utf8Length("ok \xF0\x9F\x98\x80!"), std::optional<size_t>(5));
}

TEST(Utf8Test, CountsMixedScripts) {
  EXPECT_EQ(Utf8Length("V1 受害者 متاثرہ"), std::optional<size_t>(13));
}

TEST(Utf8Test, AcceptsBoundaryCodePoints) {
  EXPECT_EQ(Utf8Length("\x7F"), std::optional<size_t>(1));          // U+007F
  EXPECT_EQ(Utf8Length("\xC2\x80"), std::optional<size_t>(1));      // U+0080
  EXPECT_EQ(Utf8Length("\xDF\xBF"), std::optional<size_t>(1));      // U+07FF
  EXPECT_EQ(Utf8Length("\xE0\xA0\x80"), std::optional<size_t>(1));  // U+0800
  EXPECT_EQ(Utf8Length("\xED\x9F\xBF"), std::optional<size_t>(1));  // U+D7FF
  EXPECT_EQ(Utf8Length("\xEE\x80\x80"), std::optional<size_t>(1));  // U+E000
  EXPECT_EQ(Utf8Length("\xEF\xBF\xBF"), std::optional<size_t>(1));  // U+FFFF
  EXPECT_EQ(Utf8Length("\xF0\x90\x80\x80"),
            std::optional<size_t>(1));  // U+10000
  EXPECT_EQ(Utf8Length("\xF4\x8F\xBF\xBF"),
            std::optional<size_t>(1));  // U+10FFFF
}

TEST(Utf8Test, RejectsLoneContinuationByte) {
  EXPECT_FALSE(IsValidUtf8("\x80"));
  EXPECT_FALSE(IsValidUtf8("abc\xBF"));
  EXPECT_EQ(Utf8Length("a\x80z"), std::nullopt);
}

TEST(Utf8Test, RejectsOverlongForms) {
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // '/' in two bytes
  EXPECT_FALSE(IsValidUtf8("\xC1\xBF"));          // U+007F in two bytes
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // '/' in three bytes
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // U+07FF in three
  EXPECT_FALSE(IsValidUtf8("\xF0\x80\x80\xAF"));  // '/' in four bytes
  EXPECT_FALSE(IsValidUtf8("\xF0\x8F\xBF\xBF"));  // U+FFFF in four
  EXPECT_FALSE(IsValidUtf8(absl::string_view("\xC0\x80", 2)));  // NUL
}

TEST(Utf8Test, RejectsSurrogates) {
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));  // U+D800
  EXPECT_FALSE(IsValidUtf8("\xED\xBF\xBF"));  // U+DFFF
  // A CESU-8 style surrogate pair for U+1F600.
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\xBD\xED\xB8\x80"));
}

TEST(Utf8Test, RejectsCodePointsAboveU10FFFF) {
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(IsValidUtf8("\xF7\xBF\xBF\xBF"));  // U+1FFFFF
}

TEST(Utf8Test, RejectsBytesThatCanNeverStartASequence) {
  EXPECT_FALSE(IsValidUtf8("\xF8\x88\x80\x80\x80"));      // old 5-byte form
  EXPECT_FALSE(IsValidUtf8("\xFC\x84\x80\x80\x80\x80"));  // old 6-byte form
  EXPECT_FALSE(IsValidUtf8("\xFE"));
  EXPECT_FALSE(IsValidUtf8("\xFF"));
}

TEST(Utf8Test, RejectsTruncatedSequencesAtEnd) {
  EXPECT_FALSE(IsValidUtf8("\xC3"));
  EXPECT_FALSE(IsValidUtf8("\xE6\x9C"));
  EXPECT_FALSE(IsValidUtf8("\xF0\x9F\x98"));
  EXPECT_FALSE(IsValidUtf8("受害\xE8\x80"));  // third character cut short
}

TEST(Utf8Test, RejectsTruncatedSequencesFollowedByOtherText) {
  EXPECT_FALSE(IsValidUtf8("\xC3("));
  EXPECT_FALSE(
      IsValidUtf8("\xE6\x9C"
                  "a"));
  EXPECT_FALSE(IsValidUtf8("\xF0\x9F\x98 "));
  EXPECT_FALSE(IsValidUtf8("\xE6\xF0\x9F\x98\x80"));
}

TEST(Utf8Test, RejectsEveryStrictPrefixOfAMultiByteCharacter) {
  const std::string emoji = "\xF0\x9F\x98\x80";
  for (size_t n = 1; n < emoji.size(); ++n) {
    EXPECT_FALSE(IsValidUtf8(absl::string_view(emoji).substr(0, n)))
        << "prefix of " << n << " bytes";
  }
}

}  // namespace
}  // namespace casebridge
