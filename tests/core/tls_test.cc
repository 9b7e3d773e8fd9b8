#include "core/tls.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/crypto.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_crl.h"
#include "tests/testing/test_pki.h"

namespace casebridge::tls {
namespace {

namespace fs = std::filesystem;
using ::casebridge::testing::CrlToDer;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::Pki;
using ::casebridge::testing::StatusIs;
using ::casebridge::testing::SubjectHash;
using ::casebridge::testing::WriteFile;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

void CopyFile(const std::string& from, const std::string& to) {
  auto contents = crypto::ReadFile(from);
  ASSERT_TRUE(contents.ok()) << contents.status();
  WriteFile(to, *contents);
}

TEST(CheckTrustAnchorsApartTest, AcceptsEachSideWithItsOwnCa) {
  EXPECT_OK(CheckTrustAnchorsApart(Pki("pk/ca.crt"), Pki("cn/ca.crt")));
  EXPECT_OK(CheckTrustAnchorsApart(Pki("cn/ca.crt"), Pki("pk/ca.crt")));
}

TEST(CheckTrustAnchorsApartTest, ACaOnBothSidesIsRefusedNamingIt) {
  EXPECT_THAT(CheckTrustAnchorsApart(Pki("pk/ca.crt"), Pki("pk/ca.crt")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("CaseBridge PK Dev Root CA"),
                             HasSubstr("the same name"),
                             HasSubstr("give each side its own CA"))));
  // Hidden in a bundle: the peer's CA trusted on the office port as well.
  const std::string dir = NewTempDir("bundle");
  auto pk = crypto::ReadFile(Pki("pk/ca.crt"));
  auto cn = crypto::ReadFile(Pki("cn/ca.crt"));
  ASSERT_OK(pk.status());
  ASSERT_OK(cn.status());
  const std::string bundle = WriteFile(dir + "/both.crt", *pk + *cn);
  EXPECT_THAT(CheckTrustAnchorsApart(bundle, Pki("cn/ca.crt")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("CaseBridge CN Dev Root CA")));
}

TEST(CheckTrustAnchorsApartTest, TheSameKeyUnderAnotherNameIsRefused) {
  // The PK root's key in a certificate of another name: certificates it
  // signs verify under either.
  const std::string dir = NewTempDir("rename");
  const std::string renamed = dir + "/renamed.crt";
  const std::string command =
      absl::StrCat("openssl req -x509 -new -key '", Pki("pk/ca.key"),
                   "' -subj '/O=Elsewhere/CN=Another Root' -days 30 -out '",
                   renamed, "' 2>/dev/null");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  EXPECT_THAT(CheckTrustAnchorsApart(Pki("pk/ca.crt"), renamed),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("the same key")));
}

TEST(CheckCrlCoverageTest, AcceptsEachCaWithItsCurrentCrl) {
  EXPECT_OK(CheckCrlCoverage(Pki("pk/ca.crt"), Pki("crl"), absl::Now()));
  EXPECT_OK(CheckCrlCoverage(Pki("cn/ca.crt"), Pki("crl"), absl::Now()));
}

TEST(CheckCrlCoverageTest, PkiCrlFileIsNamedBySubjectHash) {
  const std::string hash = SubjectHash(Pki("pk/ca.crt"));
  ASSERT_EQ(hash.size(), 8u);
  EXPECT_TRUE(fs::exists(Pki("crl/" + hash + ".r0")));
}

TEST(CheckCrlCoverageTest, EmptyCrlDirectoryIsFailedPreconditionNamingCa) {
  const std::string dir = NewTempDir("crl-empty");
  EXPECT_THAT(
      CheckCrlCoverage(Pki("pk/ca.crt"), dir, absl::Now()),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("CaseBridge PK Dev Root CA"), HasSubstr(dir),
                     HasSubstr(SubjectHash(Pki("pk/ca.crt")) + ".r0"))));
}

TEST(CheckCrlCoverageTest, CrlOfOnlyOneCaDoesNotCoverTheOther) {
  const std::string dir = NewTempDir("crl-one-ca");
  const std::string cn_hash = SubjectHash(Pki("cn/ca.crt"));
  CopyFile(Pki("crl/" + cn_hash + ".r0"), dir + "/" + cn_hash + ".r0");
  EXPECT_OK(CheckCrlCoverage(Pki("cn/ca.crt"), dir, absl::Now()));
  EXPECT_THAT(CheckCrlCoverage(Pki("pk/ca.crt"), dir, absl::Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("CaseBridge PK Dev Root CA")));
}

