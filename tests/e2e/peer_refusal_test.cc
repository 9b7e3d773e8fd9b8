// The receiving side of the exchange, end to end: a real PK gateway process
// and this test acting as the CN gateway on its peer port. Every envelope is
// built and signed by hand, so each of the receiver's checks can be hit on
// its own (DESIGN.md section 4, docs/exchange.md#receiving): what is refused,
// with which code and whether for good, that the refusal is audited, and
// that nothing of a refused envelope is stored.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "casebridge/v1/peer.grpc.pb.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/ids.h"
#include "core/utf8.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::google::protobuf::util::TimeUtil;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;
using ::testing::UnorderedElementsAreArray;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kEmbassy[] = "pk/offices/embassy-beijing";
constexpr char kPkAuditor[] = "pk/auditors/pk-auditor";
constexpr char kCnGatewayCert[] = "cn/gateway";
constexpr char kMpsCert[] = "cn/offices/mps-liaison";

constexpr char kCnGateway[] = "spiffe://cn.casebridge/gateway";
constexpr char kPkGateway[] = "spiffe://pk.casebridge/gateway";
constexpr char kMpsOffice[] = "spiffe://cn.casebridge/office/mps-liaison";
constexpr char kFiaOffice[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kEmbassyOffice[] =
    "spiffe://pk.casebridge/office/embassy-beijing";

constexpr char kAction[] = "envelope.received";
// The gateway's envelope size limit: the configured default (1 MiB).
const int64_t kMaxEnvelopeBytes = config::Limits().max_envelope_bytes;

// Refusals carry grpc code numbers; these are the ones the peer sees.
static_assert(static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT) == 3);
static_assert(static_cast<int>(grpc::StatusCode::ALREADY_EXISTS) == 6);
static_assert(static_cast<int>(grpc::StatusCode::PERMISSION_DENIED) == 7);
static_assert(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED) == 8);
static_assert(static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION) == 9);
static_assert(static_cast<int>(grpc::StatusCode::UNAUTHENTICATED) == 16);

// Urdu and Chinese, with an ASCII marker a test can find in the bytes.
constexpr char kBody[] =
    "فوری: متاثرہ V1 کو ہندان اسٹیشن پر دیکھا گیا۔ "
    "邯郸火车站发现受害人，请求协助解救。";

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

// A refusal in a DeliverResponse: grpc code number, reason, permanence.
MATCHER_P3(IsRefusal, code, message_matcher, permanent,
           absl::StrCat("is a refusal with code ", static_cast<int>(code),
                        ", permanent ", permanent ? "true" : "false")) {
  if (!arg.has_refusal()) {
    *result_listener << "is not a refusal: " << arg.ShortDebugString();
    return false;
  }
  const v1::DeliveryRefusal& r = arg.refusal();
  *result_listener << "refusal " << r.ShortDebugString();
  return r.code() == static_cast<int32_t>(code) && r.permanent() == permanent &&
         ::testing::ExplainMatchResult(message_matcher, r.message(),
                                       result_listener);
}

MATCHER(IsReceipt, "carries a receipt") {
  *result_listener << arg.ShortDebugString().substr(0, 400);
  return arg.has_receipt();
}

// One Deliver stream to the gateway at `endpoint`, presenting `cert_stem`.
// Several envelopes may be in flight; answers are matched by sequence.
class DeliverStream {
 public:
  DeliverStream(const std::string& cert_stem, const std::string& endpoint,
                absl::Duration deadline = absl::Seconds(60))
      : DeliverStream(ChannelFor(cert_stem, endpoint, "PK"), deadline) {}
  DeliverStream(const std::shared_ptr<grpc::Channel>& channel,
                absl::Duration deadline)
      : stub_(v1::PeerService::NewStub(channel)) {
    context_.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    stream_ = stub_->Deliver(&context_);
  }
  ~DeliverStream() {
    if (!finished_) {
      context_.TryCancel();
      (void)stream_->Finish();
    }
  }
  DeliverStream(const DeliverStream&) = delete;
  DeliverStream& operator=(const DeliverStream&) = delete;

  // Writes all of `envelopes` (sequences next, next + 1, ...) before reading
  // any answer, then reads one answer per envelope. Answers in the order of
  // `envelopes`; a missing answer is an empty response and a test failure.
  // `priorities`: the unsigned priority copy of each request (none if empty).
  std::vector<v1::DeliverResponse> DeliverAll(
      const std::vector<v1::SignedEnvelope>& envelopes,
      const std::vector<int>& priorities = {}) {
    std::vector<uint64_t> sequences;
    for (size_t i = 0; i < envelopes.size(); ++i) {
      v1::DeliverRequest request;
      request.set_sequence(next_sequence_++);
      *request.mutable_signed_envelope() = envelopes[i];
      if (i < priorities.size()) {
        request.set_priority(static_cast<v1::Priority>(priorities[i]));
      }
      sequences.push_back(request.sequence());
      if (!stream_->Write(request)) {
        ADD_FAILURE() << "Deliver stream broke on write: " << Close();
        return std::vector<v1::DeliverResponse>(envelopes.size());
      }
    }
    std::map<uint64_t, v1::DeliverResponse> by_sequence;
    for (size_t i = 0; i < sequences.size(); ++i) {
      v1::DeliverResponse response;
      if (!stream_->Read(&response)) {
        ADD_FAILURE() << "Deliver stream ended after " << i
                      << " answers: " << Close();
        break;
      }
      EXPECT_EQ(by_sequence.count(response.sequence()), 0u)
          << "sequence " << response.sequence() << " answered twice";
      by_sequence[response.sequence()] = std::move(response);
    }
    std::vector<v1::DeliverResponse> answers;
    for (const uint64_t s : sequences) {
      auto it = by_sequence.find(s);
      if (it == by_sequence.end()) {
        ADD_FAILURE() << "no answer for sequence " << s;
        answers.emplace_back();
      } else {
        EXPECT_EQ(it->second.sequence(), s);
        answers.push_back(std::move(it->second));
      }
    }
    return answers;
  }

  v1::DeliverResponse Deliver(const v1::SignedEnvelope& envelope) {
    return DeliverAll({envelope})[0];
  }

  // Writes one request without waiting for an answer.
  bool Write(const v1::SignedEnvelope& envelope) {
    v1::DeliverRequest request;
    request.set_sequence(next_sequence_++);
    *request.mutable_signed_envelope() = envelope;
    return stream_->Write(request);
  }
  bool Read(v1::DeliverResponse* response) { return stream_->Read(response); }
  // Cancels the call; a Write blocked on flow control returns false.
  void Cancel() { context_.TryCancel(); }

  // Half-closes and returns the stream's status.
  absl::Status Close() {
    if (finished_) return absl::FailedPreconditionError("closed already");
    (void)stream_->WritesDone();
    finished_ = true;
    const grpc::Status status = stream_->Finish();
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }

 private:
  std::unique_ptr<v1::PeerService::Stub> stub_;
  grpc::ClientContext context_;  // must outlive stream_
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::DeliverRequest, v1::DeliverResponse>>
      stream_;
  uint64_t next_sequence_ = 1;
  bool finished_ = false;
};

class PeerRefusalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("peer-refusal");
    options_.country = "PK";
    options_.data_dir = dir_ + "/data";
    // Nobody listens there: PK has nothing to send in these tests.
    options_.peer_endpoint = absl::StrCat("127.0.0.1:", ReserveFreePort());
    ASSERT_OK_AND_ASSIGN(
        pk_, GatewayProcess::Start(
                 WriteFile(dir_ + "/pk.toml", GatewayConfigToml(options_))));
    ASSERT_OK_AND_ASSIGN(cn_key_, crypto::Ed25519Signer::FromPemFile(
                                      Pki("cn/signing/envelope.key")));
    cn_key_id_ = exchange::KeyId(cn_key_->public_key());
  }

  std::string DataDir() const { return dir_ + "/data"; }

  // The PK gateway stopped and started again with `extra_limits` in its
  // [limits].
  void RestartWithLimits(const std::string& extra_limits) {
    ASSERT_EQ(pk_->Stop(), 0) << pk_->Log();
    options_.extra_limits = extra_limits;
    ASSERT_OK_AND_ASSIGN(
        pk_, GatewayProcess::Start(
                 WriteFile(dir_ + "/pk.toml", GatewayConfigToml(options_))));
  }

  // A valid envelope from the CN gateway's MPS liaison office to PK's
  // liaison desk, with fresh ids.
  v1::Envelope ValidEnvelope(const std::string& body = kBody) {
    const absl::Time now = absl::Now();
    v1::Envelope e;
    e.set_envelope_id(MintId(v1::COUNTRY_CN, IdKind::kEnvelope, now));
    e.set_origin_gateway(kCnGateway);
    e.set_destination_gateway(kPkGateway);
    *e.mutable_created_at() = ToProto(now);
    e.set_origin_audit_index(7);
    v1::CaseMessage* m = e.mutable_message();
    m->set_message_id(MintId(v1::COUNTRY_CN, IdKind::kMessage, now));
    m->set_exchange_id("CN-2026-000001");
    m->set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
    m->set_priority(v1::PRIORITY_URGENT);
    m->set_body(body);
    m->set_sender_office(kMpsOffice);
    m->set_sender_country(v1::COUNTRY_CN);
    m->set_handling_code(v1::HANDLING_CODE_H0);
    m->mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
    m->mutable_evaluation()->set_information_accuracy(
        v1::INFORMATION_ACCURACY_2);
    *m->mutable_sent_at() = ToProto(now);
    return e;
  }

  // `envelope` signed with the real CN envelope key.
  v1::SignedEnvelope Sign(const v1::Envelope& envelope) {
    return SignWith(envelope, *cn_key_);
  }
  v1::SignedEnvelope SignWith(const v1::Envelope& envelope,
                              const crypto::Ed25519Signer& key) {
    auto signed_envelope = exchange::SignEnvelope(envelope, key);
    EXPECT_OK(signed_envelope);
    return signed_envelope.ok() ? *signed_envelope : v1::SignedEnvelope();
  }

  DeliverStream OpenStream(const std::string& cert_stem = kCnGatewayCert,
                           absl::Duration deadline = absl::Seconds(60)) {
    return DeliverStream(cert_stem, pk_->peer_endpoint(), deadline);
  }

  std::unique_ptr<client::OfficeClient> Office(const std::string& stem) {
    return OfficeClientFor(stem, pk_->office_endpoint(), "PK");
  }

  // Every audit entry of the PK gateway, read by its auditor.
  std::vector<v1::AuditEntry> AuditEntries() {
    auto auditor = Office(kPkAuditor);
    if (auditor == nullptr) return {};
    std::vector<v1::AuditEntry> all = ReadAuditEntries(*auditor);
    // Left out: the gateway's record of its keys, made at its first start
    // (and again after a key change).
    std::erase_if(all, [](const v1::AuditEntry& e) {
      return e.action() == "signing.keys" || e.action() == "peer.keys_trusted";
    });
    return all;
  }

  // The audit entries of envelopes the CN gateway delivered.
  std::vector<v1::AuditEntry> ReceivedEntries() {
    std::vector<v1::AuditEntry> received;
    for (v1::AuditEntry& e : AuditEntries()) {
      if (e.action() == kAction) received.push_back(std::move(e));
    }
    return received;
  }

  // Expects exactly one audit entry recording a refusal of an envelope from
  // the CN gateway with `code` and a reason containing `reason`; returns it.
  v1::AuditEntry ExpectAuditedRefusal(grpc::StatusCode code,
                                      const std::string& reason) {
    std::vector<v1::AuditEntry> matching;
    const std::vector<v1::AuditEntry> received = ReceivedEntries();
    for (const v1::AuditEntry& e : received) {
      if (e.status_code() == code &&
          e.status_message().find(reason) != std::string::npos) {
        matching.push_back(e);
      }
    }
    EXPECT_EQ(matching.size(), 1u)
        << "audit entries with code " << code << " and \"" << reason
        << "\" among " << received.size() << " envelope.received entries";
    if (matching.empty()) return v1::AuditEntry();
    EXPECT_EQ(matching[0].actor(), kCnGateway);
    EXPECT_NE(matching[0].status_code(), 0);
    return matching[0];
  }

  // The inbox of `stem` after `cursor` ("" from its start): up to `expected`
  // messages, waiting at most `wait` for them.
  std::vector<v1::WatchInboxResponse> Inbox(const std::string& stem,
                                            const std::string& cursor,
                                            size_t expected,
                                            absl::Duration wait) {
    std::vector<v1::WatchInboxResponse> seen;
    auto office = Office(stem);
    if (office == nullptr) return seen;
    EXPECT_OK(office->WatchInbox(cursor, wait,
                                 [&](const auto& item) {
                                   seen.push_back(item);
                                   return seen.size() < expected;
                                 }))
        << "PK log:\n"
        << pk_->Log();
    return seen;
  }

  // Everything in the inbox of `stem`: waits up to 10 s for `expected`
  // messages, then briefly for any more. Answers are sent after the commit,
  // so a short wait sees whatever an answered envelope stored.
  std::vector<v1::WatchInboxResponse> InboxOf(const std::string& stem,
                                              size_t expected) {
    std::vector<v1::WatchInboxResponse> items;
    if (expected > 0) items = Inbox(stem, "", expected, absl::Seconds(10));
    const std::string cursor = items.empty() ? "" : items.back().cursor();
    for (auto& extra : Inbox(stem, cursor, 1, absl::Milliseconds(300))) {
      items.push_back(std::move(extra));
    }
    return items;
  }

  // Body of each message in the FIA desk's inbox (see InboxOf).
  std::vector<std::string> FiaBodies(size_t expected = 1) {
    const auto items = InboxOf(kFia, expected);
    std::vector<std::string> bodies;
    for (const auto& item : items) bodies.push_back(item.message().body());
    return bodies;
  }
  std::vector<std::string> FiaBodiesNow() { return FiaBodies(0); }

  // Delivers a fresh valid envelope with `body` and expects it accepted and
  // in the FIA desk's inbox: refusals did not stop the exchange.
  void ExpectValidStillAccepted(const std::string& body) {
    auto stream = OpenStream();
    const v1::DeliverResponse r = stream.Deliver(Sign(ValidEnvelope(body)));
    EXPECT_THAT(r, IsReceipt()) << pk_->Log();
    EXPECT_OK(stream.Close());
    EXPECT_THAT(FiaBodies(), ElementsAre(body));
  }

  std::string dir_;
  GatewayConfigOptions options_;
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<crypto::Ed25519Signer> cn_key_;
  std::string cn_key_id_;
};

