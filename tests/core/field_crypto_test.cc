#include "core/field_crypto.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "core/crypto.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::crypto {
namespace {

using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::casebridge::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr absl::string_view kRemark = "age 18-25, speaks Punjabi; 河北省邯郸市";
constexpr absl::string_view kAad = "casebridge/field/v1\ncase/PK-2026-000001";

TEST(FieldKeyTest, RoundTripsAndAddsOnlyTheOverhead) {
  const FieldKey key = FieldKey::Generate();
  ASSERT_OK_AND_ASSIGN(const std::string sealed, key.Seal(kRemark, kAad));
  EXPECT_EQ(sealed.size(), kRemark.size() + kSealOverhead);
  EXPECT_EQ(sealed.find(std::string(kRemark)), std::string::npos);
  ASSERT_OK_AND_ASSIGN(const std::string opened, key.Open(sealed, kAad));
  EXPECT_EQ(opened, kRemark);
}

TEST(FieldKeyTest, RoundTripsEmptyPlaintext) {
  const FieldKey key = FieldKey::Generate();
  ASSERT_OK_AND_ASSIGN(const std::string sealed, key.Seal("", kAad));
  ASSERT_OK_AND_ASSIGN(const std::string opened, key.Open(sealed, kAad));
  EXPECT_EQ(opened, "");
}

TEST(FieldKeyTest, UsesAFreshNonceForEveryValue) {
  const FieldKey key = FieldKey::Generate();
  ASSERT_OK_AND_ASSIGN(const std::string a, key.Seal(kRemark, kAad));
  ASSERT_OK_AND_ASSIGN(const std::string b, key.Seal(kRemark, kAad));
  EXPECT_NE(a.substr(1, kFieldNonceSize), b.substr(1, kFieldNonceSize));
  EXPECT_NE(a, b);
}

TEST(FieldKeyTest, RefusesAChangeOfAnyByte) {
  const FieldKey key = FieldKey::Generate();
  ASSERT_OK_AND_ASSIGN(const std::string sealed, key.Seal(kRemark, kAad));
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::string changed = sealed;
    changed[i] = static_cast<char>(changed[i] ^ 0x01);
    EXPECT_THAT(key.Open(changed, kAad),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("sealed")))
        << "byte " << i;
  }
}

TEST(FieldKeyTest, RefusesTruncatedAndExtendedValues) {
  const FieldKey key = FieldKey::Generate();
  ASSERT_OK_AND_ASSIGN(const std::string sealed, key.Seal(kRemark, kAad));
  EXPECT_THAT(key.Open(sealed.substr(0, sealed.size() - 1), kAad),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("")));
  EXPECT_THAT(key.Open(sealed + "x", kAad),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("")));
  EXPECT_THAT(key.Open(sealed.substr(0, kSealOverhead - 1), kAad),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("malformed")));
}

TEST(FieldKeyTest, RefusesOtherAssociatedData) {
  const FieldKey key = FieldKey::Generate();
  ASSERT_OK_AND_ASSIGN(const std::string sealed, key.Seal(kRemark, kAad));
  EXPECT_THAT(key.Open(sealed, "casebridge/field/v1\ncase/PK-2026-000002"),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("does not authenticate")));
  EXPECT_THAT(key.Open(sealed, ""),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("")));
}

TEST(FieldKeyTest, RefusesAnotherKey) {
  const FieldKey key = FieldKey::Generate();
  const FieldKey other = FieldKey::Generate();
  ASSERT_OK_AND_ASSIGN(const std::string sealed, key.Seal(kRemark, kAad));
  EXPECT_THAT(other.Open(sealed, kAad),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("does not authenticate")));
}

TEST(FieldKeyTest, FromBytesWantsThirtyTwoBytes) {
  EXPECT_THAT(FieldKey::FromBytes(std::string(31, 'k')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("32")));
  ASSERT_OK_AND_ASSIGN(const FieldKey key,
                       FieldKey::FromBytes(std::string(32, 'k')));
  EXPECT_EQ(key.bytes(), std::string(32, 'k'));
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(KeyFileTest, CreatesAMissingKeyFileWithMode0600) {
  const std::string path = NewTempDir("data-key-new") + "/data.key";
  ASSERT_OK_AND_ASSIGN(const FieldKey created, LoadOrCreateKeyFile(path));
  EXPECT_EQ(ModeOf(path), 0600);
  ASSERT_OK_AND_ASSIGN(const std::string raw, ReadFile(path));
  EXPECT_EQ(raw.size(), kFieldKeySize);
  EXPECT_EQ(raw, created.bytes());
  // Read again, not made again.
  ASSERT_OK_AND_ASSIGN(const FieldKey loaded, LoadOrCreateKeyFile(path));
  EXPECT_EQ(loaded.bytes(), created.bytes());
}

TEST(KeyFileTest, RefusesAKeyFileOthersCanRead) {
  const std::string path = NewTempDir("data-key-0644") + "/data.key";
  WriteFile(path, std::string(32, 'k'));
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  EXPECT_THAT(LoadOrCreateKeyFile(path),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("has mode 0644")));
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  EXPECT_THAT(LoadOrCreateKeyFile(path),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("has mode 0640")));
}

TEST(KeyFileTest, RefusesAKeyFileOfTheWrongSize) {
  const std::string path = NewTempDir("data-key-size") + "/data.key";
  WriteFile(path, std::string(33, 'k'));
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_THAT(LoadOrCreateKeyFile(path),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("is 33 bytes, not 32")));
}

TEST(KeyFileTest, RefusesADirectory) {
  const std::string path = NewTempDir("data-key-dir");
  ASSERT_EQ(::chmod(path.c_str(), 0700), 0);
  EXPECT_THAT(LoadOrCreateKeyFile(path),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("not a regular file")));
}

TEST(KeyFileTest, RefusesAKeyFileOwnedByAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "giving a file away needs root";
  const std::string path = NewTempDir("data-key-owner") + "/data.key";
  ASSERT_OK(LoadOrCreateKeyFile(path).status());
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  EXPECT_THAT(
      LoadKeyFile(path),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr(path), HasSubstr("owned by uid 65534"))));
}

TEST(KeyFileTest, LoadsOnlyAnExistingKeyFile) {
  const std::string path = NewTempDir("data-key-load") + "/data.key";
  EXPECT_THAT(LoadKeyFile(path), StatusIs(absl::StatusCode::kNotFound,
                                          HasSubstr(path + " does not exist")));
  struct stat st;
  EXPECT_NE(::stat(path.c_str(), &st), 0) << "LoadKeyFile created the file";
}

TEST(KeyFileTest, CreateNeverOverwritesAKeyFile) {
  const std::string path = NewTempDir("data-key-exists") + "/data.key";
  ASSERT_OK_AND_ASSIGN(const FieldKey created, CreateKeyFile(path));
  EXPECT_EQ(ModeOf(path), 0600);
  EXPECT_THAT(CreateKeyFile(path),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("cannot create data key")));
  ASSERT_OK_AND_ASSIGN(const FieldKey loaded, LoadKeyFile(path));
  EXPECT_EQ(loaded.bytes(), created.bytes());
}

}  // namespace
}  // namespace casebridge::crypto
