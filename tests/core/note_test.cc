#include "core/note.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/crypto.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::note {
namespace {

using ::casebridge::testing::IsOk;
using ::casebridge::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::string_view kEmDash = "\xE2\x80\x94";

// The C2SP example: its verifier key and the signed note.
struct Example {
  std::string vkey;
  std::string note;
};

// tests/testdata/signed-note.txt: "#" comment lines, then "vkey:" and the key
// on the next line, then "note:" and the note up to the end of the file.
Example ReadExample() {
  const std::string path =
      absl::StrCat(CASEBRIDGE_SOURCE_DIR, "/tests/testdata/signed-note.txt");
  absl::StatusOr<std::string> file = crypto::ReadFile(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return {};
  const absl::string_view contents = *file;
  Example example;
  const size_t vkey = contents.find("\nvkey:\n");
  const size_t note = contents.find("\nnote:\n");
  EXPECT_NE(vkey, absl::string_view::npos) << path;
  EXPECT_NE(note, absl::string_view::npos) << path;
  if (vkey == absl::string_view::npos || note == absl::string_view::npos) {
    return {};
  }
  const size_t key_start = vkey + 7;
  example.vkey = std::string(
      contents.substr(key_start, contents.find('\n', key_start) - key_start));
  example.note = std::string(contents.substr(note + 7));
  return example;
}

// Parse, then Verify: the first error, or OK.
absl::Status ParseAndVerify(absl::string_view signed_note,
                            const VerifierKey& key) {
  absl::StatusOr<Note> note = Parse(signed_note);
  if (!note.ok()) return note.status();
  return Verify(*note, key);
}

// Base64 of a signature line's payload: key id (big-endian) and `bytes`.
std::string SignatureBase64(uint32_t key_id, absl::string_view bytes) {
  const std::string id = {
      static_cast<char>(key_id >> 24), static_cast<char>(key_id >> 16),
      static_cast<char>(key_id >> 8), static_cast<char>(key_id)};
  return absl::Base64Escape(absl::StrCat(id, bytes));
}

std::string SignatureLine(absl::string_view name, absl::string_view base64) {
  return absl::StrCat(kEmDash, " ", name, " ", base64, "\n");
}

// A well-formed signature line (68 bytes of payload) that verifies nothing.
std::string AnySignatureLine(absl::string_view name = "example.com/k") {
  return SignatureLine(name, SignatureBase64(0x01020304, std::string(64, 'x')));
}

std::string RandomRoot() { return crypto::RandomBytes(32); }

TEST(NoteExampleTest, ParsesAndVerifies) {
  const Example example = ReadExample();
  ASSERT_OK_AND_ASSIGN(const VerifierKey key, ParseVerifierKey(example.vkey));
  EXPECT_EQ(key.name, "example.com/foo");
  EXPECT_EQ(key.type, kTypeEd25519);
  EXPECT_EQ(key.key_id, 0x530d903au);
  EXPECT_EQ(FormatVerifierKey(key), example.vkey);

  ASSERT_OK_AND_ASSIGN(const Note note, Parse(example.note));
  EXPECT_EQ(note.text, "This is an example message.\n");
  ASSERT_EQ(note.signatures.size(), 1u);
  EXPECT_EQ(note.signatures[0].name, "example.com/foo");
  EXPECT_EQ(note.signatures[0].key_id, 0x530d903au);
  EXPECT_EQ(note.signatures[0].bytes.size(), crypto::kEd25519SignatureSize);
  EXPECT_OK(Verify(note, key));
  EXPECT_EQ(Format(note), example.note);
}

// The key id the example's vkey states is SHA-256(name || 0x0A || 0x01 ||
// key)[:4], recomputed here from the decoded key rather than trusted.
TEST(NoteExampleTest, KeyIdReproducesThePublishedOne) {
  const Example example = ReadExample();
  const size_t last_plus = example.vkey.rfind('+');
  ASSERT_NE(last_plus, std::string::npos);
  std::string decoded;
  ASSERT_TRUE(
      absl::Base64Unescape(example.vkey.substr(last_plus + 1), &decoded));
  ASSERT_EQ(decoded.size(), 33u);
  EXPECT_EQ(static_cast<uint8_t>(decoded[0]), kTypeEd25519);
  EXPECT_EQ(KeyId("example.com/foo", kTypeEd25519, decoded.substr(1)),
            0x530d903au);
  // The same key under another type or name has another id.
  EXPECT_NE(KeyId("example.com/foo", kTypeCosignatureV1, decoded.substr(1)),
            0x530d903au);
  EXPECT_NE(KeyId("example.com/fo", kTypeEd25519, decoded.substr(1)),
            0x530d903au);
}

// Every one-byte change of the note (text, blank line, signature line) must
// be refused by Parse or Verify: in particular no other spelling of the
// base64 may decode to the same signature.
TEST(NoteExampleTest, EveryChangedByteOfTheNoteFails) {
  const Example example = ReadExample();
  ASSERT_OK_AND_ASSIGN(const VerifierKey key, ParseVerifierKey(example.vkey));
  ASSERT_OK(ParseAndVerify(example.note, key));
  int tried = 0;
  for (size_t i = 0; i < example.note.size(); ++i) {
    std::vector<char> replacements = {static_cast<char>(example.note[i] ^ 1)};
    for (char c = 0x20; c < 0x7F; ++c) replacements.push_back(c);
    for (const char c : replacements) {
      if (c == example.note[i]) continue;
      std::string changed = example.note;
      changed[i] = c;
      ++tried;
      EXPECT_THAT(ParseAndVerify(changed, key), Not(IsOk()))
          << "byte " << i << " changed to 0x" << std::hex
          << static_cast<int>(static_cast<uint8_t>(c));
    }
    std::string removed = example.note;
    removed.erase(i, 1);
    EXPECT_THAT(ParseAndVerify(removed, key), Not(IsOk()))
        << "byte " << i << " removed";
  }
  EXPECT_GT(tried, 95 * 100);  // the loop did run over the whole note
}

TEST(NoteExampleTest, EveryChangedByteOfTheVerifierKeyFails) {
  const Example example = ReadExample();
  ASSERT_OK_AND_ASSIGN(const Note note, Parse(example.note));
  ASSERT_OK_AND_ASSIGN(const VerifierKey key, ParseVerifierKey(example.vkey));
  ASSERT_OK(Verify(note, key));
  const auto parse_and_verify = [&note](const std::string& vkey) {
    absl::StatusOr<VerifierKey> changed = ParseVerifierKey(vkey);
    if (!changed.ok()) return changed.status();
    return Verify(note, *changed);
  };
  for (size_t i = 0; i < example.vkey.size(); ++i) {
    std::vector<char> replacements = {static_cast<char>(example.vkey[i] ^ 1)};
    for (char c = 0x20; c < 0x7F; ++c) replacements.push_back(c);
    for (const char c : replacements) {
      if (c == example.vkey[i]) continue;
      std::string changed = example.vkey;
      changed[i] = c;
      EXPECT_THAT(parse_and_verify(changed), Not(IsOk()))
          << "byte " << i << " changed to " << c;
    }
    std::string removed = example.vkey;
    removed.erase(i, 1);
    EXPECT_THAT(parse_and_verify(removed), Not(IsOk()))
        << "byte " << i << " removed";
  }
}

TEST(VerifierKeyTest, FormatParseRoundTripForBothTypes) {
  const auto signer = crypto::Ed25519Signer::Generate();
  for (const uint8_t type : {kTypeEd25519, kTypeCosignatureV1}) {
    const VerifierKey key =
        MakeVerifierKey("log.example/a", type, signer->public_key());
    EXPECT_EQ(key.key_id, KeyId("log.example/a", type, signer->public_key()));
    ASSERT_OK_AND_ASSIGN(const VerifierKey parsed,
                         ParseVerifierKey(FormatVerifierKey(key)));
    EXPECT_EQ(parsed.name, key.name);
    EXPECT_EQ(parsed.type, type);
    EXPECT_EQ(parsed.public_key, signer->public_key());
    EXPECT_EQ(parsed.key_id, key.key_id);
  }
}

TEST(VerifierKeyTest, RefusesMalformedKeys) {
  const std::string pub = crypto::Ed25519Signer::Generate()->public_key();
  // A vkey of any type and key length, with key id 00000000.
  const auto vkey = [](absl::string_view name, uint8_t type,
                       absl::string_view key) {
    const std::string type_and_key =
        absl::StrCat(std::string(1, static_cast<char>(type)), key);
    return absl::StrCat(name, "+00000000+", absl::Base64Escape(type_and_key));
  };
  // Each row is malformed in one way; the message shows that the check for
  // that flaw caught it, not the key id check that would fail anyway.
  const VerifierKey good = MakeVerifierKey("a.example", kTypeEd25519, pub);
  const std::string good_vkey = FormatVerifierKey(good);
  const std::string good_hex = good_vkey.substr(10, 8);  // after "a.example+"
  const std::string good_b64 = good_vkey.substr(19);
  struct Case {
    std::string vkey;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", "no '+'"},
      {"a.example", "no '+'"},
      {absl::StrCat("a.example+", good_hex), "one '+'"},
      {absl::StrCat("+", good_hex, "+", good_b64), "key name is empty"},
      {absl::StrCat("a example+", good_hex, "+", good_b64), "space"},
      // The published key, its id in upper case.
      {"example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
       "hex"},
      {absl::StrCat("a.example+", good_hex.substr(1), "+", good_b64), "hex"},
      {absl::StrCat("a.example+0", good_hex, "+", good_b64), "hex"},
      {absl::StrCat("a.example+", good_hex, "+", good_b64, "+"), "base64"},
      // Base64Unescape skips white space; the canonical check does not.
      {absl::StrCat("a.example+", good_hex, "+", good_b64.substr(0, 20), " ",
                    good_b64.substr(20)),
       "base64"},
      {absl::StrCat("a.example+", good_hex, "+", good_b64, "\n"), "base64"},
      {absl::StrCat("a.example+", good_hex, "+"), "key is empty"},
      {vkey("a.example", 0x02, pub), "unknown type 0x02"},
      {vkey("a.example", 0x00, pub), "unknown type 0x00"},
      {vkey("a.example", kTypeEd25519, pub.substr(0, 31)), "31 bytes"},
      {vkey("a.example", kTypeEd25519, pub + "x"), "33 bytes"},
      {vkey("a.example", kTypeEd25519, pub), "does not match"},
      {absl::StrCat("b.example+", good_hex, "+", good_b64), "does not match"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(
        ParseVerifierKey(c.vkey),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.vkey;
  }
  EXPECT_OK(ParseVerifierKey(good_vkey));
}

TEST(NoteTest, SignFormatParseVerifyRoundTrip) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const VerifierKey key =
      MakeVerifierKey("log.example/a", kTypeEd25519, signer->public_key());
  // Blank lines inside the text are allowed: the last one separates.
  const std::string text = "first line\n\nthird line, après\n";
  ASSERT_OK_AND_ASSIGN(const Signature signature,
                       Sign(text, "log.example/a", *signer));
  EXPECT_EQ(signature.key_id, key.key_id);
  EXPECT_EQ(signature.bytes.size(), crypto::kEd25519SignatureSize);

  const std::string formatted = Format(Note{text, {signature}});
  EXPECT_EQ(formatted.substr(0, text.size() + 1), text + "\n");
  ASSERT_OK_AND_ASSIGN(const Note parsed, Parse(formatted));
  EXPECT_EQ(parsed.text, text);
  ASSERT_EQ(parsed.signatures.size(), 1u);
  EXPECT_EQ(parsed.signatures[0].name, "log.example/a");
  EXPECT_EQ(parsed.signatures[0].key_id, key.key_id);
  EXPECT_EQ(parsed.signatures[0].bytes, signature.bytes);
  EXPECT_OK(Verify(parsed, key));
  EXPECT_EQ(Format(parsed), formatted);
}

TEST(NoteTest, VerifyIgnoresSignaturesOfOtherKeys) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const auto other = crypto::Ed25519Signer::Generate();
  const std::string text = "hello\n";
  ASSERT_OK_AND_ASSIGN(const Signature mine, Sign(text, "me.example", *signer));
  ASSERT_OK_AND_ASSIGN(const Signature theirs,
                       Sign(text, "them.example", *other));
  // Same name as mine, another key: another key id, so not mine.
  ASSERT_OK_AND_ASSIGN(const Signature same_name,
                       Sign(text, "me.example", *other));
  const VerifierKey key =
      MakeVerifierKey("me.example", kTypeEd25519, signer->public_key());

  ASSERT_OK_AND_ASSIGN(const Note both,
                       Parse(Format(Note{text, {theirs, same_name, mine}})));
  EXPECT_OK(Verify(both, key));

  ASSERT_OK_AND_ASSIGN(const Note others_only,
                       Parse(Format(Note{text, {theirs, same_name}})));
  EXPECT_THAT(Verify(others_only, key),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("me.example")));
}

TEST(NoteTest, ForgedKeyIdIsUnauthenticated) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const auto forger = crypto::Ed25519Signer::Generate();
  const VerifierKey key =
      MakeVerifierKey("me.example", kTypeEd25519, signer->public_key());
  ASSERT_OK_AND_ASSIGN(Signature forged,
                       Sign("hello\n", "me.example", *forger));
  forged.key_id = key.key_id;
  ASSERT_OK_AND_ASSIGN(const Note note,
                       Parse(Format(Note{"hello\n", {forged}})));
  EXPECT_THAT(Verify(note, key), StatusIs(absl::StatusCode::kUnauthenticated,
                                          HasSubstr("does not verify")));

