#include "server/exchange_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <latch>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/grpc_status.h"
#include "core/handling_notice.h"
#include "core/status_macros.h"
#include "google/protobuf/unknown_field_set.h"
#include "google/protobuf/util/time_util.h"
#include "server/sqlite_case_store.h"
#include "server/validation.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::google::protobuf::util::TimeUtil;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kPkGateway[] = "spiffe://pk.casebridge/gateway";
constexpr char kCnGateway[] = "spiffe://cn.casebridge/gateway";
constexpr char kFia[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kEmbassy[] = "spiffe://pk.casebridge/office/embassy-beijing";
constexpr char kMps[] = "spiffe://cn.casebridge/office/mps-liaison";
constexpr char kUrdu[] =
    "متاثرہ کو گوانگژو کے ایک گھر سے بازیاب کرا لیا گیا، فوری طبی امداد درکار";
constexpr char kChinese[] =
    "受害者已在广州获救，需要紧急医疗救助。请确认遣返安排。";

constexpr char kCaseA[] = "PK-2026-000001";
constexpr char kCaseB[] = "PK-2026-000002";
constexpr char kCaseC[] = "PK-2026-000003";

absl::Status Unavailable() {
  return absl::UnavailableError("connection refused");
}

v1::CaseMessage Message(const std::string& message_id,
                        const std::string& exchange_id,
                        v1::Priority priority = v1::PRIORITY_ROUTINE,
                        const std::string& body = "Please confirm.",
                        const std::string& sender = kFia) {
  v1::CaseMessage m;
  m.set_message_id(message_id);
  m.set_exchange_id(exchange_id);
  m.set_kind(v1::MESSAGE_KIND_NOTE);
  m.set_priority(priority);
  m.set_body(body);
  m.set_sender_office(sender);
  m.set_recipient_office(kMps);
  m.set_sender_country(v1::COUNTRY_PK);
  return m;
}

AuditEvent Event(const std::string& action, const std::string& actor = kFia) {
  AuditEvent event;
  event.actor = actor;
  event.action = action;
  event.subjects = {"from-caller"};
  event.payload = "payload bytes";
  return event;
}

class ExchangeStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("exchange-store");
    Reopen();
    ASSERT_OK(peer_keys_.Add(
        *crypto::Ed25519Verifier::FromRawPublicKey(cn_key_->public_key())));
    ASSERT_OK(our_keys_.Add(
        *crypto::Ed25519Verifier::FromRawPublicKey(pk_key_->public_key())));
  }

  void Reopen() {
    store_.reset();
    auto store = GatewayStore::Open(dir_, v1::COUNTRY_PK, &clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  SqliteExchangeStore& exchange() { return store_->exchange(); }
  SqliteAuditLog& audit() { return store_->audit_log(); }

  uint64_t AuditSize() {
    auto size = audit().Size();
    EXPECT_TRUE(size.ok()) << size.status();
    return size.ok() ? *size : 0;
  }

  StoredEntry AuditEntry(uint64_t index) {
    auto entries = audit().Read(index, 1);
    EXPECT_TRUE(entries.ok()) << entries.status();
    if (!entries.ok() || entries->size() != 1) return {};
    return (*entries)[0];
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

  // Seals like the gateway will: the audit index goes into the envelope,
  // which the origin's key signs.
  OutgoingMessage Outgoing(const v1::CaseMessage& message,
                           const std::string& envelope_id) {
    OutgoingMessage out;
    out.message = message;
    out.envelope_id = envelope_id;
    out.seal = [this, message, envelope_id](
                   uint64_t index) -> absl::StatusOr<v1::SignedEnvelope> {
      ++seals_;
      v1::Envelope envelope;
      envelope.set_envelope_id(envelope_id);
      envelope.set_origin_gateway(kPkGateway);
      envelope.set_destination_gateway(kCnGateway);
      *envelope.mutable_created_at() =
          TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_.Now()));
      *envelope.mutable_message() = message;
      envelope.set_origin_audit_index(index);
      return exchange::SignEnvelope(envelope, *pk_key_);
    };
    return out;
  }

  // Queues `message` in envelope "E-<message id>" without a request id.
  QueuedMessage Queue(const v1::CaseMessage& message) {
    auto queued =
        exchange().QueueOutgoing(Outgoing(message, "E-" + message.message_id()),
                                 {}, Event("message.send"));
    EXPECT_TRUE(queued.ok()) << queued.status();
    return queued.ok() ? *queued : QueuedMessage{};
  }

  // The peer's signed receipt for an envelope we sent.
  v1::SignedReceipt PeerReceipt(const std::string& envelope_id,
                                uint64_t peer_index = 7) {
    v1::Receipt receipt;
    receipt.set_envelope_id(envelope_id);
    receipt.set_envelope_sha256(crypto::Sha256(envelope_id));
    *receipt.mutable_received_at() =
        TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_.Now()));
    receipt.set_receiver_audit_index(peer_index);
    receipt.set_receiver_gateway(kCnGateway);
    auto signed_receipt = exchange::SignReceipt(receipt, *cn_key_);
    EXPECT_TRUE(signed_receipt.ok()) << signed_receipt.status();
    return signed_receipt.ok() ? *signed_receipt : v1::SignedReceipt{};
  }

  std::vector<std::string> ReadyIds(const std::set<std::string>& busy = {},
                                    size_t max = 100) {
    auto ready = exchange().ReadyToSend(clock_.Now(), max, busy);
    EXPECT_TRUE(ready.ok()) << ready.status();
    std::vector<std::string> ids;
    if (ready.ok()) {
      for (const OutboxItem& item : *ready) ids.push_back(item.message_id);
    }
    return ids;
  }

  // An envelope from the Chinese gateway carrying `message`.
  v1::SignedEnvelope PeerEnvelope(const std::string& envelope_id,
                                  const v1::CaseMessage& message) {
    v1::Envelope envelope;
    envelope.set_envelope_id(envelope_id);
    envelope.set_origin_gateway(kCnGateway);
    envelope.set_destination_gateway(kPkGateway);
    *envelope.mutable_created_at() =
        TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_.Now()));
    *envelope.mutable_message() = message;
    envelope.set_origin_audit_index(41);
    auto sealed = exchange::SignEnvelope(envelope, *cn_key_);
    EXPECT_TRUE(sealed.ok()) << sealed.status();
    return sealed.ok() ? *sealed : v1::SignedEnvelope{};
  }

  v1::CaseMessage PeerMessage(const std::string& message_id,
                              const std::string& body = "Victim located.") {
    v1::CaseMessage m;
    m.set_message_id(message_id);
    m.set_exchange_id(kCaseA);
    m.set_kind(v1::MESSAGE_KIND_RESCUE_UPDATE);
    m.set_rescue_stage(v1::RESCUE_STAGE_LOCATED);
    m.set_priority(v1::PRIORITY_URGENT);
    m.set_body(body);
    m.set_sender_office(kMps);
    m.set_recipient_office(kFia);
    m.set_sender_country(v1::COUNTRY_CN);
    return m;
  }

  // What the receiving gateway signs: a receipt over the exact bytes.
  std::function<absl::StatusOr<v1::SignedReceipt>(uint64_t, absl::Time)>
  MakeReceipt(const v1::SignedEnvelope& signed_envelope,
              const std::string& envelope_id) {
    return [this, signed_envelope, envelope_id](
               uint64_t index,
               absl::Time received_at) -> absl::StatusOr<v1::SignedReceipt> {
      ++receipts_made_;
      v1::Receipt receipt;
      receipt.set_envelope_id(envelope_id);
      receipt.set_envelope_sha256(exchange::EnvelopeDigest(signed_envelope));
      *receipt.mutable_received_at() =
          TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(received_at));
      receipt.set_receiver_audit_index(index);
      receipt.set_receiver_gateway(kPkGateway);
      return exchange::SignReceipt(receipt, *pk_key_);
    };
  }

  absl::StatusOr<InboundResult> Accept(
      const v1::SignedEnvelope& signed_envelope,
      const std::vector<std::string>& offices = {kFia}) {
    auto parsed =
        exchange::VerifyEnvelope(signed_envelope, peer_keys_, 1 << 20);
    if (!parsed.ok()) return parsed.status();
    return exchange().AcceptInbound(
        signed_envelope, *parsed, offices,
        MakeReceipt(signed_envelope, parsed->envelope_id()),
        Event("envelope.receive", kCnGateway));
  }

  std::vector<InboxItem> Inbox(const std::string& office, int64_t after = 0,
                               size_t max = 100) {
    auto items = exchange().ReadInbox(office, after, max);
    EXPECT_TRUE(items.ok()) << items.status();
    return items.ok() ? *items : std::vector<InboxItem>{};
  }

  static std::vector<std::string> MessageIds(
      const std::vector<InboxItem>& items) {
    std::vector<std::string> ids;
    for (const InboxItem& item : items)
      ids.push_back(item.message.message_id());
    return ids;
  }

  FakeClock clock_;  // 2026-11-29 12:00 UTC
  std::string dir_;
  std::unique_ptr<GatewayStore> store_;
  std::unique_ptr<crypto::Ed25519Signer> pk_key_ =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> cn_key_ =
      crypto::Ed25519Signer::Generate();
  exchange::KeyRing peer_keys_;  // the CN gateway's envelope key
  exchange::KeyRing our_keys_;   // the PK gateway's own key
  std::atomic<int> seals_{0};
  std::atomic<int> receipts_made_{0};
};

// --- QueueOutgoing -----------------------------------------------------------

TEST_F(ExchangeStoreTest, QueueOutgoingStoresMessageEnvelopeAndAuditEntry) {
  const uint64_t before = AuditSize();
  const v1::CaseMessage message =
      Message("PK-M-1", kCaseA, v1::PRIORITY_PRIORITY);
  ASSERT_OK_AND_ASSIGN(const QueuedMessage queued,
                       exchange().QueueOutgoing(Outgoing(message, "E-1"), {},
                                                Event("message.send")));
  EXPECT_EQ(queued.message_id, "PK-M-1");
  EXPECT_EQ(queued.envelope_id, "E-1");
  EXPECT_FALSE(queued.replayed);
  EXPECT_EQ(queued.status.state(), v1::DELIVERY_STATE_QUEUED);
  EXPECT_EQ(queued.status.attempts(), 0);
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(queued.status.queued_at()),
            absl::ToUnixMicros(clock_.Now()));
  EXPECT_EQ(seals_, 1);

  // One audit entry, in the same transaction, naming message and envelope.
  ASSERT_EQ(AuditSize(), before + 1);
  const StoredEntry entry = AuditEntry(before);
  EXPECT_EQ(entry.entry.action, "message.send");
  EXPECT_EQ(entry.entry.actor, kFia);
  EXPECT_THAT(entry.entry.subjects,
              ElementsAre("from-caller", "PK-M-1", "E-1"));

  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus status,
                       exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(status.SerializeAsString(), queued.status.SerializeAsString());
  ASSERT_OK_AND_ASSIGN(const v1::CaseMessage stored,
                       exchange().GetOutgoingMessage("PK-M-1"));
  EXPECT_EQ(stored.SerializeAsString(), message.SerializeAsString());
  EXPECT_EQ(stored.sender_office(), kFia);

  // The envelope is ready now, signed, and names the audit entry.
  ASSERT_OK_AND_ASSIGN(const auto ready,
                       exchange().ReadyToSend(clock_.Now(), 10, {}));
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].envelope_id, "E-1");
  EXPECT_EQ(ready[0].exchange_id, kCaseA);
  EXPECT_EQ(ready[0].priority, v1::PRIORITY_PRIORITY);
  EXPECT_EQ(ready[0].state, v1::DELIVERY_STATE_QUEUED);
  ASSERT_OK_AND_ASSIGN(
      const v1::Envelope envelope,
      exchange::VerifyEnvelope(ready[0].signed_envelope, our_keys_, 1 << 20));
  EXPECT_EQ(envelope.origin_audit_index(), before);
  EXPECT_EQ(envelope.message().SerializeAsString(),
            message.SerializeAsString());
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, audit().Verify());
  EXPECT_TRUE(report.ok()) << report.problem;
}

