#include "core/public_keys.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_replace.h"
#include "core/audit_entry.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/note.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::keys {
namespace {

using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::Pki;
using ::casebridge::testing::StatusIs;
using ::casebridge::testing::TestPkiDir;
using ::casebridge::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string RawKey(const std::string& pem_path) {
  auto verifier = crypto::Ed25519Verifier::FromPemFile(pem_path);
  EXPECT_OK(verifier);
  return verifier.ok() ? (*verifier)->public_key() : "";
}

// A keys file in a fresh folder, naming the test PKI's keys by absolute
// path, with `extra` appended to the [pk] table.
std::string KeysFile(const std::string& extra_pk = "",
                     const std::string& extra_top = "") {
  const std::string dir = NewTempDir("keys");
  std::string text = extra_top;
  for (const std::string c : {"pk", "cn"}) {
    text += "[" + c + "]\n";
    for (const std::string k : {"envelope", "checkpoint", "witness"}) {
      text +=
          k + "_public_key = \"" + Pki(c + "/signing/" + k + ".pub") + "\"\n";
    }
    if (c == "pk") text += extra_pk;
  }
  return WriteFile(dir + "/keys.toml", text);
}

TEST(PublicKeysTest, LoadsTheDevPkiFileWithKeysNamedForTheirRoles) {
  ASSERT_OK_AND_ASSIGN(PublicKeys keys,
                       LoadPublicKeys(Pki("public-keys.toml")));

  EXPECT_EQ(keys.pk.country, v1::COUNTRY_PK);
  EXPECT_EQ(keys.cn.country, v1::COUNTRY_CN);
  for (const std::string c : {"pk", "cn"}) {
    const GatewayKeys& g = c == "pk" ? keys.pk : keys.cn;
    SCOPED_TRACE(c);
    // Envelope key: found in the ring under its key id.
    const std::string envelope = RawKey(Pki(c + "/signing/envelope.pub"));
    ASSERT_EQ(g.envelope.size(), 1u);
    ASSERT_NE(g.envelope.Find(exchange::KeyId(envelope)), nullptr);
    EXPECT_EQ(g.envelope.Find(exchange::KeyId(envelope))->public_key(),
              envelope);
    // Checkpoint key: the log's origin name, plain Ed25519 type.
    EXPECT_EQ(g.checkpoint.name, c + ".casebridge/audit");
    EXPECT_EQ(g.checkpoint.type, note::kTypeEd25519);
    EXPECT_EQ(g.checkpoint.public_key,
              RawKey(Pki(c + "/signing/checkpoint.pub")));
    EXPECT_EQ(g.checkpoint.key_id,
              note::KeyId(g.checkpoint.name, note::kTypeEd25519,
                          g.checkpoint.public_key));
    // Witness key: the witness name, cosignature/v1 type.
    EXPECT_EQ(g.witness.name, c + ".casebridge/witness");
    EXPECT_EQ(g.witness.type, note::kTypeCosignatureV1);
    EXPECT_EQ(g.witness.public_key, RawKey(Pki(c + "/signing/witness.pub")));
    EXPECT_EQ(g.witness.key_id,
              note::KeyId(g.witness.name, note::kTypeCosignatureV1,
                          g.witness.public_key));
  }
  EXPECT_NE(keys.pk.checkpoint.public_key, keys.cn.checkpoint.public_key);
  EXPECT_EQ(keys.For(v1::COUNTRY_PK), &keys.pk);
  EXPECT_EQ(keys.For(v1::COUNTRY_CN), &keys.cn);
  EXPECT_EQ(keys.For(v1::COUNTRY_UNSPECIFIED), nullptr);
}

TEST(PublicKeysTest, ResolvesRelativePathsAgainstTheFilesFolder) {
  const std::string dir = NewTempDir("relative");
  std::string text;
  for (const std::string c : {"pk", "cn"}) {
    text += "[" + c + "]\n";
    for (const std::string k : {"envelope", "checkpoint", "witness"}) {
      ASSERT_OK_AND_ASSIGN(const std::string pem,
                           crypto::ReadFile(Pki(c + "/signing/" + k + ".pub")));
      WriteFile(dir + "/keys/" + c + "-" + k + ".pub", pem);
      text += k + "_public_key = \"keys/" + c + "-" + k + ".pub\"\n";
    }
  }
  WriteFile(dir + "/conf/public-keys.toml",
            absl::StrReplaceAll(text, {{"\"keys/", "\"../keys/"}}));
  ASSERT_OK_AND_ASSIGN(PublicKeys keys,
                       LoadPublicKeys(dir + "/conf/public-keys.toml"));
  EXPECT_EQ(keys.cn.witness.public_key, RawKey(Pki("cn/signing/witness.pub")));
}

TEST(PublicKeysTest, PreviousEnvelopeKeysStayTrustedOffline) {
  const std::string dir = NewTempDir("previous-keys");
  // Any other Ed25519 public key stands in for the retired envelope key.
  ASSERT_OK_AND_ASSIGN(const std::string old_pem,
                       crypto::ReadFile(Pki("pk/signing/checkpoint.pub")));
  WriteFile(dir + "/pk-envelope-2026.pub", old_pem);
  ASSERT_OK_AND_ASSIGN(std::string text,
                       crypto::ReadFile(Pki("public-keys.toml")));
  text = absl::StrReplaceAll(text, {{"\"pk/", "\"" + TestPkiDir() + "/pk/"},
                                    {"\"cn/", "\"" + TestPkiDir() + "/cn/"}});
  text = absl::StrReplaceAll(
      text, {{"[cn]",
              "previous_envelope_public_keys = [\"pk-envelope-2026.pub\"]"
              "\n[cn]"}});
  WriteFile(dir + "/public-keys.toml", text);
  ASSERT_OK_AND_ASSIGN(PublicKeys keys,
                       LoadPublicKeys(dir + "/public-keys.toml"));
  EXPECT_EQ(keys.pk.envelope.size(), 2u);
  EXPECT_NE(keys.pk.envelope.Find(
                exchange::KeyId(RawKey(Pki("pk/signing/checkpoint.pub")))),
            nullptr);
  EXPECT_EQ(keys.cn.envelope.size(), 1u);

  WriteFile(dir + "/bad.toml",
            absl::StrReplaceAll(text, {{"\"pk-envelope-2026.pub\"", "3"}}));
  EXPECT_THAT(LoadPublicKeys(dir + "/bad.toml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("pk.previous_envelope_public_keys[0]: must "
                                 "be a file name")));
}

