// The receiving side in batches: Inbound::Check and Inbound::Accept over a
// real store, ExchangeStore::AcceptInboundBatch and
// ExchangeStore::RecordInboxDeliveries.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/ids.h"
#include "google/protobuf/util/time_util.h"
#include "server/inbound.h"
#include "server/sqlite_case_store.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::google::protobuf::util::TimeUtil;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kPkGateway[] = "spiffe://pk.casebridge/gateway";
constexpr char kCnGateway[] = "spiffe://cn.casebridge/gateway";
constexpr char kFia[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kMps[] = "spiffe://cn.casebridge/office/mps-liaison";
constexpr char kCase[] = "PK-2026-000001";

// The PK gateway receiving from CN.
class InboundBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = GatewayStore::Open(NewTempDir("inbound-batch"), v1::COUNTRY_PK,
                                    &clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    ASSERT_OK(peer_keys_.Add(
        *crypto::Ed25519Verifier::FromRawPublicKey(cn_key_->public_key())));
    ASSERT_OK(our_keys_.Add(
        *crypto::Ed25519Verifier::FromRawPublicKey(pk_key_->public_key())));
    config_.country = v1::COUNTRY_PK;
    config_.identity = kPkGateway;
    config_.peer_identity = kCnGateway;
    config_.peer_offices = {kMps};
    config_.offices = {{kFia, "FIA", v1::ROLE_LIAISON_OFFICER}};
    policies_ = std::make_unique<PolicyHolder>(
        std::make_shared<const AccessPolicy>(config_));
    inbound_ = std::make_unique<Inbound>(
        &config_, &store_->exchange(), &store_->audit_log(), &peer_keys_,
        pk_key_.get(), &clock_, policies_.get());
  }

  std::string NewId(IdKind kind) {
    clock_.Advance(absl::Microseconds(1));  // ids are minted from the time
    return MintId(v1::COUNTRY_CN, kind, clock_.Now());
  }

  v1::DeliverRequest Request(
      uint64_t sequence, const std::string& envelope_id,
      const std::string& message_id,
      const std::string& body = "Victim located.",
      const std::function<void(v1::CaseMessage&)>& change = nullptr) {
    v1::Envelope envelope;
    envelope.set_envelope_id(envelope_id);
    envelope.set_origin_gateway(kCnGateway);
    envelope.set_destination_gateway(kPkGateway);
    *envelope.mutable_created_at() =
        TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_.Now()));
    v1::CaseMessage* m = envelope.mutable_message();
    m->set_message_id(message_id);
    m->set_exchange_id(kCase);
    m->set_kind(v1::MESSAGE_KIND_NOTE);
    m->set_priority(v1::PRIORITY_ROUTINE);
    m->set_body(body);
    m->set_sender_office(kMps);
    m->set_recipient_office(kFia);
    m->set_sender_country(v1::COUNTRY_CN);
    m->set_handling_code(v1::HANDLING_CODE_H0);
    m->mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
    m->mutable_evaluation()->set_information_accuracy(
        v1::INFORMATION_ACCURACY_2);
    if (change) change(*m);
    envelope.set_origin_audit_index(41);
    auto sealed = exchange::SignEnvelope(envelope, *cn_key_);
    EXPECT_TRUE(sealed.ok()) << sealed.status();
    v1::DeliverRequest request;
    request.set_sequence(sequence);
    if (sealed.ok()) *request.mutable_signed_envelope() = *sealed;
    return request;
  }

  // Makes `m` MPS's CASE_SHARE of its case CN-2026-000007 (version 1, H0,
  // no victims yet); returns the case for the test to add to.
  static v1::CaseReference& ShareOfCaseSeven(v1::CaseMessage& m) {
    m.set_exchange_id("CN-2026-000007");
    m.set_kind(v1::MESSAGE_KIND_CASE_SHARE);
    m.set_body("");
    v1::CaseReference& c = *m.mutable_case_reference();
    c.set_exchange_id("CN-2026-000007");
    c.set_local_reference("MPS-HB-2026-0412");
    c.set_category(v1::CASE_CATEGORY_FORCED_MARRIAGE_FRAUD);
    c.set_status(v1::CASE_STATUS_VICTIM_LOCATED);
    c.set_summary("Located in Handan through a marriage agency.");
    c.set_origin_country(v1::COUNTRY_CN);
    c.set_owner_office(kMps);
    c.set_version(1);
    c.set_handling_code(v1::HANDLING_CODE_H0);
    return c;
  }

  // Runs Check on each request, then Accept on those that pass, as the
  // Deliver stream does; answers in the order of `requests`.
  std::vector<v1::DeliverResponse> Deliver(
      const std::vector<v1::DeliverRequest>& requests) {
    std::vector<v1::DeliverResponse> answers(requests.size());
    std::vector<Inbound::Checked> batch;
    std::vector<size_t> positions;
    for (size_t i = 0; i < requests.size(); ++i) {
      auto checked = inbound_->Check(kCnGateway, requests[i]);
      if (auto* refused = std::get_if<v1::DeliverResponse>(&checked)) {
        answers[i] = *refused;
        continue;
      }
      batch.push_back(std::move(std::get<Inbound::Checked>(checked)));
      positions.push_back(i);
    }
    std::vector<v1::DeliverResponse> accepted =
        inbound_->Accept(std::move(batch));
    EXPECT_EQ(accepted.size(), positions.size());
    for (size_t j = 0; j < accepted.size() && j < positions.size(); ++j) {
      answers[positions[j]] = accepted[j];
    }
    return answers;
  }

  uint64_t AuditSize() {
    auto size = store_->audit_log().Size();
    EXPECT_TRUE(size.ok()) << size.status();
    return size.ok() ? *size : 0;
  }

  audit::Entry AuditEntry(uint64_t index) {
    auto entries = store_->audit_log().Read(index, 1);
    EXPECT_TRUE(entries.ok()) << entries.status();
    if (!entries.ok() || entries->size() != 1) return {};
    return (*entries)[0].entry;
  }

  int64_t CountRows(const std::string& table) {
    int64_t count = -1;
    EXPECT_OK(store_->database().Read([&](sqlite::Connection& c) {
      auto stmt = c.Prepare(absl::StrCat("SELECT COUNT(*) FROM ", table));
      if (!stmt.ok()) return stmt.status();
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      count = stmt->ColumnInt(0);
      return absl::OkStatus();
    }));
    return count;
  }

  std::vector<std::string> InboxIds() {
    auto items = store_->exchange().ReadInbox(kFia, 0, 100);
    EXPECT_TRUE(items.ok()) << items.status();
    std::vector<std::string> ids;
    if (items.ok()) {
      for (const InboxItem& item : *items) {
        ids.push_back(item.message.message_id());
      }
    }
    return ids;
  }

  FakeClock clock_;
  config::Gateway config_;
  std::unique_ptr<PolicyHolder> policies_;
  std::unique_ptr<GatewayStore> store_;
  std::unique_ptr<crypto::Ed25519Signer> pk_key_ =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> cn_key_ =
      crypto::Ed25519Signer::Generate();
  exchange::KeyRing peer_keys_;
  exchange::KeyRing our_keys_;
  std::unique_ptr<Inbound> inbound_;
};