TEST_F(ExchangeStoreTest, ReplayedRequestIdReturnsSameMessageAndWritesNothing) {
  const RequestKey key{"req-1", crypto::Sha256("request one")};
  ASSERT_OK_AND_ASSIGN(
      const QueuedMessage first,
      exchange().QueueOutgoing(Outgoing(Message("PK-M-1", kCaseA), "E-1"), key,
                               Event("message.send")));
  ASSERT_OK(exchange().RecordAttempt("E-1", Unavailable(),
                                     clock_.Now() + absl::Seconds(1)));
  const uint64_t audit_size = AuditSize();
  clock_.Advance(absl::Minutes(5));

  // A retry mints new ids; the stored ones come back.
  ASSERT_OK_AND_ASSIGN(
      const QueuedMessage again,
      exchange().QueueOutgoing(Outgoing(Message("PK-M-2", kCaseA), "E-2"), key,
                               Event("message.send")));
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.message_id, first.message_id);
  EXPECT_EQ(again.envelope_id, "E-1");
  EXPECT_EQ(again.status.state(), v1::DELIVERY_STATE_SENT);
  EXPECT_EQ(again.status.attempts(), 1);
  EXPECT_EQ(seals_, 1);
  EXPECT_EQ(AuditSize(), audit_size);
  EXPECT_EQ(CountRows("messages"), 1);
  EXPECT_EQ(CountRows("outbox"), 1);
  EXPECT_THAT(exchange().GetDeliveryStatus("PK-M-2"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("PK-M-2")));
}

TEST_F(ExchangeStoreTest, ReusedRequestIdWithOtherContentIsAlreadyExists) {
  ASSERT_OK(exchange()
                .QueueOutgoing(Outgoing(Message("PK-M-1", kCaseA), "E-1"),
                               {"req-1", crypto::Sha256("one")},
                               Event("message.send"))
                .status());
  const uint64_t audit_size = AuditSize();
  EXPECT_THAT(exchange().QueueOutgoing(
                  Outgoing(Message("PK-M-2", kCaseA), "E-2"),
                  {"req-1", crypto::Sha256("two")}, Event("message.send")),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       AllOf(HasSubstr("req-1"), HasSubstr("PK-M-1"))));
  EXPECT_EQ(AuditSize(), audit_size);
  EXPECT_EQ(CountRows("messages"), 1);
  EXPECT_EQ(CountRows("outbox"), 1);
  EXPECT_EQ(seals_, 1);
}

TEST_F(ExchangeStoreTest, RequestIdsAreScopedToTheSendingOffice) {
  const RequestKey key{"req-1", crypto::Sha256("same")};
  ASSERT_OK(exchange()
                .QueueOutgoing(Outgoing(Message("PK-M-1", kCaseA), "E-1"), key,
                               Event("message.send"))
                .status());
  ASSERT_OK_AND_ASSIGN(
      const QueuedMessage embassy,
      exchange().QueueOutgoing(
          Outgoing(
              Message("PK-M-2", kCaseA, v1::PRIORITY_ROUTINE, "x", kEmbassy),
              "E-2"),
          key, Event("message.send", kEmbassy)));
  EXPECT_FALSE(embassy.replayed);
  EXPECT_EQ(CountRows("outbox"), 2);
}

TEST_F(ExchangeStoreTest, SealFailureStoresNothing) {
  OutgoingMessage out = Outgoing(Message("PK-M-1", kCaseA), "E-1");
  out.seal = [](uint64_t) -> absl::StatusOr<v1::SignedEnvelope> {
    return absl::InvalidArgumentError("envelope.message.body: not valid UTF-8");
  };
  EXPECT_THAT(exchange().QueueOutgoing(out, {"req-1", crypto::Sha256("r")},
                                       Event("message.send")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not valid UTF-8")));
  EXPECT_EQ(AuditSize(), 0u);
  EXPECT_EQ(CountRows("messages"), 0);
  EXPECT_EQ(CountRows("outbox"), 0);
  EXPECT_THAT(exchange().GetDeliveryStatus("PK-M-1"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(ReadyIds(), IsEmpty());

  // The request id was not used up.
  ASSERT_OK_AND_ASSIGN(
      const QueuedMessage queued,
      exchange().QueueOutgoing(Outgoing(Message("PK-M-1", kCaseA), "E-1"),
                               {"req-1", crypto::Sha256("r")},
                               Event("message.send")));
  EXPECT_FALSE(queued.replayed);
  EXPECT_EQ(AuditSize(), 1u);
}

TEST_F(ExchangeStoreTest, SealedEnvelopeMustNameTheAuditEntryAndIds) {
  OutgoingMessage out = Outgoing(Message("PK-M-1", kCaseA), "E-1");
  const auto honest = out.seal;
  out.seal = [&honest](uint64_t index) { return honest(index + 1); };
  EXPECT_THAT(exchange().QueueOutgoing(out, {}, Event("message.send")),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("audit index")));
  out = Outgoing(Message("PK-M-1", kCaseA), "E-other");
  const auto other_id = out.seal;
  out.envelope_id = "E-1";
  out.seal = other_id;
  EXPECT_THAT(exchange().QueueOutgoing(out, {}, Event("message.send")),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("E-1")));
  EXPECT_EQ(AuditSize(), 0u);
  EXPECT_EQ(CountRows("outbox"), 0);
}

TEST_F(ExchangeStoreTest, QueueOutgoingRefusesTakenIdsAndMissingFields) {
  Queue(Message("PK-M-1", kCaseA));
  const uint64_t audit_size = AuditSize();
  EXPECT_THAT(
      exchange().QueueOutgoing(Outgoing(Message("PK-M-1", kCaseB), "E-9"), {},
                               Event("message.send")),
      StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("PK-M-1")));
  EXPECT_THAT(
      exchange().QueueOutgoing(Outgoing(Message("PK-M-2", kCaseB), "E-PK-M-1"),
                               {}, Event("message.send")),
      StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("E-PK-M-1")));
  EXPECT_THAT(
      exchange().QueueOutgoing(Outgoing(Message("", kCaseB), "E-3"), {},
                               Event("message.send")),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("message_id")));
  EXPECT_THAT(
      exchange().QueueOutgoing(Outgoing(Message("PK-M-3", kCaseB), ""), {},
                               Event("message.send")),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("envelope_id")));
  EXPECT_EQ(AuditSize(), audit_size);
  EXPECT_EQ(CountRows("outbox"), 1);
}

// --- ReadyToSend -------------------------------------------------------------

TEST_F(ExchangeStoreTest, AClockSetBackHoldsNoEnvelopeBeyondTheLongestWait) {
  exchange().set_longest_wait(absl::Seconds(60));
  Queue(Message("PK-M-1", kCaseA, v1::PRIORITY_URGENT));
  Queue(Message("PK-M-2", kCaseB));
  ASSERT_OK(exchange().RecordRetry("E-PK-M-2",
                                   absl::UnavailableError("the peer is away"),
                                   clock_.Now() + absl::Seconds(30)));
  EXPECT_THAT(ReadyIds(), ElementsAre("PK-M-1"));
  // The clock is set back an hour (a correction after it ran ahead): both
  // were due, or would be within the longest wait, an hour "from now".
  clock_.Advance(-absl::Hours(1));
  EXPECT_THAT(ReadyIds(), ElementsAre("PK-M-1", "PK-M-2"));
  // A wait within the longest is kept.
  ASSERT_OK(exchange().RecordRetry("E-PK-M-2",
                                   absl::UnavailableError("the peer is away"),
                                   clock_.Now() + absl::Seconds(30)));
  EXPECT_THAT(ReadyIds(), ElementsAre("PK-M-1"));
  clock_.Advance(absl::Seconds(30));
  EXPECT_THAT(ReadyIds(), ElementsAre("PK-M-1", "PK-M-2"));
}

TEST_F(ExchangeStoreTest, AMessageNeedingItsCaseSharedWaitsForALiveShare) {
  const auto needing_share = [&](const std::string& message_id) {
    OutgoingMessage out =
        Outgoing(Message(message_id, kCaseA), "E-" + message_id);
    out.needs_shared_case = true;
    return exchange().QueueOutgoing(out, {}, Event("message.send"));
  };
  const auto share = [&](const std::string& message_id) {
    v1::CaseMessage m = Message(message_id, kCaseA, v1::PRIORITY_PRIORITY);
    m.set_kind(v1::MESSAGE_KIND_CASE_SHARE);
    Queue(m);
  };
  const auto not_shared = StatusIs(
      absl::StatusCode::kFailedPrecondition,
      HasSubstr(absl::StrCat("case ", kCaseA, " has not been shared")));
  // A message of the case, another case's share: not a share of this case.
  Queue(Message("PK-M-1", kCaseA));
  v1::CaseMessage other = Message("PK-M-2", kCaseB);
  other.set_kind(v1::MESSAGE_KIND_CASE_SHARE);
  Queue(other);
  const uint64_t audit_size = AuditSize();
  const int64_t messages = CountRows("messages");
  EXPECT_THAT(needing_share("PK-M-3"), not_shared);
  // A share the peer refused for good, or one withdrawn, does not count.
  share("PK-M-4");
  ASSERT_OK(exchange().RecordRefused(
      "E-PK-M-4", absl::InvalidArgumentError("message.case_reference: bad"),
      Event("envelope.refused", kCnGateway)));
  share("PK-M-5");
  ASSERT_OK(exchange().CancelOutgoing("PK-M-5", "not yet", std::nullopt,
                                      Event("message.cancel")));
  EXPECT_THAT(needing_share("PK-M-3"), not_shared);
  // Of the refused calls, nothing: the two shares, the refusal, the cancel.
  EXPECT_EQ(CountRows("messages"), messages + 2);
  EXPECT_EQ(AuditSize(), audit_size + 4);
  // A share still queued counts (per-case order sends it first), and so does
  // a delivered one.
  share("PK-M-6");
  ASSERT_OK(needing_share("PK-M-3").status());
  ASSERT_OK(exchange().RecordDelivered("E-PK-M-6", PeerReceipt("E-PK-M-6"),
                                       clock_.Now(), Event("receipt.store")));
  ASSERT_OK(needing_share("PK-M-7").status());
}

TEST_F(ExchangeStoreTest, TheShareMessagesWaitForIsNotCancelledUnderThem) {
  // Cancelled, the case's only share would let the messages queued after it
  // reach a peer that cannot read their case.
  const auto share = [&](const std::string& message_id) {
    v1::CaseMessage m = Message(message_id, kCaseA, v1::PRIORITY_PRIORITY);
    m.set_kind(v1::MESSAGE_KIND_CASE_SHARE);
    Queue(m);
  };
  share("PK-M-1");
  share("PK-M-2");
  Queue(Message("PK-M-3", kCaseA, v1::PRIORITY_URGENT));
  Queue(Message("PK-M-4", kCaseB));  // another case: no bearing
  const uint64_t audit_size = AuditSize();
  // PK-M-1 still goes ahead of PK-M-3.
  ASSERT_OK(exchange().CancelOutgoing("PK-M-2", "sent twice", std::nullopt,
                                      Event("message.cancel")));
  const auto refused = StatusIs(
      absl::StatusCode::kFailedPrecondition,
      absl::StrCat("message PK-M-1 shares case ", kCaseA,
                   " with the peer, and messages queued on the case wait for "
                   "it (PK-M-3); cancel those first: without the share the "
                   "peer could not read the case they concern"));
  EXPECT_THAT(exchange().CancelOutgoing("PK-M-1", "sent in error", std::nullopt,
                                        Event("message.cancel")),
              refused);
  // A share queued after the message comes too late for it.
  share("PK-M-5");
  EXPECT_THAT(exchange().CancelOutgoing("PK-M-1", "sent in error", std::nullopt,
                                        Event("message.cancel")),
              refused);
  // The cancel and the new share; the refusals wrote nothing.
  EXPECT_EQ(AuditSize(), audit_size + 2);
  EXPECT_THAT(ReadyIds(), ElementsAre("PK-M-1", "PK-M-4"));
  // Once nothing waits for it, it may go.
  ASSERT_OK(exchange().CancelOutgoing("PK-M-3", "not needed", std::nullopt,
                                      Event("message.cancel")));
  ASSERT_OK(exchange().CancelOutgoing("PK-M-1", "not needed", std::nullopt,
                                      Event("message.cancel")));
  EXPECT_EQ(AuditSize(), audit_size + 4);
}

