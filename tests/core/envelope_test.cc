#include "core/envelope.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/crypto.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::exchange {
namespace {

using ::casebridge::testing::Pki;
using ::casebridge::testing::StatusIs;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

constexpr size_t kLimit = size_t{4} << 20;
constexpr absl::string_view kPkGateway = "spiffe://pk.casebridge/gateway";
constexpr absl::string_view kCnGateway = "spiffe://cn.casebridge/gateway";

std::unique_ptr<crypto::Ed25519Signer> LoadSigner(const std::string& file) {
  auto signer = crypto::Ed25519Signer::FromPemFile(Pki(file));
  EXPECT_TRUE(signer.ok()) << signer.status();
  return signer.ok() ? *std::move(signer) : nullptr;
}

std::unique_ptr<crypto::Ed25519Verifier> VerifierFor(
    const crypto::Ed25519Signer& signer) {
  auto verifier =
      crypto::Ed25519Verifier::FromRawPublicKey(signer.public_key());
  EXPECT_TRUE(verifier.ok()) << verifier.status();
  return verifier.ok() ? *std::move(verifier) : nullptr;
}

// A ring trusting exactly the given signers' keys.
KeyRing RingOf(std::initializer_list<const crypto::Ed25519Signer*> signers) {
  KeyRing ring;
  for (const crypto::Ed25519Signer* signer : signers) {
    EXPECT_OK(ring.Add(VerifierFor(*signer)));
  }
  return ring;
}

v1::Envelope SampleEnvelope(absl::string_view body) {
  v1::Envelope envelope;
  envelope.set_envelope_id("PK-E-01J2Z8Q4N6W3R5T7Y9A1B3C5D7");
  envelope.set_origin_gateway(std::string(kPkGateway));
  envelope.set_destination_gateway(std::string(kCnGateway));
  envelope.mutable_created_at()->set_seconds(1767225600);
  envelope.mutable_created_at()->set_nanos(123000000);
  envelope.set_origin_audit_index(4711);
  v1::CaseMessage& message = *envelope.mutable_message();
  message.set_message_id("PK-M-01J2Z8Q4N6W3R5T7Y9A1B3C5D7");
  message.set_exchange_id("PK-2026-000123");
  message.set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
  message.set_priority(v1::PRIORITY_URGENT);
  message.set_body(std::string(body));
  message.set_sender_office("spiffe://pk.casebridge/office/fia-liaison-desk");
  message.set_sender_country(v1::COUNTRY_PK);
  return envelope;
}

// Small, so that a test can try every bit of it.
v1::Envelope SmallEnvelope() {
  v1::Envelope envelope;
  envelope.set_envelope_id("PK-E-1");
  envelope.set_origin_audit_index(9);
  return envelope;
}

v1::Receipt ReceiptFor(const v1::SignedEnvelope& sent) {
  v1::Envelope envelope;
  EXPECT_TRUE(envelope.ParseFromString(sent.envelope()));
  v1::Receipt receipt;
  receipt.set_envelope_id(envelope.envelope_id());
  receipt.set_envelope_sha256(EnvelopeDigest(sent));
  receipt.mutable_received_at()->set_seconds(1767225601);
  receipt.set_receiver_audit_index(77);
  receipt.set_receiver_gateway(std::string(kCnGateway));
  return receipt;
}

std::string FlipBit(std::string bytes, size_t bit) {
  bytes[bit / 8] = static_cast<char>(bytes[bit / 8] ^ (1 << (bit % 8)));
  return bytes;
}

bool Equal(const google::protobuf::Message& a,
           const google::protobuf::Message& b) {
  return MessageDifferencer::Equals(a, b);
}

// --- Contexts and key ids ----------------------------------------------------

TEST(EnvelopeContextTest, ContextsEndWithOneNewlineByte) {
  EXPECT_EQ(kEnvelopeContext, absl::string_view("casebridge/envelope/v1\x0a"));
  EXPECT_EQ(kEnvelopeContext.size(), 23u);
  EXPECT_EQ(kReceiptContext, absl::string_view("casebridge/receipt/v1\x0a"));
  EXPECT_EQ(kReceiptContext.size(), 22u);
  EXPECT_EQ(kKeyIdContext, absl::string_view("casebridge/key-id/v1\x0a"));
}

TEST(EnvelopeKeyIdTest, IsSixteenLowerCaseHexOfTheDocumentedHash) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const std::string expected =
      crypto::HexEncode(crypto::Sha256(absl::StrCat("casebridge/key-id/v1\n",
                                                    signer->public_key())))
          .substr(0, 16);
  const std::string key_id = KeyId(signer->public_key());
  EXPECT_EQ(key_id, expected);
  EXPECT_THAT(key_id, MatchesRegex("[0-9a-f]{16}"));
  EXPECT_EQ(KeyId(signer->public_key()), key_id);
}