TEST(CheckCrlCoverageTest, CrlSignedByAnotherCaIsFailedPrecondition) {
  const std::string dir = NewTempDir("crl-other-ca");
  const std::string pk_hash = SubjectHash(Pki("pk/ca.crt"));
  const std::string cn_hash = SubjectHash(Pki("cn/ca.crt"));
  ASSERT_NE(pk_hash, cn_hash);
  // The CN CRL, filed under the PK CA's name.
  CopyFile(Pki("crl/" + cn_hash + ".r0"), dir + "/" + pk_hash + ".r0");
  EXPECT_THAT(CheckCrlCoverage(Pki("pk/ca.crt"), dir, absl::Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("not signed by CA"),
                             HasSubstr("CaseBridge PK Dev Root CA"),
                             HasSubstr(pk_hash + ".r0"))));
}

TEST(CheckCrlCoverageTest, ForeignCrlAmongGoodOnesIsStillRefused) {
  const std::string dir = NewTempDir("crl-mixed");
  const std::string pk_hash = SubjectHash(Pki("pk/ca.crt"));
  const std::string cn_hash = SubjectHash(Pki("cn/ca.crt"));
  CopyFile(Pki("crl/" + pk_hash + ".r0"), dir + "/" + pk_hash + ".r0");
  CopyFile(Pki("crl/" + cn_hash + ".r0"), dir + "/" + pk_hash + ".r1");
  EXPECT_THAT(CheckCrlCoverage(Pki("pk/ca.crt"), dir, absl::Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(pk_hash + ".r1")));
}

TEST(CheckCrlCoverageTest, FileThatIsNotACrlIsFailedPrecondition) {
  const std::string dir = NewTempDir("crl-garbage");
  const std::string pk_hash = SubjectHash(Pki("pk/ca.crt"));
  WriteFile(dir + "/" + pk_hash + ".r0", "not a crl\n");
  EXPECT_THAT(
      CheckCrlCoverage(Pki("pk/ca.crt"), dir, absl::Now()),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a CRL")));
}

TEST(CheckCrlCoverageTest, CrlInDerIsRefusedWithHowToConvertIt) {
  // gRPC reads the CRL directory as PEM: a DER file there would be skipped
  // as if the CA had no CRL, and revoked certificates would get through.
  const std::string dir = NewTempDir("crl-der");
  const std::string pk_hash = SubjectHash(Pki("pk/ca.crt"));
  ASSERT_OK_AND_ASSIGN(const std::string pem,
                       crypto::ReadFile(Pki("crl/" + pk_hash + ".r0")));
  ASSERT_OK_AND_ASSIGN(const std::string der, CrlToDer(pem));
  WriteFile(dir + "/" + pk_hash + ".r0", der);
  EXPECT_THAT(CheckCrlCoverage(Pki("pk/ca.crt"), dir, absl::Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(pk_hash + ".r0: a CRL in DER"),
                             HasSubstr("openssl crl -inform DER "
                                       "-outform PEM"))));
}

TEST(CheckCrlCoverageTest, ExpiredCrlIsFailedPrecondition) {
  // The dev CRLs are good for 30 days.
  const absl::Time later = absl::Now() + absl::Hours(24 * 3650);
  EXPECT_THAT(CheckCrlCoverage(Pki("pk/ca.crt"), Pki("crl"), later),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("expired"),
                             HasSubstr("CaseBridge PK Dev Root CA"))));
  EXPECT_OK(CheckCrlCoverage(Pki("pk/ca.crt"), Pki("crl"),
                             absl::Now() + absl::Hours(24 * 29)));
}

TEST(CheckCrlCoverageTest, CoversEveryCaInABundle) {
  const std::string dir = NewTempDir("crl-bundle");
  auto pk = crypto::ReadFile(Pki("pk/ca.crt"));
  auto cn = crypto::ReadFile(Pki("cn/ca.crt"));
  ASSERT_TRUE(pk.ok() && cn.ok());
  const std::string bundle = WriteFile(dir + "/bundle.crt", *pk + *cn);
  EXPECT_OK(CheckCrlCoverage(bundle, Pki("crl"), absl::Now()));

  const std::string crls = NewTempDir("crl-bundle-partial");
  const std::string pk_hash = SubjectHash(Pki("pk/ca.crt"));
  CopyFile(Pki("crl/" + pk_hash + ".r0"), crls + "/" + pk_hash + ".r0");
  EXPECT_THAT(CheckCrlCoverage(bundle, crls, absl::Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("CaseBridge CN Dev Root CA")));
}

