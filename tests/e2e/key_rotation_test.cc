// Rotation of the PK gateway's signing keys on real gateways. Envelope key:
// an envelope queued under the old key before the rotation is still
// delivered during the stated overlap, new envelopes go under the new key,
// both sides record the change in their audit logs, and evidence of a
// message signed under the old key still verifies offline. Checkpoint and
// witness keys: CN, told first, keeps witnessing PK's log and taking PK's
// cosignatures across PK's switch; both logs verify offline with the old
// keys listed; an old key past its time is refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "client/office_client.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/note.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kMps[] = "cn/offices/mps-liaison";
constexpr char kMpsId[] = "spiffe://cn.casebridge/office/mps-liaison";
constexpr char kPkAuditor[] = "pk/auditors/pk-auditor";
constexpr char kCnAuditor[] = "cn/auditors/cn-auditor";

class KeyRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("key-rotation");
    pk_peer_ = ReserveFreePort();
    cn_peer_ = ReserveFreePort();
    // The PK gateway's next envelope key.
    NewKeyPair("pk-envelope-2027", &new_key_, &new_pub_);
    WriteConfigs(/*rotated=*/false);
  }

  // A fresh Ed25519 key pair in dir_: <stem>.key (mode 0600) and <stem>.pub.
  void NewKeyPair(const std::string& stem, std::string* key, std::string* pub) {
    *key = dir_ + "/" + stem + ".key";
    *pub = dir_ + "/" + stem + ".pub";
    ASSERT_EQ(RunCommand({"/usr/bin/openssl", "genpkey", "-algorithm",
                          "ed25519", "-out", *key})
                  .exit_code,
              0);
    std::filesystem::permissions(*key,
                                 std::filesystem::perms::owner_read |
                                     std::filesystem::perms::owner_write,
                                 std::filesystem::perm_options::replace);
    ASSERT_EQ(RunCommand({"/usr/bin/openssl", "pkey", "-in", *key, "-pubout",
                          "-out", *pub})
                  .exit_code,
              0);
  }

  // Before the rotation: the dev PKI's keys. After: PK signs with the new
  // key; CN trusts it, and the old one for a day.
  void WriteConfigs(bool rotated) {
    auto base = [&](const std::string& country, int own, int theirs) {
      GatewayConfigOptions o;
      o.country = country;
      o.data_dir = dir_ + "/" + country + "-data";
      o.peer_address = absl::StrCat("127.0.0.1:", own);
      o.peer_endpoint = absl::StrCat("127.0.0.1:", theirs);
      o.retry_max_seconds = 1;
      o.extra_offices = "\n[audit]\ncheckpoint_interval_ms = 200\n";
      return GatewayConfigToml(o);
    };
    std::string pk = base("PK", pk_peer_, cn_peer_);
    std::string cn = base("CN", cn_peer_, pk_peer_);
    if (rotated) {
      const std::string old_key = Pki("pk/signing/envelope.key");
      const std::string old_pub = Pki("pk/signing/envelope.pub");
      ASSERT_NE(pk.find(old_key), std::string::npos);
      ASSERT_NE(cn.find(old_pub), std::string::npos);
      pk = absl::StrReplaceAll(pk, {{old_key, new_key_}});
      cn = absl::StrReplaceAll(cn, {{old_pub, new_pub_}});
      cn += absl::StrCat(
          "\n[[peer.previous_envelope_keys]]\nfile = \"", old_pub,
          "\"\ntrusted_until = \"",
          absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now() + absl::Hours(24),
                           absl::UTCTimeZone()),
          "\"\n");
    }
    pk_config_ = WriteFile(dir_ + "/PK.toml", pk);
    cn_config_ = WriteFile(dir_ + "/CN.toml", cn);
  }

  // For the rotation of PK's checkpoint and witness keys: CN trusts PK's
  // new keys, and the old ones until `previous_until`, once `cn_told`; PK
  // signs with its new keys once `pk_switched`.
  void WriteNoteKeyConfigs(bool cn_told, bool pk_switched,
                           absl::Time previous_until) {
    WriteConfigs(/*rotated=*/false);
    std::string pk = ReadText(pk_config_);
    std::string cn = ReadText(cn_config_);
    if (pk_switched) {
      for (const auto& [old_key, new_key] :
           {std::pair<std::string, std::string>{
                Pki("pk/signing/checkpoint.key"), new_checkpoint_key_},
            {Pki("pk/signing/witness.key"), new_witness_key_}}) {
        ASSERT_NE(pk.find(old_key), std::string::npos);
        pk = absl::StrReplaceAll(pk, {{old_key, new_key}});
      }
    }
    if (cn_told) {
      const std::string until = absl::FormatTime(
          "%Y-%m-%dT%H:%M:%SZ", previous_until, absl::UTCTimeZone());
      for (const auto& [purpose, new_pub] :
           {std::pair<std::string, std::string>{"checkpoint",
                                                new_checkpoint_pub_},
            {"witness", new_witness_pub_}}) {
        const std::string old_pub = Pki("pk/signing/" + purpose + ".pub");
        ASSERT_NE(cn.find(old_pub), std::string::npos);
        cn = absl::StrReplaceAll(cn, {{old_pub, new_pub}});
        cn += absl::StrCat("\n[[peer.previous_", purpose, "_keys]]\nfile = \"",
                           old_pub, "\"\ntrusted_until = \"", until, "\"\n");
      }
    }
    pk_config_ = WriteFile(dir_ + "/PK.toml", pk);
    cn_config_ = WriteFile(dir_ + "/CN.toml", cn);
  }

  static std::string ReadText(const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)),
                       std::istreambuf_iterator<char>());
  }

  // A keys file after PK's checkpoint and witness key rotation: the dev
  // PKI's, with PK's new checkpoint and witness keys, and the old ones
  // listed as previous as asked.
  std::string NoteKeysFile(const std::string& name, bool previous_checkpoint,
                           bool previous_witness) {
    std::string text = ReadText(Pki("public-keys.toml"));
    text = absl::StrReplaceAll(text, {{"\"pk/", "\"" + TestPkiDir() + "/pk/"},
                                      {"\"cn/", "\"" + TestPkiDir() + "/cn/"}});
    text = absl::StrReplaceAll(
        text, {{Pki("pk/signing/checkpoint.pub"), new_checkpoint_pub_},
               {Pki("pk/signing/witness.pub"), new_witness_pub_}});
    std::string previous;
    if (previous_checkpoint) {
      previous += absl::StrCat("previous_checkpoint_public_keys = [\"",
                               Pki("pk/signing/checkpoint.pub"), "\"]\n");
    }
    if (previous_witness) {
      previous += absl::StrCat("previous_witness_public_keys = [\"",
                               Pki("pk/signing/witness.pub"), "\"]\n");
    }
    text = absl::StrReplaceAll(text, {{"[cn]", previous + "[cn]"}});
    return WriteFile(dir_ + "/" + name, text);
  }

  // PK's FIA desk sends a note on `exchange_id` to the MPS desk; returns
  // once it is delivered and its evidence is ready, which takes a PK
  // checkpoint cosigned by CN after the note was sent and a CN checkpoint
  // cosigned by PK after it arrived.
  v1::EvidenceBundle SendAndAwaitEvidence(const std::string& exchange_id,
                                          const std::string& body) {
    v1::SendMessageRequest send;
    send.mutable_message()->set_exchange_id(exchange_id);
    send.mutable_message()->set_kind(v1::MESSAGE_KIND_NOTE);
    send.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
    send.mutable_message()->set_body(body);
    send.mutable_message()->set_handling_code(v1::HANDLING_CODE_H2);
    send.mutable_message()->set_recipient_office(kMpsId);
    auto sent = Pk(kFia)->SendMessage(send);
    EXPECT_OK(sent);
    if (!sent.ok()) return {};
    v1::EvidenceBundle evidence;
    EXPECT_TRUE(WaitUntil([&] {
      auto bundle = Pk(kFia)->GetEvidence(sent->message_id());
      if (bundle.ok()) evidence = *bundle;
      return bundle.ok();
    })) << body
        << "\n"
        << pk_->Log() << cn_->Log();
    return evidence;
  }

  std::unique_ptr<client::OfficeClient> Pk(const std::string& stem) {
    return OfficeClientFor(stem, pk_->office_endpoint(), "PK");
  }
  std::unique_ptr<client::OfficeClient> Cn(const std::string& stem) {
    return OfficeClientFor(stem, cn_->office_endpoint(), "CN");
  }

  bool Delivered(const std::string& message_id) {
    auto status = Pk(kFia)->GetDeliveryStatus(message_id);
    return status.ok() && status->state() >= v1::DELIVERY_STATE_DELIVERED;
  }

  // The entries of `action`, read by the auditor of `endpoint`.
  std::vector<v1::AuditEntry> EntriesOf(const std::string& auditor,
                                        const std::string& endpoint,
                                        const std::string& country,
                                        const std::string& action) {
    return ReadAuditEntries(*OfficeClientFor(auditor, endpoint, country),
                            action);
  }

  // A keys file for offline checks: the dev PKI's, with PK's envelope key
  // replaced by the new one and, if `with_previous`, the old one listed.
  std::string KeysFile(const std::string& name, bool with_previous) {
    std::ifstream in(Pki("public-keys.toml"));
    std::string text((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    text = absl::StrReplaceAll(text, {{"\"pk/", "\"" + TestPkiDir() + "/pk/"},
                                      {"\"cn/", "\"" + TestPkiDir() + "/cn/"}});
    text = absl::StrReplaceAll(
        text, {{TestPkiDir() + "/pk/signing/envelope.pub", new_pub_}});
    if (with_previous) {
      text = absl::StrReplaceAll(
          text, {{"[cn]",
                  absl::StrCat("previous_envelope_public_keys = [\"",
                               Pki("pk/signing/envelope.pub"), "\"]\n[cn]")}});
    }
    return WriteFile(dir_ + "/" + name, text);
  }

  std::string dir_;
  int pk_peer_ = 0;
  int cn_peer_ = 0;
  std::string new_key_;
  std::string new_pub_;
  // PK's next checkpoint and witness keys.
  std::string new_checkpoint_key_;
  std::string new_checkpoint_pub_;
  std::string new_witness_key_;
  std::string new_witness_pub_;
  std::string pk_config_;
  std::string cn_config_;
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<GatewayProcess> cn_;
};

TEST_F(KeyRotationTest, OldSignaturesStayVerifiableAndTheRotationIsOnRecord) {
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  auto fia = Pk(kFia);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference opened,
                       fia->OpenCase(ValidDraft()));
  v1::ShareCaseRequest share;
  share.set_exchange_id(opened.exchange_id());
  share.add_recipient_offices(kMpsId);
  ASSERT_OK_AND_ASSIGN(const v1::ShareCaseResponse shared,
                       fia->ShareCase(share));
  ASSERT_TRUE(WaitUntil([&] { return Delivered(shared.message_id()); }))
      << pk_->Log() << cn_->Log();
  // Evidence of the share, signed under the old key, once both logs'
  // entries are cosigned.
  v1::EvidenceBundle old_evidence;
  ASSERT_TRUE(WaitUntil([&] {
    auto bundle = fia->GetEvidence(shared.message_id());
    if (bundle.ok()) old_evidence = *bundle;
    return bundle.ok();
  })) << pk_->Log();

  // CN goes away; PK queues a message under the old key, then stops.
  ASSERT_EQ(cn_->Stop(), 0);
  v1::SendMessageRequest send;
  send.mutable_message()->set_exchange_id(opened.exchange_id());
  send.mutable_message()->set_kind(v1::MESSAGE_KIND_NOTE);
  send.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
  send.mutable_message()->set_body("queued before the key rotation");
  send.mutable_message()->set_handling_code(v1::HANDLING_CODE_H2);
  send.mutable_message()->set_recipient_office(kMpsId);
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse queued,
                       fia->SendMessage(send));
  fia.reset();
  ASSERT_EQ(pk_->Stop(), 0);

  // The rotation: PK signs with its new key, CN trusts the old one for a
  // day more.
  WriteConfigs(/*rotated=*/true);
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  ASSERT_TRUE(WaitUntil([&] { return Delivered(queued.message_id()); }))
      << pk_->Log() << cn_->Log();
  send.mutable_message()->set_body("signed under the new key");
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse fresh,
                       Pk(kFia)->SendMessage(send));
  ASSERT_TRUE(WaitUntil([&] { return Delivered(fresh.message_id()); }))
      << pk_->Log() << cn_->Log();
  int arrived = 0;
  ASSERT_OK(Cn(kMps)->WatchInbox(
      "", absl::Seconds(10), [&](const v1::WatchInboxResponse& item) {
        if (item.message().message_id() == queued.message_id() ||
            item.message().message_id() == fresh.message_id()) {
          ++arrived;
        }
        return arrived < 2;
      }));
  EXPECT_EQ(arrived, 2);

  // On record on both sides: PK's keys changed, CN's trusted keys changed.
  const auto pk_keys =
      EntriesOf(kPkAuditor, pk_->office_endpoint(), "PK", "signing.keys");
  ASSERT_EQ(pk_keys.size(), 2u);
  EXPECT_NE(pk_keys[0].subjects(0), pk_keys[1].subjects(0));
  EXPECT_THAT(pk_keys[1].subjects(0), ::testing::StartsWith("envelope:"));
  const auto cn_trust =
      EntriesOf(kCnAuditor, cn_->office_endpoint(), "CN", "peer.keys_trusted");
  ASSERT_EQ(cn_trust.size(), 2u);
  bool overlap_recorded = false;
  for (const std::string& s : cn_trust[1].subjects()) {
    overlap_recorded |= absl::StrContains(s, ":until:");
  }
  EXPECT_TRUE(overlap_recorded);

  // The old evidence verifies offline with the old key listed as previous,
  // and not without it.
  const std::string bundle = dir_ + "/old.evidence";
  WriteFile(bundle, old_evidence.SerializeAsString());
  CommandResult ok =
      RunCommand({CliBinary(), "audit", "evidence", "verify", bundle, "--keys",
                  KeysFile("keys-with-previous.toml", true)});
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  CommandResult refused =
      RunCommand({CliBinary(), "audit", "evidence", "verify", bundle, "--keys",
                  KeysFile("keys-without-previous.toml", false)});
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
}