TEST(EnvelopeKeyIdTest, MatchesGoldenValueForRfc8032Test1PublicKey) {
  const std::string public_key = absl::HexStringToBytes(
      "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  EXPECT_EQ(KeyId(public_key), "755e4aa10678e5dd");
}

TEST(EnvelopeKeyIdTest, DiffersBetweenTheTwoGatewaysKeys) {
  const auto pk = LoadSigner("pk/signing/envelope.key");
  const auto cn = LoadSigner("cn/signing/envelope.key");
  ASSERT_NE(pk, nullptr);
  ASSERT_NE(cn, nullptr);
  EXPECT_NE(KeyId(pk->public_key()), KeyId(cn->public_key()));
}

// --- Sign and verify ---------------------------------------------------------

TEST(EnvelopeTest, DevPkiKeysRoundTrip) {
  const auto signer = LoadSigner("pk/signing/envelope.key");
  ASSERT_NE(signer, nullptr);
  ASSERT_OK_AND_ASSIGN(const KeyRing ring,
                       KeyRing::FromPemFiles({Pki("pk/signing/envelope.pub")}));
  const v1::Envelope envelope = SampleEnvelope("Victim located near Urumqi.");

  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope signed_envelope,
                       SignEnvelope(envelope, *signer));
  EXPECT_EQ(signed_envelope.key_id(), KeyId(signer->public_key()));
  EXPECT_EQ(signed_envelope.signature().size(), crypto::kEd25519SignatureSize);
  ASSERT_OK_AND_ASSIGN(const v1::Envelope verified,
                       VerifyEnvelope(signed_envelope, ring, kLimit));
  EXPECT_TRUE(Equal(verified, envelope)) << verified.DebugString();
}

TEST(EnvelopeTest, GeneratedKeysRoundTrip) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  const v1::Envelope envelope = SampleEnvelope("Meet at the border post.");
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope signed_envelope,
                       SignEnvelope(envelope, *signer));
  ASSERT_OK_AND_ASSIGN(const v1::Envelope verified,
                       VerifyEnvelope(signed_envelope, ring, kLimit));
  EXPECT_TRUE(Equal(verified, envelope)) << verified.DebugString();
}

TEST(KeyRingTest, PreviousKeyIsTrustedUntilItsTimeThenRefusedNamingIt) {
  const auto current = crypto::Ed25519Signer::Generate();
  const auto previous = crypto::Ed25519Signer::Generate();
  testing::FakeClock clock;
  const absl::Time until = clock.Now() + absl::Hours(24);
  KeyRing ring;
  ASSERT_OK(ring.Add(VerifierFor(*current)));
  ASSERT_OK(ring.Add(VerifierFor(*previous), until));
  ring.set_clock(&clock);
  const v1::Envelope envelope = SampleEnvelope("queued before the rotation");
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope old_signed,
                       SignEnvelope(envelope, *previous));
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope new_signed,
                       SignEnvelope(envelope, *current));

  EXPECT_OK(VerifyEnvelope(old_signed, ring, kLimit));  // in the overlap
  EXPECT_EQ(ring.TrustedUntil(old_signed.key_id()), until);
  EXPECT_EQ(ring.TrustedUntil(new_signed.key_id()), absl::InfiniteFuture());
  clock.Advance(absl::Hours(24) + absl::Seconds(1));
  EXPECT_THAT(
      VerifyEnvelope(old_signed, ring, kLimit),
      StatusIs(absl::StatusCode::kUnauthenticated,
               absl::StrCat("key_id: signing key ", old_signed.key_id(),
                            " was trusted until 2026-11-30T12:00:00Z")));
  EXPECT_OK(VerifyEnvelope(new_signed, ring, kLimit));  // the current key
  // Without a clock (an offline verifier checking old signatures) the
  // previous key still verifies what it signed.
  ring.set_clock(nullptr);
  EXPECT_OK(VerifyEnvelope(old_signed, ring, kLimit));
}