  // One good signature does not excuse a bad one by the same key.
  ASSERT_OK_AND_ASSIGN(const Signature good,
                       Sign("hello\n", "me.example", *signer));
  EXPECT_THAT(Verify(Note{"hello\n", {good, forged}}, key),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("")));
  EXPECT_OK(Verify(Note{"hello\n", {good}}, key));
}

TEST(NoteTest, ChangedTextIsUnauthenticated) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const VerifierKey key =
      MakeVerifierKey("me.example", kTypeEd25519, signer->public_key());
  ASSERT_OK_AND_ASSIGN(const Signature signature,
                       Sign("pay 10\n", "me.example", *signer));
  EXPECT_OK(Verify(Note{"pay 10\n", {signature}}, key));
  EXPECT_THAT(Verify(Note{"pay 11\n", {signature}}, key),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("")));
}

TEST(NoteTest, VerifyRefusesAKeyOfAnotherTypeOrInconsistent) {
  const auto signer = crypto::Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(const Signature signature,
                       Sign("hello\n", "me.example", *signer));
  const Note note{"hello\n", {signature}};
  EXPECT_THAT(
      Verify(note, MakeVerifierKey("me.example", kTypeCosignatureV1,
                                   signer->public_key())),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("type 0x04")));
  VerifierKey wrong_id =
      MakeVerifierKey("me.example", kTypeEd25519, signer->public_key());
  wrong_id.key_id ^= 1;
  EXPECT_THAT(Verify(note, wrong_id),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("key id does not match")));
}