TEST(PublicKeysTest, PreviousCheckpointAndWitnessKeysAreListedOnBothSides) {
  const std::string dir = NewTempDir("previous-note-keys");
  // Other Ed25519 public keys of the PKI stand in for the retired ones.
  for (const auto& [name, stand_in] :
       {std::pair<std::string, std::string>{"pk-checkpoint-2026",
                                            "cn/signing/envelope.pub"},
        {"pk-witness-2026", "pk/signing/envelope.pub"},
        {"cn-witness-2026", "cn/signing/checkpoint.pub"}}) {
    ASSERT_OK_AND_ASSIGN(const std::string pem,
                         crypto::ReadFile(Pki(stand_in)));
    WriteFile(dir + "/" + name + ".pub", pem);
  }
  ASSERT_OK_AND_ASSIGN(std::string text,
                       crypto::ReadFile(Pki("public-keys.toml")));
  text = absl::StrReplaceAll(text, {{"\"pk/", "\"" + TestPkiDir() + "/pk/"},
                                    {"\"cn/", "\"" + TestPkiDir() + "/cn/"}});
  text = absl::StrReplaceAll(
      text, {{"[cn]",
              "previous_checkpoint_public_keys = [\"pk-checkpoint-2026.pub\"]\n"
              "previous_witness_public_keys = [\"pk-witness-2026.pub\"]\n"
              "[cn]"}});
  text += "previous_witness_public_keys = [\"cn-witness-2026.pub\"]\n";
  WriteFile(dir + "/public-keys.toml", text);
  ASSERT_OK_AND_ASSIGN(PublicKeys keys,
                       LoadPublicKeys(dir + "/public-keys.toml"));

  // Same name and type as the current key, so that key ids match the
  // signature lines the gateway made before the rotation.
  ASSERT_EQ(keys.pk.previous_checkpoint.size(), 1u);
  const note::VerifierKey& old_checkpoint = keys.pk.previous_checkpoint[0];
  EXPECT_EQ(old_checkpoint.name, "pk.casebridge/audit");
  EXPECT_EQ(old_checkpoint.type, note::kTypeEd25519);
  EXPECT_EQ(old_checkpoint.public_key, RawKey(dir + "/pk-checkpoint-2026.pub"));
  EXPECT_EQ(old_checkpoint.key_id,
            note::KeyId("pk.casebridge/audit", note::kTypeEd25519,
                        old_checkpoint.public_key));
  ASSERT_EQ(keys.pk.previous_witness.size(), 1u);
  EXPECT_EQ(keys.pk.previous_witness[0].name, "pk.casebridge/witness");
  EXPECT_EQ(keys.pk.previous_witness[0].type, note::kTypeCosignatureV1);
  EXPECT_TRUE(keys.cn.previous_checkpoint.empty());
  ASSERT_EQ(keys.cn.previous_witness.size(), 1u);
  EXPECT_EQ(keys.cn.previous_witness[0].public_key,
            RawKey(dir + "/cn-witness-2026.pub"));

  // Current first, then the previous ones, all trusted offline.
  const std::vector<TrustedNoteKey> checkpoint_keys = keys.pk.CheckpointKeys();
  ASSERT_EQ(checkpoint_keys.size(), 2u);
  EXPECT_EQ(checkpoint_keys[0].key.public_key, keys.pk.checkpoint.public_key);
  EXPECT_EQ(checkpoint_keys[1].key.public_key, old_checkpoint.public_key);
  EXPECT_EQ(checkpoint_keys[1].trusted_until, absl::InfiniteFuture());
  EXPECT_EQ(keys.cn.WitnessKeys().size(), 2u);
  EXPECT_EQ(keys.cn.CheckpointKeys().size(), 1u);
}