TEST(EnvelopeTest, SignatureCoversContextThenExactCarriedBytes) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const auto verifier = VerifierFor(*signer);
  const v1::Envelope envelope = SampleEnvelope("body");
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope signed_envelope,
                       SignEnvelope(envelope, *signer));

  v1::Envelope carried;
  ASSERT_TRUE(carried.ParseFromString(signed_envelope.envelope()));
  EXPECT_TRUE(Equal(carried, envelope));
  EXPECT_OK(verifier->Verify(
      absl::StrCat("casebridge/envelope/v1\n", signed_envelope.envelope()),
      signed_envelope.signature()));
  // Without the context the same signature is worthless.
  EXPECT_THAT(
      verifier->Verify(signed_envelope.envelope(), signed_envelope.signature()),
      StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
}

TEST(EnvelopeTest, SigningTheSameEnvelopeTwiceGivesTheSameBytes) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const v1::Envelope envelope = SampleEnvelope("body");
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope first,
                       SignEnvelope(envelope, *signer));
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope second,
                       Signer(*signer).SignEnvelope(envelope));
  EXPECT_EQ(first.envelope(), second.envelope());
  EXPECT_EQ(first.signature(), second.signature());  // Ed25519: deterministic
  EXPECT_EQ(first.key_id(), second.key_id());
}

TEST(EnvelopeTest, SignerCarriesTheKeyIdOfItsKey) {
  const auto key = crypto::Ed25519Signer::Generate();
  const Signer signer(*key);
  EXPECT_EQ(signer.key_id(), KeyId(key->public_key()));
  ASSERT_OK_AND_ASSIGN(const v1::SignedReceipt signed_receipt,
                       signer.SignReceipt(v1::Receipt()));
  EXPECT_EQ(signed_receipt.key_id(), signer.key_id());
}

TEST(EnvelopeTest, UrduAndChineseBodiesSurviveByteForByte) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  const std::vector<std::string> bodies = {
      "متاثرہ لڑکی کو لاہور کے قریب بازیاب کر لیا گیا ہے۔",
      "受害人已在广州获救，目前在庇护所。",
      "Rescued 救出 بازیاب — مرحلہ ٢ / 第二阶段 ✓",
  };
  for (const std::string& body : bodies) {
    SCOPED_TRACE(body);
    ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope signed_envelope,
                         SignEnvelope(SampleEnvelope(body), *signer));
    EXPECT_THAT(signed_envelope.envelope(), HasSubstr(body));
    ASSERT_OK_AND_ASSIGN(const v1::Envelope verified,
                         VerifyEnvelope(signed_envelope, ring, kLimit));
    EXPECT_EQ(verified.message().body(), body);
  }
}

TEST(EnvelopeTest, SignRefusesInvalidUtf8NamingTheField) {
  const auto signer = crypto::Ed25519Signer::Generate();
  EXPECT_THAT(SignEnvelope(SampleEnvelope("caf\xC3"), *signer),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "envelope.message.body: not valid UTF-8"));
}

// --- Refusals, in the documented order ---------------------------------------

TEST(VerifyEnvelopeTest, RefusesEveryBitFlipOfTheEnvelopeBytes) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope original,
                       SignEnvelope(SmallEnvelope(), *signer));
  ASSERT_OK(VerifyEnvelope(original, ring, kLimit).status());
  const std::string expected =
      absl::StrCat("signature: does not verify for key ", original.key_id());

  const size_t bits = original.envelope().size() * 8;
  ASSERT_GT(bits, 0u);
  for (size_t bit = 0; bit < bits; ++bit) {
    v1::SignedEnvelope tampered = original;
    tampered.set_envelope(FlipBit(original.envelope(), bit));
    EXPECT_THAT(VerifyEnvelope(tampered, ring, kLimit),
                StatusIs(absl::StatusCode::kUnauthenticated, expected))
        << "bit " << bit;
  }
}