TEST(NoteTest, SignRefusesWhatParseWouldRefuse) {
  const auto signer = crypto::Ed25519Signer::Generate();
  EXPECT_THAT(Sign("no newline", "a", *signer),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not end in a newline")));
  EXPECT_THAT(Sign("", "a", *signer),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not end in a newline")));
  EXPECT_THAT(
      Sign("a\r\n", "a", *signer),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("control")));
  EXPECT_THAT(Sign("\xff\n", "a", *signer),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
  EXPECT_THAT(Sign("a\n", "a+b", *signer),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'+'")));
  EXPECT_THAT(Sign("a\n", "", *signer),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(Cosign("a\n", "a b", 1, *signer),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("space")));
}

TEST(CosignatureTest, CosignVerifyReturnsTheTimestamp) {
  const auto witness = crypto::Ed25519Signer::Generate();
  const VerifierKey key =
      MakeVerifierKey("w.example", kTypeCosignatureV1, witness->public_key());
  const std::string text = FormatCheckpoint(Checkpoint{.origin = "log.example",
                                                       .size = 7,
                                                       .root = RandomRoot(),
                                                       .extensions = {}});
  for (const uint64_t timestamp :
       {uint64_t{0}, uint64_t{1679315147},
        static_cast<uint64_t>(std::numeric_limits<int64_t>::max())}) {
    ASSERT_OK_AND_ASSIGN(const Signature cosignature,
                         Cosign(text, "w.example", timestamp, *witness));
    EXPECT_EQ(cosignature.key_id, key.key_id);
    EXPECT_EQ(cosignature.bytes.size(), 8u + 64u);
    ASSERT_OK_AND_ASSIGN(const Note note,
                         Parse(Format(Note{text, {cosignature}})));
    ASSERT_OK_AND_ASSIGN(const uint64_t got, VerifyCosignature(note, key));
    EXPECT_EQ(got, timestamp);
  }
}

// The signed message is "cosignature/v1\ntime <t>\n" || text, checked here
// by verifying the Ed25519 part directly.
TEST(CosignatureTest, SignsTheSpecifiedMessage) {
  const auto witness = crypto::Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(
      const auto verifier,
      crypto::Ed25519Verifier::FromRawPublicKey(witness->public_key()));
  ASSERT_OK_AND_ASSIGN(const Signature cosignature,
                       Cosign("a\nb\n", "w.example", 1679315147, *witness));
  EXPECT_EQ(cosignature.bytes.substr(0, 8),
            std::string("\x00\x00\x00\x00\x64\x18\x50\xcb", 8));
  EXPECT_OK(verifier->Verify("cosignature/v1\ntime 1679315147\na\nb\n",
                             cosignature.bytes.substr(8)));
}

TEST(CosignatureTest, IsNotAnEd25519NoteSignatureAndViceVersa) {
  const auto signer = crypto::Ed25519Signer::Generate();
  const VerifierKey plain =
      MakeVerifierKey("k.example", kTypeEd25519, signer->public_key());
  const VerifierKey cosigner =
      MakeVerifierKey("k.example", kTypeCosignatureV1, signer->public_key());
  EXPECT_NE(plain.key_id, cosigner.key_id);
  ASSERT_OK_AND_ASSIGN(const Signature signature,
                       Sign("hello\n", "k.example", *signer));
  ASSERT_OK_AND_ASSIGN(const Signature cosignature,
                       Cosign("hello\n", "k.example", 5, *signer));

  EXPECT_THAT(Verify(Note{"hello\n", {cosignature}}, plain),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("k.example")));
  EXPECT_THAT(VerifyCosignature(Note{"hello\n", {signature}}, cosigner),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("k.example")));
  EXPECT_THAT(VerifyCosignature(Note{"hello\n", {signature}}, plain),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("type")));

  // Even with the key id relabelled, the bytes are not the other kind.
  Signature relabelled = cosignature;
  relabelled.key_id = plain.key_id;
  EXPECT_THAT(Verify(Note{"hello\n", {relabelled}}, plain),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("")));
}