TEST_F(PeerRefusalTest, ValidEnvelopeIsAcceptedWithAVerifiableReceipt) {
  const v1::Envelope envelope = ValidEnvelope();
  const v1::SignedEnvelope signed_envelope = Sign(envelope);
  auto stream = OpenStream();
  const v1::DeliverResponse response = stream.Deliver(signed_envelope);
  ASSERT_THAT(response, IsReceipt()) << pk_->Log();
  EXPECT_EQ(response.envelope_id(), envelope.envelope_id());
  EXPECT_OK(stream.Close());

  // The receipt verifies with nothing but PK's public envelope key.
  ASSERT_OK_AND_ASSIGN(auto pk_keys, exchange::KeyRing::FromPemFiles(
                                         {Pki("pk/signing/envelope.pub")}));
  ASSERT_OK_AND_ASSIGN(v1::Receipt receipt,
                       exchange::VerifyReceipt(response.receipt(), pk_keys));
  EXPECT_EQ(receipt.envelope_id(), envelope.envelope_id());
  EXPECT_EQ(receipt.envelope_sha256(),
            crypto::Sha256(signed_envelope.envelope()));
  EXPECT_EQ(receipt.receiver_gateway(), kPkGateway);
  EXPECT_OK(
      exchange::CheckReceiptMatches(receipt, signed_envelope, kPkGateway));
  const absl::Time received_at = absl::FromUnixMicros(
      TimeUtil::TimestampToMicroseconds(receipt.received_at()));
  EXPECT_LT(absl::AbsDuration(received_at - absl::Now()), absl::Minutes(1));
  // Not by CN's key: a receipt is the receiver's statement.
  ASSERT_OK_AND_ASSIGN(auto cn_keys, exchange::KeyRing::FromPemFiles(
                                         {Pki("cn/signing/envelope.pub")}));
  EXPECT_FALSE(exchange::VerifyReceipt(response.receipt(), cn_keys).ok());

  // The receipt names the audit entry recording the envelope.
  const auto entries = AuditEntries();
  const auto named = std::find_if(
      entries.begin(), entries.end(), [&](const v1::AuditEntry& e) {
        return e.index() == receipt.receiver_audit_index();
      });
  ASSERT_NE(named, entries.end());
  const v1::AuditEntry& entry = *named;
  EXPECT_EQ(entry.action(), kAction);
  EXPECT_EQ(entry.actor(), kCnGateway);
  EXPECT_EQ(entry.status_code(), 0);
  EXPECT_THAT(entry.subjects(), ElementsAre(envelope.message().exchange_id(),
                                            envelope.envelope_id(),
                                            envelope.message().message_id()));

  // The message is in the FIA desk's inbox as the CN gateway sent it.
  const auto inbox = InboxOf(kFia, 1);
  ASSERT_EQ(inbox.size(), 1u);
  v1::CaseMessage held = inbox[0].message();
  EXPECT_TRUE(held.has_received_at());
  EXPECT_EQ(held.body(), kBody);
  held.clear_received_at();
  // The reader's gateway adds the notice of the handling code.
  EXPECT_THAT(held.handling_notice(), HasSubstr("H0:"));
  held.clear_handling_notice();
  EXPECT_TRUE(MessageDifferencer::Equals(held, envelope.message()))
      << held.DebugString() << " vs " << envelope.message().DebugString();
  // Addressed to the country: the liaison desk takes it, the embassy not.
  EXPECT_THAT(InboxOf(kEmbassy, 0), IsEmpty());
}

TEST_F(PeerRefusalTest, ThePeerHoldsOnlySoManyDeliverStreamsOpen) {
  // Each Deliver stream may hold up to 64 MiB of envelopes unanswered: a
  // faulty or compromised peer opening stream after stream would make the
  // gateway hold that many times over.
  RestartWithLimits("peer_streams = 2\n");
  auto first =
      std::make_unique<DeliverStream>(kCnGatewayCert, pk_->peer_endpoint());
  DeliverStream second = OpenStream();
  ASSERT_THAT(first->Deliver(Sign(ValidEnvelope())), IsReceipt()) << pk_->Log();
  ASSERT_THAT(second.Deliver(Sign(ValidEnvelope())), IsReceipt()) << pk_->Log();

  DeliverStream third = OpenStream();
  EXPECT_THAT(third.Close(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("already has 2 Deliver streams open"),
                             HasSubstr("limits.peer_streams"))));
  // One closed, a new one is admitted (once the gateway has seen it end).
  EXPECT_OK(first->Close());
  first.reset();
  const v1::SignedEnvelope later = Sign(ValidEnvelope());
  EXPECT_TRUE(WaitUntil([&] {
    DeliverStream next = OpenStream();
    v1::DeliverResponse response;
    return next.Write(later) && next.Read(&response) && response.has_receipt();
  })) << pk_->Log();
  EXPECT_OK(second.Close());
  EXPECT_THAT(FiaBodies(3), ElementsAre(kBody, kBody, kBody));
}

TEST_F(PeerRefusalTest, ReplayGetsTheSameReceiptAndStoresNothingMore) {
  const v1::SignedEnvelope signed_envelope = Sign(ValidEnvelope());
  auto stream = OpenStream();
  const v1::DeliverResponse first = stream.Deliver(signed_envelope);
  ASSERT_THAT(first, IsReceipt()) << pk_->Log();
  const size_t received_entries = ReceivedEntries().size();

  // Again on the same stream, and on a new one (as after a lost answer).
  const v1::DeliverResponse again = stream.Deliver(signed_envelope);
  EXPECT_OK(stream.Close());
  auto second_stream = OpenStream();
  const v1::DeliverResponse later = second_stream.Deliver(signed_envelope);
  EXPECT_OK(second_stream.Close());
  for (const v1::DeliverResponse* r : {&again, &later}) {
    ASSERT_THAT(*r, IsReceipt());
    EXPECT_EQ(r->receipt().SerializeAsString(),
              first.receipt().SerializeAsString());
    EXPECT_EQ(r->envelope_id(), first.envelope_id());
  }

  EXPECT_THAT(FiaBodies(), ElementsAre(kBody));
  // A replay writes nothing, not even an audit entry of its own.
  EXPECT_EQ(ReceivedEntries().size(), received_entries);
}

TEST_F(PeerRefusalTest, UnknownKeyIdIsRefusedButMayBeConfiguredLater) {
  const v1::Envelope envelope = ValidEnvelope();
  const auto stranger = crypto::Ed25519Signer::Generate();
  const std::string stranger_id = exchange::KeyId(stranger->public_key());
  auto stream = OpenStream();
  const v1::DeliverResponse r = stream.Deliver(SignWith(envelope, *stranger));
  EXPECT_THAT(r,
              IsRefusal(grpc::StatusCode::UNAUTHENTICATED,
                        "key_id: unknown signing key " + stranger_id, false));
  // Nothing was parsed, so nothing of the content is echoed.
  EXPECT_EQ(r.envelope_id(), "");
  EXPECT_OK(stream.Close());

  const v1::AuditEntry entry =
      ExpectAuditedRefusal(grpc::StatusCode::UNAUTHENTICATED, "key_id: ");
  EXPECT_THAT(entry.subjects(), IsEmpty());
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());

  // The same envelope under the trusted key is new to the receiver.
  auto retry = OpenStream();
  EXPECT_THAT(retry.Deliver(Sign(envelope)), IsReceipt());
  EXPECT_OK(retry.Close());
  EXPECT_THAT(FiaBodies(), ElementsAre(kBody));
}

