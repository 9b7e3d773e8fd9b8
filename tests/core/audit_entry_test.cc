#include "core/audit_entry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/crypto.h"
#include "core/utf8.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::audit {
namespace {

using ::casebridge::testing::StatusIs;
using ::testing::HasSubstr;

Entry SampleEntry() {
  Entry e;
  e.index = 41;
  e.time = absl::FromUnixMicros(1795953600123456);  // 2026-11-29, with micros
  e.actor = "spiffe://pk.casebridge/office/fia-liaison-desk";
  e.action = "case.open";
  e.subjects = {"PK-2026-000001", "متاثرہ کی بازیابی", "受害者已获救"};
  e.payload_hash = crypto::Sha256("payload");
  e.status_code = 0;
  e.status_message = "";
  return e;
}

TEST(AuditEntryTest, RoundTripsUrduAndChineseSubjects) {
  const Entry entry = SampleEntry();
  ASSERT_OK_AND_ASSIGN(const Entry decoded, Decode(Encode(entry)));
  EXPECT_EQ(decoded, entry);
  EXPECT_EQ(decoded.subjects[1], "متاثرہ کی بازیابی");
  EXPECT_EQ(decoded.subjects[2], "受害者已获救");
}

TEST(AuditEntryTest, RoundTripsRefusalWithMessage) {
  Entry entry = SampleEntry();
  entry.status_code = 7;
  entry.status_message = "role read_only may not call OpenCase";
  entry.subjects.clear();
  ASSERT_OK_AND_ASSIGN(const Entry decoded, Decode(Encode(entry)));
  EXPECT_EQ(decoded, entry);
}

TEST(AuditEntryTest, RoundTripsEmptyEntry) {
  const Entry entry;
  ASSERT_OK_AND_ASSIGN(const Entry decoded, Decode(Encode(entry)));
  EXPECT_EQ(decoded, entry);
}

TEST(AuditEntryTest, KeepsMicrosecondTime) {
  Entry entry = SampleEntry();
  entry.time = absl::FromUnixMicros(1795953600000001);
  ASSERT_OK_AND_ASSIGN(const Entry decoded, Decode(Encode(entry)));
  EXPECT_EQ(absl::ToUnixMicros(decoded.time), 1795953600000001);
}

// The layout of core/audit_entry.h, written out by hand. If this test fails
// the format changed: every existing log would stop verifying.
TEST(AuditEntryTest, EncodesDocumentedLayoutExactly) {
  Entry entry;
  entry.index = 0x0102030405060708;
  entry.time = absl::FromUnixMicros(1000000);  // 0x0f4240
  entry.status_code = 7;                       // PERMISSION_DENIED
  entry.actor = "ab";
  entry.action = "op";
  entry.subjects = {"s", ""};
  entry.payload_hash = std::string(32, '\xaa');
  entry.status_message = "no";

  const std::string expected_hex = absl::StrCat(
      "01",                              // version
      "0102030405060708",                // index, u64 big-endian
      "00000000000f4240",                // time in microseconds, u64
      "00000007",                        // status code, u32
      "00000002", "6162",                // actor "ab"
      "00000002", "6f70",                // action "op"
      "00000002",                        // two subjects
      "00000001", "73",                  //   "s"
      "00000000",                        //   ""
      "00000020", std::string(64, 'a'),  // payload hash, 32 bytes 0xaa
      "00000002", "6e6f");               // status message "no"
  EXPECT_EQ(crypto::HexEncode(Encode(entry)), expected_hex);
  ASSERT_OK_AND_ASSIGN(const Entry decoded,
                       Decode(absl::HexStringToBytes(expected_hex)));
  EXPECT_EQ(decoded, entry);
}

TEST(AuditEntryTest, EncodesNegativeStatusAndTimeAsTwosComplement) {
  Entry entry;
  entry.time = absl::FromUnixMicros(-1);
  entry.status_code = -1;
  const std::string bytes = Encode(entry);
  EXPECT_EQ(crypto::HexEncode(bytes.substr(9, 12)), "ffffffffffffffffffffffff");
  ASSERT_OK_AND_ASSIGN(const Entry decoded, Decode(bytes));
  EXPECT_EQ(decoded, entry);
}

TEST(AuditEntryTest, DecodeRejectsEmptyInput) {
  EXPECT_THAT(Decode(""), StatusIs(absl::StatusCode::kDataLoss,
                                   HasSubstr("no version byte")));
}

TEST(AuditEntryTest, DecodeRejectsUnknownVersion) {
  for (const char version : {'\x00', '\x02', '\xff'}) {
    std::string bytes = Encode(SampleEntry());
    bytes[0] = version;
    EXPECT_THAT(Decode(bytes), StatusIs(absl::StatusCode::kDataLoss,
                                        HasSubstr("unknown version")));
  }
}

TEST(AuditEntryTest, DecodeRejectsEveryTruncation) {
  const std::string bytes = Encode(SampleEntry());
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THAT(Decode(absl::string_view(bytes).substr(0, n)),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("malformed")))
        << "prefix of " << n << " of " << bytes.size() << " bytes";
  }
}