TEST(CosignatureTest, OtherKeysOnlyIsNotFound) {
  const auto witness = crypto::Ed25519Signer::Generate();
  const auto other = crypto::Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(const Signature cosignature,
                       Cosign("hello\n", "w.example", 5, *other));
  EXPECT_THAT(VerifyCosignature(Note{"hello\n", {cosignature}},
                                MakeVerifierKey("w.example", kTypeCosignatureV1,
                                                witness->public_key())),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("w.example")));
}

TEST(CosignatureTest, ChangedTimestampOrTextOrKeyIsUnauthenticated) {
  const auto witness = crypto::Ed25519Signer::Generate();
  const auto forger = crypto::Ed25519Signer::Generate();
  const VerifierKey key =
      MakeVerifierKey("w.example", kTypeCosignatureV1, witness->public_key());
  ASSERT_OK_AND_ASSIGN(const Signature cosignature,
                       Cosign("hello\n", "w.example", 1000, *witness));
  ASSERT_OK(VerifyCosignature(Note{"hello\n", {cosignature}}, key).status());

  Signature later = cosignature;
  later.bytes[7] = static_cast<char>(later.bytes[7] + 1);
  EXPECT_THAT(VerifyCosignature(Note{"hello\n", {later}}, key),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("")));

  EXPECT_THAT(VerifyCosignature(Note{"hellO\n", {cosignature}}, key),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("")));

  ASSERT_OK_AND_ASSIGN(Signature forged,
                       Cosign("hello\n", "w.example", 1000, *forger));
  forged.key_id = key.key_id;
  EXPECT_THAT(VerifyCosignature(Note{"hello\n", {forged}}, key),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("")));

  Signature short_one = cosignature;
  short_one.bytes.pop_back();
  EXPECT_THAT(VerifyCosignature(Note{"hello\n", {short_one}}, key),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("71")));
}