TEST_F(ExchangeStoreTest, AShareRefusalNamesOnlyTheCallersOwnWaitingMessages) {
  // Another office's message ids are not the sender's to learn: they are
  // counted. A supervisor (no viewer) is told them all.
  v1::CaseMessage share = Message("PK-M-1", kCaseA, v1::PRIORITY_PRIORITY);
  share.set_kind(v1::MESSAGE_KIND_CASE_SHARE);
  Queue(share);
  Queue(Message("PK-M-2", kCaseA, v1::PRIORITY_ROUTINE, "mine", kFia));
  for (const char* id : {"PK-M-3", "PK-M-4"}) {
    Queue(Message(id, kCaseA, v1::PRIORITY_ROUTINE, "theirs", kEmbassy));
  }
  for (const char* id : {"PK-M-5", "PK-M-6", "PK-M-7"}) {
    Queue(Message(id, kCaseA, v1::PRIORITY_ROUTINE, "mine", kFia));
  }
  const uint64_t audit_size = AuditSize();
  const std::string head = absl::StrCat(
      "message PK-M-1 shares case ", kCaseA,
      " with the peer, and messages queued on the case wait for it (");
  const std::string tail =
      ": without the share the peer could not read the case they concern";
  EXPECT_THAT(
      exchange().CancelOutgoing("PK-M-1", "x", std::string(kFia),
                                Event("message.cancel")),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               absl::StrCat(head,
                            "PK-M-2, PK-M-5, PK-M-6, 1 more, 2 messages of "
                            "other offices); cancel those first (another "
                            "office's: that office or a supervisor)",
                            tail)));
  EXPECT_THAT(exchange().CancelOutgoing("PK-M-1", "x", std::string(kEmbassy),
                                        Event("message.cancel")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("(PK-M-3, PK-M-4, 4 messages of other "
                                 "offices)")));
  EXPECT_THAT(exchange().CancelOutgoing("PK-M-1", "x", std::nullopt,
                                        Event("message.cancel")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       absl::StrCat(head,
                                    "PK-M-2, PK-M-3, PK-M-4, 3 more); cancel "
                                    "those first",
                                    tail)));
  // Refusals change nothing.
  EXPECT_EQ(AuditSize(), audit_size);
  EXPECT_THAT(ReadyIds(), ElementsAre("PK-M-1"));
}

TEST_F(ExchangeStoreTest, MessagesWaitingForAShareRefusedForGoodFailWithIt) {
  const auto share = [&](const std::string& message_id,
                         const std::string& exchange_id) {
    v1::CaseMessage m = Message(message_id, exchange_id, v1::PRIORITY_PRIORITY);
    m.set_kind(v1::MESSAGE_KIND_CASE_SHARE);
    Queue(m);
  };
  share("PK-M-1", kCaseA);
  Queue(Message("PK-M-2", kCaseA, v1::PRIORITY_URGENT));
  Queue(Message("PK-M-3", kCaseA));
  share("PK-M-4", kCaseB);
  share("PK-M-5", kCaseB);
  Queue(Message("PK-M-6", kCaseB));
  const uint64_t audit_size = AuditSize();
  ASSERT_OK(exchange().RecordRefused(
      "E-PK-M-1",
      absl::InvalidArgumentError("peer refused: message.case_reference: bad"),
      Event("envelope.refused_by_peer", kPkGateway)));
  for (const char* id : {"PK-M-1", "PK-M-2", "PK-M-3"}) {
    ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus status,
                         exchange().GetDeliveryStatus(id));
    EXPECT_EQ(status.state(), v1::DELIVERY_STATE_FAILED) << id;
  }
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus waited,
                       exchange().GetDeliveryStatus("PK-M-2"));
  EXPECT_EQ(waited.last_error(),
            absl::StrCat("FAILED_PRECONDITION: the share of case ", kCaseA,
                         " (PK-M-1) was refused by the peer for good; share "
                         "the case again, then send this message again"));
  // The refusal, then one entry per message failed with it.
  ASSERT_EQ(AuditSize(), audit_size + 3);
  for (uint64_t i = audit_size + 1; i < audit_size + 3; ++i) {
    const StoredEntry entry = AuditEntry(i);
    EXPECT_EQ(entry.entry.action, "message.failed");
    EXPECT_EQ(entry.entry.actor, kPkGateway);
    EXPECT_EQ(entry.entry.status_code,
              static_cast<int32_t>(absl::StatusCode::kFailedPrecondition));
  }
  EXPECT_THAT(AuditEntry(audit_size + 1).entry.subjects,
              ElementsAre(kCaseA, "PK-M-2", "E-PK-M-2"));

  // Another share ahead of a message: it does not wait for the refused one.
  ASSERT_OK(exchange().RecordRefused(
      "E-PK-M-4",
      absl::InvalidArgumentError("peer refused: message.case_reference: bad"),
      Event("envelope.refused_by_peer", kPkGateway)));
  EXPECT_EQ(AuditSize(), audit_size + 4);
  EXPECT_THAT(ReadyIds(), ElementsAre("PK-M-5"));
}

TEST_F(ExchangeStoreTest, UrgentOfAnotherCaseOvertakesOlderRoutine) {
  Queue(Message("A-1", kCaseA, v1::PRIORITY_ROUTINE));
  clock_.Advance(absl::Seconds(1));
  Queue(Message("C-1", kCaseC, v1::PRIORITY_PRIORITY));
  clock_.Advance(absl::Seconds(1));
  Queue(Message("B-1", kCaseB, v1::PRIORITY_URGENT));
  EXPECT_THAT(ReadyIds(), ElementsAre("B-1", "C-1", "A-1"));
  EXPECT_THAT(ReadyIds({}, 2), ElementsAre("B-1", "C-1"));
}

TEST_F(ExchangeStoreTest, SamePriorityGoesInQueueOrder) {
  Queue(Message("B-1", kCaseB));
  Queue(Message("A-1", kCaseA));
  Queue(Message("C-1", kCaseC));
  EXPECT_THAT(ReadyIds(), ElementsAre("B-1", "A-1", "C-1"));
}

TEST_F(ExchangeStoreTest, MessagesOfOneCaseNeverOvertakeEachOther) {
  Queue(Message("A-1", kCaseA, v1::PRIORITY_ROUTINE));
  Queue(Message("A-2", kCaseA, v1::PRIORITY_URGENT));
  Queue(Message("B-1", kCaseB, v1::PRIORITY_ROUTINE));
  // A-2 is URGENT but waits for A-1.
  EXPECT_THAT(ReadyIds(), ElementsAre("A-1", "B-1"));

  // Still waiting while A-1 is being retried.
  ASSERT_OK(exchange().RecordAttempt("E-A-1", Unavailable(),
                                     clock_.Now() + absl::Minutes(1)));
  EXPECT_THAT(ReadyIds(), ElementsAre("B-1"));

  ASSERT_OK(exchange().RecordDelivered("E-A-1", PeerReceipt("E-A-1"),
                                       clock_.Now(),
                                       Event("receipt.store", kCnGateway)));
  EXPECT_THAT(ReadyIds(), ElementsAre("A-2", "B-1"));
}

TEST_F(ExchangeStoreTest, AMessageHeldBackByItsCaseSaysWhatItWaitsFor) {
  // A ROUTINE note the peer keeps refusing (not for good), then an URGENT
  // rescue request of the same case, maybe from another office.
  Queue(Message("A-1", kCaseA));
  Queue(Message("A-2", kCaseA, v1::PRIORITY_URGENT));
  Queue(Message("B-1", kCaseB));
  ASSERT_OK(exchange().RecordAttempt(
      "E-A-1",
      absl::FailedPreconditionError(
          "peer refused: message.recipient_office: \"x\" is not an office of "
          "this gateway that takes messages"),
      clock_.Now() + absl::Minutes(1)));
  ASSERT_OK_AND_ASSIGN(v1::DeliveryStatus waiting,
                       exchange().GetDeliveryStatus("A-2"));
  EXPECT_EQ(waiting.state(), v1::DELIVERY_STATE_QUEUED);
  EXPECT_EQ(waiting.waiting_behind(),
            absl::StrCat("an earlier message of case ", kCaseA,
                         " is not delivered yet (1 attempt; last error: "
                         "FAILED_PRECONDITION: peer refused: "
                         "message.recipient_office: \"x\" is not an office "
                         "of this gateway that takes messages)"));
  // Not said of the first of its case, nor of another case.
  ASSERT_OK_AND_ASSIGN(v1::DeliveryStatus first,
                       exchange().GetDeliveryStatus("A-1"));
  EXPECT_EQ(first.waiting_behind(), "");
  ASSERT_OK_AND_ASSIGN(v1::DeliveryStatus other,
                       exchange().GetDeliveryStatus("B-1"));
  EXPECT_EQ(other.waiting_behind(), "");
  // Once the first has failed for good, nothing holds the second back.
  ASSERT_OK(exchange().RecordRefused(
      "E-A-1", absl::InvalidArgumentError("message.body: empty"),
      Event("envelope.refused", kCnGateway)));
  ASSERT_OK_AND_ASSIGN(waiting, exchange().GetDeliveryStatus("A-2"));
  EXPECT_EQ(waiting.waiting_behind(), "");
}

TEST_F(ExchangeStoreTest, RefusedEnvelopeNoLongerHoldsItsCaseBack) {
  Queue(Message("A-1", kCaseA));
  Queue(Message("A-2", kCaseA));
  ASSERT_OK(exchange().RecordRefused(
      "E-A-1", absl::InvalidArgumentError("message.body: empty"),
      Event("envelope.refused", kCnGateway)));
  EXPECT_THAT(ReadyIds(), ElementsAre("A-2"));
}

TEST_F(ExchangeStoreTest, BusyCasesAreSkipped) {
  Queue(Message("A-1", kCaseA, v1::PRIORITY_URGENT));
  Queue(Message("A-2", kCaseA));
  Queue(Message("B-1", kCaseB));
  Queue(Message("C-1", kCaseC));
  EXPECT_THAT(ReadyIds({kCaseA}), ElementsAre("B-1", "C-1"));
  EXPECT_THAT(ReadyIds({kCaseA, kCaseC}), ElementsAre("B-1"));
  EXPECT_THAT(ReadyIds({kCaseA}, 1), ElementsAre("B-1"));
}

TEST_F(ExchangeStoreTest, EnvelopesWaitForTheirNextAttempt) {
  Queue(Message("A-1", kCaseA, v1::PRIORITY_URGENT));
  Queue(Message("B-1", kCaseB));
  ASSERT_OK(exchange().RecordAttempt("E-A-1", Unavailable(),
                                     clock_.Now() + absl::Seconds(30)));
  EXPECT_THAT(ReadyIds(), ElementsAre("B-1"));
  clock_.Advance(absl::Seconds(29));
  EXPECT_THAT(ReadyIds(), ElementsAre("B-1"));
  clock_.Advance(absl::Seconds(1));
  EXPECT_THAT(ReadyIds(), ElementsAre("A-1", "B-1"));
  ASSERT_OK_AND_ASSIGN(const auto ready,
                       exchange().ReadyToSend(clock_.Now(), 1, {}));
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].state, v1::DELIVERY_STATE_SENT);
  EXPECT_EQ(ready[0].attempts, 1);
  EXPECT_EQ(ready[0].next_attempt, clock_.Now());
}