TEST(PublicKeysTest, RefusesBadPreviousCheckpointAndWitnessKeysByName) {
  const std::string not_a_list =
      KeysFile("previous_checkpoint_public_keys = \"old.pub\"\n");
  EXPECT_THAT(
      LoadPublicKeys(not_a_list),
      StatusIs(absl::StatusCode::kInvalidArgument,
               not_a_list + ": pk.previous_checkpoint_public_keys: must be a "
                            "list of file names"));
  const std::string not_a_name =
      KeysFile("previous_witness_public_keys = [\"\"]\n");
  EXPECT_THAT(
      LoadPublicKeys(not_a_name),
      StatusIs(absl::StatusCode::kInvalidArgument,
               not_a_name + ": pk.previous_witness_public_keys[0]: must be a "
                            "file name"));
  const std::string missing =
      KeysFile("previous_witness_public_keys = [\"/nowhere/old.pub\"]\n");
  EXPECT_THAT(
      LoadPublicKeys(missing),
      StatusIs(
          absl::StatusCode::kNotFound,
          AllOf(StartsWith(missing + ": pk.previous_witness_public_keys[0]: "),
                HasSubstr("/nowhere/old.pub"))));
  // The current key again is no previous key.
  const std::string current =
      KeysFile("previous_checkpoint_public_keys = [\"" +
               Pki("pk/signing/checkpoint.pub") + "\"]\n");
  EXPECT_THAT(
      LoadPublicKeys(current),
      StatusIs(
          absl::StatusCode::kAlreadyExists,
          HasSubstr("pk.previous_checkpoint_public_keys[0]: key " +
                    exchange::KeyId(RawKey(Pki("pk/signing/checkpoint.pub"))) +
                    " is listed already")));
}

// Checkpoints of one log signed under an old and a new key, checked against
// both with and without an overlap.
class NoteKeysTest : public ::testing::Test {
 protected:
  NoteKeysTest()
      : old_key_(crypto::Ed25519Signer::Generate()),
        new_key_(crypto::Ed25519Signer::Generate()),
        other_key_(crypto::Ed25519Signer::Generate()) {}