// A timestamp above 2^63 - 1 is refused even when the Ed25519 signature
// over it is genuine.
TEST(CosignatureTest, TimestampAboveInt64MaxIsRefused) {
  const auto witness = crypto::Ed25519Signer::Generate();
  const VerifierKey key =
      MakeVerifierKey("w.example", kTypeCosignatureV1, witness->public_key());
  const uint64_t too_late = uint64_t{1} << 63;
  EXPECT_THAT(Cosign("hello\n", "w.example", too_late, *witness),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2^63")));
  ASSERT_OK_AND_ASSIGN(
      const std::string ed25519,
      witness->Sign("cosignature/v1\ntime 9223372036854775808\nhello\n"));
  Signature cosignature;
  cosignature.name = "w.example";
  cosignature.key_id = key.key_id;
  cosignature.bytes =
      absl::StrCat(std::string("\x80\0\0\0\0\0\0\0", 8), ed25519);
  EXPECT_THAT(VerifyCosignature(Note{"hello\n", {cosignature}}, key),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("2^63")));
}

TEST(CosignatureTest, SeveralByTheSameKeyReturnTheLatest) {
  const auto witness = crypto::Ed25519Signer::Generate();
  const VerifierKey key =
      MakeVerifierKey("w.example", kTypeCosignatureV1, witness->public_key());
  ASSERT_OK_AND_ASSIGN(const Signature first,
                       Cosign("hello\n", "w.example", 1000, *witness));
  ASSERT_OK_AND_ASSIGN(const Signature second,
                       Cosign("hello\n", "w.example", 2000, *witness));
  ASSERT_OK_AND_ASSIGN(
      const uint64_t got,
      VerifyCosignature(Note{"hello\n", {second, first}}, key));
  EXPECT_EQ(got, 2000u);
}

