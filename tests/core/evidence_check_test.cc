// Evidence bundles built from two real gateway logs (SQLite stores,
// checkpoints signed by a real Checkpointer, cosigned by a real Witness, with
// freshly generated keys), then checked offline with the public keys alone.
#include "core/evidence_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/audit_entry.h"
#include "core/envelope.h"
#include "core/identity.h"
#include "core/ids.h"
#include "core/note.h"
#include "core/public_keys.h"
#include "google/protobuf/stubs/logging.h"
#include "server/checkpointer.h"
#include "server/sqlite_case_store.h"
#include "server/witness.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::evidence {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::NewTempDir;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

std::string Lower(v1::Country c) { return c == v1::COUNTRY_PK ? "pk" : "cn"; }
std::string Upper(v1::Country c) { return c == v1::COUNTRY_PK ? "PK" : "CN"; }
v1::Country Other(v1::Country c) {
  return c == v1::COUNTRY_PK ? v1::COUNTRY_CN : v1::COUNTRY_PK;
}

// One gateway: its signing keys and its log.
struct Gateway {
  Gateway(v1::Country c, const Clock* clock) : country(c) {
    auto opened = server::GatewayStore::Open(NewTempDir(Lower(c) + "-log"),
                                             country, clock);
    EXPECT_TRUE(opened.ok()) << opened.status();
    store = *std::move(opened);
  }

  server::SqliteAuditLog& log() { return store->audit_log(); }

  uint64_t Append(const server::AuditEvent& event) {
    auto index = log().Append(event);
    EXPECT_TRUE(index.ok()) << index.status();
    return index.ok() ? *index : 0;
  }

  void Filler(int n) {
    for (int i = 0; i < n; ++i) {
      server::AuditEvent event;
      event.actor =
          absl::StrCat("spiffe://", Lower(country), ".casebridge/office/desk");
      event.action = "case.open";
      event.subjects = {absl::StrCat(Upper(country), "-2026-00000", i)};
      event.payload = "request";
      Append(event);
    }
  }

  std::string Office() const {
    return country == v1::COUNTRY_PK
               ? "spiffe://pk.casebridge/office/fia-liaison-desk"
               : "spiffe://cn.casebridge/office/mps-liaison";
  }

  v1::Country country;
  std::unique_ptr<crypto::Ed25519Signer> envelope_key =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> checkpoint_key =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> witness_key =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<server::GatewayStore> store;
};

note::VerifierKey CheckpointKeyOf(const Gateway& g) {
  return note::MakeVerifierKey(audit::LogOrigin(Upper(g.country)),
                               note::kTypeEd25519,
                               g.checkpoint_key->public_key());
}
note::VerifierKey WitnessKeyOf(const Gateway& g) {
  return note::MakeVerifierKey(audit::WitnessName(Upper(g.country)),
                               note::kTypeCosignatureV1,
                               g.witness_key->public_key());
}

// Deviations from an honest exchange, one per test.
struct Scenario {
  v1::Country origin = v1::COUNTRY_PK;
  std::optional<std::string> sent_actor;
  std::optional<std::vector<std::string>> sent_subjects;
  std::optional<std::string> sent_action;
  bool sent_refused = false;
  int origin_audit_index_offset = 0;
  std::optional<std::string> origin_gateway;
  std::optional<std::string> destination_gateway;
  std::optional<std::string> envelope_id;
  std::optional<std::string> received_action;
  std::optional<std::string> received_actor;
  std::optional<std::vector<std::string>> received_subjects;
  bool received_refused = false;
};

