// The cross-border exchange between two real gateway processes on loopback:
// signed envelopes, verified receipts, inboxes, outages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kEmbassy[] = "pk/offices/embassy-beijing";
constexpr char kMps[] = "cn/offices/mps-liaison";
constexpr char kPkAuditor[] = "pk/auditors/pk-auditor";
constexpr char kCnAuditor[] = "cn/auditors/cn-auditor";

class ExchangeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("exchange");
    const GatewayPairConfigs configs = WriteGatewayPairConfigs(dir_);
    pk_config_ = configs.pk;
    cn_config_ = configs.cn;
    ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
    ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  }

  std::unique_ptr<client::OfficeClient> Pk(const std::string& stem) {
    return OfficeClientFor(stem, pk_->office_endpoint(), "PK");
  }
  std::unique_ptr<client::OfficeClient> Cn(const std::string& stem) {
    return OfficeClientFor(stem, cn_->office_endpoint(), "CN");
  }

  // A case of the FIA desk, shared with MPS's liaison desk, once CN holds it.
  std::string OpenCase() {
    auto opened = OpenSharedCase(*Pk(kFia));
    EXPECT_OK(opened);
    if (!opened.ok()) return "";
    EXPECT_TRUE(WaitUntil([&] { return Cn(kMps)->GetCase(*opened).ok(); }))
        << cn_->Log();
    return *opened;
  }

  absl::StatusOr<std::string> Send(const std::string& exchange_id,
                                   const std::string& body,
                                   v1::Priority priority = v1::PRIORITY_ROUTINE,
                                   const std::string& stem = kFia) {
    v1::SendMessageRequest request;
    v1::CaseMessage* m = request.mutable_message();
    m->set_exchange_id(exchange_id);
    m->set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
    m->set_priority(priority);
    m->set_body(body);
    auto sent = Pk(stem)->SendMessage(request);
    if (!sent.ok()) return sent.status();
    return sent->message_id();
  }

  v1::DeliveryState StateOf(const std::string& message_id) {
    auto status = Pk(kFia)->GetDeliveryStatus(message_id);
    return status.ok() ? status->state() : v1::DELIVERY_STATE_UNSPECIFIED;
  }

  // The first `expected` messages in MPS's inbox after `cursor`, waiting up
  // to `wait`; the shares of the cases they are on are passed over.
  std::vector<v1::WatchInboxResponse> Inbox(
      const std::string& cursor, size_t expected,
      absl::Duration wait = absl::Seconds(30)) {
    std::vector<v1::WatchInboxResponse> seen;
    EXPECT_OK(Cn(kMps)->WatchInbox(cursor, wait, [&](const auto& item) {
      if (item.message().kind() != v1::MESSAGE_KIND_CASE_SHARE) {
        seen.push_back(item);
      }
      return seen.size() < expected;
    }));
    return seen;
  }

  std::vector<std::string> Actions(const std::string& stem, bool cn) {
    std::vector<std::string> actions;
    for (const v1::AuditEntry& e :
         ReadAuditEntries(cn ? *Cn(stem) : *Pk(stem))) {
      actions.push_back(e.action());
    }
    return actions;
  }

  std::string dir_;
  std::string pk_config_;
  std::string cn_config_;
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<GatewayProcess> cn_;
};