  note::Note Signed(const crypto::Ed25519Signer& key) const {
    note::Note out;
    out.text = note::FormatCheckpoint(
        {audit::LogOrigin("PK"), 7, std::string(32, 'r'), {}});
    auto signature = note::Sign(out.text, audit::LogOrigin("PK"), key);
    EXPECT_OK(signature);
    if (signature.ok()) out.signatures.push_back(*signature);
    return out;
  }

  note::Note Cosigned(const crypto::Ed25519Signer& key, uint64_t time) const {
    note::Note out = Signed(*new_key_);
    auto cosignature =
        note::Cosign(out.text, audit::WitnessName("CN"), time, key);
    EXPECT_OK(cosignature);
    if (cosignature.ok()) out.signatures.push_back(*cosignature);
    return out;
  }

  TrustedNoteKey Key(const crypto::Ed25519Signer& key, absl::Time until,
                     uint8_t type = note::kTypeEd25519) const {
    const std::string name = type == note::kTypeEd25519
                                 ? audit::LogOrigin("PK")
                                 : audit::WitnessName("CN");
    return {note::MakeVerifierKey(name, type, key.public_key()), until};
  }

  const absl::Time now_ = absl::FromUnixSeconds(1800000000);
  std::unique_ptr<crypto::Ed25519Signer> old_key_;
  std::unique_ptr<crypto::Ed25519Signer> new_key_;
  std::unique_ptr<crypto::Ed25519Signer> other_key_;
};

TEST_F(NoteKeysTest, APreviousKeyVerifiesUntilItsTimeAndNotAfter) {
  const std::vector<TrustedNoteKey> keys = {
      Key(*new_key_, absl::InfiniteFuture()),
      Key(*old_key_, now_ + absl::Hours(1))};
  ASSERT_OK_AND_ASSIGN(const TrustedNoteKey* by_new,
                       VerifyNote(Signed(*new_key_), keys, now_));
  EXPECT_EQ(by_new, &keys[0]);
  ASSERT_OK_AND_ASSIGN(const TrustedNoteKey* by_old,
                       VerifyNote(Signed(*old_key_), keys, now_));
  EXPECT_EQ(by_old, &keys[1]);
  // At its time still trusted; a second later not.
  EXPECT_OK(VerifyNote(Signed(*old_key_), keys, now_ + absl::Hours(1)));
  EXPECT_THAT(
      VerifyNote(Signed(*old_key_), keys,
                 now_ + absl::Hours(1) + absl::Seconds(1)),
      StatusIs(absl::StatusCode::kUnauthenticated,
               AllOf(HasSubstr("pk.casebridge/audit"),
                     HasSubstr("was trusted until 2027-01-15T09:00:00Z"))));
  // Offline (InfinitePast) every listed key is trusted.
  EXPECT_OK(VerifyNote(Signed(*old_key_), keys, absl::InfinitePast()));
}

TEST_F(NoteKeysTest, AnUnlistedKeyIsNotFoundNamingEveryKeyId) {
  const std::vector<TrustedNoteKey> keys = {
      Key(*new_key_, absl::InfiniteFuture()),
      Key(*old_key_, absl::InfiniteFuture())};
  char old_id[9];
  snprintf(old_id, sizeof(old_id), "%08x", keys[1].key.key_id);
  EXPECT_THAT(VerifyNote(Signed(*other_key_), keys, now_),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("no signature by key"),
                             HasSubstr(std::string("nor by previous key id ") +
                                       old_id))));
  // With the current key alone, note::Verify's own message.
  EXPECT_THAT(
      VerifyNote(Signed(*other_key_), {keys[0]}, now_),
      StatusIs(absl::StatusCode::kNotFound, Not(HasSubstr("previous"))));
  EXPECT_THAT(VerifyNote(Signed(*new_key_), {}, now_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("key")));
}