class EvidenceCheckTest : public ::testing::Test {
 protected:
  // Builds both logs per `s` and returns the bundle of the one envelope.
  v1::EvidenceBundle Build(const Scenario& s = {}) {
    Gateway& from = s.origin == v1::COUNTRY_PK ? pk_ : cn_;
    Gateway& to = s.origin == v1::COUNTRY_PK ? cn_ : pk_;
    const absl::Time now = clock_.Now();
    const std::string exchange_id =
        absl::StrCat(Upper(s.origin), "-2026-000042");
    const std::string message_id = MintId(s.origin, IdKind::kMessage, now);
    const std::string envelope_id =
        s.envelope_id.value_or(MintId(s.origin, IdKind::kEnvelope, now));
    envelope_id_ = envelope_id;
    message_id_ = message_id;

    // The origin records the send...
    from.Filler(5);
    server::AuditEvent send;
    send.actor = s.sent_actor.value_or(from.Office());
    send.action = s.sent_action.value_or("message.send");
    send.subjects = s.sent_subjects.value_or(
        std::vector<std::string>{exchange_id, message_id, envelope_id});
    send.payload = "the SendMessage request";
    if (s.sent_refused) send.outcome = absl::PermissionDeniedError("no");
    sent_index_ = from.Append(send);
    from.Filler(3);

    // ...and seals the envelope, naming that entry.
    v1::Envelope envelope;
    envelope.set_envelope_id(envelope_id);
    envelope.set_origin_gateway(
        s.origin_gateway.value_or(GatewayIdentity(s.origin)));
    envelope.set_destination_gateway(
        s.destination_gateway.value_or(GatewayIdentity(Other(s.origin))));
    envelope.mutable_created_at()->set_seconds(absl::ToUnixSeconds(now));
    v1::CaseMessage* m = envelope.mutable_message();
    m->set_message_id(message_id);
    m->set_exchange_id(exchange_id);
    m->set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
    m->set_priority(v1::PRIORITY_URGENT);
    m->set_body("Victim V1 seen at Handan station");
    m->set_sender_office(from.Office());
    m->set_sender_country(s.origin);
    envelope.set_origin_audit_index(static_cast<uint64_t>(
        static_cast<int64_t>(sent_index_) + s.origin_audit_index_offset));
    auto signed_envelope = exchange::SignEnvelope(envelope, *from.envelope_key);
    EXPECT_OK(signed_envelope);

    // The receiver records the receipt, committing to the signature.
    to.Filler(7);
    server::AuditEvent received;
    received.actor = s.received_actor.value_or(GatewayIdentity(s.origin));
    received.action = s.received_action.value_or("envelope.received");
    received.subjects = s.received_subjects.value_or(
        std::vector<std::string>{exchange_id, envelope_id, message_id});
    received.payload = signed_envelope->signature();
    if (s.received_refused) {
      received.outcome = absl::InvalidArgumentError("refused");
    }
    received_index_ = to.Append(received);
    to.Filler(4);
    v1::Receipt receipt;
    receipt.set_envelope_id(envelope_id);
    receipt.set_envelope_sha256(exchange::EnvelopeDigest(*signed_envelope));
    receipt.mutable_received_at()->set_seconds(absl::ToUnixSeconds(now));
    receipt.set_receiver_audit_index(received_index_);
    receipt.set_receiver_gateway(GatewayIdentity(Other(s.origin)));
    auto signed_receipt = exchange::SignReceipt(receipt, *to.envelope_key);
    EXPECT_OK(signed_receipt);

    // Each log checkpointed and witnessed by the other.
    Witness(from, to);
    Witness(to, from);

    v1::EvidenceBundle bundle;
    *bundle.mutable_envelope() = *signed_envelope;
    *bundle.mutable_receipt() = *signed_receipt;
    *bundle.mutable_sent() = Prove(from, sent_index_);
    *bundle.mutable_received() = Prove(to, received_index_);
    auto salt = to.log().PayloadSalt(received_index_);
    EXPECT_OK(salt);
    bundle.mutable_received()->set_payload_salt(salt->value_or(""));
    return bundle;
  }