TEST_F(ExchangeTest, AnInboxWatchWhoseOutputFailsStopsAndSaysWhereToResume) {
  // MPS's watch writes to a file on a full disk: it must not go on past
  // messages nobody saw, nor exit 0.
  const std::string id = OpenCase();
  ASSERT_OK(Send(id, "Rescue request: flat 501, building 3").status());
  const std::string mps = WriteFile(
      dir_ + "/mps.toml", ClientConfigToml(cn_->office_endpoint(), kMps, "CN"));
  CommandResult lost = RunCommand(
      {"/bin/sh", "-c",
       absl::StrCat("exec '", CliBinary(), "' --config '", mps,
                    "' inbox watch --count 5 --seconds 20 > /dev/full")});
  EXPECT_EQ(lost.exit_code, 5) << lost.err;
  EXPECT_THAT(lost.err,
              HasSubstr("inbox watch: the output could not be written"));
  EXPECT_THAT(lost.err, HasSubstr("run it again without --cursor"));

  // Run again as told: both messages are there.
  CommandResult again =
      RunCommand({CliBinary(), "--config", mps, "inbox", "watch", "--count",
                  "2", "--seconds", "20"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("[case shared]"));
  EXPECT_THAT(again.out, HasSubstr("Rescue request: flat 501, building 3"));
}

TEST_F(ExchangeTest, MessageIsDeliveredWithAVerifiableReceipt) {
  const std::string id = OpenCase();
  const std::string body =
      "URGENT: victim V1 seen at Handan station. متاثرہ کو فوری مدد درکار ہے۔";
  ASSERT_OK_AND_ASSIGN(std::string message_id,
                       Send(id, body, v1::PRIORITY_URGENT));
  ASSERT_TRUE(WaitUntil([&] {
    return StateOf(message_id) == v1::DELIVERY_STATE_DELIVERED;
  })) << "state "
      << StateOf(message_id) << "\nPK log:\n"
      << pk_->Log() << "\nCN log:\n"
      << cn_->Log();

  ASSERT_OK_AND_ASSIGN(v1::DeliveryStatus status,
                       Pk(kFia)->GetDeliveryStatus(message_id));
  EXPECT_GE(status.attempts(), 1);
  // The receipt verifies with nothing but the CN gateway's public key.
  ASSERT_OK_AND_ASSIGN(auto keys, exchange::KeyRing::FromPemFiles(
                                      {Pki("cn/signing/envelope.pub")}));
  ASSERT_OK_AND_ASSIGN(v1::Receipt receipt,
                       exchange::VerifyReceipt(status.receipt(), keys));
  EXPECT_EQ(receipt.receiver_gateway(), "spiffe://cn.casebridge/gateway");
  EXPECT_EQ(receipt.envelope_sha256().size(), 32u);

  const auto inbox = Inbox("", 1);
  ASSERT_EQ(inbox.size(), 1u);
  const v1::CaseMessage& m = inbox[0].message();
  EXPECT_EQ(m.message_id(), message_id);
  EXPECT_EQ(m.exchange_id(), id);
  EXPECT_EQ(m.body(), body);
  EXPECT_EQ(m.priority(), v1::PRIORITY_URGENT);
  EXPECT_EQ(m.sender_office(),
            "spiffe://pk.casebridge/office/fia-liaison-desk");
  EXPECT_EQ(m.sender_country(), v1::COUNTRY_PK);
  EXPECT_TRUE(m.has_received_at());

  // Both sides' audit logs record their half.
  const auto pk_actions = Actions(kPkAuditor, false);
  EXPECT_THAT(pk_actions,
              ::testing::IsSupersetOf(
                  {"message.send", "envelope.sent", "receipt.stored"}));
  EXPECT_THAT(Actions(kCnAuditor, true),
              ::testing::Contains("envelope.received"));
  auto delivered_count = [&] {
    return static_cast<int>(absl::c_count_if(
        ReadAuditEntries(*Cn(kCnAuditor), "inbox.delivered"),
        [&](const v1::AuditEntry& e) {
          return absl::c_linear_search(e.subjects(), message_id);
        }));
  };
  // Delivery to the office is recorded (just after the write), once, however
  // often a resumed stream sends the message again.
  ASSERT_TRUE(WaitUntil([&] { return delivered_count() == 1; }));
  ASSERT_EQ(Inbox("", 1).size(), 1u);
  EXPECT_FALSE(WaitUntil([&] { return delivered_count() > 1; },
                         absl::Milliseconds(500)));
}

TEST_F(ExchangeTest, InboxResumesFromItsCursorWithoutLossOrRepeats) {
  const std::string id = OpenCase();
  std::vector<std::string> sent;
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string m,
                         Send(id, "update " + std::to_string(i)));
    sent.push_back(m);
  }
  auto first = Inbox("", 2);
  ASSERT_EQ(first.size(), 2u);
  // Disconnected after two; more arrive meanwhile.
  for (int i = 3; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string m,
                         Send(id, "update " + std::to_string(i)));
    sent.push_back(m);
  }
  auto rest = Inbox(first.back().cursor(), 3);
  std::vector<std::string> received;
  for (const auto& r : first) received.push_back(r.message().message_id());
  for (const auto& r : rest) received.push_back(r.message().message_id());
  // All five, once each, in the order they were sent (one case).
  EXPECT_THAT(received, ElementsAreArray(sent));
  // Nothing more is waiting.
  EXPECT_TRUE(Inbox(rest.back().cursor(), 1, absl::Milliseconds(500)).empty());

  // A cursor the gateway never issued is refused, not waited on: one
  // beyond the newest would skip every message to come until the inbox
  // passed it.
  int64_t newest = 0;
  ASSERT_TRUE(absl::SimpleAtoi(rest.back().cursor(), &newest));
  for (const std::string& bad :
       {std::to_string(newest + 1), std::string("99999999"), std::string("-1"),
        std::string("12abc")}) {
    SCOPED_TRACE(bad);
    EXPECT_THAT(
        Cn(kMps)->WatchInbox(bad, absl::Seconds(5),
                             [](const auto&) { return true; }),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 HasSubstr("cursor: not a cursor this gateway issued")));
  }
  // A message arriving after the refusals is read from the newest cursor.
  ASSERT_OK_AND_ASSIGN(const std::string later, Send(id, "update 5"));
  auto after = Inbox(rest.back().cursor(), 1);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].message().message_id(), later);
}

