#include "core/crypto.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::crypto {
namespace {

using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::Pki;
using ::casebridge::testing::StatusIs;
using ::casebridge::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Hex(absl::string_view hex) { return absl::HexStringToBytes(hex); }

// PKCS#8 PEM of an Ed25519 private key given its 32-byte seed (RFC 8410):
// the fixed DER prefix of PrivateKeyInfo, then the seed.
std::string Ed25519PrivateKeyPem(absl::string_view seed_hex) {
  const std::string der =
      Hex(absl::StrCat("302e020100300506032b657004220420", seed_hex));
  return absl::StrCat("-----BEGIN PRIVATE KEY-----\n", absl::Base64Escape(der),
                      "\n-----END PRIVATE KEY-----\n");
}

// SubjectPublicKeyInfo PEM of the key in the first certificate of a file.
std::string PublicKeyPemOfCertificate(const std::string& cert_file) {
  auto pem = ReadFile(cert_file);
  if (!pem.ok()) return "";
  std::unique_ptr<BIO, decltype(&BIO_free)> in(
      BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())), BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr), X509_free);
  if (cert == nullptr) return "";
  std::unique_ptr<BIO, decltype(&BIO_free)> out(BIO_new(BIO_s_mem()), BIO_free);
  if (PEM_write_bio_PUBKEY(out.get(), X509_get0_pubkey(cert.get())) != 1) {
    return "";
  }
  char* data = nullptr;
  const long size = BIO_get_mem_data(out.get(), &data);  // NOLINT
  return std::string(data, static_cast<size_t>(size));
}

struct RfcVector {
  const char* seed;
  const char* public_key;
  const char* message;
  const char* signature;
};