TEST_F(KeyRotationTest, CheckpointAndWitnessKeysRotateWithAnOverlap) {
  NewKeyPair("pk-checkpoint-2027", &new_checkpoint_key_, &new_checkpoint_pub_);
  NewKeyPair("pk-witness-2027", &new_witness_key_, &new_witness_pub_);
  const absl::Time until = absl::Now() + absl::Hours(24);
  WriteNoteKeyConfigs(/*cn_told=*/false, /*pk_switched=*/false, until);
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference opened,
                       Pk(kFia)->OpenCase(ValidDraft()));
  v1::ShareCaseRequest share;
  share.set_exchange_id(opened.exchange_id());
  share.add_recipient_offices(kMpsId);
  ASSERT_OK(Pk(kFia)->ShareCase(share).status());
  const v1::EvidenceBundle before =
      SendAndAwaitEvidence(opened.exchange_id(), "before the rotation");
  ASSERT_TRUE(before.has_sent()) << pk_->Log() << cn_->Log();

  // CN is told first: it trusts PK's new keys, and the old ones for a day.
  // PK still signs and cosigns with its old keys, and CN still takes both.
  ASSERT_EQ(cn_->Stop(), 0);
  WriteNoteKeyConfigs(/*cn_told=*/true, /*pk_switched=*/false, until);
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  const v1::EvidenceBundle overlap =
      SendAndAwaitEvidence(opened.exchange_id(), "during the overlap");
  ASSERT_TRUE(overlap.has_sent()) << pk_->Log() << cn_->Log();

  // PK switches. Its checkpoints under the new key extend the ones CN
  // cosigned under the old key; its cosignatures are made with the new key.
  ASSERT_EQ(pk_->Stop(), 0);
  WriteNoteKeyConfigs(/*cn_told=*/true, /*pk_switched=*/true, until);
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  const v1::EvidenceBundle after =
      SendAndAwaitEvidence(opened.exchange_id(), "after the switch");
  ASSERT_TRUE(after.has_sent()) << pk_->Log() << cn_->Log();
  ASSERT_OK_AND_ASSIGN(
      auto old_checkpoint,
      crypto::Ed25519Verifier::FromPemFile(Pki("pk/signing/checkpoint.pub")));
  ASSERT_OK_AND_ASSIGN(
      auto new_checkpoint,
      crypto::Ed25519Verifier::FromPemFile(new_checkpoint_pub_));
  ASSERT_OK_AND_ASSIGN(auto old_witness, crypto::Ed25519Verifier::FromPemFile(
                                             Pki("pk/signing/witness.pub")));
  ASSERT_OK_AND_ASSIGN(auto new_witness,
                       crypto::Ed25519Verifier::FromPemFile(new_witness_pub_));
  auto key_line = [](const std::string& name, uint8_t type,
                     const crypto::Ed25519Verifier& key) {
    return note::MakeVerifierKey(name, type, key.public_key());
  };
  {
    // The sent checkpoint of each bundle is signed with the key of its time;
    // the received one cosigned with PK's witness key of its time.
    ASSERT_OK_AND_ASSIGN(note::Note sent_before,
                         note::Parse(before.sent().checkpoint()));
    EXPECT_OK(note::Verify(
        sent_before,
        key_line("pk.casebridge/audit", note::kTypeEd25519, *old_checkpoint)));
    ASSERT_OK_AND_ASSIGN(note::Note sent_after,
                         note::Parse(after.sent().checkpoint()));
    EXPECT_OK(note::Verify(
        sent_after,
        key_line("pk.casebridge/audit", note::kTypeEd25519, *new_checkpoint)));
    ASSERT_OK_AND_ASSIGN(note::Note received_overlap,
                         note::Parse(overlap.received().checkpoint()));
    EXPECT_OK(note::VerifyCosignature(
        received_overlap, key_line("pk.casebridge/witness",
                                   note::kTypeCosignatureV1, *old_witness)));
    ASSERT_OK_AND_ASSIGN(note::Note received_after,
                         note::Parse(after.received().checkpoint()));
    EXPECT_OK(note::VerifyCosignature(
        received_after, key_line("pk.casebridge/witness",
                                 note::kTypeCosignatureV1, *new_witness)));
  }

  // On record: CN trusts PK's old checkpoint and witness keys until their
  // time; PK's own keys changed.
  const auto cn_trust =
      EntriesOf(kCnAuditor, cn_->office_endpoint(), "CN", "peer.keys_trusted");
  ASSERT_EQ(cn_trust.size(), 2u);
  const std::string until_text =
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", until, absl::UTCTimeZone());
  EXPECT_THAT(
      cn_trust[1].subjects(),
      ::testing::IsSupersetOf(
          {"checkpoint:" + exchange::KeyId(new_checkpoint->public_key()),
           absl::StrCat(
               "checkpoint:", exchange::KeyId(old_checkpoint->public_key()),
               ":until:", until_text),
           "witness:" + exchange::KeyId(new_witness->public_key()),
           absl::StrCat("witness:", exchange::KeyId(old_witness->public_key()),
                        ":until:", until_text)}));
  const auto pk_keys =
      EntriesOf(kPkAuditor, pk_->office_endpoint(), "PK", "signing.keys");
  ASSERT_EQ(pk_keys.size(), 2u);
  EXPECT_THAT(
      pk_keys[1].subjects(),
      ::testing::Contains("checkpoint:" +
                          exchange::KeyId(new_checkpoint->public_key())));

  // Offline: both logs and the evidence from before the rotation verify
  // with the old keys listed.
  ASSERT_EQ(pk_->Stop(), 0);
  ASSERT_EQ(cn_->Stop(), 0);
  const std::string with_previous =
      NoteKeysFile("keys-with-previous.toml", true, true);
  for (const std::string country : {"PK", "CN"}) {
    const CommandResult verified =
        RunCommand({CliBinary(), "audit", "verify", "--data-dir",
                    dir_ + "/" + country + "-data", "--keys", with_previous});
    EXPECT_EQ(verified.exit_code, 0) << country << verified.out << verified.err;
    EXPECT_THAT(verified.out, HasSubstr(": OK, "));
  }
  const std::string bundle = dir_ + "/before.evidence";
  WriteFile(bundle, before.SerializeAsString());
  const CommandResult evidence =
      RunCommand({CliBinary(), "audit", "evidence", "verify", bundle, "--keys",
                  with_previous});
  EXPECT_EQ(evidence.exit_code, 0) << evidence.out << evidence.err;

  // Without PK's old checkpoint key, PK's log fails at its first checkpoint.
  const CommandResult refused = RunCommand(
      {CliBinary(), "audit", "verify", "--data-dir", dir_ + "/PK-data",
       "--keys", NoteKeysFile("keys-without-checkpoint.toml", false, true)});
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
  EXPECT_THAT(refused.out, HasSubstr("DAMAGED at checkpoint "));
  EXPECT_THAT(refused.out, HasSubstr("pk.casebridge/audit's checkpoint key"));
  // Without PK's old witness key, CN's log fails where PK cosigned with it.
  const CommandResult unwitnessed = RunCommand(
      {CliBinary(), "audit", "verify", "--data-dir", dir_ + "/CN-data",
       "--keys", NoteKeysFile("keys-without-witness.toml", true, false)});
  EXPECT_EQ(unwitnessed.exit_code, 3) << unwitnessed.out << unwitnessed.err;
  EXPECT_THAT(unwitnessed.out, HasSubstr("DAMAGED at checkpoint "));
  EXPECT_THAT(unwitnessed.out, HasSubstr("pk.casebridge/witness"));
}