TEST_F(ExchangeTest, LiveMessageReachesAWatchingOffice) {
  const std::string id = OpenCase();
  std::vector<v1::WatchInboxResponse> seen;
  std::thread watcher([&] {
    EXPECT_OK(
        Cn(kMps)->WatchInbox("", absl::Seconds(30), [&](const auto& item) {
          if (item.message().kind() == v1::MESSAGE_KIND_CASE_SHARE) {
            return true;  // the case's share, before the stream waits
          }
          seen.push_back(item);
          return false;  // one is enough
        }));
  });
  // The stream is open before the message exists.
  ASSERT_OK_AND_ASSIGN(std::string message_id, Send(id, "live"));
  watcher.join();
  ASSERT_EQ(seen.size(), 1u) << cn_->Log();
  EXPECT_EQ(seen[0].message().message_id(), message_id);
}

TEST_F(ExchangeTest, AMessageWaitingForAnAbsentPeerSaysTheLinkIsDown) {
  constexpr char kLinkHealth[] = "casebridge.peer_link";
  auto link_serving = [&] {
    auto health = Pk(kFia)->Health(kLinkHealth);
    return health.ok() &&
           *health == grpc::health::v1::HealthCheckResponse::SERVING;
  };
  // Both up and linked: SERVING, though nothing was sent yet.
  ASSERT_TRUE(WaitUntil(link_serving)) << pk_->Log();
  const std::string id = OpenCase();
  ASSERT_EQ(cn_->Stop(), 0) << cn_->Log();
  ASSERT_TRUE(WaitUntil([&] { return !link_serving(); })) << pk_->Log();

  ASSERT_OK_AND_ASSIGN(const std::string waiting, Send(id, "while away"));
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus away,
                       Pk(kFia)->GetDeliveryStatus(waiting));
  EXPECT_NE(away.state(), v1::DELIVERY_STATE_DELIVERED);
  EXPECT_TRUE(away.has_peer_link_down_since()) << away.ShortDebugString();
  EXPECT_EQ(away.peer_link_down_reason(), "the peer gateway cannot be reached");
  // The CLI says so.
  const std::string fia = WriteFile(
      dir_ + "/fia.toml", ClientConfigToml(pk_->office_endpoint(), kFia));
  CommandResult shown =
      RunCommand({CliBinary(), "--config", fia, "message", "status", waiting});
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_THAT(shown.out, HasSubstr("Peer link:"));
  EXPECT_THAT(shown.out, HasSubstr("the peer gateway cannot be reached"));

  // Back: delivered, and nothing more said of the link.
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  ASSERT_TRUE(WaitUntil([&] {
    return StateOf(waiting) == v1::DELIVERY_STATE_DELIVERED;
  })) << pk_->Log();
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus back,
                       Pk(kFia)->GetDeliveryStatus(waiting));
  EXPECT_FALSE(back.has_peer_link_down_since());
  EXPECT_TRUE(back.peer_link_down_reason().empty());
  EXPECT_TRUE(WaitUntil(link_serving));
}

TEST_F(ExchangeTest, NothingIsRecordedAsSentWhileThePeerCannotBeReached) {
  const std::string id = OpenCase();
  ASSERT_EQ(cn_->Stop(), 0) << cn_->Log();
  ASSERT_OK_AND_ASSIGN(const std::string waiting, Send(id, "while away"));
  // The sender tries the link again and again (every second at most here).
  auto link_downs = [&] {
    return CountLines(pk_->Log(), "\"peer.link_down\"");
  };
  const size_t before = link_downs();
  ASSERT_TRUE(WaitUntil([&] { return link_downs() >= before + 3; }))
      << pk_->Log();
  // Not once was the message written to a stream: no attempt, nothing
  // audited as sent.
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus away,
                       Pk(kFia)->GetDeliveryStatus(waiting));
  EXPECT_EQ(away.attempts(), 0) << away.ShortDebugString();
  auto sent_entries = [&] {
    int n = 0;
    for (const v1::AuditEntry& e :
         ReadAuditEntries(*Pk(kPkAuditor), "envelope.sent")) {
      for (const std::string& subject : e.subjects()) {
        if (subject == waiting) ++n;
      }
    }
    return n;
  };
  EXPECT_EQ(sent_entries(), 0);

  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  ASSERT_TRUE(WaitUntil([&] {
    return StateOf(waiting) == v1::DELIVERY_STATE_DELIVERED;
  })) << pk_->Log();
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus back,
                       Pk(kFia)->GetDeliveryStatus(waiting));
  EXPECT_EQ(back.attempts(), 1) << back.ShortDebugString();
  EXPECT_EQ(sent_entries(), 1);
}