TEST_F(InboundBatchTest, StoresABatchAndAnswersEachWithItsOwnReceipt) {
  const uint64_t before = AuditSize();
  std::vector<v1::DeliverRequest> requests;
  std::vector<std::string> message_ids;
  for (uint64_t i = 0; i < 3; ++i) {
    message_ids.push_back(NewId(IdKind::kMessage));
    requests.push_back(Request(10 + i, NewId(IdKind::kEnvelope),
                               message_ids.back(), absl::StrCat("note ", i)));
  }
  requests.push_back(requests[0]);  // the same envelope again, same batch
  requests.back().set_sequence(20);

  const std::vector<v1::DeliverResponse> answers = Deliver(requests);
  ASSERT_EQ(answers.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const v1::DeliverResponse& answer = answers[i];
    EXPECT_EQ(answer.sequence(), requests[i].sequence());
    ASSERT_TRUE(answer.has_receipt()) << answer.DebugString();
    ASSERT_OK_AND_ASSIGN(const v1::Receipt receipt,
                         exchange::VerifyReceipt(answer.receipt(), our_keys_));
    ASSERT_OK_AND_ASSIGN(const v1::Envelope envelope,
                         exchange::VerifyEnvelope(requests[i].signed_envelope(),
                                                  peer_keys_, 1 << 20));
    EXPECT_EQ(answer.envelope_id(), envelope.envelope_id());
    EXPECT_OK(exchange::CheckReceiptMatches(
        receipt, requests[i].signed_envelope(), kPkGateway));
    // The receipt names the entry that records this envelope.
    const audit::Entry entry = AuditEntry(receipt.receiver_audit_index());
    EXPECT_EQ(entry.action, "envelope.received");
    EXPECT_EQ(entry.actor, kCnGateway);
    EXPECT_THAT(entry.subjects, ElementsAre(kCase, envelope.envelope_id(),
                                            envelope.message().message_id()));
  }
  // The repeat in the batch is answered with the first receipt, byte for
  // byte, and stores nothing more.
  EXPECT_EQ(answers[3].receipt().SerializeAsString(),
            answers[0].receipt().SerializeAsString());
  EXPECT_EQ(AuditSize(), before + 3);
  EXPECT_EQ(CountRows("inbound"), 3);
  EXPECT_THAT(InboxIds(),
              ElementsAre(message_ids[0], message_ids[1], message_ids[2]));

  // Sent again later: the same receipts.
  const std::vector<v1::DeliverResponse> again = Deliver({requests[1]});
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].receipt().SerializeAsString(),
            answers[1].receipt().SerializeAsString());
  EXPECT_EQ(AuditSize(), before + 3);
}