  // `log_of` signs a checkpoint of its whole log; `witness` cosigns it.
  void Witness(Gateway& log_of, Gateway& witness) {
    server::Checkpointer::Options options;
    options.origin = audit::LogOrigin(Upper(log_of.country));
    options.signer = log_of.checkpoint_key.get();
    options.peer_witness_key = WitnessKeyOf(witness);
    server::Checkpointer checkpointer(options, &log_of.store->database(),
                                      &log_of.log(), nullptr, &clock_);
    auto made = checkpointer.MakeCheckpoint();
    ASSERT_TRUE(made.ok() && made->has_value()) << made.status();
    server::Witness::Options witness_options;
    witness_options.peer_origin = options.origin;
    witness_options.peer_checkpoint_key = CheckpointKeyOf(log_of);
    witness_options.witness_name = audit::WitnessName(Upper(witness.country));
    witness_options.signer = witness.witness_key.get();
    server::Witness cosigner(witness_options, &witness.store->database(),
                             &witness.log(), &clock_);
    v1::AddCheckpointRequest request;
    request.set_checkpoint((*made)->note);
    request.set_old_size(0);
    auto line =
        cosigner.AddCheckpoint(GatewayIdentity(log_of.country), request);
    ASSERT_OK(line);
    ASSERT_OK(log_of.log().StoreCosigned((*made)->size, (*made)->note + *line));
  }

  v1::LogEvidence Prove(Gateway& g, uint64_t index) {
    v1::LogEvidence out;
    auto checkpoint = g.log().LatestCosignedCheckpoint();
    EXPECT_TRUE(checkpoint.ok() && checkpoint->has_value());
    auto entries = g.log().Read(index, 1);
    EXPECT_TRUE(entries.ok() && entries->size() == 1);
    auto proof = g.log().InclusionProof(index, (*checkpoint)->size);
    EXPECT_OK(proof);
    out.set_entry(entries->front().bytes);
    out.set_index(index);
    out.set_checkpoint((*checkpoint)->note);
    for (const std::string& hash : *proof) out.add_inclusion_proof(hash);
    return out;
  }

  keys::PublicKeys Keys() const {
    keys::PublicKeys keys;
    for (const Gateway* g : {&pk_, &cn_}) {
      auto made = keys::MakeGatewayKeys(
          g->country, g->envelope_key->public_key(),
          g->checkpoint_key->public_key(), g->witness_key->public_key());
      EXPECT_OK(made);
      (g->country == v1::COUNTRY_PK ? keys.pk : keys.cn) = *std::move(made);
    }
    return keys;
  }

  std::string Problem(const v1::EvidenceBundle& bundle) {
    return VerifyEvidence(bundle, Keys()).problem;
  }

  FakeClock clock_;
  Gateway pk_{v1::COUNTRY_PK, &clock_};
  Gateway cn_{v1::COUNTRY_CN, &clock_};
  std::string envelope_id_;
  std::string message_id_;
  uint64_t sent_index_ = 0;
  uint64_t received_index_ = 0;
};

TEST_F(EvidenceCheckTest, HonestBundleVerifies) {
  const v1::EvidenceBundle bundle = Build();
  const EvidenceReport report = VerifyEvidence(bundle, Keys());
  ASSERT_TRUE(report.ok()) << report.problem;
  EXPECT_THAT(report.notes, IsEmpty());
  EXPECT_EQ(report.envelope_id, envelope_id_);
  EXPECT_EQ(report.message_id, message_id_);
  EXPECT_EQ(report.origin, v1::COUNTRY_PK);
  EXPECT_EQ(report.receiver, v1::COUNTRY_CN);
  EXPECT_EQ(report.sent_index, 5u);
  EXPECT_EQ(report.received_index, 7u);
  // PK's checkpoint covers its 9 entries; CN's its 12 and the witness
  // record of PK's checkpoint.
  EXPECT_EQ(report.sent_checkpoint_size, 9u);
  EXPECT_EQ(report.received_checkpoint_size, 13u);
}

TEST_F(EvidenceCheckTest, BundleFromCnToPkVerifiesToo) {
  Scenario s;
  s.origin = v1::COUNTRY_CN;
  const EvidenceReport report = VerifyEvidence(Build(s), Keys());
  ASSERT_TRUE(report.ok()) << report.problem;
  EXPECT_EQ(report.origin, v1::COUNTRY_CN);
  EXPECT_EQ(report.receiver, v1::COUNTRY_PK);
}