TEST_F(ExchangeStoreTest, OutboxSurvivesRestart) {
  Queue(Message("A-1", kCaseA));
  Queue(Message("B-1", kCaseB, v1::PRIORITY_URGENT));
  ASSERT_OK(exchange().RecordAttempt("E-A-1", Unavailable(), clock_.Now()));
  Reopen();
  EXPECT_THAT(ReadyIds(), ElementsAre("B-1", "A-1"));
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus status,
                       exchange().GetDeliveryStatus("A-1"));
  EXPECT_EQ(status.attempts(), 1);
}

// --- Delivery states ---------------------------------------------------------

TEST_F(ExchangeStoreTest, LastErrorShowsCodeAndMessageNeverAPayload) {
  Queue(Message("PK-M-1", kCaseA));
  absl::Status refused = absl::UnauthenticatedError(
      "peer refused: signature: does not verify for key k1");
  refused.SetPayload("type.casebridge.dev/refusal.permanent", absl::Cord("1"));
  ASSERT_OK(exchange().RecordAttempt("E-PK-M-1", refused, clock_.Now()));
  ASSERT_OK_AND_ASSIGN(v1::DeliveryStatus status,
                       exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(status.last_error(),
            "UNAUTHENTICATED: peer refused: signature: does not verify for "
            "key k1");
  ASSERT_OK(exchange().RecordRetry("E-PK-M-1", refused, clock_.Now()));
  ASSERT_OK(exchange().RecordRefused("E-PK-M-1", refused,
                                     Event("envelope.refused_by_peer")));
  ASSERT_OK_AND_ASSIGN(status, exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_FAILED);
  EXPECT_THAT(status.last_error(), Not(HasSubstr("casebridge.dev")));

  // This gateway's own storage trouble shows what the office can do, not
  // the SQL.
  Queue(Message("PK-M-2", kCaseA));
  ASSERT_OK(exchange().RecordRetry(
      "E-PK-M-2",
      WithLogOnlyDetail(absl::UnavailableError(
          "executing \"BEGIN IMMEDIATE\": database is locked (sqlite 5)")),
      clock_.Now()));
  ASSERT_OK_AND_ASSIGN(status, exchange().GetDeliveryStatus("PK-M-2"));
  EXPECT_EQ(status.last_error(),
            "UNAVAILABLE: the gateway's database was busy; try again");
}

TEST_F(ExchangeStoreTest, DeliveryGoesQueuedSentDelivered) {
  const absl::Time queued_at = clock_.Now();
  Queue(Message("PK-M-1", kCaseA));
  ASSERT_OK_AND_ASSIGN(v1::DeliveryStatus status,
                       exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_QUEUED);
  EXPECT_EQ(status.attempts(), 0);

  const uint64_t audit_size = AuditSize();
  clock_.Advance(absl::Seconds(2));
  ASSERT_OK(exchange().RecordAttempt("E-PK-M-1", Unavailable(),
                                     clock_.Now() + absl::Seconds(1)));
  ASSERT_OK_AND_ASSIGN(status, exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_SENT);
  EXPECT_EQ(status.attempts(), 1);
  EXPECT_THAT(status.last_error(),
              AllOf(HasSubstr("UNAVAILABLE"), HasSubstr("connection refused")));

  clock_.Advance(absl::Seconds(2));
  ASSERT_OK(exchange().RecordAttempt("E-PK-M-1", absl::OkStatus(),
                                     clock_.Now() + absl::Seconds(10)));
  ASSERT_OK_AND_ASSIGN(status, exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_SENT);
  EXPECT_EQ(status.attempts(), 2);
  EXPECT_EQ(status.last_error(), "");
  // Attempts are not audited.
  EXPECT_EQ(AuditSize(), audit_size);

  const v1::SignedReceipt receipt = PeerReceipt("E-PK-M-1");
  const absl::Time delivered_at = clock_.Now();
  ASSERT_OK(exchange().RecordDelivered("E-PK-M-1", receipt, delivered_at,
                                       Event("receipt.store", kCnGateway)));
  ASSERT_OK_AND_ASSIGN(status, exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(status.attempts(), 2);
  EXPECT_EQ(status.receipt().SerializeAsString(), receipt.SerializeAsString());
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(status.delivered_at()),
            absl::ToUnixMicros(delivered_at));
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(status.queued_at()),
            absl::ToUnixMicros(queued_at));
  EXPECT_THAT(ReadyIds(), IsEmpty());

  ASSERT_EQ(AuditSize(), audit_size + 1);
  const StoredEntry entry = AuditEntry(audit_size);
  EXPECT_EQ(entry.entry.action, "receipt.store");
  EXPECT_THAT(entry.entry.subjects,
              ElementsAre("from-caller", "PK-M-1", "E-PK-M-1"));

  // Nothing more to attempt or refuse.
  EXPECT_THAT(
      exchange().RecordAttempt("E-PK-M-1", Unavailable(), clock_.Now()),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("delivered")));
  EXPECT_THAT(
      exchange().RecordRefused("E-PK-M-1", absl::InternalError("x"),
                               Event("envelope.refused")),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("delivered")));
  EXPECT_EQ(AuditSize(), audit_size + 1);
}

TEST_F(ExchangeStoreTest, RecordDeliveredIsIdempotentForTheSameReceipt) {
  Queue(Message("PK-M-1", kCaseA));
  const v1::SignedReceipt receipt = PeerReceipt("E-PK-M-1", 7);
  ASSERT_OK(exchange().RecordDelivered("E-PK-M-1", receipt, clock_.Now(),
                                       Event("receipt.store")));
  const uint64_t audit_size = AuditSize();
  clock_.Advance(absl::Seconds(5));
  EXPECT_OK(exchange().RecordDelivered("E-PK-M-1", receipt, clock_.Now(),
                                       Event("receipt.store")));
  EXPECT_EQ(AuditSize(), audit_size);

  const v1::SignedReceipt other = PeerReceipt("E-PK-M-1", 8);
  EXPECT_THAT(exchange().RecordDelivered("E-PK-M-1", other, clock_.Now(),
                                         Event("receipt.store")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("another receipt")));
  EXPECT_EQ(AuditSize(), audit_size);
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus status,
                       exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(status.receipt().SerializeAsString(), receipt.SerializeAsString());
}

TEST_F(ExchangeStoreTest, RecordRefusedMarksFailedAndAudits) {
  Queue(Message("PK-M-1", kCaseA));
  const uint64_t audit_size = AuditSize();
  const absl::Status refusal =
      absl::PermissionDeniedError("case PK-2026-000001 was never shared");
  ASSERT_OK(exchange().RecordRefused("E-PK-M-1", refusal,
                                     Event("envelope.refused", kCnGateway)));
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus status,
                       exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_FAILED);
  EXPECT_THAT(status.last_error(), HasSubstr("never shared"));
  EXPECT_THAT(ReadyIds(), IsEmpty());
  ASSERT_EQ(AuditSize(), audit_size + 1);
  EXPECT_THAT(AuditEntry(audit_size).entry.subjects,
              ElementsAre("from-caller", "PK-M-1", "E-PK-M-1"));

  EXPECT_THAT(
      exchange().RecordRefused("E-PK-M-1", refusal, Event("envelope.refused")),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("failed")));
  EXPECT_THAT(exchange().RecordAttempt("E-PK-M-1", Unavailable(), clock_.Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_EQ(AuditSize(), audit_size + 1);

  // A signed receipt is proof of delivery all the same.
  ASSERT_OK(exchange().RecordDelivered("E-PK-M-1", PeerReceipt("E-PK-M-1"),
                                       clock_.Now(), Event("receipt.store")));
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus delivered,
                       exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(delivered.state(), v1::DELIVERY_STATE_DELIVERED);
}

TEST_F(ExchangeStoreTest, ACancelledMessageIsNeverSentAgainAndFreesItsCase) {
  Queue(Message("A-1", kCaseA));
  Queue(Message("A-2", kCaseA));
  EXPECT_THAT(ReadyIds(), ElementsAre("A-1"));  // A-2 waits behind it
  const uint64_t audit_size = AuditSize();
  ASSERT_OK(exchange().CancelOutgoing("A-1", "cancelled by the desk: wrong",
                                      std::nullopt, Event("message.cancel")));
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus status,
                       exchange().GetDeliveryStatus("A-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_CANCELLED);
  EXPECT_EQ(status.last_error(), "cancelled by the desk: wrong");
  EXPECT_THAT(ReadyIds(), ElementsAre("A-2"));
  ASSERT_EQ(AuditSize(), audit_size + 1);
  EXPECT_EQ(AuditEntry(audit_size).entry.action, "message.cancel");
  EXPECT_THAT(AuditEntry(audit_size).entry.subjects,
              ElementsAre("from-caller", "E-A-1"));
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus next,
                       exchange().GetDeliveryStatus("A-2"));
  EXPECT_EQ(next.waiting_behind(), "");

  // Once; and not a message unknown or already delivered.
  EXPECT_THAT(
      exchange().CancelOutgoing("A-1", "again", std::nullopt, Event("x")),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("message A-1 is cancelled")));
  EXPECT_THAT(exchange().CancelOutgoing("A-404", "x", std::nullopt, Event("x")),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  ASSERT_OK(exchange().RecordDelivered("E-A-2", PeerReceipt("E-A-2"),
                                       clock_.Now(), Event("receipt.store")));
  EXPECT_THAT(
      exchange().CancelOutgoing("A-2", "late", std::nullopt, Event("x")),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("message A-2 is delivered")));
  EXPECT_EQ(AuditSize(), audit_size + 2);
}