TEST_F(InboundBatchTest, AReplayAfterAKeyRotationIsAnsweredUnderTheNewKey) {
  // The first answer was lost; meanwhile this gateway's envelope key was
  // rotated, and the sender may trust the old one no longer. It gets the
  // same receipt, signed with the key in use.
  const v1::DeliverRequest request =
      Request(1, NewId(IdKind::kEnvelope), NewId(IdKind::kMessage));
  const std::vector<v1::DeliverResponse> first = Deliver({request});
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(first[0].has_receipt());
  const uint64_t audit_size = AuditSize();

  const std::unique_ptr<crypto::Ed25519Signer> rotated =
      crypto::Ed25519Signer::Generate();
  inbound_ = std::make_unique<Inbound>(&config_, &store_->exchange(),
                                       &store_->audit_log(), &peer_keys_,
                                       rotated.get(), &clock_, policies_.get());
  const std::vector<v1::DeliverResponse> again = Deliver({request});
  ASSERT_EQ(again.size(), 1u);
  ASSERT_TRUE(again[0].has_receipt()) << again[0].DebugString();
  EXPECT_EQ(again[0].receipt().receipt(), first[0].receipt().receipt());
  EXPECT_EQ(again[0].receipt().key_id(),
            exchange::KeyId(rotated->public_key()));
  exchange::KeyRing new_keys;
  ASSERT_OK(new_keys.Add(
      *crypto::Ed25519Verifier::FromRawPublicKey(rotated->public_key())));
  EXPECT_OK(exchange::VerifyReceipt(again[0].receipt(), new_keys).status());
  // A replay still: nothing stored, nothing audited.
  EXPECT_EQ(AuditSize(), audit_size);
  EXPECT_EQ(CountRows("inbound"), 1);
  // Under the key that signed it first, the stored receipt is sent as is.
  inbound_ = std::make_unique<Inbound>(&config_, &store_->exchange(),
                                       &store_->audit_log(), &peer_keys_,
                                       pk_key_.get(), &clock_, policies_.get());
  const std::vector<v1::DeliverResponse> same = Deliver({request});
  ASSERT_EQ(same.size(), 1u);
  EXPECT_EQ(same[0].receipt().SerializeAsString(),
            first[0].receipt().SerializeAsString());
}