TEST_F(KeyRotationTest, OldCheckpointAndWitnessKeysPastTheirTimeAreRefused) {
  NewKeyPair("pk-checkpoint-2027", &new_checkpoint_key_, &new_checkpoint_pub_);
  NewKeyPair("pk-witness-2027", &new_witness_key_, &new_witness_pub_);
  // CN's overlap ended an hour ago, but PK never switched.
  WriteNoteKeyConfigs(/*cn_told=*/true, /*pk_switched=*/false,
                      absl::Now() - absl::Hours(1));
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  auto fia = Pk(kFia);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference opened,
                       fia->OpenCase(ValidDraft()));
  v1::ShareCaseRequest share;
  share.set_exchange_id(opened.exchange_id());
  share.add_recipient_offices(kMpsId);
  ASSERT_OK_AND_ASSIGN(const v1::ShareCaseResponse shared,
                       fia->ShareCase(share));
  // Messages still flow (the envelope key is not concerned).
  ASSERT_TRUE(WaitUntil([&] { return Delivered(shared.message_id()); }))
      << pk_->Log() << cn_->Log();

  // CN refuses PK's checkpoints as a bad signature, and audits it.
  std::vector<v1::AuditEntry> refusals;
  ASSERT_TRUE(WaitUntil([&] {
    refusals = EntriesOf(kCnAuditor, cn_->office_endpoint(), "CN",
                         "peer.add_checkpoint");
    return !refusals.empty();
  })) << pk_->Log()
      << cn_->Log();
  EXPECT_EQ(refusals[0].status_code(),
            static_cast<int>(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(refusals[0].status_message(), HasSubstr("was trusted until"));
  // Nothing of PK's log was cosigned.
  EXPECT_THAT(
      EntriesOf(kCnAuditor, cn_->office_endpoint(), "CN", "witness.cosign"),
      ::testing::IsEmpty());
  auto cosigned = [&](const std::string& checkpoint, const std::string& name) {
    return absl::StrContains(checkpoint, "\n\u2014 " + name + " ");
  };
  ASSERT_OK_AND_ASSIGN(const std::string pk_checkpoint,
                       OfficeClientFor(kPkAuditor, pk_->office_endpoint(), "PK")
                           ->GetCheckpoint());
  EXPECT_FALSE(cosigned(pk_checkpoint, "cn.casebridge/witness"))
      << pk_checkpoint;
  // And CN refuses PK's cosignatures of its own log, made with the old
  // witness key.
  EXPECT_TRUE(WaitUntil([&] {
    return absl::StrContains(cn_->Log(), "checkpoint.witness_failed") &&
           absl::StrContains(cn_->Log(), "was trusted until");
  })) << cn_->Log();
  ASSERT_OK_AND_ASSIGN(const std::string cn_checkpoint,
                       OfficeClientFor(kCnAuditor, cn_->office_endpoint(), "CN")
                           ->GetCheckpoint());
  EXPECT_FALSE(cosigned(cn_checkpoint, "pk.casebridge/witness"))
      << cn_checkpoint;
}

}  // namespace
}  // namespace casebridge::testing