TEST(VerifyEnvelopeTest, RefusesEveryBitFlipOfTheSignature) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope original,
                       SignEnvelope(SmallEnvelope(), *signer));
  const std::string expected =
      absl::StrCat("signature: does not verify for key ", original.key_id());
  for (size_t bit = 0; bit < crypto::kEd25519SignatureSize * 8; ++bit) {
    v1::SignedEnvelope tampered = original;
    tampered.set_signature(FlipBit(original.signature(), bit));
    EXPECT_THAT(VerifyEnvelope(tampered, ring, kLimit),
                StatusIs(absl::StatusCode::kUnauthenticated, expected))
        << "bit " << bit;
  }
}

TEST(VerifyEnvelopeTest, RefusesSignatureOfTheWrongLength) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope original,
                       SignEnvelope(SmallEnvelope(), *signer));
  const std::string& sig = original.signature();
  for (const std::string& wrong :
       {std::string(), sig.substr(0, 63),
        absl::StrCat(sig, std::string(1, '\0')), absl::StrCat(sig, sig)}) {
    v1::SignedEnvelope tampered = original;
    tampered.set_signature(wrong);
    EXPECT_THAT(VerifyEnvelope(tampered, ring, kLimit),
                StatusIs(absl::StatusCode::kUnauthenticated,
                         HasSubstr("signature: does not verify for key")))
        << wrong.size() << " bytes";
  }
}

TEST(VerifyEnvelopeTest, RefusesUnknownKeyNamingItsKeyId) {
  const auto pk = LoadSigner("pk/signing/envelope.key");
  const auto cn = LoadSigner("cn/signing/envelope.key");
  ASSERT_NE(pk, nullptr);
  ASSERT_NE(cn, nullptr);
  const KeyRing ring = RingOf({pk.get()});
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope by_cn,
                       SignEnvelope(SmallEnvelope(), *cn));
  EXPECT_THAT(VerifyEnvelope(by_cn, ring, kLimit),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       absl::StrCat("key_id: unknown signing key ",
                                    KeyId(cn->public_key()))));
}

TEST(VerifyEnvelopeTest, RefusesOtherKeysSignatureUnderTrustedKeyId) {
  const auto pk = LoadSigner("pk/signing/envelope.key");
  const auto cn = LoadSigner("cn/signing/envelope.key");
  ASSERT_NE(pk, nullptr);
  ASSERT_NE(cn, nullptr);
  const KeyRing ring = RingOf({pk.get()});
  ASSERT_OK_AND_ASSIGN(v1::SignedEnvelope by_cn,
                       SignEnvelope(SmallEnvelope(), *cn));
  by_cn.set_key_id(KeyId(pk->public_key()));
  EXPECT_THAT(VerifyEnvelope(by_cn, ring, kLimit),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       absl::StrCat("signature: does not verify for key ",
                                    KeyId(pk->public_key()))));
}

TEST(VerifyEnvelopeTest, RefusesEmptyKeyId) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  ASSERT_OK_AND_ASSIGN(v1::SignedEnvelope signed_envelope,
                       SignEnvelope(SmallEnvelope(), *signer));
  signed_envelope.clear_key_id();
  EXPECT_THAT(VerifyEnvelope(signed_envelope, ring, kLimit),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       "key_id: unknown signing key (empty)"));
}

