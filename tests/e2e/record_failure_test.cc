// The sender when its database refuses the records (docs/exchange.md#sending):
// a PeerLink in this process, over a real PK store whose writes can be made
// to fail (a full or failing disk), delivering to a real CN gateway process
// over mutual TLS. While the records fail, envelopes already on their way
// are answered but nothing is marked delivered, and the sender stops at the
// window instead of sending on; once the database takes writes again,
// every envelope ends DELIVERED, audited once, and each message is in the
// receiver's inbox once.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/ids.h"
#include "google/protobuf/util/time_util.h"
#include "server/peer_link.h"
#include "server/sqlite_case_store.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::google::protobuf::util::TimeUtil;
using server::ExchangeStore;

constexpr char kFiaOffice[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kMpsOffice[] = "spiffe://cn.casebridge/office/mps-liaison";
constexpr char kMpsCert[] = "cn/offices/mps-liaison";

// The link's window in this test, and the part of it that is not kept for
// URGENT envelopes.
constexpr int kWindow = 8;
const size_t kRoutineWindow =
    kWindow - server::PeerLink::UrgentReserve(kWindow);
constexpr int kMessages = 20;

// The real store, except that while failing() every write the sender makes
// is refused as SQLite refuses a write to a full disk. Reads go through.
class FailingWrites final : public ExchangeStore {
 public:
  explicit FailingWrites(ExchangeStore* real) : real_(real) {}

  void set_failing(bool failing) { failing_ = failing; }
  // How long a refused record takes (a failing disk is slow to say so).
  void set_refusal_delay(absl::Duration delay) {
    absl::MutexLock lock(&mu_);
    refusal_delay_ = delay;
  }
  int failed_records() const {
    absl::MutexLock lock(&mu_);
    return failed_records_;
  }
  // Most attempts any refused record carried: envelopes written to the
  // stream whose attempts are not recorded.
  size_t most_attempts_refused() const {
    absl::MutexLock lock(&mu_);
    return most_attempts_refused_;
  }
  // Envelopes whose attempts were offered in a refused record.
  size_t envelopes_attempted_refused() const {
    absl::MutexLock lock(&mu_);
    return attempted_refused_.size();
  }
  // Envelopes whose receipts came back but were refused with a record.
  size_t receipts_refused() const {
    absl::MutexLock lock(&mu_);
    return receipts_refused_.size();
  }
  // The envelope ids whose attempts the first record taken carried.
  std::vector<std::string> first_recorded() const {
    absl::MutexLock lock(&mu_);
    return first_recorded_;
  }

  absl::StatusOr<SendingRecorded> RecordSending(
      const Sending& sending) override {
    if (failing_) {
      // The sender runs its rounds meanwhile, with these attempts neither
      // recorded nor waiting.
      absl::Duration delay;
      {
        absl::MutexLock lock(&mu_);
        delay = refusal_delay_;
      }
      absl::SleepFor(delay);
      absl::MutexLock lock(&mu_);
      ++failed_records_;
      most_attempts_refused_ =
          std::max(most_attempts_refused_, sending.attempts.size());
      for (const Attempt& a : sending.attempts) {
        attempted_refused_.insert(a.envelope_id);
      }
      for (const Delivery& d : sending.deliveries) {
        receipts_refused_.insert(d.envelope_id);
      }
      return Full();
    }
    auto recorded = real_->RecordSending(sending);
    absl::MutexLock lock(&mu_);
    if (recorded.ok() && !taken_one_ && !sending.attempts.empty()) {
      taken_one_ = true;
      for (const Attempt& a : sending.attempts) {
        first_recorded_.push_back(a.envelope_id);
      }
    }
    return recorded;
  }
  absl::Status RecordRetry(const std::string& envelope_id,
                           const absl::Status& error,
                           absl::Time next_attempt) override {
    if (failing_) return Full();
    return real_->RecordRetry(envelope_id, error, next_attempt);
  }
  absl::Status RecordAttempt(const std::string& envelope_id,
                             const absl::Status& error,
                             absl::Time next_attempt) override {
    if (failing_) return Full();
    return real_->RecordAttempt(envelope_id, error, next_attempt);
  }
  absl::Status RecordDelivered(const std::string& envelope_id,
                               const v1::SignedReceipt& receipt,
                               absl::Time delivered_at,
                               const server::AuditEvent& audit) override {
    if (failing_) return Full();
    return real_->RecordDelivered(envelope_id, receipt, delivered_at, audit);
  }
  absl::Status RecordRefused(const std::string& envelope_id,
                             const absl::Status& refusal,
                             const server::AuditEvent& audit) override {
    if (failing_) return Full();
    return real_->RecordRefused(envelope_id, refusal, audit);
  }

  // The rest as the real store does it.
  absl::StatusOr<server::QueuedMessage> QueueOutgoing(
      const server::OutgoingMessage& outgoing, const server::RequestKey& key,
      const server::AuditEvent& audit) override {
    return real_->QueueOutgoing(outgoing, key, audit);
  }
  absl::StatusOr<std::vector<server::OutboxItem>> ReadyToSend(
      absl::Time now, size_t max,
      const std::set<std::string>& busy_cases) override {
    return real_->ReadyToSend(now, max, busy_cases);
  }
  absl::StatusOr<v1::DeliveryStatus> GetDeliveryStatus(
      const std::string& message_id) override {
    return real_->GetDeliveryStatus(message_id);
  }
  absl::Status CancelOutgoing(const std::string& message_id,
                              const std::string& why,
                              const std::optional<std::string>& viewer,
                              const server::AuditEvent& audit) override {
    return real_->CancelOutgoing(message_id, why, viewer, audit);
  }
  absl::StatusOr<v1::CaseMessage> GetOutgoingMessage(
      const std::string& message_id) override {
    return real_->GetOutgoingMessage(message_id);
  }
  absl::StatusOr<v1::CaseMessage> GetOutgoingHead(
      const std::string& message_id) override {
    return real_->GetOutgoingHead(message_id);
  }
  absl::StatusOr<server::InboundResult> AcceptInbound(
      const v1::SignedEnvelope& signed_envelope, const v1::Envelope& parsed,
      const std::vector<std::string>& inbox_offices,
      const std::function<absl::StatusOr<v1::SignedReceipt>(
          uint64_t audit_index, absl::Time received_at)>& make_receipt,
      const server::AuditEvent& audit) override {
    return real_->AcceptInbound(signed_envelope, parsed, inbox_offices,
                                make_receipt, audit);
  }
  std::vector<absl::StatusOr<server::InboundResult>> AcceptInboundBatch(
      const std::vector<server::InboundEnvelope>& envelopes,
      const std::function<absl::StatusOr<v1::SignedReceipt>(
          size_t position, uint64_t audit_index, absl::Time received_at)>&
          make_receipt) override {
    return real_->AcceptInboundBatch(envelopes, make_receipt);
  }
  absl::StatusOr<std::optional<v1::SignedReceipt>> ReceiptFor(
      const std::string& envelope_id, const std::string& digest) override {
    return real_->ReceiptFor(envelope_id, digest);
  }
  absl::StatusOr<std::vector<server::InboxItem>> ReadInbox(
      const std::string& office, int64_t after_cursor, size_t max) override {
    return real_->ReadInbox(office, after_cursor, max);
  }
  int64_t InboxHead() const override { return real_->InboxHead(); }
  absl::StatusOr<int64_t> NewestInboxCursor() override {
    return real_->NewestInboxCursor();
  }
  bool WaitForInbox(int64_t seen_head, absl::Duration timeout) override {
    return real_->WaitForInbox(seen_head, timeout);
  }
  absl::Status Acknowledge(const std::string& office,
                           const std::string& message_id, absl::Time at,
                           const server::AuditEvent& audit) override {
    return real_->Acknowledge(office, message_id, at, audit);
  }
  absl::Status RecordInboxDelivery(const std::string& office,
                                   const std::string& message_id, absl::Time at,
                                   const server::AuditEvent& audit) override {
    return real_->RecordInboxDelivery(office, message_id, at, audit);
  }
  std::vector<absl::Status> RecordInboxDeliveries(
      const std::string& office,
      const std::vector<server::InboxDelivery>& deliveries,
      absl::Time at) override {
    return real_->RecordInboxDeliveries(office, deliveries, at);
  }
  absl::StatusOr<server::QueuedMessage> AcknowledgeAndReply(
      const std::string& office, const std::string& message_id, absl::Time at,
      const server::AuditEvent& audit,
      const std::function<absl::StatusOr<server::OutgoingMessage>(
          const v1::CaseMessage& acknowledged)>& reply,
      const server::AuditEvent& reply_audit) override {
    return real_->AcknowledgeAndReply(office, message_id, at, audit, reply,
                                      reply_audit);
  }
  absl::StatusOr<bool> DisseminationGranted(
      const std::string& exchange_id, const std::string& office) override {
    return real_->DisseminationGranted(exchange_id, office);
  }
  absl::StatusOr<int64_t> NewestShareReceived(
      const std::string& exchange_id) override {
    return real_->NewestShareReceived(exchange_id);
  }
  absl::StatusOr<int> ForwardCase(const std::string& exchange_id,
                                  const std::string& office, int64_t through,
                                  bool with_h2,
                                  const server::AuditEvent& audit) override {
    return real_->ForwardCase(exchange_id, office, through, with_h2, audit);
  }
  absl::StatusOr<std::optional<v1::CaseReference>> NewestShareIn(
      const std::string& exchange_id, const std::string& office) override {
    return real_->NewestShareIn(exchange_id, office);
  }

 private:
  static absl::Status Full() {
    return absl::ResourceExhaustedError(
        "database or disk is full (refused by the test)");
  }

  ExchangeStore* const real_;
  std::atomic<bool> failing_{false};
  mutable absl::Mutex mu_;
  absl::Duration refusal_delay_ ABSL_GUARDED_BY(mu_) = absl::Milliseconds(50);
  int failed_records_ ABSL_GUARDED_BY(mu_) = 0;
  size_t most_attempts_refused_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<std::string> attempted_refused_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> receipts_refused_ ABSL_GUARDED_BY(mu_);
  bool taken_one_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> first_recorded_ ABSL_GUARDED_BY(mu_);
};

class RecordFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = NewTempDir("record-failure");
    const GatewayPairConfigs configs = WriteGatewayPairConfigs(
        dir, /*retry_max_seconds=*/1, [](GatewayConfigOptions& o) {
          if (o.country == "PK") {
            o.extra_limits = absl::StrCat("delivery_window = ", kWindow);
          }
        });
    ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(configs.cn));
    ASSERT_OK_AND_ASSIGN(config_, config::LoadGateway(configs.pk));
    ASSERT_OK_AND_ASSIGN(store_, server::GatewayStore::Open(config_, &clock_));
    ASSERT_OK_AND_ASSIGN(signer_, crypto::Ed25519Signer::FromPemFile(
                                      config_.envelope_signing_key));
    ASSERT_OK_AND_ASSIGN(peer_keys_, exchange::KeyRing::FromPemFiles(
                                         {config_.peer_envelope_public_key}));
    store_with_failures_ = std::make_unique<FailingWrites>(&store_->exchange());
  }

  void TearDown() override {
    if (link_ != nullptr) link_->Stop();
  }

  // Queues a NOTE for the MPS liaison office in a case of its own (so that
  // every envelope may be in flight at once); returns the message id.
  std::string Queue(int n) {
    const absl::Time now = clock_.Now();
    v1::CaseMessage m;
    m.set_message_id(MintId(v1::COUNTRY_PK, IdKind::kMessage, now));
    m.set_exchange_id(PkExchangeId(n));
    m.set_kind(v1::MESSAGE_KIND_NOTE);
    m.set_priority(v1::PRIORITY_ROUTINE);
    m.set_body(absl::StrCat("note ", n, ": the shelter in Lahore has room"));
    m.set_sender_office(kFiaOffice);
    m.set_sender_country(v1::COUNTRY_PK);
    m.set_recipient_office(kMpsOffice);
    m.set_handling_code(v1::HANDLING_CODE_H0);
    m.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
    m.mutable_evaluation()->set_information_accuracy(
        v1::INFORMATION_ACCURACY_2);
    *m.mutable_sent_at() =
        TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(now));
    server::OutgoingMessage out;
    out.message = m;
    out.envelope_id = MintId(v1::COUNTRY_PK, IdKind::kEnvelope, now);
    out.seal = [&, m, now, id = out.envelope_id](uint64_t audit_index) {
      v1::Envelope e;
      e.set_envelope_id(id);
      e.set_origin_gateway(config_.identity);
      e.set_destination_gateway(config_.peer_identity);
      *e.mutable_created_at() =
          TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(now));
      *e.mutable_message() = m;
      e.set_origin_audit_index(audit_index);
      return exchange::SignEnvelope(e, *signer_);
    };
    server::AuditEvent audit;
    audit.actor = kFiaOffice;
    audit.action = "message.send";
    audit.payload = m.SerializeAsString();
    auto queued = store_->exchange().QueueOutgoing(out, {}, audit);
    EXPECT_OK(queued);
    envelope_of_[m.message_id()] = out.envelope_id;
    return m.message_id();
  }

  void StartLink() {
    ASSERT_OK_AND_ASSIGN(
        channel_, server::PeerChannel::Create(&config_, nullptr, nullptr));
    link_ = server::PeerLink::Start(&config_, store_with_failures_.get(),
                                    &peer_keys_, channel_.get(), &clock_);
  }

  // Waits until every one of `messages` is DELIVERED; then each has one
  // envelope.sent and one receipt.stored entry, naming its case, message
  // and envelope once each, and is in the MPS liaison office's inbox once.
  void ExpectEachDeliveredAndAuditedOnce(
      const std::vector<std::string>& messages) {
    ASSERT_TRUE(WaitUntil([&] {
      for (const std::string& id : messages) {
        if (StatusOf(id).state() != v1::DELIVERY_STATE_DELIVERED) return false;
      }
      return true;
    })) << "not every message was delivered once records were taken again";

    ASSERT_OK_AND_ASSIGN(const uint64_t size, store_->audit_log().Size());
    ASSERT_OK_AND_ASSIGN(const auto entries, store_->audit_log().Read(0, size));
    for (size_t i = 0; i < messages.size(); ++i) {
      const std::string& message = messages[i];
      for (const char* action : {"envelope.sent", "receipt.stored"}) {
        std::vector<std::vector<std::string>> about;
        for (const server::StoredEntry& e : entries) {
          if (e.entry.action == action &&
              std::find(e.entry.subjects.begin(), e.entry.subjects.end(),
                        message) != e.entry.subjects.end()) {
            about.push_back(e.entry.subjects);
          }
        }
        EXPECT_THAT(about, ::testing::ElementsAre(::testing::ElementsAre(
                               PkExchangeId(static_cast<int>(i) + 1), message,
                               envelope_of_[message])))
            << action;
      }
    }

    auto mps = OfficeClientFor(kMpsCert, cn_->office_endpoint(), "CN");
    std::vector<std::string> inbox;
    std::set<std::string> distinct;
    EXPECT_OK(mps->WatchInbox("", absl::Seconds(30), [&](const auto& item) {
      inbox.push_back(item.message().message_id());
      distinct.insert(item.message().message_id());
      return distinct.size() < messages.size();
    }));
    EXPECT_THAT(inbox, ::testing::UnorderedElementsAreArray(messages));
  }

  v1::DeliveryStatus StatusOf(const std::string& message_id) {
    auto status = store_->exchange().GetDeliveryStatus(message_id);
    EXPECT_OK(status);
    return status.ok() ? *status : v1::DeliveryStatus();
  }

  // How many of PK's audit entries of `action` name each subject.
  std::map<std::string, int> AuditedPerSubject(const std::string& action) {
    std::map<std::string, int> count;
    auto size = store_->audit_log().Size();
    EXPECT_OK(size);
    if (!size.ok()) return count;
    auto entries = store_->audit_log().Read(0, *size);
    EXPECT_OK(entries);
    if (!entries.ok()) return count;
    for (const server::StoredEntry& e : *entries) {
      if (e.entry.action != action) continue;
      for (const std::string& subject : e.entry.subjects) ++count[subject];
    }
    return count;
  }

  const Clock& clock_ = RealClock::Get();
  std::unique_ptr<GatewayProcess> cn_;
  config::Gateway config_;
  std::unique_ptr<server::GatewayStore> store_;
  std::unique_ptr<crypto::Ed25519Signer> signer_;
  exchange::KeyRing peer_keys_;
  std::unique_ptr<FailingWrites> store_with_failures_;
  std::unique_ptr<server::PeerChannel> channel_;  // outlives the link
  std::unique_ptr<server::PeerLink> link_;
  std::map<std::string, std::string> envelope_of_;  // message id -> envelope
};