TEST_F(PeerRefusalTest, APeerThatNeverReadsItsAnswersIsHeldByFlowControl) {
  // 16 KiB requests under an unknown key, each refused cheaply, written as
  // fast as the stream takes them while no answer is ever read. The gateway
  // stops reading once a bounded number is unanswered, so the writes stall
  // (HTTP/2 flow control) long before all are taken; before, it read them
  // all, holding every answer in memory.
  const auto stranger = crypto::Ed25519Signer::Generate();
  v1::SignedEnvelope padded;
  padded.set_envelope(std::string(16 << 10, 'x'));
  padded.set_signature(std::string(64, 's'));
  padded.set_key_id(exchange::KeyId(stranger->public_key()));
  constexpr int kRequests = 20000;
  std::atomic<int> written{0};
  // The answers fill the test's receive window of 64 KiB, HTTP/2's first
  // (bandwidth probing, which would widen it to megabytes, is off).
  grpc::ChannelArguments narrow;
  narrow.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  ASSERT_OK_AND_ASSIGN(
      auto channel,
      client::Connect(ClientConfig(kCnGatewayCert, pk_->peer_endpoint(), "PK"),
                      narrow));
  auto stream = std::make_unique<DeliverStream>(channel, absl::Minutes(5));
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      if (!stream->Write(padded)) return;
      written.fetch_add(1);
    }
  });
  // Until all are written, or no write has gone through for 2 s.
  int seen = -1;
  absl::Time still_since = absl::Now();
  const absl::Time deadline = absl::Now() + absl::Minutes(2);
  while (absl::Now() < deadline && written.load() < kRequests &&
         (written.load() != seen ||
          absl::Now() - still_since < absl::Seconds(2))) {
    if (written.load() != seen) {
      seen = written.load();
      still_since = absl::Now();
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_LT(written.load(), kRequests)
      << "the gateway read every request while none of its answers was read";
  const int taken = written.load();
  stream->Cancel();
  writer.join();
  stream.reset();
  ExpectValidStillAccepted("after a peer that never read its answers");
  if (HasFailure()) ADD_FAILURE() << taken << " requests were taken";
}

TEST_F(PeerRefusalTest, BadSignatureIsRefusedForGood) {
  const v1::Envelope envelope = ValidEnvelope();
  const v1::SignedEnvelope good = Sign(envelope);
  v1::SignedEnvelope flipped = good;
  (*flipped.mutable_signature())[10] ^= 0x01;
  v1::SignedEnvelope truncated = good;
  truncated.mutable_signature()->pop_back();

  auto stream = OpenStream();
  const auto answers = stream.DeliverAll({flipped, truncated});
  const std::string reason = "signature: does not verify for key " + cn_key_id_;
  EXPECT_THAT(answers[0],
              IsRefusal(grpc::StatusCode::UNAUTHENTICATED, reason, true));
  EXPECT_THAT(answers[1],
              IsRefusal(grpc::StatusCode::UNAUTHENTICATED, reason, true));
  EXPECT_EQ(answers[0].envelope_id(), "");
  EXPECT_OK(stream.Close());

  const auto received = ReceivedEntries();
  ASSERT_EQ(received.size(), 2u);
  for (const v1::AuditEntry& e : received) {
    EXPECT_EQ(e.actor(), kCnGateway);
    EXPECT_EQ(e.status_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(e.status_message(), reason);
  }
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());

  // The same envelope correctly signed was never stored: accepted as new.
  auto retry = OpenStream();
  EXPECT_THAT(retry.Deliver(good), IsReceipt());
  EXPECT_OK(retry.Close());
  EXPECT_THAT(FiaBodies(), ElementsAre(kBody));
}

TEST_F(PeerRefusalTest, RefusalsBeyondTheirAuditRateAreCountedInASummary) {
  // A faulty or compromised peer streaming envelopes that are all refused:
  // each gets its refusal, a few a second are audited on their own, and the
  // rest are counted, so the peer cannot grow the audit log at will.
  RestartWithLimits(
      "peer_refusal_audits_per_second = 1\npeer_refusal_audit_burst = 3\n");
  constexpr int kEnvelopes = 40;
  std::vector<v1::SignedEnvelope> forged;
  for (int i = 0; i < kEnvelopes; ++i) {
    v1::SignedEnvelope envelope = Sign(ValidEnvelope());
    (*envelope.mutable_signature())[10] ^= 0x01;
    forged.push_back(std::move(envelope));
  }
  const std::string reason = "signature: does not verify for key " + cn_key_id_;
  {
    auto stream = OpenStream();
    for (const v1::DeliverResponse& answer : stream.DeliverAll(forged)) {
      EXPECT_THAT(answer,
                  IsRefusal(grpc::StatusCode::UNAUTHENTICATED, reason, true));
    }
    EXPECT_OK(stream.Close());
  }
  // The stream's end closes the burst: its count is audited.
  auto summaries = [&] {
    std::vector<v1::AuditEntry> found;
    for (v1::AuditEntry& e : AuditEntries()) {
      if (e.action() == "limits.refused") found.push_back(std::move(e));
    }
    return found;
  };
  ASSERT_TRUE(WaitUntil([&] { return !summaries().empty(); })) << pk_->Log();
  int64_t summarized = 0;
  const std::vector<v1::AuditEntry> closed = summaries();
  for (const v1::AuditEntry& e : closed) {
    EXPECT_EQ(e.actor(), kCnGateway);
    EXPECT_EQ(e.status_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(e.status_message(),
                HasSubstr("beyond limits.peer_refusal_audits_per_second"));
    int64_t count = 0;
    ASSERT_TRUE(absl::SimpleAtoi(
        e.status_message().substr(0, e.status_message().find(' ')), &count))
        << e.status_message();
    summarized += count;
  }
  const std::vector<v1::AuditEntry> own = ReceivedEntries();
  for (const v1::AuditEntry& e : own) {
    EXPECT_EQ(e.actor(), kCnGateway);
    EXPECT_EQ(e.status_message(), reason);
  }
  // Three from the bucket, each burst's first, one a second refilled.
  EXPECT_GE(own.size(), 4u);
  EXPECT_LT(own.size(), static_cast<size_t>(kEnvelopes) / 2);
  // Each burst's first refusal is both audited and counted.
  EXPECT_EQ(static_cast<int64_t>(own.size()) + summarized -
                static_cast<int64_t>(closed.size()),
            kEnvelopes);
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());
}

TEST_F(PeerRefusalTest, BodyChangedAfterSigningIsRefused) {
  const v1::SignedEnvelope good = Sign(ValidEnvelope());
  v1::SignedEnvelope altered = good;
  const size_t at = altered.envelope().find("V1");
  ASSERT_NE(at, std::string::npos);
  (*altered.mutable_envelope())[at] = 'W';  // still well-formed UTF-8

  auto stream = OpenStream();
  EXPECT_THAT(stream.Deliver(altered),
              IsRefusal(grpc::StatusCode::UNAUTHENTICATED,
                        StartsWith("signature: "), true));
  EXPECT_OK(stream.Close());
  ExpectAuditedRefusal(grpc::StatusCode::UNAUTHENTICATED, "signature: ");
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());

  auto retry = OpenStream();
  EXPECT_THAT(retry.Deliver(good), IsReceipt());
  EXPECT_OK(retry.Close());
  EXPECT_THAT(FiaBodies(), ElementsAre(kBody));
}