TEST_F(ExchangeTest,
       ASenderCancelsAMessageThePeerKeepsRefusingAndItsCaseGoesOn) {
  // PK knows an MPS office that CN's table lacks: CN refuses messages to it,
  // not for good (CN's operator may add it), so they hold their case back.
  constexpr char kHebei[] = "spiffe://cn.casebridge/office/mps-hebei";
  ASSERT_EQ(pk_->Stop(), 0) << pk_->Log();
  ASSERT_OK_AND_ASSIGN(std::string pk_toml, crypto::ReadFile(pk_config_));
  pk_toml = absl::StrReplaceAll(
      pk_toml, {{"offices = [\"spiffe://cn.casebridge/office/mps-liaison\"]",
                 absl::StrCat("offices = [\"spiffe://cn.casebridge/office/"
                              "mps-liaison\", \"",
                              kHebei, "\"]")}});
  ASSERT_THAT(pk_toml, HasSubstr(kHebei));
  pk_config_ = WriteFile(dir_ + "/pk-hebei.toml", pk_toml);
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));

  const std::string id = OpenCase();
  v1::SendMessageRequest misaddressed;
  misaddressed.mutable_message()->set_exchange_id(id);
  misaddressed.mutable_message()->set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
  misaddressed.mutable_message()->set_body("to an office CN does not have");
  misaddressed.mutable_message()->set_recipient_office(kHebei);
  misaddressed.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse stuck,
                       Pk(kFia)->SendMessage(misaddressed));
  ASSERT_OK_AND_ASSIGN(const std::string urgent,
                       Send(id, "urgent, behind it", v1::PRIORITY_URGENT));
  ASSERT_TRUE(WaitUntil([&] {
    auto s = Pk(kFia)->GetDeliveryStatus(urgent);
    return s.ok() && !s->waiting_behind().empty();
  })) << pk_->Log();

  // Another office cannot withdraw it, nor can anyone without a message id.
  EXPECT_THAT(Pk(kEmbassy)->CancelMessage(stuck.message_id(), ""),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not found")));
  EXPECT_THAT(Pk(kFia)->CancelMessage("", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("message_id: is required")));
  EXPECT_THAT(
      Pk(kFia)->CancelMessage(stuck.message_id(), "bad\x01reason"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reason: ")));
  EXPECT_NE(StateOf(stuck.message_id()), v1::DELIVERY_STATE_CANCELLED);

  // Its sender withdraws it, through the CLI: the URGENT message goes on.
  const std::string fia = WriteFile(
      dir_ + "/fia.toml", ClientConfigToml(pk_->office_endpoint(), kFia));
  CommandResult cancelled =
      RunCommand({CliBinary(), "--config", fia, "message", "cancel",
                  stuck.message_id(), "--reason", "wrong office"});
  EXPECT_EQ(cancelled.exit_code, 0) << cancelled.err;
  EXPECT_THAT(cancelled.out, HasSubstr("cancelled"));
  EXPECT_THAT(cancelled.out,
              HasSubstr(absl::StrCat("cancelled by ",
                                     "spiffe://pk.casebridge/office/"
                                     "fia-liaison-desk: wrong office")));
  ASSERT_TRUE(WaitUntil([&] {
    return StateOf(urgent) == v1::DELIVERY_STATE_DELIVERED;
  })) << pk_->Log();
  EXPECT_EQ(StateOf(stuck.message_id()), v1::DELIVERY_STATE_CANCELLED);
  // Once only.
  EXPECT_THAT(
      Pk(kFia)->CancelMessage(stuck.message_id(), ""),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("is cancelled; only a message not yet delivered")));
  EXPECT_THAT(Pk(kFia)->CancelMessage(urgent, ""),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("is delivered")));

  // MPS got the URGENT message only; the withdrawal is on record.
  const auto inbox = Inbox("", 1);
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].message().message_id(), urgent);
  EXPECT_TRUE(Inbox(inbox[0].cursor(), 1, absl::Milliseconds(500)).empty());
  const std::vector<std::string> actions = Actions(kPkAuditor, false);
  EXPECT_EQ(std::count(actions.begin(), actions.end(), "message.cancel"), 6)
      << "one success and five refusals";
}