TEST_F(RecordFailureTest,
       SenderStopsAtTheWindowAndLosesNothingWhenRecordsFail) {
  std::vector<std::string> messages;
  for (int n = 1; n <= kMessages; ++n) messages.push_back(Queue(n));

  store_with_failures_->set_failing(true);
  StartLink();
  // The first round travels and is answered; its record is refused, then
  // tried again every 200 ms with the same attempts.
  ASSERT_TRUE(WaitUntil([&] {
    return store_with_failures_->receipts_refused() >= kRoutineWindow &&
           store_with_failures_->failed_records() >= 4;
  })) << "the first round's receipts were never offered to the store";
  // Envelopes whose attempts are not recorded hold the window: the sender
  // wrote no more than its routine part, however long the records fail.
  EXPECT_EQ(store_with_failures_->most_attempts_refused(), kRoutineWindow);
  // And no envelope but the first round's: a case whose answer could not be
  // recorded stays busy, so nothing after it goes.
  EXPECT_EQ(store_with_failures_->envelopes_attempted_refused(),
            kRoutineWindow);

  // The disk has room again.
  store_with_failures_->set_failing(false);
  ExpectEachDeliveredAndAuditedOnce(messages);

  // The attempts made while records failed went with the first record taken.
  const std::vector<std::string> first = store_with_failures_->first_recorded();
  EXPECT_EQ(first.size(), kRoutineWindow);
  const std::set<std::string> sent_early(first.begin(), first.end());
  // Their answers were not recorded then: each went once more and the peer
  // answered it as a replay. The others went once.
  for (const std::string& id : messages) {
    const std::string& envelope = envelope_of_[id];
    EXPECT_EQ(StatusOf(id).attempts(), sent_early.contains(envelope) ? 2 : 1)
        << id;
  }
}