TEST_F(PeerRefusalTest, EnvelopeIdReusedWithOtherBytesIsRefusedAndKept) {
  const v1::Envelope first = ValidEnvelope();
  const v1::SignedEnvelope first_signed = Sign(first);
  v1::Envelope second = first;
  second.mutable_message()->set_body("另一条内容 — other content, same id");
  const v1::SignedEnvelope second_signed = Sign(second);
  ASSERT_NE(second_signed.envelope(), first_signed.envelope());

  auto stream =
      std::make_unique<DeliverStream>(kCnGatewayCert, pk_->peer_endpoint());
  const v1::DeliverResponse accepted = stream->Deliver(first_signed);
  ASSERT_THAT(accepted, IsReceipt()) << pk_->Log();
  const v1::DeliverResponse refused = stream->Deliver(second_signed);
  EXPECT_THAT(refused,
              IsRefusal(grpc::StatusCode::ALREADY_EXISTS,
                        "envelope_id " + first.envelope_id() +
                            " was already received with other content; kept "
                            "as evidence",
                        true));
  EXPECT_EQ(refused.envelope_id(), first.envelope_id());
  // The first envelope is untouched: a replay still gets its receipt.
  const v1::DeliverResponse replay = stream->Deliver(first_signed);
  ASSERT_THAT(replay, IsReceipt());
  EXPECT_EQ(replay.receipt().SerializeAsString(),
            accepted.receipt().SerializeAsString());
  EXPECT_OK(stream->Close());
  stream.reset();  // an open connection would hold up the drain at Stop

  EXPECT_THAT(FiaBodies(), ElementsAre(kBody));
  const v1::AuditEntry entry = ExpectAuditedRefusal(
      grpc::StatusCode::ALREADY_EXISTS, "already received with other content");
  EXPECT_THAT(entry.subjects(), Contains(first.envelope_id()));

  // The conflicting bytes are kept as evidence, exactly as received.
  ASSERT_EQ(pk_->Stop(), 0) << pk_->Log();
  const std::string shell = "/usr/bin/sqlite3";
  ASSERT_EQ(::access(shell.c_str(), X_OK), 0)
      << "reading the stored evidence needs the sqlite3 shell at " << shell;
  const CommandResult rows =
      RunCommand({shell, "-readonly", DataDir() + "/gateway.db",
                  "SELECT envelope_id || ' ' || lower(hex(signed_envelope)) "
                  "FROM envelope_conflicts ORDER BY id"});
  ASSERT_EQ(rows.exit_code, 0) << rows.err;
  EXPECT_EQ(
      rows.out,
      absl::StrCat(first.envelope_id(), " ",
                   crypto::HexEncode(second_signed.SerializeAsString()), "\n"));
}

TEST_F(PeerRefusalTest, MessageIdReusedInAnotherEnvelopeIsRefused) {
  const v1::Envelope first = ValidEnvelope();
  v1::Envelope second = ValidEnvelope("second envelope, same message id");
  second.mutable_message()->set_message_id(first.message().message_id());

  auto stream = OpenStream();
  const v1::DeliverResponse accepted = stream.Deliver(Sign(first));
  ASSERT_THAT(accepted, IsReceipt()) << pk_->Log();
  const v1::DeliverResponse refused = stream.Deliver(Sign(second));
  EXPECT_THAT(refused, IsRefusal(grpc::StatusCode::ALREADY_EXISTS,
                                 "message_id " + first.message().message_id() +
                                     " was already received in another "
                                     "envelope",
                                 true));
  EXPECT_EQ(refused.envelope_id(), second.envelope_id());
  // Nothing of the second envelope was stored: it is refused again, not
  // answered as a replay.
  EXPECT_THAT(stream.Deliver(Sign(second)),
              IsRefusal(grpc::StatusCode::ALREADY_EXISTS,
                        HasSubstr("in another envelope"), true));
  EXPECT_OK(stream.Close());

  EXPECT_THAT(FiaBodies(), ElementsAre(kBody));
  // The first envelope was received; both refusals are audited.
  const auto received = ReceivedEntries();
  ASSERT_EQ(received.size(), 3u);
  EXPECT_EQ(received[0].status_code(), 0);
  EXPECT_THAT(received[0].subjects(), Contains(first.envelope_id()));
  for (size_t i = 1; i < received.size(); ++i) {
    EXPECT_EQ(received[i].status_code(), grpc::StatusCode::ALREADY_EXISTS);
    EXPECT_THAT(received[i].subjects(), Contains(second.envelope_id()));
  }
}

TEST_F(PeerRefusalTest, EnvelopeFromTheFutureIsRefusedUntilClocksAgree) {
  v1::Envelope envelope = ValidEnvelope();
  *envelope.mutable_created_at() = ToProto(absl::Now() + absl::Hours(1));
  auto stream = OpenStream();
  const v1::DeliverResponse r = stream.Deliver(Sign(envelope));
  EXPECT_THAT(
      r,
      IsRefusal(
          grpc::StatusCode::FAILED_PRECONDITION,
          AllOf(StartsWith("created_at: "),
                HasSubstr("ahead of this gateway's clock"),
                HasSubstr(absl::StrCat(
                    "limit ", config::Limits().max_clock_skew_seconds, " s"))),
          false));
  EXPECT_EQ(r.envelope_id(), envelope.envelope_id());
  EXPECT_OK(stream.Close());

  const v1::AuditEntry entry = ExpectAuditedRefusal(
      grpc::StatusCode::FAILED_PRECONDITION, "created_at: ");
  EXPECT_THAT(entry.subjects(), ElementsAre(envelope.envelope_id()));
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());
  ExpectValidStillAccepted("clocks agree again");
}

TEST_F(PeerRefusalTest, EnvelopeWithATimeOutOfRangeIsRefusedForGood) {
  // Seconds whose microseconds overflow 64 bits: converted unchecked, the
  // time wrapped to a date far in the past and passed the skew check.
  v1::Envelope envelope = ValidEnvelope();
  envelope.mutable_created_at()->set_seconds(9223372036855);
  auto stream = OpenStream();
  const v1::DeliverResponse r = stream.Deliver(Sign(envelope));
  EXPECT_THAT(r, IsRefusal(grpc::StatusCode::INVALID_ARGUMENT,
                           "created_at: is not a valid timestamp", true));
  EXPECT_OK(stream.Close());
  ExpectAuditedRefusal(grpc::StatusCode::INVALID_ARGUMENT,
                       "created_at: is not a valid timestamp");
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());
  ExpectValidStillAccepted("a time in range");
}

TEST_F(PeerRefusalTest, OversizedEnvelopeIsRefusedBeforeAnyOtherCheck) {
  std::string huge;
  while (huge.size() <= static_cast<size_t>(kMaxEnvelopeBytes)) {
    huge += "受害人在邯郸。";
  }
  const v1::Envelope envelope = ValidEnvelope(huge);
  // Validly signed, and signed by a stranger with a broken signature:
  // either way the size is all that is looked at.
  const v1::SignedEnvelope valid = Sign(envelope);
  v1::SignedEnvelope forged =
      SignWith(envelope, *crypto::Ed25519Signer::Generate());
  (*forged.mutable_signature())[0] ^= 0x01;
  ASSERT_GT(valid.envelope().size(), static_cast<size_t>(kMaxEnvelopeBytes));

  auto stream = OpenStream();
  const auto answers = stream.DeliverAll({valid, forged});
  const std::string reason =
      absl::StrCat("envelope: ", valid.envelope().size(),
                   " bytes exceeds the limit of ", kMaxEnvelopeBytes);
  for (const v1::DeliverResponse& r : answers) {
    EXPECT_THAT(r,
                IsRefusal(grpc::StatusCode::RESOURCE_EXHAUSTED, reason, true));
    EXPECT_EQ(r.envelope_id(), "");
  }
  EXPECT_OK(stream.Close());

  const auto received = ReceivedEntries();
  ASSERT_EQ(received.size(), 2u);
  for (const v1::AuditEntry& e : received) {
    EXPECT_EQ(e.actor(), kCnGateway);
    EXPECT_EQ(e.status_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_EQ(e.status_message(), reason);
  }
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());
  ExpectValidStillAccepted("a normal-sized message");
}