TEST(VerifyEnvelopeTest, QuotesOnlyPrintableKeyIds) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope original,
                       SignEnvelope(SmallEnvelope(), *signer));
  const std::string alnum64(64, 'A');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"0123abcdXYZ", "0123abcdXYZ"},
      {alnum64, alnum64},
      {alnum64 + "A", "(unprintable)"},
      {"abc\ndef", "(unprintable)"},
      {"key-1", "(unprintable)"},
      {"\xE5\xAF\x86\xE9\x92\xA5", "(unprintable)"},
      {std::string("ab\0cd", 5), "(unprintable)"},
  };
  for (const auto& [key_id, shown] : cases) {
    v1::SignedEnvelope tampered = original;
    tampered.set_key_id(key_id);
    EXPECT_THAT(VerifyEnvelope(tampered, ring, kLimit),
                StatusIs(absl::StatusCode::kUnauthenticated,
                         absl::StrCat("key_id: unknown signing key ", shown)))
        << absl::CHexEscape(key_id);
  }
}

TEST(VerifyEnvelopeTest, RefusesUnknownFieldAppendedAfterSigning) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  ASSERT_OK_AND_ASSIGN(v1::SignedEnvelope signed_envelope,
                       SignEnvelope(SampleEnvelope("body"), *signer));
  // Field 99, wire type 0 (varint): tag 99 << 3 = 792 = 0x98 0x06; value 1.
  const std::string appended =
      absl::StrCat(signed_envelope.envelope(), "\x98\x06\x01");
  v1::Envelope parsed;
  ASSERT_TRUE(parsed.ParseFromString(appended))
      << "the changed bytes must still be a valid Envelope";
  EXPECT_EQ(parsed.envelope_id(), SampleEnvelope("body").envelope_id());
  EXPECT_EQ(parsed.message().body(), "body");

  signed_envelope.set_envelope(appended);
  EXPECT_THAT(VerifyEnvelope(signed_envelope, ring, kLimit),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("signature: does not verify")));
}

TEST(VerifyEnvelopeTest, ChecksSignatureFirstAndParsesSecond) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  const std::vector<std::string> garbage = {
      // Tag 0x0F: field 1 with the undefined wire type 7, then random bytes.
      absl::StrCat("\x0f", crypto::RandomBytes(64)),
      // envelope_id announced as 5 bytes, only 2 present.
      "\x0a\x05PK",
      // A varint tag longer than 10 bytes.
      std::string(12, '\xff'),
      // envelope_id holding invalid UTF-8.
      "\x0a\x02\xc3\x28",
  };
  for (const std::string& body : garbage) {
    SCOPED_TRACE(absl::CHexEscape(body));
    ASSERT_OK_AND_ASSIGN(const std::string signature,
                         signer->Sign(absl::StrCat(kEnvelopeContext, body)));
    v1::SignedEnvelope signed_envelope;
    signed_envelope.set_envelope(body);
    signed_envelope.set_signature(signature);
    signed_envelope.set_key_id(KeyId(signer->public_key()));
    EXPECT_THAT(VerifyEnvelope(signed_envelope, ring, kLimit),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         "envelope: not a well-formed casebridge.v1.Envelope"));

    // The same garbage under a bad signature never reaches the parser.
    signed_envelope.set_signature(FlipBit(signature, 0));
    EXPECT_THAT(VerifyEnvelope(signed_envelope, ring, kLimit),
                StatusIs(absl::StatusCode::kUnauthenticated,
                         HasSubstr("signature: does not verify")));
  }
}

TEST(VerifyEnvelopeTest, RefusesOversizedEnvelopeBeforeAnySignatureWork) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  ASSERT_OK_AND_ASSIGN(
      v1::SignedEnvelope signed_envelope,
      SignEnvelope(SampleEnvelope(std::string(5000, 'x')), *signer));
  const size_t size = signed_envelope.envelope().size();

  EXPECT_OK(VerifyEnvelope(signed_envelope, ring, size).status());
  EXPECT_THAT(VerifyEnvelope(signed_envelope, ring, size - 1),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       absl::StrCat("envelope: ", size,
                                    " bytes exceeds the limit of ", size - 1)));

  // Size comes first: an unknown key and a bogus signature do not change the
  // answer, and neither does an empty ring.
  signed_envelope.set_key_id("ffffffffffffffff");
  signed_envelope.set_signature("not a signature");
  EXPECT_THAT(VerifyEnvelope(signed_envelope, KeyRing(), size - 1),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("exceeds the limit")));
}

// --- Receipts ----------------------------------------------------------------