TEST(CheckCrlCoverageTest, MissingCaFileIsNotFound) {
  const std::string path = NewTempDir("crl-no-ca") + "/ca.crt";
  EXPECT_THAT(CheckCrlCoverage(path, Pki("crl"), absl::Now()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST(CheckKeyPairTest, AcceptsMatchingPairs) {
  EXPECT_OK(CheckKeyPair(Pki("pk/gateway.crt"), Pki("pk/gateway.key")));
  EXPECT_OK(CheckKeyPair(Pki("pk/gateway-chain.crt"), Pki("pk/gateway.key")));
  EXPECT_OK(CheckKeyPair(Pki("cn/gateway.crt"), Pki("cn/gateway.key")));
  EXPECT_OK(CheckKeyPair(Pki("pk/offices/fia-liaison-desk.crt"),
                         Pki("pk/offices/fia-liaison-desk.key")));
}

TEST(CheckKeyPairTest, MismatchedPairNamesKeyAndCertificate) {
  const std::string cert = Pki("pk/gateway.crt");
  const std::string key = Pki("cn/gateway.key");
  EXPECT_THAT(CheckKeyPair(cert, key),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(key), HasSubstr(cert),
                             HasSubstr("does not match"))));
}

TEST(CheckKeyPairTest, KeyFileWithoutKeyIsNamed) {
  const std::string key = Pki("pk/ca.crt");  // a certificate, not a key
  EXPECT_THAT(
      CheckKeyPair(Pki("pk/gateway.crt"), key),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr(key), HasSubstr("not a PEM private key"))));
}

TEST(CheckKeyPairTest, CertificateFileWithoutCertificateIsNamed) {
  const std::string cert = Pki("pk/gateway.key");
  EXPECT_THAT(
      CheckKeyPair(cert, Pki("pk/gateway.key")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr(cert), HasSubstr("no PEM certificate"))));
}

TEST(CheckKeyPairTest, MissingFilesAreNotFoundNamingThem) {
  const std::string dir = NewTempDir("keypair-missing");
  EXPECT_THAT(CheckKeyPair(dir + "/a.crt", Pki("pk/gateway.key")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir + "/a.crt")));
  EXPECT_THAT(CheckKeyPair(Pki("pk/gateway.crt"), dir + "/a.key"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir + "/a.key")));
}

TEST(ReadCertificatesTest, ReturnsUriSanOfOfficeCertificate) {
  ASSERT_OK_AND_ASSIGN(
      const std::vector<CertificateInfo> certs,
      ReadCertificates(Pki("pk/offices/fia-liaison-desk.crt")));
  ASSERT_EQ(certs.size(), 1u);
  EXPECT_THAT(certs[0].uri_sans,
              ElementsAre("spiffe://pk.casebridge/office/fia-liaison-desk"));
  EXPECT_THAT(certs[0].subject, HasSubstr("fia-liaison-desk"));
  EXPECT_LT(certs[0].not_before, absl::Now());
  EXPECT_GT(certs[0].not_after, absl::Now());
}

TEST(ReadCertificatesTest, ReadsEveryCertificateOfAChain) {
  ASSERT_OK_AND_ASSIGN(const std::vector<CertificateInfo> certs,
                       ReadCertificates(Pki("pk/gateway-chain.crt")));
  ASSERT_EQ(certs.size(), 2u);
  EXPECT_THAT(certs[0].uri_sans, ElementsAre("spiffe://pk.casebridge/gateway"));
  EXPECT_THAT(certs[1].subject, HasSubstr("CaseBridge PK Dev Root CA"));
  EXPECT_TRUE(certs[1].uri_sans.empty());
}

TEST(ReadCertificatesTest, ReportsValidityOfExpiredCertificate) {
  ASSERT_OK_AND_ASSIGN(const std::vector<CertificateInfo> certs,
                       ReadCertificates(Pki("bad/expired.crt")));
  ASSERT_EQ(certs.size(), 1u);
  EXPECT_EQ(certs[0].not_before,
            absl::FromCivil(absl::CivilDay(2020, 1, 1), absl::UTCTimeZone()));
  EXPECT_EQ(certs[0].not_after,
            absl::FromCivil(absl::CivilDay(2021, 1, 1), absl::UTCTimeZone()));
}

TEST(ReadCertificatesTest, FileWithoutCertificateIsInvalidArgument) {
  const std::string path =
      WriteFile(NewTempDir("read-certs") + "/empty.crt", "nothing here\n");
  EXPECT_THAT(ReadCertificates(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(path)));
}

}  // namespace
}  // namespace casebridge::tls