TEST_F(PeerRefusalTest, SenderOfficeUnknownToThisGatewayIsDenied) {
  v1::Envelope envelope = ValidEnvelope();
  envelope.mutable_message()->set_sender_office(
      "spiffe://cn.casebridge/office/not-configured");
  auto stream = OpenStream();
  EXPECT_THAT(
      stream.Deliver(Sign(envelope)),
      IsRefusal(grpc::StatusCode::PERMISSION_DENIED,
                AllOf(StartsWith("message.sender_office: "),
                      HasSubstr("not-configured"), HasSubstr("peer.offices")),
                false));
  EXPECT_OK(stream.Close());
  const v1::AuditEntry entry = ExpectAuditedRefusal(
      grpc::StatusCode::PERMISSION_DENIED, "message.sender_office: ");
  EXPECT_THAT(entry.subjects(), ElementsAre(envelope.envelope_id()));
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());
  ExpectValidStillAccepted("from a configured office");
}

TEST_F(PeerRefusalTest, MessageWithAnotherCodeThanTheCaseHeldHereIsKept) {
  // One of our cases, under H2 (the draft's code).
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference ours,
                       Office(kFia)->OpenCase(ValidDraft()));
  ASSERT_EQ(ours.handling_code(), v1::HANDLING_CODE_H2);

  // A message weaker than the case: kept, under the case's code.
  v1::Envelope weaker = ValidEnvelope("H0 reply on an H2 case");
  weaker.mutable_message()->set_exchange_id(ours.exchange_id());
  weaker.mutable_message()->set_handling_code(v1::HANDLING_CODE_H0);
  auto stream = OpenStream();
  EXPECT_THAT(stream.Deliver(Sign(weaker)), IsReceipt()) << pk_->Log();
  std::vector<v1::WatchInboxResponse> inbox = InboxOf(kFia, 1);
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].message().body(), "H0 reply on an H2 case");
  EXPECT_EQ(inbox[0].message().handling_code(), v1::HANDLING_CODE_H2);
  EXPECT_THAT(inbox[0].message().handling_notice(), StartsWith("H2: "));

  // The desk raises its case to H3 and does not share it again: the peer's
  // copy is still H2, and so is every message it sends on the case. Each
  // is kept, under both restrictions.
  v1::UpdateCaseRequest raise;
  raise.mutable_case_reference()->set_exchange_id(ours.exchange_id());
  raise.mutable_case_reference()->set_handling_code(v1::HANDLING_CODE_H3);
  raise.mutable_case_reference()->set_handling_restriction(
      "not to be shared with the press");
  raise.mutable_update_mask()->add_paths("handling_code");
  raise.mutable_update_mask()->add_paths("handling_restriction");
  raise.set_expected_version(ours.version());
  ASSERT_OK(Office(kFia)->UpdateCase(raise).status());
  v1::Envelope older = ValidEnvelope("rescue update under the shared H2");
  older.mutable_message()->set_exchange_id(ours.exchange_id());
  older.mutable_message()->set_handling_code(v1::HANDLING_CODE_H2);
  EXPECT_THAT(stream.Deliver(Sign(older)), IsReceipt()) << pk_->Log();
  EXPECT_OK(stream.Close());

  inbox = InboxOf(kFia, 2);
  ASSERT_EQ(inbox.size(), 2u);
  const v1::CaseMessage& held = inbox[1].message();
  EXPECT_EQ(held.body(), "rescue update under the shared H2");
  EXPECT_EQ(held.handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(held.handling_restriction(),
            "not to be shared with the press; and as sent: H2: no onward "
            "dissemination without the originator's permission");
  EXPECT_THAT(
      held.handling_notice(),
      AllOf(StartsWith("H3: "), HasSubstr("not to be shared with the press"),
            HasSubstr("H2: no onward dissemination")));

  // Both were received and audited as such; nothing was refused.
  const std::vector<v1::AuditEntry> received = ReceivedEntries();
  ASSERT_EQ(received.size(), 2u);
  for (const v1::AuditEntry& e : received) {
    EXPECT_EQ(e.status_code(), 0) << e.status_message();
    EXPECT_EQ(e.actor(), kCnGateway);
  }
  // And that each is delivered under another handling than it was sent
  // under is on record, by this gateway, right after its receipt.
  const std::vector<v1::AuditEntry> held_entries =
      ReadAuditEntries(*Office(kPkAuditor), "message.held_to_case");
  ASSERT_EQ(held_entries.size(), 2u);
  const v1::Envelope* sent[] = {&weaker, &older};
  for (size_t i = 0; i < 2; ++i) {
    const v1::AuditEntry& e = held_entries[i];
    EXPECT_EQ(e.actor(), kPkGateway);
    EXPECT_EQ(e.status_code(), 0) << e.status_message();
    EXPECT_THAT(e.subjects(),
                ElementsAre(ours.exchange_id(), sent[i]->message().message_id(),
                            sent[i]->envelope_id()));
    EXPECT_EQ(e.index(), received[i].index() + 1);
  }
}

TEST_F(PeerRefusalTest, StreamsDroppedWhileAnswersAreWrittenLeaveItServing) {
  // A peer that drops its stream while this gateway is writing answers (it
  // crashed, or the network cut) must not take the gateway down: the answer
  // being written belongs to gRPC until its write completes.
  const v1::SignedEnvelope envelope = Sign(ValidEnvelope("first"));
  {
    auto stream = OpenStream();
    ASSERT_THAT(stream.Deliver(envelope), IsReceipt()) << pk_->Log();
    EXPECT_OK(stream.Close());
  }
  constexpr int kRounds = 20;
  constexpr int kReplays = 100;
  for (int round = 0; round < kRounds; ++round) {
    auto stream = OpenStream();
    for (int i = 0; i < kReplays; ++i) {
      ASSERT_TRUE(stream.Write(envelope)) << "round " << round << pk_->Log();
    }
    // Answers are on their way: drop the stream under them (the
    // destructor cancels it).
    v1::DeliverResponse answer;
    ASSERT_TRUE(stream.Read(&answer)) << "round " << round << pk_->Log();
    EXPECT_THAT(answer, IsReceipt());
  }
  // Still serving, and still taking new envelopes.
  auto stream = OpenStream();
  EXPECT_THAT(stream.Deliver(Sign(ValidEnvelope("after the drops"))),
              IsReceipt())
      << pk_->Log();
  EXPECT_OK(stream.Close());
  EXPECT_THAT(FiaBodies(2), ElementsAre("first", "after the drops"));
}