// The property the bundle exists for: no single changed byte goes unnoticed.
TEST_F(EvidenceCheckTest, EveryChangedByteFailsToParseOrToVerify) {
  const std::string bytes = Build().SerializeAsString();
  const keys::PublicKeys keys = Keys();
  // Thousands of "invalid UTF-8" parse errors are expected here.
  google::protobuf::LogHandler* const previous =
      google::protobuf::SetLogHandler([](google::protobuf::LogLevel,
                                         const char*, int,
                                         const std::string&) {});
  ASSERT_GT(bytes.size(), 1000u);
  int parsed = 0;
  for (size_t at = 0; at < bytes.size(); ++at) {
    // Every single-bit flip, and the whole byte inverted.
    for (const unsigned char mask :
         {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF}) {
      std::string changed = bytes;
      changed[at] =
          static_cast<char>(static_cast<unsigned char>(changed[at]) ^ mask);
      v1::EvidenceBundle bundle;
      if (!bundle.ParseFromString(changed)) continue;
      ++parsed;
      const EvidenceReport report = VerifyEvidence(bundle, keys);
      EXPECT_FALSE(report.ok())
          << "byte " << at << " of " << bytes.size() << " xor " << int{mask}
          << " went unnoticed; notes: "
          << (report.notes.empty() ? "" : report.notes.front());
    }
  }
  google::protobuf::SetLogHandler(previous);
  // Most changes parse: the checks, not the parser, catch them.
  EXPECT_GT(parsed, static_cast<int>(bytes.size()));
}

TEST_F(EvidenceCheckTest, PurgedSaltIsANoteNotAFailure) {
  v1::EvidenceBundle bundle = Build();
  bundle.mutable_received()->clear_payload_salt();
  const EvidenceReport report = VerifyEvidence(bundle, Keys());
  EXPECT_TRUE(report.ok()) << report.problem;
  ASSERT_EQ(report.notes.size(), 1u);
  EXPECT_THAT(report.notes[0], StartsWith("payload purged"));
}

TEST_F(EvidenceCheckTest, WrongSaltFails) {
  v1::EvidenceBundle bundle = Build();
  bundle.mutable_received()->set_payload_salt(std::string(16, 'x'));
  EXPECT_THAT(Problem(bundle), StartsWith("received.payload_salt: "));
}

TEST_F(EvidenceCheckTest, UnknownFieldsAreRefusedWherePresent) {
  v1::EvidenceBundle bundle = Build();
  bundle.mutable_received()
      ->GetReflection()
      ->MutableUnknownFields(bundle.mutable_received())
      ->AddVarint(99, 1);
  EXPECT_THAT(Problem(bundle), StartsWith("bundle.received: carries fields"));
}

TEST_F(EvidenceCheckTest, EachMissingPartIsNamed) {
  const v1::EvidenceBundle bundle = Build();
  for (const std::string part : {"envelope", "receipt", "sent", "received"}) {
    v1::EvidenceBundle partial = bundle;
    partial.GetReflection()->ClearField(
        &partial, partial.GetDescriptor()->FindFieldByName(part));
    EXPECT_EQ(Problem(partial), part + ": missing from the bundle");
  }
}

TEST_F(EvidenceCheckTest, EnvelopeSignedByAnUnknownKeyFails) {
  const v1::EvidenceBundle bundle = Build();
  keys::PublicKeys keys = Keys();
  auto stranger = crypto::Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(
      keys.pk, keys::MakeGatewayKeys(v1::COUNTRY_PK, stranger->public_key(),
                                     pk_.checkpoint_key->public_key(),
                                     pk_.witness_key->public_key()));
  EXPECT_THAT(VerifyEvidence(bundle, keys).problem,
              StartsWith("envelope.key_id: "));
}

TEST_F(EvidenceCheckTest, EnvelopeWithAChangedSignatureFails) {
  v1::EvidenceBundle bundle = Build();
  std::string signature = bundle.envelope().signature();
  signature[3] ^= 0x10;
  bundle.mutable_envelope()->set_signature(signature);
  EXPECT_THAT(Problem(bundle), StartsWith("envelope.signature: "));
}

TEST_F(EvidenceCheckTest, EnvelopeClaimingTheOtherOriginFails) {
  Scenario s;
  s.origin_gateway = GatewayIdentity(v1::COUNTRY_CN);
  EXPECT_THAT(Problem(Build(s)), StartsWith("envelope.origin_gateway: "));
}