TEST_F(ExchangeTest, ASupervisorCancelsAnotherOfficesMessageSentInError) {
  // The embassy's office is a supervisor here; the peer is away once the
  // case is shared, so the desk's message waits in the outbox.
  constexpr char kEmbassyId[] = "spiffe://pk.casebridge/office/embassy-beijing";
  ASSERT_EQ(pk_->Stop(), 0) << pk_->Log();
  ASSERT_OK_AND_ASSIGN(std::string pk_toml, crypto::ReadFile(pk_config_));
  const std::string officer_toml = pk_toml;
  pk_toml = absl::StrReplaceAll(
      pk_toml, {{"role = \"embassy_officer\"", "role = \"supervisor\""}});
  ASSERT_NE(pk_toml, officer_toml);
  pk_config_ = WriteFile(dir_ + "/pk-supervisor.toml", pk_toml);
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));

  const std::string id = OpenCase();
  ASSERT_EQ(cn_->Stop(), 0) << cn_->Log();
  ASSERT_OK_AND_ASSIGN(const std::string wrong, Send(id, "sent in error"));
  ASSERT_OK_AND_ASSIGN(
      const v1::DeliveryStatus cancelled,
      Pk(kEmbassy)->CancelMessage(wrong, "wrong victim's details"));
  EXPECT_EQ(cancelled.state(), v1::DELIVERY_STATE_CANCELLED);
  EXPECT_EQ(cancelled.last_error(), absl::StrCat("cancelled by ", kEmbassyId,
                                                 ": wrong victim's details"));

  // A share on its way that the supervisor's own message waits for: the
  // desk, refused its cancel, learns that another office's message waits,
  // not its id; the supervisor is told the id. Both withdrawn in turn.
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference second,
                       Pk(kFia)->OpenCase(ValidDraft()));
  v1::ShareCaseRequest share_request;
  share_request.set_exchange_id(second.exchange_id());
  ASSERT_OK_AND_ASSIGN(const v1::ShareCaseResponse share,
                       Pk(kFia)->ShareCase(share_request));
  ASSERT_OK_AND_ASSIGN(const std::string theirs,
                       Send(second.exchange_id(), "behind the share",
                            v1::PRIORITY_ROUTINE, kEmbassy));
  EXPECT_THAT(
      Pk(kFia)->CancelMessage(share.message_id(), ""),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("wait for it (1 message of other offices)"),
                     Not(HasSubstr(theirs)))));
  EXPECT_THAT(Pk(kEmbassy)->CancelMessage(share.message_id(), ""),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(absl::StrCat("wait for it (", theirs, ")"))));
  ASSERT_OK(Pk(kEmbassy)->CancelMessage(theirs, "").status());
  ASSERT_OK(Pk(kFia)->CancelMessage(share.message_id(), "").status());

  // The peer back: the desk's next message goes, the cancelled one never.
  ASSERT_OK_AND_ASSIGN(const std::string right, Send(id, "the right one"));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  ASSERT_TRUE(WaitUntil([&] {
    return StateOf(right) == v1::DELIVERY_STATE_DELIVERED;
  })) << pk_->Log();
  EXPECT_EQ(StateOf(wrong), v1::DELIVERY_STATE_CANCELLED);
  const auto inbox = Inbox("", 1);
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].message().message_id(), right);
  EXPECT_TRUE(Inbox(inbox[0].cursor(), 1, absl::Milliseconds(500)).empty());

  // On record under the supervisor's identity.
  int cancels = 0;
  for (const v1::AuditEntry& e :
       ReadAuditEntries(*Pk(kPkAuditor), "message.cancel")) {
    if (!absl::c_linear_search(e.subjects(), wrong)) continue;
    ++cancels;
    EXPECT_EQ(e.actor(), kEmbassyId);
    EXPECT_EQ(e.status_code(), 0) << e.status_message();
  }
  EXPECT_EQ(cancels, 1);
}

TEST_F(ExchangeTest, AnEnvelopeLargerThanThePeerTakesIsWithheldNotSent) {
  // CN's ports take messages of 64 KiB, envelopes of 32 KiB; PK's own
  // limits let a case share of about 80 KB through. Sent, it would end the
  // stream each time (over CN's message size), and with it every case's
  // delivery, until someone cancelled it.
  ASSERT_EQ(pk_->Stop(), 0) << pk_->Log();
  ASSERT_EQ(cn_->Stop(), 0) << cn_->Log();
  const GatewayPairConfigs configs = WriteGatewayPairConfigs(
      dir_ + "/small", 1, [](GatewayConfigOptions& options) {
        if (options.country == "CN") options.max_message_bytes = 64 << 10;
      });
  pk_config_ = configs.pk;
  cn_config_ = configs.cn;
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  // The link is up once a case crossed; what the log says from here on.
  const std::string other = OpenCase();
  const size_t log_from = pk_->Log().size();

  v1::CaseReference large = ValidDraft();
  large.clear_victims();
  large.clear_last_known_locations();
  for (int i = 1; i <= 50; ++i) {
    v1::VictimReference* v = large.add_victims();
    v->set_pseudonym(absl::StrCat("V", i));
    v->set_remarks(std::string(1000, 'r'));
    v1::Location* l = large.add_last_known_locations();
    l->set_description(std::string(500, 'l'));
    l->set_country(v1::COUNTRY_CN);
  }
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference opened,
                       Pk(kFia)->OpenCase(large));
  v1::ShareCaseRequest share_request;
  share_request.set_exchange_id(opened.exchange_id());
  ASSERT_OK_AND_ASSIGN(const v1::ShareCaseResponse share,
                       Pk(kFia)->ShareCase(share_request));
  ASSERT_TRUE(WaitUntil([&] {
    return StateOf(share.message_id()) == v1::DELIVERY_STATE_FAILED;
  })) << pk_->Log();
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus status,
                       Pk(kFia)->GetDeliveryStatus(share.message_id()));
  EXPECT_THAT(status.last_error(),
              AllOf(HasSubstr("RESOURCE_EXHAUSTED"),
                    HasSubstr("not sent: the envelope is "),
                    HasSubstr("more than the 32768 the peer gateway accepts "
                              "(its limits.max_envelope_bytes)")));
  EXPECT_EQ(status.attempts(), 0);

  // The link stayed up: the other case goes on, the large one never came.
  ASSERT_OK_AND_ASSIGN(const std::string after, Send(other, "after it"));
  ASSERT_TRUE(WaitUntil([&] {
    return StateOf(after) == v1::DELIVERY_STATE_DELIVERED;
  })) << pk_->Log();
  EXPECT_THAT(Cn(kMps)->GetCase(opened.exchange_id()),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  const std::string log = pk_->Log().substr(log_from);
  EXPECT_EQ(CountLines(log, "\"peer.link_down\""), 0u) << log;
  EXPECT_EQ(CountLines(log, "\"peer.envelope_too_large\""), 1u) << log;

  // On record as withheld, never as sent.
  int withheld = 0;
  for (const v1::AuditEntry& e : ReadAuditEntries(*Pk(kPkAuditor))) {
    if (!absl::c_linear_search(e.subjects(), share.message_id())) continue;
    EXPECT_NE(e.action(), "envelope.sent");
    if (e.action() != "envelope.withheld") continue;
    ++withheld;
    EXPECT_EQ(e.status_code(),
              static_cast<int>(absl::StatusCode::kResourceExhausted));
  }
  EXPECT_EQ(withheld, 1);
}