TEST_F(PeerRefusalTest, MalformedContentIsRefusedForGood) {
  v1::Envelope no_kind = ValidEnvelope();
  no_kind.mutable_message()->clear_kind();
  v1::Envelope pk_envelope_id = ValidEnvelope();
  pk_envelope_id.set_envelope_id(
      MintId(v1::COUNTRY_PK, IdKind::kEnvelope, absl::Now()));
  v1::Envelope bad_message_id = ValidEnvelope();
  bad_message_id.mutable_message()->set_message_id("CN-M-not-an-id");
  v1::Envelope wrong_country = ValidEnvelope();
  wrong_country.mutable_message()->set_sender_country(v1::COUNTRY_PK);
  v1::Envelope no_body = ValidEnvelope();
  no_body.mutable_message()->clear_body();

  // Bytes that are no Envelope ('n' is field 13 with the invalid wire type
  // 6), validly signed by the CN key: the peer's own gateway made them.
  const std::string garbage = "not an envelope at all";
  ASSERT_OK_AND_ASSIGN(
      std::string garbage_signature,
      cn_key_->Sign(absl::StrCat(exchange::kEnvelopeContext, garbage)));
  v1::SignedEnvelope signed_garbage;
  signed_garbage.set_envelope(garbage);
  signed_garbage.set_signature(garbage_signature);
  signed_garbage.set_key_id(cn_key_id_);

  auto stream = OpenStream();
  const auto answers = stream.DeliverAll(
      {Sign(no_kind), signed_garbage, Sign(pk_envelope_id),
       Sign(bad_message_id), Sign(wrong_country), Sign(no_body)});
  const auto invalid = grpc::StatusCode::INVALID_ARGUMENT;
  EXPECT_THAT(answers[0],
              IsRefusal(invalid, StartsWith("message.kind: "), true));
  EXPECT_THAT(
      answers[1],
      IsRefusal(invalid, "envelope: not a well-formed casebridge.v1.Envelope",
                true));
  EXPECT_EQ(answers[1].envelope_id(), "");
  EXPECT_THAT(answers[2],
              IsRefusal(invalid, StartsWith("envelope_id: "), true));
  EXPECT_THAT(answers[3],
              IsRefusal(invalid, StartsWith("message.message_id: "), true));
  EXPECT_THAT(answers[4],
              IsRefusal(invalid, StartsWith("message.sender_country: "), true));
  EXPECT_THAT(answers[5],
              IsRefusal(invalid, StartsWith("message.body: "), true));
  EXPECT_OK(stream.Close());

  const v1::AuditEntry kind = ExpectAuditedRefusal(invalid, "message.kind: ");
  EXPECT_THAT(kind.subjects(), ElementsAre(no_kind.envelope_id()));
  ExpectAuditedRefusal(invalid, "envelope: not a well-formed");
  ExpectAuditedRefusal(invalid, "envelope_id: ");
  ExpectAuditedRefusal(invalid, "message.message_id: ");
  ExpectAuditedRefusal(invalid, "message.sender_country: ");
  ExpectAuditedRefusal(invalid, "message.body: ");
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());
  ExpectValidStillAccepted("well-formed");
}

TEST_F(PeerRefusalTest, WrongOriginOrDestinationGatewayIsRefused) {
  v1::Envelope from_pk = ValidEnvelope();
  from_pk.set_origin_gateway(kPkGateway);
  v1::Envelope to_cn = ValidEnvelope();
  to_cn.set_destination_gateway(kCnGateway);

  auto stream = OpenStream();
  const auto answers = stream.DeliverAll({Sign(from_pk), Sign(to_cn)});
  EXPECT_THAT(answers[0], IsRefusal(grpc::StatusCode::PERMISSION_DENIED,
                                    StartsWith("origin_gateway: "), false));
  EXPECT_THAT(answers[1],
              IsRefusal(grpc::StatusCode::FAILED_PRECONDITION,
                        StartsWith("destination_gateway: "), false));
  EXPECT_EQ(answers[0].envelope_id(), from_pk.envelope_id());
  EXPECT_EQ(answers[1].envelope_id(), to_cn.envelope_id());
  EXPECT_OK(stream.Close());

  const v1::AuditEntry origin = ExpectAuditedRefusal(
      grpc::StatusCode::PERMISSION_DENIED, "origin_gateway: ");
  EXPECT_THAT(origin.subjects(), ElementsAre(from_pk.envelope_id()));
  const v1::AuditEntry destination = ExpectAuditedRefusal(
      grpc::StatusCode::FAILED_PRECONDITION, "destination_gateway: ");
  EXPECT_THAT(destination.subjects(), ElementsAre(to_cn.envelope_id()));
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());
  ExpectValidStillAccepted("right gateways");
}

TEST_F(PeerRefusalTest, RecipientOfficeThatIsNotOneOfOursIsRefused) {
  // A CN office, an unknown PK office, and a PK office that takes no
  // messages (the auditor).
  const std::vector<std::string> recipients = {
      kMpsOffice, "spiffe://pk.casebridge/office/no-such-desk",
      "spiffe://pk.casebridge/auditor/pk-auditor"};
  std::vector<v1::SignedEnvelope> envelopes;
  for (const std::string& recipient : recipients) {
    v1::Envelope e = ValidEnvelope();
    e.mutable_message()->set_recipient_office(recipient);
    envelopes.push_back(Sign(e));
  }
  auto stream = OpenStream();
  const auto answers = stream.DeliverAll(envelopes);
  for (const v1::DeliverResponse& r : answers) {
    EXPECT_THAT(r, IsRefusal(grpc::StatusCode::FAILED_PRECONDITION,
                             StartsWith("message.recipient_office: "), false));
  }
  EXPECT_OK(stream.Close());
  for (const std::string& recipient : recipients) {
    ExpectAuditedRefusal(grpc::StatusCode::FAILED_PRECONDITION, recipient);
  }
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());
  EXPECT_THAT(InboxOf(kEmbassy, 0), IsEmpty());

  // Addressed to one of ours, it reaches that office only.
  v1::Envelope to_embassy = ValidEnvelope("for the embassy");
  to_embassy.mutable_message()->set_recipient_office(kEmbassyOffice);
  v1::Envelope to_fia = ValidEnvelope("for the desk");
  to_fia.mutable_message()->set_recipient_office(kFiaOffice);
  auto second = OpenStream();
  const auto accepted = second.DeliverAll({Sign(to_embassy), Sign(to_fia)});
  EXPECT_THAT(accepted[0], IsReceipt());
  EXPECT_THAT(accepted[1], IsReceipt());
  EXPECT_OK(second.Close());
  EXPECT_THAT(FiaBodies(), ElementsAre("for the desk"));
  const auto embassy = InboxOf(kEmbassy, 1);
  ASSERT_EQ(embassy.size(), 1u);
  EXPECT_EQ(embassy[0].message().body(), "for the embassy");
}

TEST_F(PeerRefusalTest, RefusalsAndReceiptsShareOneStreamMatchedBySequence) {
  const v1::Envelope a = ValidEnvelope("first");
  v1::Envelope skewed = ValidEnvelope("skewed");
  *skewed.mutable_created_at() = ToProto(absl::Now() + absl::Hours(2));
  v1::SignedEnvelope forged = Sign(ValidEnvelope("forged"));
  (*forged.mutable_signature())[63] ^= 0x80;
  const v1::Envelope b = ValidEnvelope("second");

  auto stream = OpenStream();
  const auto answers =
      stream.DeliverAll({Sign(a), Sign(skewed), forged, Sign(b)});
  EXPECT_THAT(answers[0], IsReceipt());
  EXPECT_EQ(answers[0].envelope_id(), a.envelope_id());
  EXPECT_THAT(answers[1], IsRefusal(grpc::StatusCode::FAILED_PRECONDITION,
                                    StartsWith("created_at: "), false));
  EXPECT_EQ(answers[1].envelope_id(), skewed.envelope_id());
  EXPECT_THAT(answers[2], IsRefusal(grpc::StatusCode::UNAUTHENTICATED,
                                    StartsWith("signature: "), true));
  EXPECT_THAT(answers[3], IsReceipt());
  EXPECT_EQ(answers[3].envelope_id(), b.envelope_id());
  EXPECT_OK(stream.Close());

  auto inbox = FiaBodies(2);
  std::sort(inbox.begin(), inbox.end());
  EXPECT_THAT(inbox, ElementsAre("first", "second"));
  const auto received = ReceivedEntries();
  ASSERT_EQ(received.size(), 4u);
  std::vector<int> codes;
  for (const auto& e : received) codes.push_back(e.status_code());
  std::sort(codes.begin(), codes.end());
  EXPECT_THAT(codes, ElementsAre(0, 0, grpc::StatusCode::FAILED_PRECONDITION,
                                 grpc::StatusCode::UNAUTHENTICATED));
}