TEST_F(EvidenceCheckTest, EnvelopeForAnotherDestinationFails) {
  Scenario s;
  s.destination_gateway = "spiffe://in.casebridge/gateway";
  EXPECT_THAT(Problem(Build(s)), StartsWith("envelope.destination_gateway: "));
}

TEST_F(EvidenceCheckTest, EnvelopeIdOfTheWrongCountryFails) {
  Scenario s;
  s.envelope_id = MintId(v1::COUNTRY_CN, IdKind::kEnvelope, absl::Now());
  EXPECT_THAT(Problem(Build(s)), StartsWith("envelope.envelope_id: "));
}

TEST_F(EvidenceCheckTest, ReceiptByAnUnknownKeyFails) {
  const v1::EvidenceBundle bundle = Build();
  keys::PublicKeys keys = Keys();
  auto stranger = crypto::Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(
      keys.cn, keys::MakeGatewayKeys(v1::COUNTRY_CN, stranger->public_key(),
                                     cn_.checkpoint_key->public_key(),
                                     cn_.witness_key->public_key()));
  EXPECT_THAT(VerifyEvidence(bundle, keys).problem,
              StartsWith("receipt.key_id: unknown signing key"));
}

TEST_F(EvidenceCheckTest, ReceiptOfAnotherEnvelopeFails) {
  v1::EvidenceBundle bundle = Build();
  ASSERT_OK_AND_ASSIGN(
      v1::Receipt receipt,
      exchange::VerifyReceipt(bundle.receipt(), Keys().cn.envelope));
  receipt.set_envelope_sha256(std::string(32, '\0'));
  ASSERT_OK_AND_ASSIGN(*bundle.mutable_receipt(),
                       exchange::SignReceipt(receipt, *cn_.envelope_key));
  EXPECT_THAT(Problem(bundle), StartsWith("receipt.envelope_sha256: "));
}

TEST_F(EvidenceCheckTest, SentEntryThatDoesNotDecodeFails) {
  v1::EvidenceBundle bundle = Build();
  bundle.mutable_sent()->mutable_entry()->push_back('!');
  EXPECT_THAT(Problem(bundle),
              StartsWith("sent.entry: malformed audit entry: trailing bytes"));
}

TEST_F(EvidenceCheckTest, SentIndexThatIsNotTheEntrysFails) {
  v1::EvidenceBundle bundle = Build();
  bundle.mutable_sent()->set_index(bundle.sent().index() + 1);
  EXPECT_EQ(Problem(bundle),
            absl::StrCat("sent.entry: says it is entry ", sent_index_,
                         ", but sent.index is ", sent_index_ + 1));
}

TEST_F(EvidenceCheckTest, SentEntryOtherThanTheEnvelopeNamesFails) {
  Scenario s;
  s.origin_audit_index_offset = 1;  // the envelope points past the send
  const v1::EvidenceBundle bundle = Build(s);
  EXPECT_EQ(
      Problem(bundle),
      absl::StrCat("sent.index: is ", sent_index_,
                   ", but envelope.origin_audit_index is ", sent_index_ + 1));
}

TEST_F(EvidenceCheckTest, SentEntryByAnotherOfficeFails) {
  Scenario s;
  s.sent_actor = "spiffe://pk.casebridge/office/embassy-beijing";
  EXPECT_THAT(Problem(Build(s)), StartsWith("sent.entry: was made by "));
}

TEST_F(EvidenceCheckTest, SentEntryRecordingARefusalFails) {
  Scenario s;
  s.sent_refused = true;
  EXPECT_EQ(Problem(Build(s)), "sent.entry: records a refusal (status code 7)");
}

TEST_F(EvidenceCheckTest, SentEntryOfAnotherActionFails) {
  // The office's cancel of the message names the same ids; it is no record
  // of the send.
  Scenario s;
  s.sent_action = "message.cancel";
  EXPECT_EQ(Problem(Build(s)),
            "sent.entry: records \"message.cancel\", not a send "
            "(message.send, case.share, case.grant or case.withdraw_grant)");
}