// RFC 8032 section 7.1, TEST 1 and TEST 2.
constexpr RfcVector kTest1 = {
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"};
constexpr RfcVector kTest2 = {
    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"};

TEST(ReadFileTest, AnEndlessOrHugeInputIsRefusedNotReadToTheEnd) {
  // An evidence bundle handed over from outside may be /dev/zero or a pipe.
  EXPECT_THAT(ReadFile("/dev/zero"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("/dev/zero"), HasSubstr("64 MiB"))));
  const std::string dir = NewTempDir("read-file");
  const std::string exact =
      WriteFile(dir + "/exact.bin", std::string(kMaxFileBytes, 'x'));
  ASSERT_OK_AND_ASSIGN(const std::string read, ReadFile(exact));
  EXPECT_EQ(read.size(), kMaxFileBytes);
  EXPECT_THAT(ReadFile(dir + "/missing"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing")));
}

TEST(Sha256Test, MatchesKnownVectors) {
  EXPECT_EQ(HexEncode(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HexEncode(Sha256("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HexEncode(Sha256(
                "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, ReturnsThirtyTwoRawBytes) {
  EXPECT_EQ(Sha256("abc").size(), kSha256Size);
}

TEST(Sha256HasherTest, IncrementalEqualsOneShot) {
  const std::string message =
      "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  for (size_t split = 0; split <= message.size(); ++split) {
    Sha256Hasher hasher;
    hasher.Update(absl::string_view(message).substr(0, split));
    hasher.Update(absl::string_view(message).substr(split));
    EXPECT_EQ(hasher.Finish(), Sha256(message)) << "split at " << split;
  }
}

TEST(Sha256HasherTest, ByteByByteEqualsOneShot) {
  const std::string message = "受害者已获救 / متاثرہ کی بازیابی";
  Sha256Hasher hasher;
  for (const char c : message) hasher.Update(absl::string_view(&c, 1));
  EXPECT_EQ(hasher.Finish(), Sha256(message));
}

TEST(Sha256HasherTest, NoUpdateIsHashOfEmptyInput) {
  Sha256Hasher hasher;
  EXPECT_EQ(hasher.Finish(), Sha256(""));
}

TEST(HexEncodeTest, EncodesLowerCase) {
  EXPECT_EQ(HexEncode(std::string("\x00\x0f\xab\xff", 4)), "000fabff");
  EXPECT_EQ(HexEncode(""), "");
}

TEST(RandomBytesTest, ReturnsRequestedLengthAndFreshBytes) {
  EXPECT_EQ(RandomBytes(0), "");
  const std::string a = RandomBytes(32);
  const std::string b = RandomBytes(32);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(b.size(), 32u);
  EXPECT_NE(a, b);
}

class Ed25519RfcTest : public ::testing::TestWithParam<RfcVector> {};

TEST_P(Ed25519RfcTest, SignerDerivesPublicKeyAndSignatureExactly) {
  const RfcVector& v = GetParam();
  ASSERT_OK_AND_ASSIGN(auto signer,
                       Ed25519Signer::FromPem(Ed25519PrivateKeyPem(v.seed)));
  EXPECT_EQ(HexEncode(signer->public_key()), v.public_key);
  ASSERT_OK_AND_ASSIGN(const std::string signature,
                       signer->Sign(Hex(v.message)));
  EXPECT_EQ(HexEncode(signature), v.signature);
}

TEST_P(Ed25519RfcTest, VerifierFromRawKeyAcceptsVectorSignature) {
  const RfcVector& v = GetParam();
  ASSERT_OK_AND_ASSIGN(auto verifier,
                       Ed25519Verifier::FromRawPublicKey(Hex(v.public_key)));
  EXPECT_EQ(HexEncode(verifier->public_key()), v.public_key);
  EXPECT_OK(verifier->Verify(Hex(v.message), Hex(v.signature)));
}

TEST_P(Ed25519RfcTest, VerifierRejectsEveryOneBitFlipOfSignature) {
  const RfcVector& v = GetParam();
  ASSERT_OK_AND_ASSIGN(auto verifier,
                       Ed25519Verifier::FromRawPublicKey(Hex(v.public_key)));
  const std::string message = Hex(v.message);
  const std::string signature = Hex(v.signature);
  for (size_t bit = 0; bit < signature.size() * 8; ++bit) {
    std::string bad = signature;
    bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_THAT(verifier->Verify(message, bad),
                StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_))
        << "bit " << bit;
  }
}

INSTANTIATE_TEST_SUITE_P(Rfc8032, Ed25519RfcTest,
                         ::testing::Values(kTest1, kTest2));

TEST(Ed25519VerifierTest, RejectsEveryOneBitFlipOfMessage) {
  auto signer = Ed25519Signer::Generate();
  const std::string message = "PK-2026-000001 case.open";
  ASSERT_OK_AND_ASSIGN(const std::string signature, signer->Sign(message));
  ASSERT_OK_AND_ASSIGN(auto verifier,
                       Ed25519Verifier::FromRawPublicKey(signer->public_key()));
  ASSERT_OK(verifier->Verify(message, signature));
  for (size_t bit = 0; bit < message.size() * 8; ++bit) {
    std::string bad = message;
    bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_THAT(verifier->Verify(bad, signature),
                StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_))
        << "bit " << bit;
  }
}

TEST(Ed25519VerifierTest, RejectsVectorSignatureOverOtherMessage) {
  ASSERT_OK_AND_ASSIGN(
      auto verifier, Ed25519Verifier::FromRawPublicKey(Hex(kTest2.public_key)));
  // TEST 2's message is the single byte 0x72; flip each of its bits.
  for (int bit = 0; bit < 8; ++bit) {
    const std::string message(1, static_cast<char>(0x72 ^ (1 << bit)));
    EXPECT_THAT(verifier->Verify(message, Hex(kTest2.signature)),
                StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  }
  EXPECT_THAT(verifier->Verify("", Hex(kTest2.signature)),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
}

TEST(Ed25519VerifierTest, RejectsSignatureOfWrongLength) {
  ASSERT_OK_AND_ASSIGN(
      auto verifier, Ed25519Verifier::FromRawPublicKey(Hex(kTest1.public_key)));
  const std::string signature = Hex(kTest1.signature);
  EXPECT_THAT(verifier->Verify("", ""),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("64")));
  EXPECT_THAT(verifier->Verify("", signature.substr(0, 63)),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("63")));
  EXPECT_THAT(verifier->Verify("", signature + "x"),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("65")));
}

TEST(Ed25519VerifierTest, RejectsSignatureOfOtherKey) {
  auto signer = Ed25519Signer::Generate();
  auto other = Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(const std::string signature, signer->Sign("message"));
  ASSERT_OK_AND_ASSIGN(auto verifier,
                       Ed25519Verifier::FromRawPublicKey(other->public_key()));
  EXPECT_THAT(verifier->Verify("message", signature),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
}

TEST(Ed25519VerifierTest, RejectsNonCanonicalScalar) {
  // TEST 1's signature with S + L in place of S: the same point equation,
  // other bytes. RFC 8032 requires S < L.
  const std::string r = Hex(std::string(kTest1.signature).substr(0, 64));
  const std::string s_plus_l =
      Hex("4c8c7872aa064e049dbb3013fbf29380d25bf5f0595bbe24655141438e7a101b");
  ASSERT_OK_AND_ASSIGN(
      auto verifier, Ed25519Verifier::FromRawPublicKey(Hex(kTest1.public_key)));
  ASSERT_OK(verifier->Verify("", Hex(kTest1.signature)));
  EXPECT_THAT(verifier->Verify("", r + s_plus_l),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
}

TEST(Ed25519VerifierTest, RejectsSmallOrderR) {
  // Made with TEST 1's secret scalar a: R is the neutral point and
  // S = k * a mod L (k = SHA-512(R || A || M)), so [S]B = R + [k]A holds.
  // A second signature of the message by the same key, which no RFC 8032
  // signer makes; OpenSSL 3.0 accepts it.
  const std::string signature =
      Hex("0100000000000000000000000000000000000000000000000000000000000000"
          "daf0664058c5a7233c315812d3eb0807102bf0afbac02bef95f613d75e2a4c0c");
  ASSERT_OK_AND_ASSIGN(
      auto verifier, Ed25519Verifier::FromRawPublicKey(Hex(kTest1.public_key)));
  EXPECT_THAT(verifier->Verify("release the case file", signature),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
}

TEST(Ed25519VerifierTest, RefusesSmallOrderOrNonCanonicalPublicKeys) {
  // The neutral point (with R = neutral and S = 0 it satisfies the
  // verification equation for every message: OpenSSL 3.0 accepts that), a
  // point of order 2, and y = p (not canonical).
  for (const char* key :
       {"0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"}) {
    EXPECT_THAT(Ed25519Verifier::FromRawPublicKey(Hex(key)),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("small order or not canonical")))
        << key;
  }
}

TEST(Ed25519VerifierTest, FromRawPublicKeyRejectsWrongLength) {
  EXPECT_THAT(Ed25519Verifier::FromRawPublicKey(std::string(31, 'k')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("31")));
  EXPECT_THAT(Ed25519Verifier::FromRawPublicKey(std::string(33, 'k')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("33")));
  EXPECT_THAT(Ed25519Verifier::FromRawPublicKey(""),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(Ed25519SignerTest, GeneratedKeysDifferAndSignaturesVerify) {
  auto a = Ed25519Signer::Generate();
  auto b = Ed25519Signer::Generate();
  EXPECT_EQ(a->public_key().size(), kEd25519PublicKeySize);
  EXPECT_NE(a->public_key(), b->public_key());
  ASSERT_OK_AND_ASSIGN(const std::string signature, a->Sign("受害者已获救"));
  EXPECT_EQ(signature.size(), kEd25519SignatureSize);
  ASSERT_OK_AND_ASSIGN(auto verifier,
                       Ed25519Verifier::FromRawPublicKey(a->public_key()));
  EXPECT_OK(verifier->Verify("受害者已获救", signature));
}

TEST(Ed25519SignerTest, FromPemRejectsGarbage) {
  EXPECT_THAT(Ed25519Signer::FromPem("not a key"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not a PEM private key")));
}

TEST(Ed25519SignerTest, FromPemFileNamesMissingFile) {
  const std::string path = NewTempDir("signer-missing") + "/absent.key";
  EXPECT_THAT(Ed25519Signer::FromPemFile(path),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST(Ed25519SignerTest, FromPemFileNamesFileWithGarbage) {
  const std::string path =
      WriteFile(NewTempDir("signer-garbage") + "/garbage.key", "garbage\n");
  EXPECT_THAT(Ed25519Signer::FromPemFile(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(path)));
}

TEST(Ed25519SignerTest, FromPemFileRefusesEcdsaKeyNamingFile) {
  const std::string path = Pki("pk/gateway.key");
  EXPECT_THAT(Ed25519Signer::FromPemFile(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("not an Ed25519"))));
}

TEST(Ed25519VerifierTest, FromPemFileNamesMissingFile) {
  const std::string path = NewTempDir("verifier-missing") + "/absent.pub";
  EXPECT_THAT(Ed25519Verifier::FromPemFile(path),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST(Ed25519VerifierTest, FromPemFileNamesFileWithGarbage) {
  const std::string path = WriteFile(
      NewTempDir("verifier-garbage") + "/garbage.pub", "-----BEGIN nonsense");
  EXPECT_THAT(Ed25519Verifier::FromPemFile(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(path)));
}

TEST(Ed25519VerifierTest, FromPemRefusesEcdsaPublicKey) {
  const std::string pem = PublicKeyPemOfCertificate(Pki("pk/gateway.crt"));
  ASSERT_THAT(pem, HasSubstr("BEGIN PUBLIC KEY"));
  EXPECT_THAT(Ed25519Verifier::FromPem(pem),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not an Ed25519")));
}

TEST(Ed25519VerifierTest, FromPemRefusesPrivateKey) {
  EXPECT_THAT(Ed25519Verifier::FromPem(Ed25519PrivateKeyPem(kTest1.seed)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not a PEM public key")));
}

TEST(Ed25519DevPkiTest, SigningKeyMatchesItsPublicKeyFile) {
  for (const char* stem : {"pk/signing/envelope", "pk/signing/checkpoint",
                           "pk/signing/witness", "cn/signing/envelope"}) {
    SCOPED_TRACE(stem);
    ASSERT_OK_AND_ASSIGN(auto signer, Ed25519Signer::FromPemFile(
                                          Pki(absl::StrCat(stem, ".key"))));
    ASSERT_OK_AND_ASSIGN(auto verifier, Ed25519Verifier::FromPemFile(
                                            Pki(absl::StrCat(stem, ".pub"))));
    EXPECT_EQ(signer->public_key(), verifier->public_key());
    ASSERT_OK_AND_ASSIGN(const std::string signature,
                         signer->Sign("envelope body"));
    EXPECT_OK(verifier->Verify("envelope body", signature));
  }
}

TEST(Ed25519DevPkiTest, OtherGatewaysKeyDoesNotVerify) {
  ASSERT_OK_AND_ASSIGN(
      auto signer, Ed25519Signer::FromPemFile(Pki("pk/signing/envelope.key")));
  ASSERT_OK_AND_ASSIGN(auto verifier, Ed25519Verifier::FromPemFile(
                                          Pki("cn/signing/envelope.pub")));
  ASSERT_OK_AND_ASSIGN(const std::string signature, signer->Sign("body"));
  EXPECT_THAT(verifier->Verify("body", signature),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
}

TEST(Ed25519DevPkiTest, PurposesUseDistinctKeys) {
  ASSERT_OK_AND_ASSIGN(auto envelope, Ed25519Verifier::FromPemFile(
                                          Pki("pk/signing/envelope.pub")));
  ASSERT_OK_AND_ASSIGN(auto checkpoint, Ed25519Verifier::FromPemFile(
                                            Pki("pk/signing/checkpoint.pub")));
  ASSERT_OK_AND_ASSIGN(auto witness, Ed25519Verifier::FromPemFile(
                                         Pki("pk/signing/witness.pub")));
  EXPECT_NE(envelope->public_key(), checkpoint->public_key());
  EXPECT_NE(envelope->public_key(), witness->public_key());
  EXPECT_NE(checkpoint->public_key(), witness->public_key());
}

TEST(ReadFileTest, ReadsBinaryContentsExactly) {
  const std::string contents("a\0b\xff\n", 5);
  const std::string path =
      WriteFile(NewTempDir("read-file") + "/blob.bin", contents);
  ASSERT_OK_AND_ASSIGN(const std::string read, ReadFile(path));
  EXPECT_EQ(read, contents);
}

TEST(ReadFileTest, MissingFileIsNotFoundNamingPath) {
  const std::string path = NewTempDir("read-missing") + "/nope.txt";
  EXPECT_THAT(ReadFile(path),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

}  // namespace
}  // namespace casebridge::crypto