TEST_F(PeerRefusalTest, ThePriorityCopyOrdersTheChecksAndDecidesNothing) {
  // The copy outside the signature may say anything: it never skips a
  // check, and what is stored and shown carries the signed priority.
  v1::Envelope routine = ValidEnvelope("routine, copy says URGENT");
  routine.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
  const v1::Envelope urgent = ValidEnvelope("urgent, copy says ROUTINE");
  const v1::Envelope unknown = ValidEnvelope("urgent, copy unknown");
  v1::SignedEnvelope forged = Sign(ValidEnvelope("forged, copy says URGENT"));
  (*forged.mutable_signature())[63] ^= 0x80;

  auto stream = OpenStream();
  const auto answers = stream.DeliverAll(
      {Sign(routine), Sign(urgent), Sign(unknown), forged},
      {v1::PRIORITY_URGENT, v1::PRIORITY_ROUTINE, 77, v1::PRIORITY_URGENT});
  EXPECT_THAT(answers[0], IsReceipt()) << pk_->Log();
  EXPECT_THAT(answers[1], IsReceipt());
  EXPECT_THAT(answers[2], IsReceipt());
  EXPECT_THAT(answers[3], IsRefusal(grpc::StatusCode::UNAUTHENTICATED,
                                    StartsWith("signature: "), true));
  EXPECT_OK(stream.Close());

  std::map<std::string, v1::Priority> stored;
  for (const auto& item : InboxOf(kFia, 3)) {
    stored[item.message().body()] = item.message().priority();
  }
  EXPECT_THAT(stored,
              UnorderedElementsAre(
                  Pair("routine, copy says URGENT", v1::PRIORITY_ROUTINE),
                  Pair("urgent, copy says ROUTINE", v1::PRIORITY_URGENT),
                  Pair("urgent, copy unknown", v1::PRIORITY_URGENT)));
  ExpectAuditedRefusal(grpc::StatusCode::UNAUTHENTICATED, "signature: ");
}

TEST_F(PeerRefusalTest, RefusalsQuotingLongNonAsciiValuesStayReadable) {
  // Each value is cut where the refusal quotes it (64 or 80 bytes) in the
  // middle of a three-byte character.
  v1::Envelope origin = ValidEnvelope();
  origin.set_origin_gateway("spiffe://" + std::string(54, 'a') + "邯郸邯郸");
  v1::Envelope destination = ValidEnvelope();
  destination.set_destination_gateway("spiffe://" + std::string(54, 'a') +
                                      "邯郸邯郸");
  v1::Envelope sender = ValidEnvelope();
  sender.mutable_message()->set_sender_office(
      "spiffe://cn.casebridge/office/" + std::string(49, 'a') + "邯郸邯郸");
  v1::Envelope recipient = ValidEnvelope();
  recipient.mutable_message()->set_recipient_office(
      "spiffe://pk.casebridge/office/" + std::string(49, 'a') + "邯郸邯郸");

  auto stream = OpenStream(kCnGatewayCert, absl::Seconds(10));
  const auto answers = stream.DeliverAll(
      {Sign(origin), Sign(destination), Sign(sender), Sign(recipient)});
  EXPECT_THAT(answers[0], IsRefusal(grpc::StatusCode::PERMISSION_DENIED,
                                    StartsWith("origin_gateway: "), false));
  EXPECT_THAT(answers[1],
              IsRefusal(grpc::StatusCode::FAILED_PRECONDITION,
                        StartsWith("destination_gateway: "), false));
  EXPECT_THAT(answers[2],
              IsRefusal(grpc::StatusCode::PERMISSION_DENIED,
                        StartsWith("message.sender_office: "), false));
  EXPECT_THAT(answers[3],
              IsRefusal(grpc::StatusCode::FAILED_PRECONDITION,
                        StartsWith("message.recipient_office: "), false));
  (void)stream.Close();

  // The auditor can still read the log, refusals included.
  const auto received = ReceivedEntries();
  EXPECT_EQ(received.size(), 4u);
  for (const v1::AuditEntry& e : received) {
    EXPECT_TRUE(IsValidUtf8(e.status_message()));
  }
  ExpectValidStillAccepted("after the long values");
}

TEST_F(PeerRefusalTest, PkOfficeCertificateCannotOpenTheDeliverStream) {
  auto stream = OpenStream(kFia);
  (void)stream.Write(Sign(ValidEnvelope()));
  v1::DeliverResponse response;
  EXPECT_FALSE(stream.Read(&response));
  EXPECT_THAT(stream.Close(),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  // Refused by TLS: the gateway never saw a caller to audit.
  EXPECT_THAT(AuditEntries(), IsEmpty());
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());
}

TEST_F(PeerRefusalTest, CnOfficeCertificateIsDeniedBeforeAnyEnvelopeIsRead) {
  auto stream = OpenStream(kMpsCert);
  (void)stream.Write(Sign(ValidEnvelope()));
  v1::DeliverResponse response;
  EXPECT_FALSE(stream.Read(&response)) << response.ShortDebugString();
  EXPECT_THAT(stream.Close(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("not the configured peer gateway")));

  const auto entries = AuditEntries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].actor(), kMpsOffice);
  EXPECT_EQ(entries[0].action(), "peer.deliver");
  EXPECT_EQ(entries[0].status_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(FiaBodiesNow(), IsEmpty());
  ExpectValidStillAccepted("from the gateway itself");
}

TEST_F(PeerRefusalTest,
       WatchesEndedWhileMessagesAreWrittenLeaveTheGatewayServing) {
  // An office that stops reading while the gateway is still writing its
  // inbox to it (here after the first of 40 messages, again and again):
  // the gateway finishes the stream only after the write under way and its
  // delivery record are done, and goes on serving. (It used to finish at
  // once, and a record queued by that write outlived the stream: a
  // use-after-free that could take the gateway down.)
  std::vector<v1::SignedEnvelope> envelopes;
  for (int i = 0; i < 40; ++i) {
    envelopes.push_back(Sign(ValidEnvelope(absl::StrCat("message ", i))));
  }
  auto stream = OpenStream();
  for (const v1::DeliverResponse& r : stream.DeliverAll(envelopes)) {
    ASSERT_THAT(r, IsReceipt()) << pk_->Log();
  }
  EXPECT_OK(stream.Close());
  auto fia = Office(kFia);
  ASSERT_NE(fia, nullptr);
  for (int round = 0; round < 25; ++round) {
    int read = 0;
    ASSERT_OK(fia->WatchInbox("", absl::Seconds(10),
                              [&](const v1::WatchInboxResponse&) {
                                ++read;
                                return false;
                              }))
        << "round " << round << "; PK log:\n"
        << pk_->Log();
    ASSERT_EQ(read, 1) << "round " << round;
  }
  // Still serving, every message there (in the order the gateway checked
  // them: this test's peer sent them all at once, which a gateway never
  // does within a case); and each message the desk was given is recorded
  // as delivered to it once.
  std::vector<std::string> bodies = FiaBodies(envelopes.size());
  std::vector<std::string> sent;
  for (int i = 0; i < 40; ++i) sent.push_back(absl::StrCat("message ", i));
  EXPECT_THAT(bodies, UnorderedElementsAreArray(sent)) << pk_->Log();
  std::map<std::string, int> delivered;
  EXPECT_TRUE(WaitUntil(
      [&] {
        delivered.clear();
        for (const v1::AuditEntry& e : AuditEntries()) {
          if (e.action() == "inbox.delivered" && e.actor() == kFiaOffice) {
            ++delivered[e.subjects(e.subjects_size() - 1)];
          }
        }
        return delivered.size() == envelopes.size();
      },
      absl::Seconds(10)))
      << delivered.size() << " of " << envelopes.size() << " recorded";
  for (const auto& [message_id, count] : delivered) {
    EXPECT_EQ(count, 1) << message_id;
  }
}

}  // namespace
}  // namespace casebridge::testing