TEST(ParseTest, RefusesMalformedNotes) {
  const std::string sig = AnySignatureLine();
  const std::string b64 = SignatureBase64(0x01020304, std::string(64, 'x'));
  std::string many;
  for (int i = 0; i < 101; ++i) many += sig;
  // Standard base64 of these bytes has '+' and '/'; the URL-safe spelling
  // ('-' and '_') must not pass.
  std::string url_safe = SignatureBase64(0xfbffffff, "\xff\xfe");
  ASSERT_NE(url_safe.find_first_of("+/"), std::string::npos);
  for (char& ch : url_safe) {
    if (ch == '+') ch = '-';
    if (ch == '/') ch = '_';
  }
  struct Case {
    std::string label;
    std::string note;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"empty", "", "does not end in a newline"},
      {"no blank line", "hello\nworld\n" + sig, "no blank line"},
      {"text without final newline", "hello" + sig, "no blank line"},
      {"note without final newline",
       "hello\n\n" + sig.substr(0, sig.size() - 1),
       "does not end in a newline"},
      {"no signature lines", "hello\n\n", "no signature lines"},
      {"blank line after the signatures", "hello\n\n" + sig + "\n",
       "no signature lines"},
      {"hyphen for em dash", "hello\n\n- example.com/k " + b64 + "\n",
       "signature line 1: does not start with an em dash"},
      {"no space after em dash",
       absl::StrCat("hello\n\n", kEmDash, "example.com/k ", b64, "\n"),
       "does not start with an em dash"},
      {"second line not a signature", "hello\n\n" + sig + "by me\n",
       "signature line 2: does not start with an em dash"},
      {"no space before the signature",
       absl::StrCat("hello\n\n", kEmDash, " example.com/k\n"),
       "no space between key name and signature"},
      {"name with '+'", "hello\n\n" + AnySignatureLine("a+b"), "'+'"},
      {"empty name", absl::StrCat("hello\n\n", kEmDash, "  ", b64, "\n"),
       "key name is empty"},
      {"name with a Unicode space",
       "hello\n\n" + AnySignatureLine("a\xC2\xA0"
                                      "b"),
       "contains a space"},
      {"name with an ideographic space",
       "hello\n\n" + AnySignatureLine("a\xE3\x80\x80"
                                      "b"),
       "contains a space"},
      {"two spaces before the signature",
       absl::StrCat("hello\n\n", kEmDash, " a  ", b64, "\n"), "base64"},
      {"trailing space", absl::StrCat("hello\n\n", kEmDash, " a ", b64, " \n"),
       "base64"},
      {"empty signature", absl::StrCat("hello\n\n", kEmDash, " a \n"),
       "0 bytes"},
      {"signature of 4 bytes",
       "hello\n\n" + SignatureLine("a", SignatureBase64(1, "")), "4 bytes"},
      {"signature not base64", "hello\n\n" + SignatureLine("a", "!!!!!!!!"),
       "base64"},
      {"signature without padding",
       "hello\n\n" + SignatureLine("a", b64.substr(0, b64.size() - 1)),
       "base64"},
      // The 68 bytes end in "xx", canonically "eHg="; "eHh=" has a non-zero
      // unused bit and decodes to the same bytes.
      {"signature with non-zero trailing bits",
       "hello\n\n" + SignatureLine("a", b64.substr(0, b64.size() - 2) + "h="),
       "base64"},
      {"URL-safe base64", "hello\n\n" + SignatureLine("a", url_safe),
       "not canonical base64"},
      {"101 signatures", "hello\n\n" + many, "more than 100 signatures"},
      {"invalid UTF-8 in text", "hel\xFFlo\n\n" + sig, "not valid UTF-8"},
      {"overlong UTF-8", "hel\xC0\xAFlo\n\n" + sig, "not valid UTF-8"},
      {"invalid UTF-8 in name", "hello\n\n" + AnySignatureLine("a\xE2\x80"),
       "not valid UTF-8"},
      {"carriage return", "hello\r\n\n" + sig, "control character 0x0d"},
      {"tab", "hel\tlo\n\n" + sig, "control character 0x09"},
      {"NUL", std::string("hel\0lo\n\n", 8) + sig, "control character 0x00"},
      {"control character in a signature line",
       "hello\n\n" + AnySignatureLine("a\x1b"), "control character 0x1b"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    EXPECT_THAT(Parse(c.note), StatusIs(absl::StatusCode::kInvalidArgument,
                                        HasSubstr(c.message)));
  }
}