TEST_F(EvidenceCheckTest, SentEntryOfAWithdrawnGrantVerifies) {
  Scenario s;
  s.sent_action = "case.withdraw_grant";
  EXPECT_EQ(Problem(Build(s)), "");
}

TEST_F(EvidenceCheckTest, SentEntryNotNamingTheEnvelopeFails) {
  Scenario s;
  s.sent_subjects = std::vector<std::string>{"PK-2026-000042"};
  EXPECT_THAT(Problem(Build(s)),
              StartsWith("sent.entry: does not name envelope"));
}

TEST_F(EvidenceCheckTest, SentEntryNotNamingTheMessageFails) {
  Scenario s;
  s.envelope_id = MintId(v1::COUNTRY_PK, IdKind::kEnvelope, clock_.Now());
  s.sent_subjects = std::vector<std::string>{*s.envelope_id};
  EXPECT_THAT(Problem(Build(s)),
              StartsWith("sent.entry: does not name message"));
}

TEST_F(EvidenceCheckTest, MalformedCheckpointFails) {
  v1::EvidenceBundle bundle = Build();
  bundle.mutable_sent()->set_checkpoint("not a note");
  EXPECT_THAT(Problem(bundle), StartsWith("sent.checkpoint: "));
}

TEST_F(EvidenceCheckTest, CheckpointOfTheOtherLogFails) {
  v1::EvidenceBundle bundle = Build();
  bundle.mutable_sent()->set_checkpoint(bundle.received().checkpoint());
  EXPECT_EQ(Problem(bundle),
            "sent.checkpoint: origin \"cn.casebridge/audit\" is not "
            "pk.casebridge/audit");
}

TEST_F(EvidenceCheckTest, CheckpointSignedByAnotherKeyFails) {
  const v1::EvidenceBundle bundle = Build();
  keys::PublicKeys keys = Keys();
  auto stranger = crypto::Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(
      keys.cn, keys::MakeGatewayKeys(
                   v1::COUNTRY_CN, cn_.envelope_key->public_key(),
                   stranger->public_key(), cn_.witness_key->public_key()));
  EXPECT_THAT(VerifyEvidence(bundle, keys).problem,
              StartsWith("received.checkpoint.signature: no valid signature "
                         "by cn.casebridge/audit"));
}

TEST_F(EvidenceCheckTest, CheckpointWithoutTheCosignatureFails) {
  v1::EvidenceBundle bundle = Build();
  ASSERT_OK_AND_ASSIGN(note::Note note,
                       note::Parse(bundle.sent().checkpoint()));
  ASSERT_EQ(note.signatures.size(), 2u);
  note.signatures.pop_back();  // the witness's line
  bundle.mutable_sent()->set_checkpoint(note::Format(note));
  EXPECT_THAT(Problem(bundle),
              StartsWith("sent.checkpoint.cosignature: no valid cosignature "
                         "by cn.casebridge/witness"));
}

TEST_F(EvidenceCheckTest, CosignatureByAnotherWitnessKeyFails) {
  const v1::EvidenceBundle bundle = Build();
  keys::PublicKeys keys = Keys();
  auto stranger = crypto::Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(
      keys.cn, keys::MakeGatewayKeys(
                   v1::COUNTRY_CN, cn_.envelope_key->public_key(),
                   cn_.checkpoint_key->public_key(), stranger->public_key()));
  EXPECT_THAT(VerifyEvidence(bundle, keys).problem,
              StartsWith("sent.checkpoint.cosignature: "));
}