TEST_F(InboundBatchTest,
       AReplayIsAnsweredWithItsReceiptWhateverTheChecksSayNow) {
  // Accepted, its receipt lost (a stop cancels the stream before the answer
  // is written); meanwhile the operator took MPS off peer.offices and
  // lowered the envelope limit. The sender's copy must still be answered
  // as delivered, or its case would be held back for ever (or a share's
  // waiting messages failed with it).
  const v1::DeliverRequest request =
      Request(1, NewId(IdKind::kEnvelope), NewId(IdKind::kMessage));
  const std::vector<v1::DeliverResponse> first = Deliver({request});
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(first[0].has_receipt()) << first[0].DebugString();
  const uint64_t audit_size = AuditSize();

  config_.peer_offices = {"spiffe://cn.casebridge/office/mps-guangzhou"};
  policies_->Replace(std::make_shared<const AccessPolicy>(config_));
  config_.limits.max_envelope_bytes = 64;
  v1::DeliverRequest again_request = request;
  again_request.set_sequence(2);
  const std::vector<v1::DeliverResponse> again = Deliver({again_request});
  ASSERT_EQ(again.size(), 1u);
  ASSERT_TRUE(again[0].has_receipt()) << again[0].DebugString();
  EXPECT_EQ(again[0].sequence(), 2u);
  EXPECT_EQ(again[0].envelope_id(), first[0].envelope_id());
  EXPECT_EQ(again[0].receipt().SerializeAsString(),
            first[0].receipt().SerializeAsString());
  EXPECT_EQ(AuditSize(), audit_size);  // a replay: nothing audited
  EXPECT_EQ(CountRows("inbound"), 1);

  // Another envelope is held to today's rules: refused, audited.
  config_.limits.max_envelope_bytes = 1 << 20;
  const std::vector<v1::DeliverResponse> fresh =
      Deliver({Request(3, NewId(IdKind::kEnvelope), NewId(IdKind::kMessage))});
  ASSERT_EQ(fresh.size(), 1u);
  ASSERT_TRUE(fresh[0].has_refusal()) << fresh[0].DebugString();
  EXPECT_EQ(fresh[0].refusal().code(),
            static_cast<int32_t>(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(AuditSize(), audit_size + 1);
  // And so is the same envelope id with other bytes: only these very bytes
  // are a replay.
  const v1::DeliverRequest changed =
      Request(4, first[0].envelope_id(), NewId(IdKind::kMessage), "Other.");
  const std::vector<v1::DeliverResponse> other = Deliver({changed});
  ASSERT_EQ(other.size(), 1u);
  EXPECT_TRUE(other[0].has_refusal()) << other[0].DebugString();
  EXPECT_EQ(CountRows("inbound"), 1);
}

TEST_F(InboundBatchTest, RefusalsInABatchDoNotHoldBackTheOthers) {
  // Stored before: an envelope whose id and message id are reused below.
  const std::string first_envelope = NewId(IdKind::kEnvelope);
  const std::string first_message = NewId(IdKind::kMessage);
  const v1::DeliverRequest first = Request(1, first_envelope, first_message);
  ASSERT_TRUE(Deliver({first})[0].has_receipt());
  const uint64_t before = AuditSize();

  const std::string a = NewId(IdKind::kMessage);
  const std::string b = NewId(IdKind::kMessage);
  std::vector<v1::DeliverRequest> requests = {
      Request(2, NewId(IdKind::kEnvelope), a),
      // Another envelope bringing a message id already received.
      Request(3, NewId(IdKind::kEnvelope), first_message),
      // The first envelope's id with other content.
      Request(4, first_envelope, NewId(IdKind::kMessage), "other content"),
      Request(5, NewId(IdKind::kEnvelope), b),
  };
  // A signature that does not verify.
  requests.push_back(
      Request(6, NewId(IdKind::kEnvelope), NewId(IdKind::kMessage)));
  requests.back().mutable_signed_envelope()->mutable_envelope()->append("x");

  const std::vector<v1::DeliverResponse> answers = Deliver(requests);
  ASSERT_EQ(answers.size(), 5u);
  EXPECT_TRUE(answers[0].has_receipt());
  EXPECT_TRUE(answers[3].has_receipt());

  ASSERT_TRUE(answers[1].has_refusal());
  EXPECT_EQ(answers[1].refusal().code(),
            static_cast<int32_t>(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(answers[1].refusal().message(),
            absl::StrCat("message_id ", first_message,
                         " was already received in another envelope"));
  EXPECT_TRUE(answers[1].refusal().permanent());

  ASSERT_TRUE(answers[2].has_refusal());
  EXPECT_EQ(answers[2].refusal().code(),
            static_cast<int32_t>(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(answers[2].refusal().message(),
            absl::StrCat("envelope_id ", first_envelope,
                         " was already received with other content; kept as "
                         "evidence"));

  ASSERT_TRUE(answers[4].has_refusal());
  EXPECT_EQ(answers[4].refusal().code(),
            static_cast<int32_t>(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(answers[4].refusal().message(),
              HasSubstr("signature: does not verify"));
  EXPECT_EQ(answers[4].envelope_id(), "");

  // Stored: a and b; kept as evidence: the conflict. Audited: the refusal
  // of the signature (checked first), a, the conflict, b (in the batch's
  // transaction, in order), then the message id's refusal.
  EXPECT_EQ(CountRows("inbound"), 3);
  EXPECT_EQ(CountRows("envelope_conflicts"), 1);
  EXPECT_THAT(InboxIds(), ElementsAre(first_message, a, b));
  ASSERT_EQ(AuditSize(), before + 5);
  std::vector<std::string> outcomes;
  for (uint64_t i = before; i < before + 5; ++i) {
    const audit::Entry entry = AuditEntry(i);
    EXPECT_EQ(entry.action, "envelope.received");
    EXPECT_EQ(entry.actor, kCnGateway);
    outcomes.push_back(
        absl::StrCat(entry.status_code, " ", entry.status_message));
  }
  EXPECT_THAT(
      outcomes,
      ElementsAre(HasSubstr("16 signature: does not verify"), "0 ",
                  absl::StrCat("6 envelope_id ", first_envelope,
                               " was already received with other content; "
                               "kept as evidence"),
                  "0 ",
                  absl::StrCat("6 message_id ", first_message,
                               " was already received in another envelope")));
  // The message id's refusal names the case and the envelope.
  EXPECT_THAT(AuditEntry(before + 4).subjects,
              ElementsAre(kCase, answers[1].envelope_id()));
}

TEST_F(InboundBatchTest, ASharedCaseIsCheckedFieldByFieldAsAnOfficesOwn) {
  // MPS shares one of its cases; one victim's remarks carry a terminal
  // escape sequence, which an officer's terminal would obey when shown.
  const auto share = [](std::string remarks) {
    return [remarks](v1::CaseMessage& m) {
      v1::CaseReference& c = ShareOfCaseSeven(m);
      v1::VictimReference& victim = *c.add_victims();
      victim.set_pseudonym("CN-V1");
      victim.set_remarks(remarks);
    };
  };
  const uint64_t before = AuditSize();
  const std::vector<v1::DeliverResponse> answers =
      Deliver({Request(1, NewId(IdKind::kEnvelope), NewId(IdKind::kMessage), "",
                       share("speaks Urdu \x1b]2;pwned\x07\x1b[2J")),
               Request(2, NewId(IdKind::kEnvelope), NewId(IdKind::kMessage), "",
                       share("speaks Urdu"))});
  ASSERT_EQ(answers.size(), 2u);
  ASSERT_TRUE(answers[0].has_refusal());
  EXPECT_EQ(answers[0].refusal().code(),
            static_cast<int32_t>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(answers[0].refusal().message(),
              HasSubstr("message.case_reference.victims[0].remarks: contains "
                        "a control character"));
  EXPECT_TRUE(answers[0].refusal().permanent());
  // The sound share is stored, the other not; both are audited.
  EXPECT_TRUE(answers[1].has_receipt());
  EXPECT_EQ(CountRows("inbound"), 1);
  EXPECT_EQ(AuditSize(), before + 2);
}

TEST_F(InboundBatchTest, ThePeersRecordOfACaseIsHeldToWhatItsGatewayWrites) {
  // The fields of a shared case the peer's gateway fills in are shown to
  // our officers as the peer's record: who owns the case, who changed it
  // last, when. Each is held to what that gateway writes.
  const absl::Time now = clock_.Now();
  const auto stamp = [](absl::Time t) {
    return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
  };
  const auto share = [&](const std::function<void(v1::CaseReference&)>& odd) {
    return [&, odd](v1::CaseMessage& m) {
      v1::CaseReference& c = ShareOfCaseSeven(m);
      c.set_updated_by(kMps);
      *c.mutable_created_at() = stamp(now - absl::Hours(2));
      *c.mutable_updated_at() = stamp(now - absl::Hours(1));
      c.add_victims()->set_pseudonym("CN-V1");
      if (odd) odd(c);
    };
  };
  google::protobuf::Timestamp overflowing;
  overflowing.set_seconds(9223372036855);  // * 10^6 wraps a signed 64 bits
  const std::vector<
      std::pair<std::function<void(v1::CaseMessage&)>, std::string>>
      refused = {
          {share([](v1::CaseReference& c) {
             c.set_owner_office("\x1b[2J\x1b[HMPS");
           }),
           "message.case_reference.owner_office: \"?[2J?[HMPS\" is not an "
           "office of the peer's country"},
          {share([](v1::CaseReference& c) {
             c.set_owner_office("spiffe://pk.casebridge/office/fia-liaison");
           }),
           "message.case_reference.owner_office: "},
          {share([](v1::CaseReference& c) {
             c.set_updated_by("spiffe://cn.casebridge/gateway");
           }),
           "message.case_reference.updated_by: "},
          {share([&](v1::CaseReference& c) {
             *c.mutable_updated_at() = overflowing;
           }),
           "message.case_reference.updated_at: is not a valid timestamp"},
          // Retention would never reach a case updated in the year 9999.
          {share([&](v1::CaseReference& c) {
             c.mutable_updated_at()->set_seconds(253402300799);
           }),
           "message.case_reference.updated_at: is later than this gateway's "
           "clock allows (limits.max_clock_skew_seconds)"},
          {share([&](v1::CaseReference& c) {
             *c.mutable_created_at() = stamp(now + absl::Hours(1));
           }),
           "message.case_reference.created_at: is later than this gateway's "
           "clock allows"},
          {[&](v1::CaseMessage& m) { *m.mutable_sent_at() = overflowing; },
           "message.sent_at: is not a valid timestamp"},
          {[](v1::CaseMessage& m) {
             m.set_body(
                 "line\xc2\x9b"
                 "2J");
           },
           "message.body: contains a control character"},
      };
  const uint64_t before = AuditSize();
  std::vector<v1::DeliverRequest> requests;
  for (const auto& [change, reason] : refused) {
    requests.push_back(Request(requests.size(), NewId(IdKind::kEnvelope),
                               NewId(IdKind::kMessage), "Victim located.",
                               change));
  }
  // Sound, though it says when the peer purged personal data: that is the
  // peer's own record, not ours.
  requests.push_back(
      Request(requests.size(), NewId(IdKind::kEnvelope),
              NewId(IdKind::kMessage), "", share([&](v1::CaseReference& c) {
                *c.mutable_personal_data_purged_at() = stamp(now);
              })));
  const std::vector<v1::DeliverResponse> answers = Deliver(requests);
  ASSERT_EQ(answers.size(), refused.size() + 1);
  for (size_t i = 0; i < refused.size(); ++i) {
    ASSERT_TRUE(answers[i].has_refusal()) << i;
    EXPECT_EQ(answers[i].refusal().code(),
              static_cast<int32_t>(absl::StatusCode::kInvalidArgument))
        << i;
    EXPECT_THAT(answers[i].refusal().message(), StartsWith(refused[i].second))
        << i;
    EXPECT_TRUE(answers[i].refusal().permanent()) << i;
  }
  ASSERT_TRUE(answers.back().has_receipt()) << answers.back().DebugString();
  EXPECT_EQ(CountRows("inbound"), 1);
  EXPECT_EQ(AuditSize(), before + refused.size() + 1);

  ASSERT_OK_AND_ASSIGN(const v1::CaseReference held,
                       store_->cases().GetCase("CN-2026-000007"));
  EXPECT_EQ(held.owner_office(), kMps);
  EXPECT_FALSE(held.has_personal_data_purged_at());
  ASSERT_EQ(held.victims_size(), 1);
  ASSERT_OK_AND_ASSIGN(const std::vector<InboxItem> inbox,
                       store_->exchange().ReadInbox(kFia, 0, 10));
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_FALSE(inbox[0].message.case_reference().has_personal_data_purged_at());
}

TEST_F(InboundBatchTest, OurFullStorageIsNotTheEnvelopesFaultAndNamesNoSql) {
  // SQLite's own "database or disk is full", as a full disk gives it: the
  // writer's database may not grow past the pages it has now.
  auto limit = [&](int64_t pages) {
    return store_->database().Write([pages](sqlite::Connection& c) {
      return c.Exec(absl::StrCat("PRAGMA max_page_count = ", pages));
    });
  };
  ASSERT_OK(limit(1));
  v1::DeliverRequest refused_request;
  v1::DeliverResponse refused;
  for (uint64_t i = 0; i < 500 && !refused.has_refusal(); ++i) {
    const v1::DeliverRequest request =
        Request(i, NewId(IdKind::kEnvelope), NewId(IdKind::kMessage),
                std::string(400, 'x'));
    std::vector<v1::DeliverResponse> answers = Deliver({request});
    ASSERT_EQ(answers.size(), 1u);
    if (answers[0].has_refusal()) {
      refused_request = request;
      refused = answers[0];
    }
  }
  ASSERT_TRUE(refused.has_refusal()) << "the database never filled";
  const int64_t stored = CountRows("inbound");
  EXPECT_EQ(refused.refusal().code(),
            static_cast<int32_t>(absl::StatusCode::kResourceExhausted));
  // Retried by the peer, not given up: the message is not lost.
  EXPECT_FALSE(refused.refusal().permanent());
  // The peer learns what it can do, not our SQL.
  EXPECT_EQ(refused.refusal().message(),
            "the gateway's storage is full; try again later");

  // Room again: the same envelope is accepted, once.
  ASSERT_OK(limit(1 << 30));
  const std::vector<v1::DeliverResponse> again = Deliver({refused_request});
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(again[0].has_receipt()) << again[0].DebugString();
  EXPECT_EQ(CountRows("inbound"), stored + 1);
}

TEST_F(InboundBatchTest, RecordInboxDeliveriesAuditsEachFirstDeliveryOnce) {
  const std::string m1 = NewId(IdKind::kMessage);
  const std::string m2 = NewId(IdKind::kMessage);
  const std::vector<v1::DeliverResponse> answers =
      Deliver({Request(1, NewId(IdKind::kEnvelope), m1),
               Request(2, NewId(IdKind::kEnvelope), m2)});
  ASSERT_TRUE(answers[0].has_receipt());
  ASSERT_TRUE(answers[1].has_receipt());
  const uint64_t before = AuditSize();

  const auto delivery = [](const std::string& message_id) {
    InboxDelivery d;
    d.message_id = message_id;
    d.audit.actor = kFia;
    d.audit.action = "inbox.delivered";
    d.audit.payload = message_id;
    return d;
  };
  const std::vector<absl::Status> recorded =
      store_->exchange().RecordInboxDeliveries(
          kFia,
          {delivery(m1), delivery("CN-M-unknown"), delivery(m2), delivery(m1)},
          clock_.Now());
  ASSERT_EQ(recorded.size(), 4u);
  EXPECT_OK(recorded[0]);
  EXPECT_THAT(recorded[1],
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("CN-M-unknown")));
  EXPECT_OK(recorded[2]);
  EXPECT_OK(recorded[3]);  // delivered before: nothing more
  ASSERT_EQ(AuditSize(), before + 2);
  EXPECT_THAT(AuditEntry(before).subjects, ElementsAre(m1));
  EXPECT_EQ(AuditEntry(before).action, "inbox.delivered");
  EXPECT_THAT(AuditEntry(before + 1).subjects, ElementsAre(m2));

  // Again: recorded already, nothing audited.
  const std::vector<absl::Status> again =
      store_->exchange().RecordInboxDeliveries(kFia, {delivery(m2)},
                                               clock_.Now());
  ASSERT_EQ(again.size(), 1u);
  EXPECT_OK(again[0]);
  EXPECT_EQ(AuditSize(), before + 2);
}

}  // namespace
}  // namespace casebridge::server