TEST(EnvelopeReceiptTest, DevPkiKeysRoundTrip) {
  const auto pk = LoadSigner("pk/signing/envelope.key");
  const auto cn = LoadSigner("cn/signing/envelope.key");
  ASSERT_NE(pk, nullptr);
  ASSERT_NE(cn, nullptr);
  ASSERT_OK_AND_ASSIGN(const KeyRing ring,
                       KeyRing::FromPemFiles({Pki("cn/signing/envelope.pub")}));
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope sent,
                       SignEnvelope(SampleEnvelope("body"), *pk));
  const v1::Receipt receipt = ReceiptFor(sent);

  ASSERT_OK_AND_ASSIGN(const v1::SignedReceipt signed_receipt,
                       SignReceipt(receipt, *cn));
  EXPECT_EQ(signed_receipt.key_id(), KeyId(cn->public_key()));
  ASSERT_OK_AND_ASSIGN(const v1::Receipt verified,
                       VerifyReceipt(signed_receipt, ring));
  EXPECT_TRUE(Equal(verified, receipt)) << verified.DebugString();
  EXPECT_OK(CheckReceiptMatches(verified, sent, kCnGateway));
}

TEST(EnvelopeReceiptTest, RefusesEveryBitFlipOfTheReceiptBytes) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  v1::Receipt receipt;
  receipt.set_envelope_id("PK-E-1");
  receipt.set_receiver_audit_index(3);
  ASSERT_OK_AND_ASSIGN(const v1::SignedReceipt original,
                       SignReceipt(receipt, *signer));
  for (size_t bit = 0; bit < original.receipt().size() * 8; ++bit) {
    v1::SignedReceipt tampered = original;
    tampered.set_receipt(FlipBit(original.receipt(), bit));
    EXPECT_THAT(VerifyReceipt(tampered, ring),
                StatusIs(absl::StatusCode::kUnauthenticated,
                         absl::StrCat("signature: does not verify for key ",
                                      original.key_id())))
        << "bit " << bit;
  }
}

TEST(EnvelopeReceiptTest, RefusesUnknownKey) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const auto other = crypto::Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(const v1::SignedReceipt signed_receipt,
                       SignReceipt(v1::Receipt(), *other));
  EXPECT_THAT(VerifyReceipt(signed_receipt, RingOf({signer.get()})),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       absl::StrCat("key_id: unknown signing key ",
                                    KeyId(other->public_key()))));
}

TEST(EnvelopeReceiptTest, RefusesMoreThan64KiBBeforeAnySignatureWork) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  v1::Receipt receipt;
  receipt.set_receiver_gateway(std::string(kCnGateway));
  receipt.set_envelope_id(std::string(70000, 'x'));
  ASSERT_OK_AND_ASSIGN(v1::SignedReceipt signed_receipt,
                       SignReceipt(receipt, *signer));
  const size_t size = signed_receipt.receipt().size();
  ASSERT_GT(size, kMaxReceiptBytes);
  signed_receipt.clear_key_id();
  EXPECT_THAT(VerifyReceipt(signed_receipt, ring),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       absl::StrCat("receipt: ", size,
                                    " bytes exceeds the limit of 65536")));
}

TEST(EnvelopeReceiptTest, ChecksSignatureFirstAndParsesSecond) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  const std::string garbage = absl::StrCat("\x0f", crypto::RandomBytes(32));
  ASSERT_OK_AND_ASSIGN(const std::string signature,
                       signer->Sign(absl::StrCat(kReceiptContext, garbage)));
  v1::SignedReceipt signed_receipt;
  signed_receipt.set_receipt(garbage);
  signed_receipt.set_signature(signature);
  signed_receipt.set_key_id(KeyId(signer->public_key()));
  EXPECT_THAT(VerifyReceipt(signed_receipt, ring),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "receipt: not a well-formed casebridge.v1.Receipt"));
}

// --- Domain separation -------------------------------------------------------