TEST_F(EvidenceCheckTest, BundleFromBeforeRotationsNeedsThePreviousKeys) {
  const v1::EvidenceBundle bundle = Build();
  const keys::PublicKeys before = Keys();
  // Both gateways rotate their checkpoint and witness keys.
  for (Gateway* g : {&pk_, &cn_}) {
    g->checkpoint_key = crypto::Ed25519Signer::Generate();
    g->witness_key = crypto::Ed25519Signer::Generate();
  }
  keys::PublicKeys keys = Keys();
  EXPECT_THAT(VerifyEvidence(bundle, keys).problem,
              StartsWith("sent.checkpoint.signature: no valid signature by "
                         "pk.casebridge/audit's checkpoint key"));
  // Each retired key listed gets the check one step further.
  keys.pk.previous_checkpoint.push_back(before.pk.checkpoint);
  EXPECT_THAT(VerifyEvidence(bundle, keys).problem,
              StartsWith("sent.checkpoint.cosignature: no valid cosignature "
                         "by cn.casebridge/witness"));
  keys.cn.previous_witness.push_back(before.cn.witness);
  EXPECT_THAT(VerifyEvidence(bundle, keys).problem,
              StartsWith("received.checkpoint.signature: "));
  keys.cn.previous_checkpoint.push_back(before.cn.checkpoint);
  EXPECT_THAT(VerifyEvidence(bundle, keys).problem,
              StartsWith("received.checkpoint.cosignature: "));
  keys.pk.previous_witness.push_back(before.pk.witness);
  const EvidenceReport report = VerifyEvidence(bundle, keys);
  EXPECT_TRUE(report.ok()) << report.problem;
  EXPECT_EQ(report.sent_index, 5u);
}

TEST_F(EvidenceCheckTest, ProofWithAnElementRemovedFails) {
  v1::EvidenceBundle bundle = Build();
  ASSERT_GE(bundle.received().inclusion_proof_size(), 2);
  bundle.mutable_received()->mutable_inclusion_proof()->RemoveLast();
  EXPECT_THAT(Problem(bundle),
              StartsWith("received.inclusion_proof: inclusion proof has "));
}

TEST_F(EvidenceCheckTest, ProofWithElementsSwappedFails) {
  v1::EvidenceBundle bundle = Build();
  ASSERT_GE(bundle.sent().inclusion_proof_size(), 2);
  bundle.mutable_sent()->mutable_inclusion_proof()->SwapElements(0, 1);
  EXPECT_EQ(Problem(bundle),
            "sent.inclusion_proof: root mismatch: the inclusion proof does "
            "not lead to the root");
}

TEST_F(EvidenceCheckTest, ReceivedEntryOtherThanTheReceiptNamesFails) {
  v1::EvidenceBundle bundle = Build();
  // A real entry of the receiver's log, proved properly, but not the one
  // the receipt names.
  *bundle.mutable_received() = Prove(cn_, received_index_ - 1);
  EXPECT_EQ(
      Problem(bundle),
      absl::StrCat("received.index: is ", received_index_ - 1,
                   ", but receipt.receiver_audit_index is ", received_index_));
}

TEST_F(EvidenceCheckTest, ReceivedEntryOfAnotherActionFails) {
  Scenario s;
  s.received_action = "envelope.refused";
  EXPECT_EQ(Problem(Build(s)),
            "received.entry: action is \"envelope.refused\", not "
            "envelope.received");
}

TEST_F(EvidenceCheckTest, ReceivedEntryByAnotherActorFails) {
  Scenario s;
  s.received_actor = "spiffe://cn.casebridge/office/mps-liaison";
  EXPECT_THAT(Problem(Build(s)), StartsWith("received.entry: was made by "));
}

TEST_F(EvidenceCheckTest, ReceivedEntryRecordingARefusalFails) {
  Scenario s;
  s.received_refused = true;
  EXPECT_EQ(Problem(Build(s)),
            "received.entry: records a refusal (status code 3)");
}

TEST_F(EvidenceCheckTest, ReceivedEntryNotNamingTheEnvelopeFails) {
  Scenario s;
  s.received_subjects = std::vector<std::string>{"PK-2026-000042"};
  EXPECT_THAT(Problem(Build(s)),
              StartsWith("received.entry: does not name envelope"));
}

TEST_F(EvidenceCheckTest, ReceivedEntryNotNamingTheMessageFails) {
  Scenario s;
  s.envelope_id = MintId(v1::COUNTRY_PK, IdKind::kEnvelope, clock_.Now());
  s.received_subjects = std::vector<std::string>{*s.envelope_id};
  EXPECT_THAT(Problem(Build(s)),
              StartsWith("received.entry: does not name message"));
}

}  // namespace
}  // namespace casebridge::evidence