TEST_F(RecordFailureTest, EnvelopesSentAgainWhileRecordsFailHoldTheWindowToo) {
  // Fewer envelopes than the window: a refused record frees their cases,
  // and the database, refusing their backoff too, leaves them due at once,
  // so the sender sends them again while their first attempts are still
  // unrecorded. Each such attempt holds room, also while a record is
  // writing it.
  std::vector<std::string> messages;
  for (int n = 1; n <= 3; ++n) messages.push_back(Queue(n));

  // Each refusal takes longer than the sender's idle poll (1 s), so the
  // sender runs rounds while records are being written.
  store_with_failures_->set_refusal_delay(absl::Milliseconds(1100));
  store_with_failures_->set_failing(true);
  StartLink();
  ASSERT_TRUE(WaitUntil([&] {
    return store_with_failures_->most_attempts_refused() >= kRoutineWindow;
  })) << "the envelopes were not sent again while the records failed";
  const int refused = store_with_failures_->failed_records();
  ASSERT_TRUE(WaitUntil(
      [&] { return store_with_failures_->failed_records() >= refused + 2; }));
  EXPECT_EQ(store_with_failures_->most_attempts_refused(), kRoutineWindow);

  store_with_failures_->set_failing(false);
  ExpectEachDeliveredAndAuditedOnce(messages);
  // Every transmission is counted.
  int attempts = 0;
  for (const std::string& id : messages) attempts += StatusOf(id).attempts();
  EXPECT_GE(attempts, static_cast<int>(kRoutineWindow));
}

}  // namespace
}  // namespace casebridge::testing