TEST(EnvelopeDomainSeparationTest, EnvelopeSignatureDoesNotVerifyAsReceipt) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope signed_envelope,
                       SignEnvelope(SmallEnvelope(), *signer));
  v1::SignedReceipt as_receipt;
  as_receipt.set_receipt(signed_envelope.envelope());
  as_receipt.set_signature(signed_envelope.signature());
  as_receipt.set_key_id(signed_envelope.key_id());
  // The bytes parse as a Receipt too (same field numbers and types), so only
  // the context stops this.
  v1::Receipt parsed;
  ASSERT_TRUE(parsed.ParseFromString(as_receipt.receipt()));
  EXPECT_THAT(VerifyReceipt(as_receipt, ring),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("signature: does not verify")));
}

TEST(EnvelopeDomainSeparationTest, ReceiptSignatureDoesNotVerifyAsEnvelope) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  v1::Receipt receipt;
  receipt.set_envelope_id("PK-E-1");
  ASSERT_OK_AND_ASSIGN(const v1::SignedReceipt signed_receipt,
                       SignReceipt(receipt, *signer));
  v1::SignedEnvelope as_envelope;
  as_envelope.set_envelope(signed_receipt.receipt());
  as_envelope.set_signature(signed_receipt.signature());
  as_envelope.set_key_id(signed_receipt.key_id());
  EXPECT_THAT(VerifyEnvelope(as_envelope, ring, kLimit),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("signature: does not verify")));
}

// --- Key ring and rotation ---------------------------------------------------

TEST(EnvelopeKeyRingTest, OldAndNewKeysBothVerifyDuringRotation) {
  const auto old_key = crypto::Ed25519Signer::Generate();
  const auto new_key = crypto::Ed25519Signer::Generate();
  const KeyRing overlap = RingOf({old_key.get(), new_key.get()});
  EXPECT_EQ(overlap.key_ids(),
            (std::vector<std::string>{KeyId(old_key->public_key()),
                                      KeyId(new_key->public_key())}));
  for (const crypto::Ed25519Signer* key : {old_key.get(), new_key.get()}) {
    ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope signed_envelope,
                         SignEnvelope(SampleEnvelope("rotation"), *key));
    EXPECT_OK(VerifyEnvelope(signed_envelope, overlap, kLimit).status());
  }

  // Once the old key is withdrawn, its envelopes are refused by key id.
  const KeyRing after = RingOf({new_key.get()});
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope by_old,
                       SignEnvelope(SampleEnvelope("late"), *old_key));
  EXPECT_THAT(VerifyEnvelope(by_old, after, kLimit),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("key_id: unknown signing key")));
}

TEST(EnvelopeKeyRingTest, FindsTrustedKeysOnlyByExactKeyId) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const KeyRing ring = RingOf({signer.get()});
  const std::string key_id = KeyId(signer->public_key());
  const crypto::Ed25519Verifier* found = ring.Find(key_id);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->public_key(), signer->public_key());
  EXPECT_EQ(ring.Find(""), nullptr);
  EXPECT_EQ(ring.Find(key_id.substr(0, 15)), nullptr);
  EXPECT_EQ(ring.Find(absl::StrCat(key_id, "0")), nullptr);
  EXPECT_EQ(ring.Find(absl::AsciiStrToUpper(key_id)), nullptr);
}

TEST(EnvelopeKeyRingTest, AddingTheSameKeyTwiceIsAlreadyExists) {
  const auto signer = crypto::Ed25519Signer::Generate();
  KeyRing ring;
  ASSERT_OK(ring.Add(VerifierFor(*signer)));
  EXPECT_THAT(ring.Add(VerifierFor(*signer)),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr(KeyId(signer->public_key()))));
  EXPECT_EQ(ring.size(), 1u);
}