TEST_F(ExchangeStoreTest, AMessageCancelledOnItsWayIsToldAsWhatHappened) {
  // Cancelled while its envelope was being written to the stream: the
  // attempt counts and its first sending is audited; a refusal is on
  // record; a receipt proves delivery.
  Queue(Message("A-1", kCaseA));
  ASSERT_OK(exchange().CancelOutgoing("A-1", "cancelled by the desk",
                                      std::nullopt, Event("message.cancel")));
  const uint64_t audit_size = AuditSize();
  ExchangeStore::Sending round;
  round.attempts.resize(1);
  round.attempts[0].envelope_id = "E-A-1";
  round.attempts[0].sent = Event("envelope.sent", kPkGateway);
  round.next_attempt = clock_.Now();
  ASSERT_OK_AND_ASSIGN(const ExchangeStore::SendingRecorded record,
                       exchange().RecordSending(round));
  ASSERT_EQ(record.attempts.size(), 1u);
  EXPECT_OK(record.attempts[0]);
  ASSERT_EQ(AuditSize(), audit_size + 1);
  EXPECT_EQ(AuditEntry(audit_size).entry.action, "envelope.sent");
  ASSERT_OK_AND_ASSIGN(v1::DeliveryStatus status,
                       exchange().GetDeliveryStatus("A-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_CANCELLED);
  EXPECT_EQ(status.attempts(), 1);
  EXPECT_EQ(status.last_error(), "cancelled by the desk");
  EXPECT_THAT(ReadyIds(), IsEmpty());

  ASSERT_OK(exchange().RecordRefused("E-A-1",
                                     absl::FailedPreconditionError("no office"),
                                     Event("envelope.refused", kCnGateway)));
  ASSERT_EQ(AuditSize(), audit_size + 2);
  ASSERT_OK_AND_ASSIGN(status, exchange().GetDeliveryStatus("A-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_CANCELLED);

  ASSERT_OK(exchange().RecordDelivered("E-A-1", PeerReceipt("E-A-1"),
                                       clock_.Now(), Event("receipt.store")));
  ASSERT_OK_AND_ASSIGN(status, exchange().GetDeliveryStatus("A-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_DELIVERED);
}

TEST_F(ExchangeStoreTest, RecordSendingCountsARoundAndAuditsFirstSends) {
  Queue(Message("A-1", kCaseA));
  Queue(Message("B-1", kCaseB));
  Queue(Message("C-1", kCaseC));
  ASSERT_OK(exchange().RecordAttempt("E-C-1", Unavailable(), clock_.Now()));
  ASSERT_OK(exchange().RecordRefused("E-B-1", absl::InternalError("refused"),
                                     Event("envelope.refused")));
  const uint64_t audit_size = AuditSize();

  ExchangeStore::Sending round;
  round.attempts.resize(4);
  round.attempts[0].envelope_id = "E-A-1";
  round.attempts[0].sent = Event("envelope.sent", kPkGateway);
  round.attempts[1].envelope_id = "E-B-1";  // FAILED: left out
  round.attempts[1].sent = Event("envelope.sent", kPkGateway);
  round.attempts[2].envelope_id = "E-404";  // unknown: left out
  round.attempts[2].sent = Event("envelope.sent", kPkGateway);
  round.attempts[3].envelope_id = "E-C-1";  // a retransmission: not audited
  round.next_attempt = clock_.Now() + absl::Seconds(3);
  ASSERT_OK_AND_ASSIGN(const ExchangeStore::SendingRecorded record,
                       exchange().RecordSending(round));
  EXPECT_THAT(record.deliveries, IsEmpty());
  const std::vector<absl::Status>& recorded = record.attempts;
  ASSERT_EQ(recorded.size(), 4u);
  EXPECT_OK(recorded[0]);
  EXPECT_THAT(recorded[1], StatusIs(absl::StatusCode::kFailedPrecondition,
                                    HasSubstr("failed")));
  EXPECT_THAT(recorded[2], StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_OK(recorded[3]);

  // One entry: A-1's first send, exactly as given.
  ASSERT_EQ(AuditSize(), audit_size + 1);
  const StoredEntry entry = AuditEntry(audit_size);
  EXPECT_EQ(entry.entry.action, "envelope.sent");
  EXPECT_EQ(entry.entry.actor, kPkGateway);
  EXPECT_THAT(entry.entry.subjects, ElementsAre("from-caller"));

  ASSERT_OK_AND_ASSIGN(v1::DeliveryStatus status,
                       exchange().GetDeliveryStatus("A-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_SENT);
  EXPECT_EQ(status.attempts(), 1);
  EXPECT_EQ(status.last_error(), "");
  ASSERT_OK_AND_ASSIGN(status, exchange().GetDeliveryStatus("C-1"));
  EXPECT_EQ(status.attempts(), 2);
  EXPECT_EQ(status.last_error(), "");
  ASSERT_OK_AND_ASSIGN(status, exchange().GetDeliveryStatus("B-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_FAILED);
  EXPECT_EQ(status.attempts(), 0);

  // Due again at `due`, not before.
  EXPECT_THAT(ReadyIds(), IsEmpty());
  clock_.Advance(absl::Seconds(3));
  EXPECT_THAT(ReadyIds(), ElementsAre("A-1", "C-1"));
  ASSERT_OK_AND_ASSIGN(const ExchangeStore::SendingRecorded none,
                       exchange().RecordSending({}));
  EXPECT_THAT(none.attempts, IsEmpty());
  EXPECT_THAT(none.deliveries, IsEmpty());
}

TEST_F(ExchangeStoreTest, RecordSendingStoresReceiptsAtTheirCommitTime) {
  Queue(Message("A-1", kCaseA));
  Queue(Message("B-1", kCaseB));
  Queue(Message("C-1", kCaseC));
  const v1::SignedReceipt receipt_a = PeerReceipt("E-A-1", 7);
  ASSERT_OK(exchange().RecordDelivered("E-A-1", receipt_a, clock_.Now(),
                                       Event("receipt.stored")));
  const uint64_t audit_size = AuditSize();
  clock_.Advance(absl::Seconds(4));  // the store's clock gives delivered_at

  ExchangeStore::Sending batch;
  batch.deliveries = {
      {"E-A-1", receipt_a, Event("receipt.stored")},  // again: OK
      {"E-B-1", PeerReceipt("E-B-1"), Event("receipt.stored")},
      {"E-404", PeerReceipt("E-404"), Event("receipt.stored")},
      {"E-A-1", PeerReceipt("E-A-1", 8), Event("receipt.stored")},
      {"E-C-1", PeerReceipt("E-C-1"), Event("receipt.stored")},
  };
  ASSERT_OK_AND_ASSIGN(const ExchangeStore::SendingRecorded record,
                       exchange().RecordSending(batch));
  EXPECT_THAT(record.attempts, IsEmpty());
  const std::vector<absl::Status>& stored = record.deliveries;
  ASSERT_EQ(stored.size(), 5u);
  EXPECT_OK(stored[0]);
  EXPECT_OK(stored[1]);
  EXPECT_THAT(stored[2], StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(stored[3], StatusIs(absl::StatusCode::kFailedPrecondition,
                                  HasSubstr("another receipt")));
  EXPECT_OK(stored[4]);

  // B-1 and C-1 audited, in order, with their ids as subjects.
  ASSERT_EQ(AuditSize(), audit_size + 2);
  EXPECT_THAT(AuditEntry(audit_size).entry.subjects,
              ElementsAre("from-caller", "B-1", "E-B-1"));
  EXPECT_THAT(AuditEntry(audit_size + 1).entry.subjects,
              ElementsAre("from-caller", "C-1", "E-C-1"));
  for (const char* id : {"B-1", "C-1"}) {
    ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus status,
                         exchange().GetDeliveryStatus(id));
    EXPECT_EQ(status.state(), v1::DELIVERY_STATE_DELIVERED) << id;
    EXPECT_EQ(TimeUtil::TimestampToMicroseconds(status.delivered_at()),
              absl::ToUnixMicros(clock_.Now()))
        << id;
  }
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus a,
                       exchange().GetDeliveryStatus("A-1"));
  EXPECT_EQ(a.receipt().SerializeAsString(), receipt_a.SerializeAsString());
  EXPECT_LT(TimeUtil::TimestampToMicroseconds(a.delivered_at()),
            absl::ToUnixMicros(clock_.Now()));
  EXPECT_THAT(ReadyIds(), IsEmpty());
}

TEST_F(ExchangeStoreTest, RecordSendingCountsAnAttemptBeforeStoringItsReceipt) {
  Queue(Message("A-1", kCaseA));
  const uint64_t audit_size = AuditSize();

  // The envelope was sent and its receipt read before the sender recorded
  // either: one record holds both.
  ExchangeStore::Sending sending;
  sending.attempts.resize(1);
  sending.attempts[0].envelope_id = "E-A-1";
  sending.attempts[0].sent = Event("envelope.sent", kPkGateway);
  sending.next_attempt = clock_.Now();
  sending.deliveries = {
      {"E-A-1", PeerReceipt("E-A-1"), Event("receipt.stored", kPkGateway)}};
  ASSERT_OK_AND_ASSIGN(const ExchangeStore::SendingRecorded record,
                       exchange().RecordSending(sending));
  ASSERT_EQ(record.attempts.size(), 1u);
  EXPECT_OK(record.attempts[0]);
  ASSERT_EQ(record.deliveries.size(), 1u);
  EXPECT_OK(record.deliveries[0]);

  ASSERT_EQ(AuditSize(), audit_size + 2);
  EXPECT_EQ(AuditEntry(audit_size).entry.action, "envelope.sent");
  EXPECT_EQ(AuditEntry(audit_size + 1).entry.action, "receipt.stored");
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus status,
                       exchange().GetDeliveryStatus("A-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(status.attempts(), 1);

  // Sent twice before either attempt was recorded (a record failed in
  // between): both attempts count, one entry.
  Queue(Message("C-1", kCaseC));
  ExchangeStore::Sending twice;
  twice.attempts.resize(2);
  for (ExchangeStore::Attempt& attempt : twice.attempts) {
    attempt.envelope_id = "E-C-1";
    attempt.sent = Event("envelope.sent", kPkGateway);
  }
  twice.next_attempt = clock_.Now();
  const uint64_t before_twice = AuditSize();
  ASSERT_OK_AND_ASSIGN(const ExchangeStore::SendingRecorded counted,
                       exchange().RecordSending(twice));
  ASSERT_EQ(counted.attempts.size(), 2u);
  EXPECT_OK(counted.attempts[0]);
  EXPECT_OK(counted.attempts[1]);
  EXPECT_EQ(AuditSize(), before_twice + 1);
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus c,
                       exchange().GetDeliveryStatus("C-1"));
  EXPECT_EQ(c.attempts(), 2);

  // Recorded the other way round, the attempt would come too late: a
  // delivered envelope counts no attempt and gets no envelope.sent entry.
  Queue(Message("B-1", kCaseB));
  ExchangeStore::Sending receipt_only;
  receipt_only.deliveries = {
      {"E-B-1", PeerReceipt("E-B-1"), Event("receipt.stored", kPkGateway)}};
  ASSERT_OK(exchange().RecordSending(receipt_only).status());
  ExchangeStore::Sending late;
  late.attempts.resize(1);
  late.attempts[0].envelope_id = "E-B-1";
  late.attempts[0].sent = Event("envelope.sent", kPkGateway);
  late.next_attempt = clock_.Now();
  const uint64_t before_late = AuditSize();
  ASSERT_OK_AND_ASSIGN(const ExchangeStore::SendingRecorded refused,
                       exchange().RecordSending(late));
  ASSERT_EQ(refused.attempts.size(), 1u);
  EXPECT_THAT(refused.attempts[0],
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_EQ(AuditSize(), before_late);
}

// ReadyToSend against a reference: the due heads of cases not busy, URGENT
// first, then queue order, in a backlog of many cases with deep queues,
// attempts backing off, refusals and deliveries.
TEST_F(ExchangeStoreTest, ReadyToSendMatchesTheReferenceOrderInADeepBacklog) {
  struct Row {
    std::string id;
    std::string exchange_id;
    v1::Priority priority;
    bool pending = true;
    absl::Time due;
  };
  std::vector<Row> rows;  // queue order
  std::mt19937 random(20261129);
  const v1::Priority priorities[] = {v1::PRIORITY_ROUTINE, v1::PRIORITY_ROUTINE,
                                     v1::PRIORITY_PRIORITY,
                                     v1::PRIORITY_URGENT};
  for (int i = 0; i < 600; ++i) {
    Row row;
    row.id = absl::StrCat("M-", i);
    // A few deep cases and many shallow ones.
    row.exchange_id = i % 3 == 0 ? absl::StrCat("PK-2026-00000", random() % 4)
                                 : absl::StrCat("PK-2026-1", random() % 150);
    row.priority = priorities[random() % 4];
    row.due = clock_.Now();
    Queue(Message(row.id, row.exchange_id, row.priority));
    rows.push_back(row);
  }
  const auto reference = [&](const std::set<std::string>& busy, size_t max) {
    std::set<std::string> seen;
    std::vector<const Row*> heads;
    for (const Row& row : rows) {
      if (!row.pending || !seen.insert(row.exchange_id).second) continue;
      if (row.due <= clock_.Now() && busy.count(row.exchange_id) == 0) {
        heads.push_back(&row);
      }
    }
    std::stable_sort(heads.begin(), heads.end(), [](auto* a, auto* b) {
      return a->priority > b->priority;
    });
    std::vector<std::string> ids;
    for (const Row* row : heads) {
      if (ids.size() == max) break;
      ids.push_back(row->id);
    }
    return ids;
  };
  for (int round = 0; round < 30; ++round) {
    std::set<std::string> busy;
    for (int i = 0; i < 20; ++i) {
      busy.insert(rows[random() % rows.size()].exchange_id);
    }
    const size_t max = 1 + random() % 64;
    ASSERT_EQ(ReadyIds(busy, max), reference(busy, max)) << "round " << round;
    // Change a few heads: delivered, refused, or backing off.
    for (const std::string& id : reference({}, 6)) {
      Row& row = *std::find_if(rows.begin(), rows.end(),
                               [&](const Row& r) { return r.id == id; });
      switch (random() % 3) {
        case 0:
          ASSERT_OK(exchange().RecordDelivered(
              "E-" + id, PeerReceipt("E-" + id), clock_.Now(),
              Event("receipt.stored")));
          row.pending = false;
          break;
        case 1:
          ASSERT_OK(exchange().RecordRefused(
              "E-" + id, absl::InternalError("no"), Event("refused")));
          row.pending = false;
          break;
        default:
          row.due = clock_.Now() + absl::Seconds(1 + random() % 5);
          ASSERT_OK(
              exchange().RecordAttempt("E-" + id, Unavailable(), row.due));
      }
    }
    clock_.Advance(absl::Seconds(1));
  }
}

TEST_F(ExchangeStoreTest, UnknownIdsAreNotFound) {
  const uint64_t audit_size = AuditSize();
  EXPECT_THAT(exchange().GetDeliveryStatus("PK-M-404"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("PK-M-404")));
  EXPECT_THAT(exchange().GetOutgoingMessage("PK-M-404"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("PK-M-404")));
  EXPECT_THAT(exchange().RecordAttempt("E-404", Unavailable(), clock_.Now()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("E-404")));
  EXPECT_THAT(exchange().RecordDelivered("E-404", v1::SignedReceipt(),
                                         clock_.Now(), Event("receipt.store")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("E-404")));
  EXPECT_THAT(exchange().RecordRefused("E-404", absl::InternalError("x"),
                                       Event("envelope.refused")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("E-404")));
  EXPECT_EQ(AuditSize(), audit_size);
}

TEST_F(ExchangeStoreTest, ReceivedMessagesAreNotOutgoing) {
  ASSERT_OK(Accept(PeerEnvelope("CN-E-1", PeerMessage("CN-M-1"))).status());
  EXPECT_THAT(exchange().GetOutgoingMessage("CN-M-1"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(exchange().GetDeliveryStatus("CN-M-1"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

// --- AcceptInbound -----------------------------------------------------------

TEST_F(ExchangeStoreTest, AcceptInboundStoresAuditsAndFillsInboxes) {
  const uint64_t before = AuditSize();
  const v1::CaseMessage message = PeerMessage("CN-M-1");
  const v1::SignedEnvelope sealed = PeerEnvelope("CN-E-1", message);
  ASSERT_OK_AND_ASSIGN(const InboundResult result,
                       Accept(sealed, {kFia, kEmbassy, kFia}));
  EXPECT_FALSE(result.replay);

  // The receipt is ours, over the exact bytes, naming the audit entry.
  ASSERT_OK_AND_ASSIGN(const v1::Receipt receipt,
                       exchange::VerifyReceipt(result.receipt, our_keys_));
  EXPECT_EQ(receipt.envelope_id(), "CN-E-1");
  EXPECT_EQ(receipt.envelope_sha256(), exchange::EnvelopeDigest(sealed));
  EXPECT_EQ(receipt.receiver_audit_index(), before);
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(receipt.received_at()),
            absl::ToUnixMicros(clock_.Now()));

  ASSERT_EQ(AuditSize(), before + 1);
  const StoredEntry entry = AuditEntry(before);
  EXPECT_EQ(entry.entry.action, "envelope.receive");
  EXPECT_EQ(entry.entry.actor, kCnGateway);
  EXPECT_EQ(entry.entry.status_code, 0);
  EXPECT_THAT(entry.entry.subjects,
              ElementsAre("from-caller", "CN-E-1", "CN-M-1"));

  for (const char* office : {kFia, kEmbassy}) {
    const std::vector<InboxItem> inbox = Inbox(office);
    ASSERT_EQ(inbox.size(), 1u) << office;
    v1::CaseMessage expected = message;
    *expected.mutable_received_at() = receipt.received_at();
    EXPECT_EQ(inbox[0].message.SerializeAsString(),
              expected.SerializeAsString());
    EXPECT_FALSE(inbox[0].acknowledged_at.has_value());
  }
  EXPECT_THAT(Inbox(kMps), IsEmpty());
  EXPECT_EQ(CountRows("inbox"), 2);
  EXPECT_EQ(CountRows("inbound"), 1);
  EXPECT_EQ(exchange().InboxHead(), Inbox(kEmbassy)[0].cursor);
}

TEST_F(ExchangeStoreTest, ReplayedEnvelopeGetsTheSameReceiptAndAddsNothing) {
  const v1::SignedEnvelope sealed =
      PeerEnvelope("CN-E-1", PeerMessage("CN-M-1"));
  ASSERT_OK_AND_ASSIGN(const InboundResult first, Accept(sealed));
  const uint64_t audit_size = AuditSize();
  const int64_t head = exchange().InboxHead();
  clock_.Advance(absl::Minutes(3));

  ASSERT_OK_AND_ASSIGN(const InboundResult again, Accept(sealed));
  EXPECT_TRUE(again.replay);
  EXPECT_EQ(again.receipt.SerializeAsString(),
            first.receipt.SerializeAsString());
  EXPECT_EQ(receipts_made_, 1);
  EXPECT_EQ(AuditSize(), audit_size);
  EXPECT_EQ(CountRows("inbox"), 1);
  EXPECT_EQ(CountRows("messages"), 1);
  EXPECT_EQ(exchange().InboxHead(), head);

  // Also after a restart.
  Reopen();
  ASSERT_OK_AND_ASSIGN(const InboundResult later, Accept(sealed));
  EXPECT_TRUE(later.replay);
  EXPECT_EQ(later.receipt.SerializeAsString(),
            first.receipt.SerializeAsString());
}

TEST_F(ExchangeStoreTest, SameEnvelopeIdWithOtherBytesIsKeptAsEvidence) {
  const v1::SignedEnvelope original =
      PeerEnvelope("CN-E-1", PeerMessage("CN-M-1", "Victim located."));
  ASSERT_OK_AND_ASSIGN(const InboundResult first, Accept(original));
  const uint64_t audit_size = AuditSize();

  const v1::SignedEnvelope altered =
      PeerEnvelope("CN-E-1", PeerMessage("CN-M-1", "Victim not found."));
  EXPECT_THAT(Accept(altered),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       "envelope_id CN-E-1 was already received with other "
                       "content; kept as evidence"));
  EXPECT_EQ(receipts_made_, 1);

  // Evidence row and an audit entry recording the refusal, committed.
  EXPECT_EQ(CountRows("envelope_conflicts"), 1);
  std::string kept;
  ASSERT_OK(store_->database().Read([&](sqlite::Connection& c) {
    auto stmt = c.Prepare(
        "SELECT signed_envelope FROM envelope_conflicts WHERE envelope_id = "
        "'CN-E-1'");
    if (!stmt.ok()) return stmt.status();
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    kept = stmt->ColumnBlob(0);
    return absl::OkStatus();
  }));
  EXPECT_EQ(kept, altered.SerializeAsString());
  ASSERT_EQ(AuditSize(), audit_size + 1);
  const StoredEntry entry = AuditEntry(audit_size);
  EXPECT_EQ(entry.entry.action, "envelope.receive");
  EXPECT_EQ(entry.entry.status_code,
            static_cast<int32_t>(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(entry.entry.status_message, HasSubstr("CN-E-1"));
  EXPECT_THAT(entry.entry.subjects, ElementsAre("from-caller", "CN-E-1"));

  // The original is untouched and still answers replays.
  const std::vector<InboxItem> inbox = Inbox(kFia);
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].message.body(), "Victim located.");
  ASSERT_OK_AND_ASSIGN(const InboundResult replay, Accept(original));
  EXPECT_TRUE(replay.replay);
  EXPECT_EQ(replay.receipt.SerializeAsString(),
            first.receipt.SerializeAsString());
}

TEST_F(ExchangeStoreTest, ReusedIdsKeepABoundedEvidenceAndRepeatsAreNotKept) {
  // A faulty or compromised peer repeating a conflicting envelope, or
  // signing version after version of it: kept once each, at most eight.
  ASSERT_OK(
      Accept(PeerEnvelope("CN-E-1", PeerMessage("CN-M-1", "Victim located.")))
          .status());
  const v1::SignedEnvelope altered =
      PeerEnvelope("CN-E-1", PeerMessage("CN-M-1", "Victim not found."));
  const absl::StatusOr<InboundResult> first = Accept(altered);
  EXPECT_THAT(first, StatusIs(absl::StatusCode::kAlreadyExists,
                              HasSubstr("kept as evidence")));
  EXPECT_TRUE(IsAuditedByStore(first.status()));
  const uint64_t audit_size = AuditSize();
  for (int i = 0; i < 3; ++i) {
    const absl::StatusOr<InboundResult> again = Accept(altered);
    EXPECT_THAT(again, StatusIs(absl::StatusCode::kAlreadyExists,
                                "envelope_id CN-E-1 was already received with "
                                "other content; these bytes are kept as "
                                "evidence already"));
    // Left to the receiver's rate-limited refusal audit.
    EXPECT_FALSE(IsAuditedByStore(again.status()));
    EXPECT_TRUE(exchange::IsMarkedPermanent(again.status()));
  }
  EXPECT_EQ(CountRows("envelope_conflicts"), 1);
  EXPECT_EQ(AuditSize(), audit_size);

  for (int i = 2; i <= 8; ++i) {
    EXPECT_THAT(Accept(PeerEnvelope(
                    "CN-E-1", PeerMessage("CN-M-1", absl::StrCat("v", i)))),
                StatusIs(absl::StatusCode::kAlreadyExists,
                         HasSubstr("kept as evidence")));
  }
  EXPECT_EQ(CountRows("envelope_conflicts"), 8);
  EXPECT_EQ(AuditSize(), audit_size + 7);
  const absl::StatusOr<InboundResult> ninth =
      Accept(PeerEnvelope("CN-E-1", PeerMessage("CN-M-1", "v9")));
  EXPECT_THAT(ninth, StatusIs(absl::StatusCode::kAlreadyExists,
                              HasSubstr("8 other versions are kept as "
                                        "evidence, this one is not")));
  EXPECT_FALSE(IsAuditedByStore(ninth.status()));
  EXPECT_EQ(CountRows("envelope_conflicts"), 8);
  EXPECT_EQ(AuditSize(), audit_size + 7);
  EXPECT_EQ(receipts_made_, 1);
}

TEST_F(ExchangeStoreTest, FieldsAPeerAddsOutsideTheSignedBytesAreNotStored) {
  // A field the peer adds to the wrapper of its envelope or receipt is
  // signed by nobody; kept, it would make evidence bundles unverifiable
  // (a verifier refuses fields it does not know) and take room past the
  // envelope's size limit.
  const auto add_junk = [](google::protobuf::Message& wrapper) {
    wrapper.GetReflection()->MutableUnknownFields(&wrapper)->AddLengthDelimited(
        99, std::string(4096, 'x'));
  };

  // Received: the envelope as stored, in inbound and as conflict evidence.
  const v1::SignedEnvelope clean =
      PeerEnvelope("CN-E-1", PeerMessage("CN-M-1", "Victim located."));
  v1::SignedEnvelope padded = clean;
  add_junk(padded);
  ASSERT_NE(padded.SerializeAsString(), clean.SerializeAsString());
  ASSERT_OK(Accept(padded).status());
  v1::SignedEnvelope altered =
      PeerEnvelope("CN-E-1", PeerMessage("CN-M-1", "Victim not found."));
  const std::string altered_clean = altered.SerializeAsString();
  add_junk(altered);
  EXPECT_THAT(Accept(altered), StatusIs(absl::StatusCode::kAlreadyExists,
                                        HasSubstr("kept as evidence")));
  std::string stored;
  std::string kept;
  ASSERT_OK(store_->database().Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(auto inbound, c.Prepare("SELECT signed_envelope FROM "
                                                "inbound WHERE envelope_id = "
                                                "'CN-E-1'"));
    CB_ASSIGN_OR_RETURN(const bool found, inbound.Step());
    if (found) stored = inbound.ColumnBlob(0);
    CB_ASSIGN_OR_RETURN(auto conflict,
                        c.Prepare("SELECT signed_envelope FROM "
                                  "envelope_conflicts WHERE envelope_id = "
                                  "'CN-E-1'"));
    CB_ASSIGN_OR_RETURN(const bool kept_one, conflict.Step());
    if (kept_one) kept = conflict.ColumnBlob(0);
    return absl::OkStatus();
  }));
  EXPECT_EQ(stored, clean.SerializeAsString());
  EXPECT_EQ(kept, altered_clean);

  // Sent: the peer's receipt as stored, by both ways of storing one.
  Queue(Message("PK-M-1", kCaseA));
  Queue(Message("PK-M-2", kCaseB));
  const v1::SignedReceipt receipt_1 = PeerReceipt("E-PK-M-1");
  const v1::SignedReceipt receipt_2 = PeerReceipt("E-PK-M-2");
  v1::SignedReceipt padded_1 = receipt_1;
  add_junk(padded_1);
  v1::SignedReceipt padded_2 = receipt_2;
  add_junk(padded_2);
  ASSERT_OK(exchange().RecordDelivered("E-PK-M-1", padded_1, clock_.Now(),
                                       Event("receipt.stored")));
  ExchangeStore::Sending sending;
  sending.deliveries = {{"E-PK-M-2", padded_2, Event("receipt.stored")}};
  ASSERT_OK_AND_ASSIGN(const ExchangeStore::SendingRecorded recorded,
                       exchange().RecordSending(sending));
  ASSERT_EQ(recorded.deliveries.size(), 1u);
  EXPECT_OK(recorded.deliveries[0]);
  for (const auto& [id, receipt] :
       std::vector<std::pair<std::string, v1::SignedReceipt>>{
           {"PK-M-1", receipt_1}, {"PK-M-2", receipt_2}}) {
    ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus status,
                         exchange().GetDeliveryStatus(id));
    EXPECT_EQ(status.receipt().SerializeAsString(), receipt.SerializeAsString())
        << id;
  }
  // The same receipt again, padded or not, is the one stored.
  EXPECT_OK(exchange().RecordDelivered("E-PK-M-1", receipt_1, clock_.Now(),
                                       Event("receipt.stored")));
}

TEST_F(ExchangeStoreTest, ReceiptFailureStoresNothing) {
  const v1::SignedEnvelope sealed =
      PeerEnvelope("CN-E-1", PeerMessage("CN-M-1"));
  ASSERT_OK_AND_ASSIGN(const v1::Envelope parsed,
                       exchange::VerifyEnvelope(sealed, peer_keys_, 1 << 20));
  EXPECT_THAT(
      exchange().AcceptInbound(
          sealed, parsed, {kFia},
          [](uint64_t, absl::Time) -> absl::StatusOr<v1::SignedReceipt> {
            return absl::InternalError("signing failed");
          },
          Event("envelope.receive", kCnGateway)),
      StatusIs(absl::StatusCode::kInternal, "signing failed"));
  EXPECT_EQ(AuditSize(), 0u);
  EXPECT_EQ(CountRows("inbound"), 0);
  EXPECT_EQ(CountRows("messages"), 0);
  EXPECT_EQ(CountRows("inbox"), 0);
  EXPECT_EQ(exchange().InboxHead(), 0);

  // The next delivery of the same envelope is taken as new.
  ASSERT_OK_AND_ASSIGN(const InboundResult result, Accept(sealed));
  EXPECT_FALSE(result.replay);
  EXPECT_EQ(AuditSize(), 1u);
}

TEST_F(ExchangeStoreTest, MessageIdBroughtByAnotherEnvelopeIsRefused) {
  ASSERT_OK(Accept(PeerEnvelope("CN-E-1", PeerMessage("CN-M-1"))).status());
  const uint64_t audit_size = AuditSize();
  EXPECT_THAT(Accept(PeerEnvelope("CN-E-2", PeerMessage("CN-M-1"))),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("CN-M-1")));
  EXPECT_EQ(AuditSize(), audit_size);
  EXPECT_EQ(CountRows("inbound"), 1);
  EXPECT_EQ(CountRows("inbox"), 1);
}

// --- Inbox -------------------------------------------------------------------

TEST_F(ExchangeStoreTest,
       AForwardPassesOnOnlyTheSharesReceivedBeforeItsChecks) {
  // The office service checks whether the case may be passed on, then
  // forwards: a version shared meanwhile (marked H2, say) was not checked
  // and must stay behind.
  const auto share = [&](const std::string& id, int64_t version) {
    v1::CaseMessage m = PeerMessage(id);
    m.set_kind(v1::MESSAGE_KIND_CASE_SHARE);
    m.clear_rescue_stage();
    m.mutable_case_reference()->set_exchange_id(kCaseA);
    m.mutable_case_reference()->set_version(version);
    ASSERT_OK(Accept(PeerEnvelope("E-" + id, m)).status());
  };
  ASSERT_OK_AND_ASSIGN(const int64_t none,
                       exchange().NewestShareReceived(kCaseA));
  EXPECT_EQ(none, 0);
  share("CN-M-1", 1);
  ASSERT_OK_AND_ASSIGN(const int64_t checked,
                       exchange().NewestShareReceived(kCaseA));
  EXPECT_GT(checked, 0);
  share("CN-M-2", 2);  // arrives while the checks run

  const uint64_t audit_size = AuditSize();
  EXPECT_THAT(
      exchange().ForwardCase(kCaseA, kEmbassy, none, /*with_h2=*/true,
                             Event("case.forward")),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("was not shared")));
  EXPECT_EQ(AuditSize(), audit_size);
  EXPECT_THAT(Inbox(kEmbassy), IsEmpty());

  ASSERT_OK_AND_ASSIGN(
      const int added,
      exchange().ForwardCase(kCaseA, kEmbassy, checked, /*with_h2=*/true,
                             Event("case.forward")));
  EXPECT_EQ(added, 1);
  EXPECT_THAT(MessageIds(Inbox(kEmbassy)), ElementsAre("CN-M-1"));
  EXPECT_EQ(AuditSize(), audit_size + 1);
}

TEST_F(ExchangeStoreTest, InboxResumesFromCursorAcrossRestart) {
  for (int i = 1; i <= 3; ++i) {
    ASSERT_OK(Accept(PeerEnvelope(absl::StrCat("CN-E-", i),
                                  PeerMessage(absl::StrCat("CN-M-", i))),
                     {kFia})
                  .status());
    // Another office's traffic interleaves.
    ASSERT_OK(Accept(PeerEnvelope(absl::StrCat("CN-E-x", i),
                                  PeerMessage(absl::StrCat("CN-M-x", i))),
                     {kEmbassy})
                  .status());
  }
  const std::vector<InboxItem> first = Inbox(kFia, 0, 2);
  EXPECT_THAT(MessageIds(first), ElementsAre("CN-M-1", "CN-M-2"));
  const int64_t cursor = first.back().cursor;
  const int64_t head = exchange().InboxHead();

  Reopen();
  EXPECT_EQ(exchange().InboxHead(), head);
  ASSERT_OK(Accept(PeerEnvelope("CN-E-4", PeerMessage("CN-M-4"))).status());
  EXPECT_GT(exchange().InboxHead(), head);
  const std::vector<InboxItem> rest = Inbox(kFia, cursor);
  EXPECT_THAT(MessageIds(rest), ElementsAre("CN-M-3", "CN-M-4"));
  EXPECT_GT(rest[0].cursor, cursor);
  EXPECT_LT(rest[0].cursor, rest[1].cursor);
  EXPECT_THAT(Inbox(kFia, rest.back().cursor), IsEmpty());
  EXPECT_THAT(MessageIds(Inbox(kEmbassy)),
              ElementsAre("CN-M-x1", "CN-M-x2", "CN-M-x3"));
}

TEST_F(ExchangeStoreTest, TheNewestCursorIsReadFromTheDatabase) {
  // A store whose in-memory head another writer has left behind, as the
  // head of this one is for a moment after each commit.
  ASSERT_OK_AND_ASSIGN(
      const std::unique_ptr<SqliteExchangeStore> behind,
      SqliteExchangeStore::Create(&store_->database(), &audit(), &clock_,
                                  store_->sealer()));
  ASSERT_OK_AND_ASSIGN(int64_t newest, behind->NewestInboxCursor());
  EXPECT_EQ(newest, 0);
  ASSERT_OK(Accept(PeerEnvelope("CN-E-1", PeerMessage("CN-M-1"))).status());
  const std::vector<InboxItem> inbox = Inbox(kFia);
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(behind->InboxHead(), 0);
  ASSERT_OK_AND_ASSIGN(newest, behind->NewestInboxCursor());
  EXPECT_EQ(newest, inbox[0].cursor);
}

TEST_F(ExchangeStoreTest, WaitForInboxWakesOnNewMessages) {
  const int64_t seen = exchange().InboxHead();
  EXPECT_FALSE(exchange().WaitForInbox(seen, absl::Milliseconds(10)));
  bool woke = false;
  std::thread waiter(
      [&] { woke = exchange().WaitForInbox(seen, absl::Seconds(30)); });
  ASSERT_OK(Accept(PeerEnvelope("CN-E-1", PeerMessage("CN-M-1"))).status());
  waiter.join();
  EXPECT_TRUE(woke);
  EXPECT_TRUE(exchange().WaitForInbox(seen, absl::ZeroDuration()));
}

TEST_F(ExchangeStoreTest, AcknowledgeOncePerOffice) {
  ASSERT_OK(
      Accept(PeerEnvelope("CN-E-1", PeerMessage("CN-M-1")), {kFia, kEmbassy})
          .status());
  const uint64_t audit_size = AuditSize();
  clock_.Advance(absl::Minutes(10));
  const absl::Time at = clock_.Now();
  ASSERT_OK(
      exchange().Acknowledge(kFia, "CN-M-1", at, Event("message.acknowledge")));
  ASSERT_EQ(AuditSize(), audit_size + 1);
  const StoredEntry entry = AuditEntry(audit_size);
  EXPECT_EQ(entry.entry.action, "message.acknowledge");
  EXPECT_THAT(entry.entry.subjects, ElementsAre("from-caller", "CN-M-1"));

  const std::vector<InboxItem> inbox = Inbox(kFia);
  ASSERT_EQ(inbox.size(), 1u);
  ASSERT_TRUE(inbox[0].acknowledged_at.has_value());
  EXPECT_EQ(*inbox[0].acknowledged_at, at);
  EXPECT_FALSE(Inbox(kEmbassy)[0].acknowledged_at.has_value());

  EXPECT_THAT(
      exchange().Acknowledge(kFia, "CN-M-1", at, Event("message.acknowledge")),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("already acknowledged")));
  EXPECT_THAT(exchange().Acknowledge(kMps, "CN-M-1", at,
                                     Event("message.acknowledge", kMps)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("CN-M-1")));
  EXPECT_THAT(exchange().Acknowledge(kFia, "CN-M-404", at,
                                     Event("message.acknowledge")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("CN-M-404")));
  EXPECT_EQ(AuditSize(), audit_size + 1);
  ASSERT_OK(exchange().Acknowledge(kEmbassy, "CN-M-1", at,
                                   Event("message.acknowledge", kEmbassy)));
}

TEST_F(ExchangeStoreTest, AcknowledgementIsHeldToTheCaseAsHeldNowAndFits) {
  // Our case, under H3, and a message the peer sent under an H3 text of
  // its own (its copy of the case is older): each text may be a
  // restriction, the two stated together are too long for one.
  const std::string ours(600, 'a');
  const std::string theirs(600, 'b');
  v1::CaseReference draft;
  draft.set_category(v1::CASE_CATEGORY_FORCED_LABOUR);
  draft.set_summary("Recruited for factory work abroad.");
  draft.set_handling_code(v1::HANDLING_CODE_H3);
  draft.set_handling_restriction(ours);
  ASSERT_OK_AND_ASSIGN(
      const OpenedCase opened,
      store_->cases().OpenCase(draft, kFia, {}, Event("case.open")));
  v1::CaseMessage message = PeerMessage("CN-M-1");
  message.set_exchange_id(opened.case_reference.exchange_id());
  message.set_handling_code(v1::HANDLING_CODE_H3);
  message.set_handling_restriction(theirs);
  ASSERT_OK(Accept(PeerEnvelope("CN-E-1", message)).status());

  std::optional<v1::CaseMessage> seen;
  const absl::StatusOr<QueuedMessage> reply = exchange().AcknowledgeAndReply(
      kFia, "CN-M-1", clock_.Now(), Event("message.acknowledge"),
      [&](const v1::CaseMessage& acknowledged)
          -> absl::StatusOr<OutgoingMessage> {
        seen = acknowledged;
        return absl::FailedPreconditionError("only looked at");
      },
      Event("message.send"));
  EXPECT_THAT(reply, StatusIs(absl::StatusCode::kFailedPrecondition,
                              HasSubstr("only looked at")));
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->handling_code(), v1::HANDLING_CODE_H3);
  // The case's part is kept whole; the peer's, which does not fit after
  // it, is left out (the peer holds the acknowledgement to its own copy).
  EXPECT_EQ(seen->handling_restriction(),
            absl::StrCat(ours, " [cut to fit the limit]"));
  // The reply refused, nothing was acknowledged.
  EXPECT_FALSE(Inbox(kFia)[0].acknowledged_at.has_value());
}

// --- Text and concurrency ----------------------------------------------------

TEST_F(ExchangeStoreTest, UrduAndChineseBodiesRoundTripByteForByte) {
  Queue(Message("PK-M-1", kCaseA, v1::PRIORITY_URGENT, kUrdu));
  Queue(Message("PK-M-2", kCaseB, v1::PRIORITY_URGENT, kChinese));
  ASSERT_OK_AND_ASSIGN(const v1::CaseMessage urdu,
                       exchange().GetOutgoingMessage("PK-M-1"));
  ASSERT_OK_AND_ASSIGN(const v1::CaseMessage chinese,
                       exchange().GetOutgoingMessage("PK-M-2"));
  EXPECT_EQ(urdu.body(), std::string(kUrdu));
  EXPECT_EQ(chinese.body(), std::string(kChinese));
  ASSERT_OK_AND_ASSIGN(const auto ready,
                       exchange().ReadyToSend(clock_.Now(), 10, {}));
  ASSERT_EQ(ready.size(), 2u);
  ASSERT_OK_AND_ASSIGN(
      const v1::Envelope envelope,
      exchange::VerifyEnvelope(ready[0].signed_envelope, our_keys_, 1 << 20));
  EXPECT_EQ(envelope.message().body(), std::string(kUrdu));

  ASSERT_OK(
      Accept(PeerEnvelope("CN-E-1", PeerMessage("CN-M-1", kChinese))).status());
  ASSERT_OK(
      Accept(PeerEnvelope("CN-E-2", PeerMessage("CN-M-2", kUrdu))).status());
  Reopen();
  const std::vector<InboxItem> inbox = Inbox(kFia);
  ASSERT_EQ(inbox.size(), 2u);
  EXPECT_EQ(inbox[0].message.body(), std::string(kChinese));
  EXPECT_EQ(inbox[1].message.body(), std::string(kUrdu));
}

TEST_F(ExchangeStoreTest, ConcurrentQueueOutgoingStoresEveryMessage) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 8;
  std::latch start(kThreads);
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = absl::StrCat("M-", t, "-", i);
        // Each message its own case, so every one is ready.
        auto queued = exchange().QueueOutgoing(
            Outgoing(Message(id, absl::StrCat("PK-2026-", t, "-", i)),
                     "E-" + id),
            {absl::StrCat("req-", t, "-", i), crypto::Sha256(id)},
            Event("message.send"));
        if (!queued.ok() || queued->replayed) ++failures[t];
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << t;

  constexpr size_t kTotal = kThreads * kPerThread;
  ASSERT_OK_AND_ASSIGN(const auto ready,
                       exchange().ReadyToSend(clock_.Now(), 1000, {}));
  ASSERT_EQ(ready.size(), kTotal);
  std::set<int64_t> seqs;
  std::set<std::string> messages;
  for (const OutboxItem& item : ready) {
    seqs.insert(item.seq);
    messages.insert(item.message_id);
    // Each envelope names its own audit entry.
    ASSERT_OK_AND_ASSIGN(
        const v1::Envelope envelope,
        exchange::VerifyEnvelope(item.signed_envelope, our_keys_, 1 << 20));
    EXPECT_EQ(AuditEntry(envelope.origin_audit_index()).entry.subjects.back(),
              item.envelope_id);
  }
  EXPECT_EQ(seqs.size(), kTotal);
  EXPECT_EQ(messages.size(), kTotal);
  EXPECT_EQ(AuditSize(), kTotal);
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, audit().Verify());
  EXPECT_TRUE(report.ok()) << report.problem;
}

// --- Retention
// -----------------------------------------------------------------

TEST_F(ExchangeStoreTest, RetentionPurgesOldPayloadsAndKeepsTheLogVerifiable) {
  // Old: one delivered outgoing message, one received; one still queued.
  Queue(Message("PK-M-OLD", kCaseA));
  ASSERT_OK(exchange().RecordDelivered("E-PK-M-OLD", PeerReceipt("E-PK-M-OLD"),
                                       clock_.Now(),
                                       Event("receipt.store", kCnGateway)));
  ASSERT_OK(Accept(PeerEnvelope("CN-E-OLD", PeerMessage("CN-M-OLD"))).status());
  Queue(Message("PK-M-WAITING", kCaseB));
  clock_.Advance(absl::Hours(24) * 40);
  // Recent: received after the cutoff.
  ASSERT_OK(Accept(PeerEnvelope("CN-E-NEW", PeerMessage("CN-M-NEW"))).status());
  const int64_t salts_before = CountRows("audit_log WHERE salt IS NOT NULL");

  const absl::Time cutoff = clock_.Now() - absl::Hours(24) * 30;
  ASSERT_OK_AND_ASSIGN(const int purged,
                       exchange().PurgeExpired(cutoff, kPkGateway));
  EXPECT_EQ(purged, 2);

  auto column = [&](const std::string& sql, const std::string& id) {
    std::string out = "<no row>";
    EXPECT_OK(
        store_->database().Read([&](sqlite::Connection& c) -> absl::Status {
          CB_ASSIGN_OR_RETURN(auto stmt, c.Prepare(sql));
          stmt.Bind(1, id);
          CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
          if (row) out = stmt.ColumnBlob(0);
          return absl::OkStatus();
        }));
    return out;
  };
  // Payloads gone for the two old messages...
  EXPECT_EQ(
      column("SELECT body FROM messages WHERE message_id = ?", "PK-M-OLD"), "");
  EXPECT_EQ(
      column("SELECT body FROM messages WHERE message_id = ?", "CN-M-OLD"), "");
  EXPECT_EQ(column("SELECT signed_envelope FROM outbox WHERE message_id = ?",
                   "PK-M-OLD"),
            "");
  EXPECT_EQ(column("SELECT signed_envelope FROM inbound WHERE envelope_id = ?",
                   "CN-E-OLD"),
            "");
  // ...ids, receipts and the undelivered and recent messages kept.
  EXPECT_NE(
      column("SELECT receipt FROM outbox WHERE message_id = ?", "PK-M-OLD"),
      "");
  EXPECT_NE(
      column("SELECT body FROM messages WHERE message_id = ?", "PK-M-WAITING"),
      "");
  EXPECT_NE(column("SELECT signed_envelope FROM inbound WHERE envelope_id = ?",
                   "CN-E-NEW"),
            "");
  // The salts of every entry about the old messages are gone; the purges are
  // audited.
  EXPECT_LT(CountRows("audit_log WHERE salt IS NOT NULL"), salts_before);
  const uint64_t size = AuditSize();
  const StoredEntry last = AuditEntry(size - 1);
  EXPECT_EQ(last.entry.action, "retention.purge");
  EXPECT_EQ(last.entry.actor, kPkGateway);
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, audit().Verify());
  EXPECT_TRUE(report.ok()) << report.problem;
  EXPECT_EQ(report.entries, size);

  // Purged once: a second run finds nothing.
  ASSERT_OK_AND_ASSIGN(const int again,
                       exchange().PurgeExpired(cutoff, kPkGateway));
  EXPECT_EQ(again, 0);
}

TEST_F(ExchangeStoreTest, RetentionClearsTheSaltOfAHeldMessagesEntry) {
  // Our case under H2, and a message the peer sent on it under H0: stored
  // under H2, and on record as held.
  v1::CaseReference draft;
  draft.set_category(v1::CASE_CATEGORY_FORCED_LABOUR);
  draft.set_summary("Recruited for factory work abroad.");
  draft.set_handling_code(v1::HANDLING_CODE_H2);
  ASSERT_OK_AND_ASSIGN(
      const OpenedCase opened,
      store_->cases().OpenCase(draft, kFia, {}, Event("case.open")));
  v1::CaseMessage message = PeerMessage("CN-M-HELD");
  message.set_exchange_id(opened.case_reference.exchange_id());
  message.set_handling_code(v1::HANDLING_CODE_H0);
  const v1::SignedEnvelope held = PeerEnvelope("CN-E-HELD", message);
  ASSERT_OK_AND_ASSIGN(const v1::Envelope parsed,
                       exchange::VerifyEnvelope(held, peer_keys_, 1 << 20));
  InboundEnvelope in;
  in.signed_envelope = &held;
  in.parsed = &parsed;
  in.inbox_offices = {kFia};
  in.audit = Event("envelope.receive", kCnGateway);
  in.held_audit = Event("message.held_to_case", kPkGateway);
  const uint64_t before = AuditSize();
  const auto receipt = MakeReceipt(held, parsed.envelope_id());
  std::vector<absl::StatusOr<InboundResult>> results =
      exchange().AcceptInboundBatch(
          {in}, [&](size_t, uint64_t index, absl::Time received_at) {
            return receipt(index, received_at);
          });
  ASSERT_EQ(results.size(), 1u);
  ASSERT_OK(results[0].status());
  ASSERT_TRUE(results[0]->held.has_value());
  EXPECT_EQ(results[0]->held->held_code, v1::HANDLING_CODE_H2);
  ASSERT_EQ(AuditSize(), before + 2);
  const StoredEntry held_entry = AuditEntry(before + 1);
  ASSERT_EQ(held_entry.entry.action, "message.held_to_case");
  EXPECT_THAT(held_entry.entry.subjects,
              ElementsAre(opened.case_reference.exchange_id(), "CN-M-HELD",
                          "CN-E-HELD"));
  ASSERT_OK_AND_ASSIGN(std::optional<std::string> salt,
                       audit().PayloadSalt(before + 1));
  EXPECT_TRUE(salt.has_value());

  // Past the retention period the message is purged, and with it the salt
  // of every entry about it, the held one too.
  clock_.Advance(absl::Hours(24) * 40);
  ASSERT_OK_AND_ASSIGN(
      const int purged,
      exchange().PurgeExpired(clock_.Now() - absl::Hours(24) * 30, kPkGateway));
  EXPECT_EQ(purged, 1);
  ASSERT_OK_AND_ASSIGN(salt, audit().PayloadSalt(before + 1));
  EXPECT_FALSE(salt.has_value());
  ASSERT_OK_AND_ASSIGN(salt, audit().PayloadSalt(before));
  EXPECT_FALSE(salt.has_value());
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, audit().Verify());
  EXPECT_TRUE(report.ok()) << report.problem;
}

}  // namespace
}  // namespace casebridge::server