TEST_F(NoteKeysTest, ABadLineByAListedKeyRefusesTheNote) {
  // A line under the old key's id whose signature is the new key's: the
  // note is refused even though a valid line by the new key is there.
  note::Note forged = Signed(*new_key_);
  note::Signature bad = forged.signatures[0];
  bad.key_id = note::KeyId(audit::LogOrigin("PK"), note::kTypeEd25519,
                           old_key_->public_key());
  forged.signatures.push_back(bad);
  const std::vector<TrustedNoteKey> keys = {
      Key(*new_key_, absl::InfiniteFuture()),
      Key(*old_key_, absl::InfiniteFuture())};
  EXPECT_THAT(VerifyNote(forged, keys, now_),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("does not verify")));
}

TEST_F(NoteKeysTest, CosignaturesByAPreviousWitnessKeyVerifyDuringTheOverlap) {
  const std::vector<TrustedNoteKey> keys = {
      Key(*new_key_, absl::InfiniteFuture(), note::kTypeCosignatureV1),
      Key(*old_key_, now_, note::kTypeCosignatureV1)};
  ASSERT_OK_AND_ASSIGN(
      const NoteCosignature by_old,
      VerifyNoteCosignature(Cosigned(*old_key_, 42), keys, now_));
  EXPECT_EQ(by_old.key, &keys[1]);
  EXPECT_EQ(by_old.timestamp, 42u);
  EXPECT_THAT(VerifyNoteCosignature(Cosigned(*old_key_, 42), keys,
                                    now_ + absl::Seconds(1)),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("was trusted until")));
  EXPECT_THAT(VerifyNoteCosignature(Cosigned(*other_key_, 42), keys, now_),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("cn.casebridge/witness")));
  ASSERT_OK_AND_ASSIGN(const NoteCosignature by_new,
                       VerifyNoteCosignature(Cosigned(*new_key_, 43), keys,
                                             now_ + absl::Hours(1)));
  EXPECT_EQ(by_new.key, &keys[0]);
  EXPECT_EQ(by_new.timestamp, 43u);
}

TEST(PublicKeysTest, RefusesAnUnknownKeyByItsDottedName) {
  const std::string path = KeysFile("envelope_key = \"x.pub\"\n");
  EXPECT_THAT(LoadPublicKeys(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       path + ": pk.envelope_key: unknown key"));
}

TEST(PublicKeysTest, RefusesAnUnknownTable) {
  const std::string path = KeysFile("", "[in]\nenvelope_public_key = \"\"\n");
  EXPECT_THAT(LoadPublicKeys(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                             path + ": in: unknown key"));
}

TEST(PublicKeysTest, RefusesAMissingKeyAndAMissingTable) {
  const std::string dir = NewTempDir("missing");
  const std::string no_cn = WriteFile(
      dir + "/no-cn.toml",
      "[pk]\nenvelope_public_key = \"" + Pki("pk/signing/envelope.pub") +
          "\"\ncheckpoint_public_key = \"" + Pki("pk/signing/checkpoint.pub") +
          "\"\nwitness_public_key = \"" + Pki("pk/signing/witness.pub") +
          "\"\n");
  EXPECT_THAT(LoadPublicKeys(no_cn),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       no_cn + ": cn: section is required"));
  const std::string no_witness = WriteFile(
      dir + "/no-witness.toml", "[pk]\nenvelope_public_key = \"" +
                                    Pki("pk/signing/envelope.pub") +
                                    "\"\ncheckpoint_public_key = \"" +
                                    Pki("pk/signing/checkpoint.pub") + "\"\n");
  EXPECT_THAT(LoadPublicKeys(no_witness),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       no_witness + ": pk.witness_public_key: is required"));
}