TEST(EnvelopeKeyRingTest, AddRefusesNull) {
  KeyRing ring;
  EXPECT_THAT(ring.Add(nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_EQ(ring.size(), 0u);
}

TEST(EnvelopeKeyRingTest, FromPemFilesLoadsEveryFile) {
  ASSERT_OK_AND_ASSIGN(const KeyRing ring,
                       KeyRing::FromPemFiles({Pki("pk/signing/envelope.pub"),
                                              Pki("cn/signing/envelope.pub")}));
  EXPECT_EQ(ring.size(), 2u);
  const auto cn = LoadSigner("cn/signing/envelope.key");
  ASSERT_NE(cn, nullptr);
  EXPECT_NE(ring.Find(KeyId(cn->public_key())), nullptr);
}

TEST(EnvelopeKeyRingTest, FromPemFilesNamesTheDuplicateFile) {
  const std::string path = Pki("pk/signing/envelope.pub");
  EXPECT_THAT(KeyRing::FromPemFiles({path, path}),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr(path)));
}

TEST(EnvelopeKeyRingTest, FromPemFilesRefusesBadInput) {
  EXPECT_THAT(KeyRing::FromPemFiles({}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  const std::string missing = Pki("pk/signing/no-such.pub");
  EXPECT_THAT(KeyRing::FromPemFiles({missing}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  const std::string private_key = Pki("pk/signing/envelope.key");
  EXPECT_THAT(
      KeyRing::FromPemFiles({private_key}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(private_key)));
}

// --- Matching a receipt to the envelope sent ---------------------------------

class EnvelopeReceiptMatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(sent_, SignEnvelope(SampleEnvelope("body"), *key_));
    receipt_ = ReceiptFor(sent_);
  }

  std::unique_ptr<crypto::Ed25519Signer> key_ =
      crypto::Ed25519Signer::Generate();
  v1::SignedEnvelope sent_;
  v1::Receipt receipt_;
};

TEST_F(EnvelopeReceiptMatchTest, AcceptsTheReceiptForTheEnvelopeSent) {
  EXPECT_EQ(receipt_.envelope_sha256(), crypto::Sha256(sent_.envelope()));
  EXPECT_OK(CheckReceiptMatches(receipt_, sent_, kCnGateway));
}

TEST_F(EnvelopeReceiptMatchTest, NamesEnvelopeIdWhenItDiffers) {
  receipt_.set_envelope_id("PK-E-somethingelse");
  EXPECT_THAT(CheckReceiptMatches(receipt_, sent_, kCnGateway),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::StartsWith("envelope_id: ")));
}

TEST_F(EnvelopeReceiptMatchTest, NamesEnvelopeSha256WhenItDiffers) {
  receipt_.set_envelope_sha256(FlipBit(receipt_.envelope_sha256(), 255));
  EXPECT_THAT(CheckReceiptMatches(receipt_, sent_, kCnGateway),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::StartsWith("envelope_sha256: ")));
  receipt_.clear_envelope_sha256();
  EXPECT_THAT(CheckReceiptMatches(receipt_, sent_, kCnGateway),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::StartsWith("envelope_sha256: ")));
}

TEST_F(EnvelopeReceiptMatchTest, NamesEnvelopeSha256WhenSentBytesDiffer) {
  // Same envelope id, other bytes: the receipt is for a different envelope.
  ASSERT_OK_AND_ASSIGN(const v1::SignedEnvelope other,
                       SignEnvelope(SampleEnvelope("other body"), *key_));
  EXPECT_THAT(CheckReceiptMatches(receipt_, other, kCnGateway),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::StartsWith("envelope_sha256: ")));
}

TEST_F(EnvelopeReceiptMatchTest, NamesReceiverGatewayWhenItDiffers) {
  EXPECT_THAT(CheckReceiptMatches(receipt_, sent_, kPkGateway),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::StartsWith("receiver_gateway: ")));
}

TEST_F(EnvelopeReceiptMatchTest, RefusesSentBytesThatAreNotAnEnvelope) {
  v1::SignedEnvelope broken = sent_;
  broken.set_envelope("\x0a\x05PK");
  EXPECT_THAT(CheckReceiptMatches(receipt_, broken, kCnGateway),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not a well-formed casebridge.v1.Envelope")));
}

TEST(EnvelopeDigestTest, IsSha256OfTheExactEnvelopeBytes) {
  v1::SignedEnvelope signed_envelope;
  signed_envelope.set_envelope("abc");
  signed_envelope.set_signature("ignored");
  signed_envelope.set_key_id("ignored");
  EXPECT_EQ(crypto::HexEncode(EnvelopeDigest(signed_envelope)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace casebridge::exchange