TEST(ParseTest, AcceptsTheLimitsOfTheFormat) {
  const std::string sig = AnySignatureLine();
  std::string hundred;
  for (int i = 0; i < 100; ++i) hundred += sig;
  ASSERT_OK_AND_ASSIGN(const Note note, Parse("hello\n\n" + hundred));
  EXPECT_EQ(note.signatures.size(), 100u);

  // The last blank line separates: earlier ones belong to the text, even
  // one that is followed by a line that looks like a signature.
  const std::string text = absl::StrCat("a\n\n", sig, "\nb\n");
  ASSERT_OK_AND_ASSIGN(const Note tricky, Parse(text + "\n" + sig));
  EXPECT_EQ(tricky.text, text);
  EXPECT_EQ(tricky.signatures.size(), 1u);

  // A 5-byte payload is the shortest allowed; DEL and non-ASCII are not
  // control characters in the spec's sense (below U+0020).
  ASSERT_OK_AND_ASSIGN(
      const Note shortest,
      Parse("\x7f caf\xC3\xA9\n\n" +
            SignatureLine("\xC3\xA9", SignatureBase64(9, "z"))));
  ASSERT_EQ(shortest.signatures.size(), 1u);
  EXPECT_EQ(shortest.signatures[0].key_id, 9u);
  EXPECT_EQ(shortest.signatures[0].bytes, "z");
}

TEST(CheckpointTest, FormatParseRoundTrip) {
  const std::string root = RandomRoot();
  const Checkpoint plain{.origin = "log.example/a",
                         .size = 20852163,
                         .root = root,
                         .extensions = {}};
  const std::string text = FormatCheckpoint(plain);
  EXPECT_EQ(text, absl::StrCat("log.example/a\n20852163\n",
                               absl::Base64Escape(root), "\n"));
  ASSERT_OK_AND_ASSIGN(const Checkpoint parsed, ParseCheckpoint(text));
  EXPECT_EQ(parsed, plain);

  const Checkpoint extended{.origin = "log.example/a",
                            .size = 0,
                            .root = root,
                            .extensions = {"ext one", "ext two"}};
  ASSERT_OK_AND_ASSIGN(const Checkpoint parsed_extended,
                       ParseCheckpoint(FormatCheckpoint(extended)));
  EXPECT_EQ(parsed_extended, extended);

  const Checkpoint largest{.origin = "o",
                           .size = std::numeric_limits<uint64_t>::max(),
                           .root = root,
                           .extensions = {}};
  ASSERT_OK_AND_ASSIGN(const Checkpoint parsed_largest,
                       ParseCheckpoint(FormatCheckpoint(largest)));
  EXPECT_EQ(parsed_largest, largest);
}