TEST(PublicKeysTest, MissingFileIsNotFoundNamingIt) {
  const std::string path = NewTempDir("absent") + "/public-keys.toml";
  EXPECT_THAT(LoadPublicKeys(path),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST(PublicKeysTest, MissingKeyFileNamesTheKeyAndThePath) {
  const std::string dir = NewTempDir("absent-pem");
  const std::string path = WriteFile(
      dir + "/keys.toml",
      absl::StrReplaceAll(
          *crypto::ReadFile(KeysFile()),
          {{Pki("cn/signing/checkpoint.pub"), dir + "/nowhere.pub"}}));
  EXPECT_THAT(LoadPublicKeys(path),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(StartsWith(path + ": cn.checkpoint_public_key: "),
                             HasSubstr(dir + "/nowhere.pub"))));
}

TEST(PublicKeysTest, RefusesAFileThatIsNotAnEd25519PublicKey) {
  const std::string dir = NewTempDir("bad-pem");
  const std::string garbage = WriteFile(dir + "/garbage.pub", "not a key\n");
  const std::string path = WriteFile(
      dir + "/keys.toml",
      absl::StrReplaceAll(
          *crypto::ReadFile(KeysFile()),
          {{Pki("pk/signing/witness.pub"), garbage},
           // A private key where the public one belongs.
           {Pki("cn/signing/envelope.pub"), Pki("cn/signing/envelope.key")}}));
  EXPECT_THAT(LoadPublicKeys(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(StartsWith(path + ": pk.witness_public_key: " +
                                        garbage + ": not a PEM public key"))));

  const std::string private_key = WriteFile(
      dir + "/private.toml",
      absl::StrReplaceAll(
          *crypto::ReadFile(KeysFile()),
          {{Pki("cn/signing/envelope.pub"), Pki("cn/signing/envelope.key")}}));
  EXPECT_THAT(LoadPublicKeys(private_key),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(private_key + ": cn.envelope_public_key: ")));

  // A TLS certificate's EC key is a public key, but not an Ed25519 one.
  const std::string ec_key = dir + "/ec.pub";
  ASSERT_EQ(std::system(("openssl pkey -in '" + Pki("pk/gateway.key") +
                         "' -pubout -out '" + ec_key + "' 2>/dev/null")
                            .c_str()),
            0);
  const std::string ec = WriteFile(
      dir + "/ec.toml",
      absl::StrReplaceAll(*crypto::ReadFile(KeysFile()),
                          {{Pki("pk/signing/checkpoint.pub"), ec_key}}));
  EXPECT_THAT(LoadPublicKeys(ec),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(ec + ": pk.checkpoint_public_key: ")));
}

TEST(PublicKeysTest, RefusesBadTomlWithItsPosition) {
  const std::string path =
      WriteFile(NewTempDir("bad-toml") + "/keys.toml", "[pk\n");
  EXPECT_THAT(LoadPublicKeys(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(path + ": line 1, column ")));
}

TEST(PublicKeysTest, RefusesANonStringPath) {
  const std::string path = WriteFile(
      NewTempDir("non-string") + "/keys.toml",
      absl::StrReplaceAll(
          *crypto::ReadFile(KeysFile()),
          {{"envelope_public_key = \"" + Pki("cn/signing/envelope.pub") + "\"",
            "envelope_public_key = 7"}}));
  EXPECT_THAT(LoadPublicKeys(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       path + ": cn.envelope_public_key: must be a string"));
}

TEST(PublicKeysTest, MakeGatewayKeysFromRawKeys) {
  auto envelope = crypto::Ed25519Signer::Generate();
  auto checkpoint = crypto::Ed25519Signer::Generate();
  auto witness = crypto::Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(
      GatewayKeys keys,
      MakeGatewayKeys(v1::COUNTRY_CN, envelope->public_key(),
                      checkpoint->public_key(), witness->public_key()));
  EXPECT_NE(keys.envelope.Find(exchange::KeyId(envelope->public_key())),
            nullptr);
  EXPECT_EQ(keys.checkpoint.name, audit::LogOrigin("CN"));
  EXPECT_EQ(keys.witness.name, audit::WitnessName("CN"));
  EXPECT_EQ(keys.witness.type, note::kTypeCosignatureV1);
  EXPECT_THAT(
      MakeGatewayKeys(v1::COUNTRY_UNSPECIFIED, envelope->public_key(),
                      checkpoint->public_key(), witness->public_key()),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("country")));
  EXPECT_THAT(MakeGatewayKeys(v1::COUNTRY_PK, envelope->public_key(), "short",
                              witness->public_key()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("32")));
}

}  // namespace
}  // namespace casebridge::keys