TEST_F(ExchangeTest, EverythingQueuedDuringAnOutageIsDeliveredExactlyOnce) {
  const std::string id = OpenCase();
  ASSERT_EQ(cn_->Stop(), 0) << cn_->Log();
  std::vector<std::string> sent;
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string m,
                         Send(id, "during outage " + std::to_string(i)));
    sent.push_back(m);
  }
  // Accepted and durable, but not delivered while the peer is away (the
  // link fails to come up a few times meanwhile).
  const size_t downs = CountLines(pk_->Log(), "\"peer.link_down\"");
  ASSERT_TRUE(WaitUntil([&] {
    return CountLines(pk_->Log(), "\"peer.link_down\"") >= downs + 2;
  })) << pk_->Log();
  EXPECT_NE(StateOf(sent[0]), v1::DELIVERY_STATE_DELIVERED);

  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  for (const auto& m : sent) {
    ASSERT_TRUE(WaitUntil([&] {
      return StateOf(m) == v1::DELIVERY_STATE_DELIVERED;
    })) << m
        << "\n"
        << pk_->Log();
  }
  auto inbox = Inbox("", sent.size());
  std::vector<std::string> received;
  for (const auto& r : inbox) received.push_back(r.message().message_id());
  EXPECT_THAT(received, ElementsAreArray(sent));
  EXPECT_TRUE(Inbox(inbox.back().cursor(), 1, absl::Milliseconds(500)).empty());
}

TEST_F(ExchangeTest, SharedCaseIsHeldByTheCounterpartWhoCanAnswerInIt) {
  const std::string id = OpenCase();
  v1::ShareCaseRequest share;
  share.set_exchange_id(id);
  share.add_recipient_offices("spiffe://cn.casebridge/office/mps-liaison");
  ASSERT_OK_AND_ASSIGN(auto shared, Pk(kFia)->ShareCase(share));
  // The embassy may not share the FIA desk's case.
  EXPECT_THAT(
      Pk(kEmbassy)->ShareCase(share),
      StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("owned by")));
  ASSERT_TRUE(WaitUntil([&] { return Cn(kMps)->GetCase(id).ok(); }))
      << cn_->Log();
  ASSERT_OK_AND_ASSIGN(auto held, Cn(kMps)->GetCase(id));
  EXPECT_EQ(held.origin_country(), v1::COUNTRY_PK);
  EXPECT_EQ(held.summary(), ValidDraft().summary());
  EXPECT_EQ(StateOf(shared.message_id()), v1::DELIVERY_STATE_DELIVERED);

  // MPS answers within the case, addressed to the embassy.
  v1::SendMessageRequest answer;
  v1::CaseMessage* m = answer.mutable_message();
  m->set_exchange_id(id);
  m->set_kind(v1::MESSAGE_KIND_RESCUE_UPDATE);
  m->set_rescue_stage(v1::RESCUE_STAGE_RESCUED);
  m->set_priority(v1::PRIORITY_URGENT);
  m->set_body("已解救 — rescued");
  m->set_recipient_office("spiffe://pk.casebridge/office/embassy-beijing");
  ASSERT_OK_AND_ASSIGN(auto sent, Cn(kMps)->SendMessage(answer));
  std::vector<v1::WatchInboxResponse> seen;
  EXPECT_OK(
      Pk(kEmbassy)->WatchInbox("", absl::Seconds(30), [&](const auto& item) {
        seen.push_back(item);
        return false;
      }));
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].message().message_id(), sent.message_id());
  EXPECT_EQ(seen[0].message().rescue_stage(), v1::RESCUE_STAGE_RESCUED);
  EXPECT_EQ(seen[0].message().body(), "已解救 — rescued");
  // Not in the FIA desk's inbox: it was addressed to the embassy.
  std::vector<v1::WatchInboxResponse> fia;
  EXPECT_OK(
      Pk(kFia)->WatchInbox("", absl::Milliseconds(500), [&](const auto& item) {
        fia.push_back(item);
        return true;
      }));
  EXPECT_TRUE(fia.empty());
}