TEST(AuditEntryTest, DecodeRejectsTrailingByte) {
  EXPECT_THAT(Decode(Encode(SampleEntry()) + '\0'),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("trailing")));
}

TEST(AuditEntryTest, DecodeRejectsOversizedStringLength) {
  std::string bytes = Encode(SampleEntry());
  // The actor's length prefix follows version (1), index (8), time (8) and
  // status (4).
  constexpr size_t kActorLength = 21;
  const uint32_t too_long = kMaxStringBytes + 1;
  for (int i = 0; i < 4; ++i) {
    bytes[kActorLength + i] = static_cast<char>(too_long >> (24 - 8 * i));
  }
  EXPECT_THAT(Decode(bytes),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr(absl::StrCat("string of ", too_long))));
}

TEST(AuditEntryTest, DecodeRejectsHugeStringLengthWithoutReading) {
  std::string bytes = Encode(SampleEntry());
  constexpr size_t kActorLength = 21;
  for (int i = 0; i < 4; ++i) bytes[kActorLength + i] = '\xff';
  EXPECT_THAT(Decode(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("offset 21")));
}

TEST(AuditEntryTest, DecodeRejectsTooManySubjects) {
  Entry entry;
  const std::string bytes = Encode(entry);
  // Empty actor and action: the subject count sits at 21 + 4 + 4.
  std::string edited = bytes;
  edited[29 + 3] = static_cast<char>(kMaxSubjects + 1);
  EXPECT_THAT(Decode(edited),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("65 subjects")));
}

TEST(AuditEntryTest, EncodeTruncatesLongStringsAndKeepsAtMostMaxSubjects) {
  Entry entry = SampleEntry();
  entry.status_message = std::string(kMaxStringBytes + 10, 'x');
  entry.subjects.assign(kMaxSubjects + 3, "PK-2026-000001");
  ASSERT_OK_AND_ASSIGN(const Entry decoded, Decode(Encode(entry)));
  EXPECT_EQ(decoded.status_message, std::string(kMaxStringBytes, 'x'));
  EXPECT_EQ(decoded.subjects.size(), kMaxSubjects);
}

TEST(AuditEntryTest, TruncationNeverSplitsAUtf8Character) {
  Entry entry;
  std::string chinese;
  for (int i = 0; i < 6000; ++i) chinese += "字";  // 18,000 bytes
  entry.status_message = chinese;
  ASSERT_OK_AND_ASSIGN(Entry decoded, Decode(Encode(entry)));
  EXPECT_LE(decoded.status_message.size(), kMaxStringBytes);
  EXPECT_EQ(decoded.status_message.size() % 3, 0u);
  EXPECT_TRUE(casebridge::IsValidUtf8(decoded.status_message));
  EXPECT_EQ(decoded.status_message,
            chinese.substr(0, decoded.status_message.size()));
}

TEST(AuditEntryTest, LogNamesAreLowerCaseCountryDomains) {
  EXPECT_EQ(LogOrigin("PK"), "pk.casebridge/audit");
  EXPECT_EQ(WitnessName("CN"), "cn.casebridge/witness");
}

TEST(AuditEntryTest, PayloadHashIsSha256OfSaltThenPayload) {
  const std::string salt = "0123456789abcdef";
  const std::string payload = "受害者已获救";
  EXPECT_EQ(PayloadHash(salt, payload), crypto::Sha256(salt + payload));
  EXPECT_NE(PayloadHash("fedcba9876543210", payload),
            PayloadHash(salt, payload));
  EXPECT_NE(PayloadHash(salt, "other"), PayloadHash(salt, payload));
}

}  // namespace
}  // namespace casebridge::audit