// The tlog-checkpoint example body, as signed.
TEST(CheckpointTest, ParsesThePublishedExampleBody) {
  ASSERT_OK_AND_ASSIGN(
      const Checkpoint checkpoint,
      ParseCheckpoint("example.com/behind-the-sofa\n20852163\n"
                      "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"));
  EXPECT_EQ(checkpoint.origin, "example.com/behind-the-sofa");
  EXPECT_EQ(checkpoint.size, 20852163u);
  EXPECT_EQ(crypto::HexEncode(checkpoint.root).substr(0, 8), "0ac5186a");
  EXPECT_TRUE(checkpoint.extensions.empty());
}

TEST(CheckpointTest, RefusesMalformedBodies) {
  const std::string root = absl::Base64Escape(std::string(32, '\x11'));
  const std::string root31 = absl::Base64Escape(std::string(31, '\x11'));
  const std::string root33 = absl::Base64Escape(std::string(33, '\x11'));
  struct Case {
    std::string body;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"o\n01\n" + root + "\n",
       "checkpoint line 2: size \"01\" has a leading zero"},
      {"o\n00\n" + root + "\n", "leading zero"},
      {"o\n+1\n" + root + "\n", "size \"+1\" is not a decimal number"},
      {"o\n-1\n" + root + "\n", "size \"-1\" is not a decimal number"},
      {"o\n 1\n" + root + "\n", "not a decimal number"},
      {"o\n1.0\n" + root + "\n", "not a decimal number"},
      {"o\n0x10\n" + root + "\n", "not a decimal number"},
      {"o\n18446744073709551616\n" + root + "\n", "does not fit in 64 bits"},
      {"o\n99999999999999999999\n" + root + "\n", "does not fit in 64 bits"},
      {"o\n\n" + root + "\n", "checkpoint line 2: size is empty"},
      {"\n1\n" + root + "\n", "checkpoint line 1: origin is empty"},
      {"o\n1\n" + root31 + "\n", "checkpoint line 3: root hash is 31 bytes"},
      {"o\n1\n" + root33 + "\n", "checkpoint line 3: root hash is 33 bytes"},
      {"o\n1\n\n", "checkpoint line 3: root hash is 0 bytes"},
      {"o\n1\n" + root.substr(0, root.size() - 1) + "\n",
       "line 3: root hash is not canonical base64"},
      {"o\n1\n" + root.substr(0, root.size() - 2) + "F=\n",
       "line 3: root hash is not canonical base64"},
      {"o\n1\n*" + root.substr(1) + "\n", "not canonical base64"},
      {"o\n1\n" + root, "does not end in a newline"},
      {"o\n1\n" + root + "\next", "does not end in a newline"},
      {"o\n1\n" + root + "\n\n", "checkpoint line 4: extension line is empty"},
      {"o\n1\n" + root + "\nx\n\ny\n", "checkpoint line 5: extension line"},
      {"o\n1\n", "2 lines"},
      {"", "does not end in a newline"},
      {"o\n1\r\n" + root + "\n", "control character"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(
        ParseCheckpoint(c.body),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.body;
  }
}

// End to end: a log signs a checkpoint, a witness cosigns it, a client
// parses the note and checks both and the body.
TEST(CheckpointTest, SignedAndCosignedCheckpointNote) {
  const auto log = crypto::Ed25519Signer::Generate();
  const auto witness = crypto::Ed25519Signer::Generate();
  const Checkpoint checkpoint{.origin = "pk.example/audit",
                              .size = 42,
                              .root = RandomRoot(),
                              .extensions = {}};
  const std::string text = FormatCheckpoint(checkpoint);
  ASSERT_OK_AND_ASSIGN(const Signature signature,
                       Sign(text, "pk.example/audit", *log));
  ASSERT_OK_AND_ASSIGN(
      const Signature cosignature,
      Cosign(text, "cn.example/witness", 1700000000, *witness));
  const std::string signed_note = Format(Note{text, {signature, cosignature}});

  ASSERT_OK_AND_ASSIGN(const Note note, Parse(signed_note));
  EXPECT_OK(Verify(note, MakeVerifierKey("pk.example/audit", kTypeEd25519,
                                         log->public_key())));
  ASSERT_OK_AND_ASSIGN(
      const uint64_t time,
      VerifyCosignature(
          note, MakeVerifierKey("cn.example/witness", kTypeCosignatureV1,
                                witness->public_key())));
  EXPECT_EQ(time, 1700000000u);
  ASSERT_OK_AND_ASSIGN(const Checkpoint parsed, ParseCheckpoint(note.text));
  EXPECT_EQ(parsed, checkpoint);
}

}  // namespace
}  // namespace casebridge::note