TEST_F(ExchangeTest, AcknowledgementTravelsBackToTheSender) {
  const std::string id = OpenCase();
  ASSERT_OK_AND_ASSIGN(std::string message_id, Send(id, "please confirm"));
  ASSERT_EQ(Inbox("", 1).size(), 1u);
  ASSERT_OK_AND_ASSIGN(
      std::string ack_id,
      Cn(kMps)->Acknowledge(message_id, v1::ACKNOWLEDGEMENT_KIND_ACTED,
                            "team dispatched"));
  // Twice is refused; someone else's message is not found.
  EXPECT_THAT(
      Cn(kMps)->Acknowledge(message_id, v1::ACKNOWLEDGEMENT_KIND_READ, ""),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("already")));
  EXPECT_THAT(Cn(kMps)->Acknowledge("CN-M-00000000000000000000000000",
                                    v1::ACKNOWLEDGEMENT_KIND_READ, ""),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  ASSERT_TRUE(WaitUntil([&] {
    return StateOf(message_id) == v1::DELIVERY_STATE_ACKNOWLEDGED;
  })) << StateOf(message_id);
  std::vector<v1::WatchInboxResponse> fia;
  EXPECT_OK(Pk(kFia)->WatchInbox("", absl::Seconds(30), [&](const auto& item) {
    fia.push_back(item);
    return false;
  }));
  ASSERT_EQ(fia.size(), 1u);
  EXPECT_EQ(fia[0].message().message_id(), ack_id);
  EXPECT_EQ(fia[0].message().kind(), v1::MESSAGE_KIND_ACKNOWLEDGEMENT);
  EXPECT_EQ(fia[0].message().in_reply_to(), message_id);
  EXPECT_EQ(fia[0].message().body(), "Acted on: team dispatched");
  // On the CN side the acknowledgement and its way back are audited, the
  // reply naming its case, message and envelope.
  bool acknowledged = false;
  bool reply_sent = false;
  for (const v1::AuditEntry& e : ReadAuditEntries(*Cn(kCnAuditor))) {
    if (e.action() == "message.acknowledge" && e.status_code() == 0) {
      // The message acknowledged, and the reply carrying the note.
      acknowledged = e.subjects_size() == 2 && e.subjects(0) == message_id &&
                     e.subjects(1) == ack_id;
    }
    if (e.action() == "message.send") {
      ASSERT_GE(e.subjects_size(), 3);
      EXPECT_EQ(e.subjects(0), id);
      EXPECT_EQ(e.subjects(1), ack_id);
      reply_sent = true;
    }
  }
  EXPECT_TRUE(acknowledged);
  EXPECT_TRUE(reply_sent);
}

TEST_F(ExchangeTest, AMessageOnACaseNeverSharedWaitsForTheShare) {
  // The desk's case, not shared: MPS could neither read it nor reply.
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference opened,
                       Pk(kFia)->OpenCase(ValidDraft()));
  const std::string id = opened.exchange_id();
  v1::SendMessageRequest request;
  request.set_request_id("rescue-1");
  request.mutable_message()->set_exchange_id(id);
  request.mutable_message()->set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
  request.mutable_message()->set_priority(v1::PRIORITY_URGENT);
  request.mutable_message()->set_body("Victim V1 to be moved tonight.");
  const auto not_shared =
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr(absl::StrCat("case ", id,
                                      " has not been shared with the peer")));
  EXPECT_THAT(Pk(kFia)->SendMessage(request), not_shared);

  // A share withdrawn before it left does not count.
  ASSERT_EQ(cn_->Stop(), 0) << cn_->Log();
  v1::ShareCaseRequest share;
  share.set_exchange_id(id);
  ASSERT_OK_AND_ASSIGN(const v1::ShareCaseResponse withdrawn,
                       Pk(kFia)->ShareCase(share));
  ASSERT_OK(Pk(kFia)->CancelMessage(withdrawn.message_id(), "not yet"));
  EXPECT_THAT(Pk(kFia)->SendMessage(request), not_shared);

  // Refused calls are audited and used nothing up: once the case is shared
  // (still queued, the peer away), the same request id is accepted, and the
  // message follows the share.
  int refusals = 0;
  for (const v1::AuditEntry& e :
       ReadAuditEntries(*Pk(kPkAuditor), "message.send")) {
    ++refusals;
    EXPECT_EQ(e.status_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(e.subjects(), ::testing::Contains(id));
  }
  EXPECT_EQ(refusals, 2);
  ASSERT_OK_AND_ASSIGN(const v1::ShareCaseResponse shared,
                       Pk(kFia)->ShareCase(share));
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse sent,
                       Pk(kFia)->SendMessage(request));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  ASSERT_TRUE(WaitUntil([&] {
    return StateOf(sent.message_id()) == v1::DELIVERY_STATE_DELIVERED;
  })) << pk_->Log();
  std::vector<std::string> arrived;
  ASSERT_OK(Cn(kMps)->WatchInbox("", absl::Seconds(10), [&](const auto& item) {
    arrived.push_back(item.message().message_id());
    return arrived.size() < 2;
  }));
  EXPECT_THAT(arrived,
              ::testing::ElementsAre(shared.message_id(), sent.message_id()));
  EXPECT_OK(Cn(kMps)->GetCase(id));
}

TEST_F(ExchangeTest, RefusedSendsStoreNothing) {
  const std::string id = OpenCase();
  // Unknown case.
  EXPECT_THAT(Send(PkExchangeId(999), "x"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not found")));
  // Missing body.
  EXPECT_THAT(Send(id, ""), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("message.body")));
  // A recipient that is not a known CN office.
  v1::SendMessageRequest request;
  request.mutable_message()->set_exchange_id(id);
  request.mutable_message()->set_kind(v1::MESSAGE_KIND_NOTE);
  request.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
  request.mutable_message()->set_body("note");
  request.mutable_message()->set_recipient_office(
      "spiffe://cn.casebridge/office/unknown");
  EXPECT_THAT(Pk(kFia)->SendMessage(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("message.recipient_office")));
  // Kinds that only their own RPC may send (and check for): a withdrawal or
  // grant sent by hand would skip the case owner's check.
  request.mutable_message()->clear_recipient_office();
  for (const v1::MessageKind kind :
       {v1::MESSAGE_KIND_CASE_SHARE, v1::MESSAGE_KIND_ACKNOWLEDGEMENT,
        v1::MESSAGE_KIND_DISSEMINATION_GRANT,
        v1::MESSAGE_KIND_DISSEMINATION_WITHDRAWAL}) {
    request.mutable_message()->set_kind(kind);
    EXPECT_THAT(
        Pk(kFia)->SendMessage(request),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("message.kind")))
        << v1::MessageKind_Name(kind);
  }
  // Someone else's message status is not readable, and its refusal reads
  // as that of a message that does not exist: ids cannot be probed.
  ASSERT_OK_AND_ASSIGN(std::string message_id, Send(id, "mine"));
  const absl::Status foreign =
      Pk(kEmbassy)->GetDeliveryStatus(message_id).status();
  EXPECT_THAT(foreign,
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(message_id)));
  const std::string unknown_id = "PK-M-01JDX3Q4W5ZC8N6T2V9B7K1HRA";
  const absl::Status missing =
      Pk(kEmbassy)->GetDeliveryStatus(unknown_id).status();
  EXPECT_THAT(missing,
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(unknown_id)));
  EXPECT_EQ(absl::StrReplaceAll(foreign.message(), {{message_id, "<id>"}}),
            absl::StrReplaceAll(missing.message(), {{unknown_id, "<id>"}}));
  // Only the accepted message reaches the peer.
  auto inbox = Inbox("", 2, absl::Seconds(5));
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].message().message_id(), message_id);
}

}  // namespace
}  // namespace casebridge::testing

namespace casebridge::testing {
namespace {

TEST(PeerLinkKeepaliveTest, AnIdleLinkOutlivesItsKeepalivePings) {
  // Both gateways ping each other at the shortest keepalive allowed (10 s)
  // on links that carry nothing. gRPC's default on the receiving side would
  // take each ping as abuse while no data flows, and end the link with
  // GOAWAY "too_many_pings" after the fourth (40 s); the sender would then
  // ping ever more rarely.
  const std::string dir = NewTempDir("keepalive");
  const GatewayPairConfigs configs =
      WriteGatewayPairConfigs(dir, 1, [](GatewayConfigOptions& o) {
        o.extra_limits = "keepalive_time_seconds = 10\n";
      });
  ASSERT_OK_AND_ASSIGN(auto pk, GatewayProcess::Start(configs.pk));
  ASSERT_OK_AND_ASSIGN(auto cn, GatewayProcess::Start(configs.cn));
  auto linked = [](GatewayProcess& gateway, const std::string& country) {
    auto health = OfficeClientFor(country == "PK" ? "pk/auditors/pk-auditor"
                                                  : "cn/auditors/cn-auditor",
                                  gateway.office_endpoint(), country)
                      ->Health("casebridge.peer_link");
    return health.ok() &&
           *health == grpc::health::v1::HealthCheckResponse::SERVING;
  };
  ASSERT_TRUE(WaitUntil([&] { return linked(*pk, "PK") && linked(*cn, "CN"); }))
      << pk->Log() << cn->Log();
  // Five pings each way, and no GOAWAY.
  EXPECT_FALSE(WaitUntil(
      [&] {
        return absl::StrContains(pk->Log(), "too_many_pings") ||
               absl::StrContains(cn->Log(), "too_many_pings");
      },
      absl::Seconds(50)))
      << pk->Log() << cn->Log();
  EXPECT_TRUE(linked(*pk, "PK") && linked(*cn, "CN"));
}

}  // namespace
}  // namespace casebridge::testing
