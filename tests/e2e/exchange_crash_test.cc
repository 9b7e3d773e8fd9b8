// The exchange when a gateway dies mid-burst (DESIGN.md section 4): a PK or
// CN gateway process SIGKILLed while offices send and envelopes travel loses
// no accepted message and delivers none twice, each case in the order its
// messages were accepted; and an URGENT message overtakes a ROUTINE backlog
// left by an outage of the peer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/crypto.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kMps[] = "cn/offices/mps-liaison";
constexpr char kPkAuditor[] = "pk/auditors/pk-auditor";

// The sender's limits.delivery_window (core/config.h default; the test
// configs leave it alone).
constexpr int kDeliveryWindow = 64;

// The last `n` bytes of a gateway log, for failure messages.
std::string Tail(const std::string& log, size_t n = 6000) {
  return log.size() <= n ? log : "..." + log.substr(log.size() - n);
}

// Bodies carry the message's position in its case: "seq <n>: ...".
std::string Body(int seq) {
  return absl::StrCat("seq ", seq,
                      ": shelter check-in, victim V1 safe. متاثرہ محفوظ ہے۔ "
                      "受害人安全。");
}
int SeqOf(const std::string& body) {
  const size_t colon = body.find(':');
  int seq = -1;
  if (body.rfind("seq ", 0) != 0 || colon == std::string::npos ||
      !absl::SimpleAtoi(absl::string_view(body).substr(4, colon - 4), &seq)) {
    return -1;
  }
  return seq;
}

// One message of a burst, once the gateway accepted it.
struct BurstMessage {
  int case_index = 0;
  int seq = 0;  // its position in its case, from 0
  std::string message_id;
  int calls = 0;  // SendMessage calls it took: more than 1 if a call failed
};

// Sends `per_case` ROUTINE messages to each of `cases` through the PK
// gateway from `threads` threads.
//
// Thread t owns cases t, t + threads, t + 2 * threads, ... and goes round
// them, one call at a time, so a case's messages are sent by one thread, each
// after the previous one was accepted: a case's accepted order is its seq
// order. Every request carries a request id (idempotency key). A call that
// fails while the gateway is down (GatewayDown) is repeated, same request id
// and content, once the restarted gateway is up (GatewayUp): the gateway
// either committed the first call and answers the retry with that message,
// or commits it now, so every message is accepted once in the end and a
// message whose first call errored may exist once but never twice. A call
// that fails while the gateway is supposed to be up is a test failure.
class Burst {
 public:
  Burst(std::vector<std::string> cases, int threads, int per_case,
        const std::string& endpoint)
      : cases_(std::move(cases)), per_case_(per_case), endpoint_(endpoint) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, t, threads] { Run(t, threads); });
    }
  }
  ~Burst() {
    {
      absl::MutexLock lock(&mu_);
      abandoned_ = true;  // threads waiting for a gateway stop waiting
    }
    Join();
  }
  Burst(const Burst&) = delete;
  Burst& operator=(const Burst&) = delete;

  int total() const { return static_cast<int>(cases_.size()) * per_case_; }
  int accepted() const { return accepted_.load(); }

  // The gateway is about to be killed: calls that fail from now on wait for
  // GatewayUp and are repeated then.
  void GatewayDown() {
    absl::MutexLock lock(&mu_);
    down_ = true;
  }
  // The gateway is back at `endpoint`: threads reconnect and go on.
  void GatewayUp(const std::string& endpoint) {
    absl::MutexLock lock(&mu_);
    down_ = false;
    endpoint_ = endpoint;
    ++generation_;
  }

  void Join() {
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  // After Join: every message accepted, by thread then in sending order.
  std::vector<BurstMessage> messages() {
    absl::MutexLock lock(&mu_);
    return messages_;
  }
  // After Join: the errors of calls that failed (and were repeated).
  std::vector<std::string> errors() {
    absl::MutexLock lock(&mu_);
    return errors_;
  }

 private:
  void Run(int thread, int threads) {
    std::vector<int> owned;
    for (int c = thread; c < static_cast<int>(cases_.size()); c += threads) {
      owned.push_back(c);
    }
    if (owned.empty()) return;
    int generation = -1;
    std::unique_ptr<client::OfficeClient> office;
    std::vector<BurstMessage> sent;
    for (int i = 0; i < per_case_ * static_cast<int>(owned.size()); ++i) {
      BurstMessage m;
      m.case_index = owned[static_cast<size_t>(i) % owned.size()];
      m.seq = i / static_cast<int>(owned.size());
      v1::SendMessageRequest request;
      request.set_request_id(absl::StrCat("burst-", m.case_index, "-", m.seq));
      v1::CaseMessage* message = request.mutable_message();
      message->set_exchange_id(cases_[static_cast<size_t>(m.case_index)]);
      if (m.seq % 2 == 0) {
        message->set_kind(v1::MESSAGE_KIND_RESCUE_UPDATE);
        message->set_rescue_stage(v1::RESCUE_STAGE_IN_SHELTER);
      } else {
        message->set_kind(v1::MESSAGE_KIND_NOTE);
      }
      message->set_priority(v1::PRIORITY_ROUTINE);
      message->set_body(Body(m.seq));
      while (true) {
        std::string endpoint;
        {
          absl::MutexLock lock(&mu_);
          if (abandoned_) return;
          if (generation_ != generation) {
            generation = generation_;
            endpoint = endpoint_;
          }
        }
        if (!endpoint.empty()) office = OfficeClientFor(kFia, endpoint, "PK");
        if (office == nullptr) return;
        ++m.calls;
        auto response = office->SendMessage(request);
        if (response.ok()) {
          m.message_id = response->message_id();
          ++accepted_;
          break;
        }
        absl::MutexLock lock(&mu_);
        errors_.push_back(response.status().ToString());
        if (!down_ && generation_ == generation) {
          ADD_FAILURE() << "SendMessage failed with the gateway up: "
                        << response.status();
          return;
        }
        auto back = [this, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return abandoned_ || generation_ != generation;
        };
        if (!mu_.AwaitWithTimeout(absl::Condition(&back), absl::Seconds(60))) {
          ADD_FAILURE() << "the gateway did not come back";
          return;
        }
      }
      sent.push_back(m);
    }
    absl::MutexLock lock(&mu_);
    messages_.insert(messages_.end(), sent.begin(), sent.end());
  }

  const std::vector<std::string> cases_;
  const int per_case_;
  std::atomic<int> accepted_{0};
  std::vector<std::thread> threads_;

  absl::Mutex mu_;
  bool down_ ABSL_GUARDED_BY(mu_) = false;
  bool abandoned_ ABSL_GUARDED_BY(mu_) = false;
  int generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::string endpoint_ ABSL_GUARDED_BY(mu_);
  std::vector<BurstMessage> messages_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> errors_ ABSL_GUARDED_BY(mu_);
};

class ExchangeCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("exchange-crash");
    const GatewayPairConfigs configs = WriteGatewayPairConfigs(dir_);
    pk_config_ = configs.pk;
    cn_config_ = configs.cn;
    ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
    ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  }

  std::unique_ptr<client::OfficeClient> Pk() {
    return OfficeClientFor(kFia, pk_->office_endpoint(), "PK");
  }
  std::unique_ptr<client::OfficeClient> Cn() {
    return OfficeClientFor(kMps, cn_->office_endpoint(), "CN");
  }

  // `n` cases of the FIA desk, shared with MPS, once CN holds them all: their
  // shares are in MPS's inbox before anything sent on them.
  std::vector<std::string> OpenCases(int n) {
    auto office = Pk();
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      auto opened =
          OpenSharedCase(*office, ValidDraft(absl::StrCat("Burst case ", i)));
      EXPECT_OK(opened);
      if (opened.ok()) ids.push_back(*opened);
    }
    auto mps = Cn();
    for (const std::string& id : ids) {
      EXPECT_TRUE(WaitUntil([&] { return mps->GetCase(id).ok(); })) << Logs();
    }
    return ids;
  }

  // Sends one message in a case of its own and waits until it is in MPS's
  // inbox, so that PK's sender has a working link to CN before a burst.
  // Returns the inbox cursor after it.
  std::string WarmUp() {
    const std::vector<std::string> warm_up = OpenCases(1);
    if (warm_up.empty()) return "";
    v1::SendMessageRequest request;
    request.mutable_message()->set_exchange_id(warm_up[0]);
    request.mutable_message()->set_kind(v1::MESSAGE_KIND_NOTE);
    request.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
    request.mutable_message()->set_body("link check");
    auto sent = Pk()->SendMessage(request);
    EXPECT_OK(sent);
    std::string cursor;
    EXPECT_OK(Cn()->WatchInbox("", absl::Seconds(30), [&](const auto& item) {
      if (item.message().kind() == v1::MESSAGE_KIND_CASE_SHARE) return true;
      EXPECT_EQ(item.message().body(), "link check");
      cursor = item.cursor();
      return false;
    }));
    EXPECT_FALSE(cursor.empty()) << "the link did not come up" << Logs();
    return cursor;
  }

  std::string Logs() const {
    return absl::StrCat("\nPK log:\n", Tail(pk_->Log()), "\nCN log:\n",
                        Tail(cn_->Log()));
  }

  // Waits until PK holds a receipt for every one of `message_ids`. Returns
  // false (with a failure naming the first one that is not DELIVERED) if
  // that takes longer than `timeout`. `resent`, if given, counts the
  // messages whose envelope took more than one delivery attempt.
  bool WaitAllDelivered(const std::vector<std::string>& message_ids,
                        absl::Duration timeout, int* resent = nullptr) {
    if (resent != nullptr) *resent = 0;
    const absl::Time deadline = absl::Now() + timeout;
    auto office = Pk();
    for (const std::string& id : message_ids) {
      absl::StatusOr<v1::DeliveryStatus> status;
      const bool delivered = WaitUntil(
          [&] {
            status = office->GetDeliveryStatus(id);
            return status.ok() &&
                   status->state() == v1::DELIVERY_STATE_DELIVERED;
          },
          std::max(deadline - absl::Now(), absl::ZeroDuration()));
      if (!delivered) {
        ADD_FAILURE() << "message " << id << " not delivered: "
                      << (status.ok() ? status->DebugString()
                                      : status.status().ToString())
                      << Logs();
        return false;
      }
      if (resent != nullptr && status->attempts() > 1) ++*resent;
    }
    return true;
  }

  // PK's audit log holds, for each of `message_ids`, exactly one
  // envelope.sent entry and one receipt.stored entry, in that order: the
  // sender records an attempt while its envelope travels, before any answer
  // about it, and a crash in between sends the envelope again, audited then.
  void ExpectEachSentOnceBeforeItsReceipt(
      const std::vector<std::string>& message_ids) {
    auto auditor = OfficeClientFor(kPkAuditor, pk_->office_endpoint(), "PK");
    std::map<std::string, std::vector<uint64_t>> sent;
    std::map<std::string, std::vector<uint64_t>> stored;
    for (const v1::AuditEntry& entry : ReadAuditEntries(*auditor)) {
      if (entry.subjects_size() < 2) continue;
      if (entry.action() == "envelope.sent") {
        sent[entry.subjects(1)].push_back(entry.index());
      } else if (entry.action() == "receipt.stored") {
        stored[entry.subjects(1)].push_back(entry.index());
      }
    }
    for (const std::string& id : message_ids) {
      ASSERT_EQ(sent[id].size(), 1u) << id << ": envelope.sent entries";
      ASSERT_EQ(stored[id].size(), 1u) << id << ": receipt.stored entries";
      EXPECT_LT(sent[id][0], stored[id][0]) << id;
    }
  }

  // MPS's inbox after `cursor` ("" from the start): read until `expected`
  // distinct messages have come (up to `timeout`), then for one second more,
  // so that anything beyond them (a duplicate, a stray message) shows up too.
  std::vector<v1::WatchInboxResponse> ReadWholeInbox(const std::string& cursor,
                                                     size_t expected,
                                                     absl::Duration timeout) {
    auto office = Cn();
    std::vector<v1::WatchInboxResponse> seen;
    std::set<std::string> distinct;
    EXPECT_OK(office->WatchInbox(cursor, timeout, [&](const auto& item) {
      seen.push_back(item);
      distinct.insert(item.message().message_id());
      return distinct.size() < expected;
    }));
    EXPECT_OK(office->WatchInbox(seen.empty() ? cursor : seen.back().cursor(),
                                 absl::Seconds(1), [&](const auto& item) {
                                   seen.push_back(item);
                                   return true;
                                 }));
    return seen;
  }

  // Every message of `sent` is in `inbox` exactly once, under the id the
  // sender was given, nothing else is (but the shares of the cases, which
  // OpenCases sent first), and each case's messages arrived in the order they
  // were accepted (their seq order, see Burst).
  static void ExpectExactlyOnceInCaseOrder(
      const std::vector<std::string>& cases,
      const std::vector<BurstMessage>& sent,
      const std::vector<v1::WatchInboxResponse>& inbox) {
    std::map<std::string, int> case_index;
    for (size_t i = 0; i < cases.size(); ++i) {
      case_index[cases[i]] = static_cast<int>(i);
    }
    std::map<std::pair<int, int>, std::string> id_of;  // (case, seq) -> id
    std::vector<std::vector<int>> expected(cases.size());
    for (const BurstMessage& m : sent) {
      id_of[{m.case_index, m.seq}] = m.message_id;
      expected[static_cast<size_t>(m.case_index)].push_back(m.seq);
    }
    for (auto& seqs : expected) std::sort(seqs.begin(), seqs.end());

    std::map<std::string, int> copies;  // message id -> times in the inbox
    std::vector<std::vector<int>> arrived(cases.size());
    for (const v1::WatchInboxResponse& item : inbox) {
      const v1::CaseMessage& m = item.message();
      if (m.kind() == v1::MESSAGE_KIND_CASE_SHARE &&
          case_index.contains(m.exchange_id())) {
        continue;
      }
      ++copies[m.message_id()];
      const auto c = case_index.find(m.exchange_id());
      if (c == case_index.end()) {
        ADD_FAILURE() << "inbox holds a message of an unknown case: "
                      << m.ShortDebugString();
        continue;
      }
      const int seq = SeqOf(m.body());
      arrived[static_cast<size_t>(c->second)].push_back(seq);
      const auto id = id_of.find({c->second, seq});
      if (id == id_of.end()) {
        ADD_FAILURE() << "inbox holds a message that was never accepted: "
                      << m.ShortDebugString();
      } else {
        EXPECT_EQ(m.message_id(), id->second)
            << "case " << c->second << " seq " << seq
            << " arrived under another id than the sender was given";
      }
    }
    int missing = 0;
    for (const BurstMessage& m : sent) {
      const auto n = copies.find(m.message_id);
      if (n == copies.end()) {
        ++missing;
      } else {
        EXPECT_EQ(n->second, 1) << "message " << m.message_id << " (case "
                                << m.case_index << " seq " << m.seq << ")";
      }
    }
    EXPECT_EQ(missing, 0) << "accepted messages missing from the inbox";
    EXPECT_EQ(absl::c_accumulate(copies, size_t{0},
                                 [](size_t sum, const auto& id_copies) {
                                   return sum + id_copies.second;
                                 }),
              sent.size());
    for (size_t c = 0; c < cases.size(); ++c) {
      EXPECT_THAT(arrived[c], ElementsAreArray(expected[c]))
          << "arrival order of case " << c << " (" << cases[c] << ")";
    }
  }

  static std::vector<std::string> IdsOf(const std::vector<BurstMessage>& sent) {
    std::vector<std::string> ids;
    ids.reserve(sent.size());
    for (const BurstMessage& m : sent) ids.push_back(m.message_id);
    return ids;
  }

  std::string dir_;
  std::string pk_config_;
  std::string cn_config_;
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<GatewayProcess> cn_;
};

constexpr int kThreads = 8;
constexpr int kBurstCases = 10;
constexpr int kBurstPerCase = 100;  // 1,000 messages
constexpr int kKillAfter = 300;     // accepted messages

TEST_F(ExchangeCrashTest, KillingTheSenderMidBurstLosesAndDuplicatesNothing) {
  const std::vector<std::string> cases = OpenCases(kBurstCases);
  ASSERT_EQ(cases.size(), static_cast<size_t>(kBurstCases));
  const std::string cursor = WarmUp();
  ASSERT_FALSE(cursor.empty());
  // Offices send faster than the sender delivers: by the kill, PK's sender
  // is busy with a backlog.
  Burst burst(cases, kThreads, kBurstPerCase, pk_->office_endpoint());
  ASSERT_TRUE(WaitUntil([&] { return burst.accepted() >= kKillAfter; },
                        absl::Seconds(60)))
      << burst.accepted() << " accepted" << Logs();

  burst.GatewayDown();
  pk_->Kill();
  const int accepted_before_kill = burst.accepted();
  // Same config, same data folder: the outbox survives the crash.
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  burst.GatewayUp(pk_->office_endpoint());
  burst.Join();

  const std::vector<BurstMessage> sent = burst.messages();
  ASSERT_EQ(sent.size(), static_cast<size_t>(burst.total())) << Logs();
  EXPECT_LT(accepted_before_kill, burst.total())
      << "the burst was over before the kill";
  // The kill hit calls under way (each was repeated with its request id).
  EXPECT_FALSE(burst.errors().empty()) << "no call was under way at the kill";

  int resent = 0;
  ASSERT_TRUE(WaitAllDelivered(IdsOf(sent), absl::Seconds(90), &resent));
  // Envelopes on their way when PK died went again after the restart. How
  // many were on the wire at the kill depends on how far the sender was
  // behind, which the machine decides: recorded, not asserted (the replay
  // path itself is asserted in KillingTheReceiver and the store tests).
  RecordProperty("resent_after_restart", resent);
  // Every message PK holds a receipt for has been committed to CN's inbox;
  // messages whose first call errored are among `sent` (their retry was
  // answered OK), so the inbox may hold nothing beyond `sent`.
  const auto inbox = ReadWholeInbox(cursor, sent.size(), absl::Seconds(30));
  ExpectExactlyOnceInCaseOrder(cases, sent, inbox);
  ExpectEachSentOnceBeforeItsReceipt(IdsOf(sent));
}

TEST_F(ExchangeCrashTest, KillingTheReceiverMidBurstLosesAndDuplicatesNothing) {
  const std::vector<std::string> cases = OpenCases(kBurstCases);
  ASSERT_EQ(cases.size(), static_cast<size_t>(kBurstCases));
  const std::string cursor = WarmUp();
  ASSERT_FALSE(cursor.empty());
  Burst burst(cases, kThreads, kBurstPerCase, pk_->office_endpoint());
  ASSERT_TRUE(WaitUntil([&] { return burst.accepted() >= kKillAfter; },
                        absl::Seconds(60)))
      << burst.accepted() << " accepted" << Logs();

  // Envelopes in flight at the kill, whatever the machine's speed: CN is
  // frozen first, so what PK's sender writes from then on gets no receipt;
  // the kill comes once more messages were accepted (and sent) meanwhile.
  ASSERT_EQ(::kill(cn_->pid(), SIGSTOP), 0);
  const int accepted_at_freeze = burst.accepted();
  EXPECT_TRUE(WaitUntil(
      [&] {
        return burst.accepted() >=
               std::min(accepted_at_freeze + 20, burst.total());
      },
      absl::Seconds(60)));
  cn_->Kill();  // SIGKILL ends a stopped process too
  const int accepted_at_kill = burst.accepted();
  // A backlog builds up while CN is away, and the sender keeps retrying it.
  EXPECT_TRUE(WaitUntil(
      [&] {
        return burst.accepted() >=
               std::min(accepted_at_kill + 100, burst.total());
      },
      absl::Seconds(60)));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  burst.Join();

  const std::vector<BurstMessage> sent = burst.messages();
  ASSERT_EQ(sent.size(), static_cast<size_t>(burst.total())) << Logs();
  EXPECT_LT(accepted_at_kill, burst.total())
      << "the burst was over before the kill";
  EXPECT_THAT(burst.errors(), ::testing::IsEmpty());  // PK never went away

  int resent = 0;
  ASSERT_TRUE(WaitAllDelivered(IdsOf(sent), absl::Seconds(90), &resent));
  EXPECT_GT(resent, 0) << "the kill caught no delivery under way";
  const auto inbox = ReadWholeInbox(cursor, sent.size(), absl::Seconds(30));
  ExpectExactlyOnceInCaseOrder(cases, sent, inbox);
  // Envelopes sent again are not audited again.
  ExpectEachSentOnceBeforeItsReceipt(IdsOf(sent));
}

TEST_F(ExchangeCrashTest, AStandingInboxWatchOutlivesARestartOfItsGateway) {
  // The CN gateway's office port fixed, as in production, so that it comes
  // back where its offices' channels point.
  ASSERT_EQ(cn_->Stop(), 0) << cn_->Log();
  ASSERT_OK_AND_ASSIGN(std::string toml, crypto::ReadFile(cn_config_));
  ASSERT_TRUE(absl::StrContains(toml, "\"127.0.0.1:0\"")) << toml;
  absl::StrReplaceAll({{"\"127.0.0.1:0\"",
                        absl::StrCat("\"127.0.0.1:", ReserveFreePort(), "\"")}},
                      &toml);
  WriteFile(cn_config_, toml);
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));

  const std::vector<std::string> cases = OpenCases(1);
  ASSERT_EQ(cases.size(), 1u);
  const auto send = [&](const std::string& body) {
    v1::SendMessageRequest request;
    request.mutable_message()->set_exchange_id(cases[0]);
    request.mutable_message()->set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
    request.mutable_message()->set_priority(v1::PRIORITY_URGENT);
    request.mutable_message()->set_body(body);
    auto sent = Pk()->SendMessage(request);
    EXPECT_OK(sent);
    return sent.ok() ? sent->message_id() : "";
  };

  // MPS leaves a watch running, as a desk does.
  auto mps = Cn();
  absl::Mutex mu;
  std::vector<std::string> seen;           // message ids, in order
  std::vector<std::string> interruptions;  // cursors resumed from
  auto watch = std::async(std::launch::async, [&] {
    return mps->WatchInbox(
        "", absl::Seconds(90),
        [&](const v1::WatchInboxResponse& item) {
          if (item.message().kind() == v1::MESSAGE_KIND_CASE_SHARE) return true;
          absl::MutexLock lock(&mu);
          seen.push_back(item.message().message_id());
          return seen.size() < 2;
        },
        [&](const absl::Status& why, const std::string& cursor,
            absl::Duration) {
          EXPECT_EQ(why.code(), absl::StatusCode::kUnavailable) << why;
          absl::MutexLock lock(&mu);
          interruptions.push_back(
              absl::StrCat(cursor, " (", why.message(), ")"));
        });
  });
  const std::string first = send("Victim seen at Handan station.");
  ASSERT_TRUE(WaitUntil([&] {
    absl::MutexLock lock(&mu);
    return seen.size() == 1;
  })) << Logs();

  // The CN gateway restarts under it.
  ASSERT_EQ(cn_->Stop(), 0) << cn_->Log();
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  const std::string second = send("Second sighting, same station.");
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto status = Pk()->GetDeliveryStatus(second);
        return status.ok() && status->state() == v1::DELIVERY_STATE_DELIVERED;
      },
      absl::Seconds(60)))
      << Logs();

  ASSERT_EQ(watch.wait_for(std::chrono::seconds(90)), std::future_status::ready)
      << Logs();
  EXPECT_OK(watch.get());
  absl::MutexLock lock(&mu);
  // Each message once, in order; the stream was opened again after the
  // first one's cursor, at least once.
  EXPECT_THAT(seen, ElementsAre(first, second))
      << "resumed after " << absl::StrJoin(interruptions, ", ");
  ASSERT_FALSE(interruptions.empty());
  for (const std::string& cursor : interruptions) EXPECT_FALSE(cursor.empty());
}

TEST_F(ExchangeCrashTest, UrgentOvertakesAQueuedRoutineBacklog) {
  constexpr int kBacklogCases = 30;
  constexpr int kBacklogPerCase = 10;  // 300 ROUTINE messages
  // The cases are shared, and known to CN, before it goes away.
  const std::vector<std::string> cases = OpenCases(kBacklogCases);
  ASSERT_EQ(cases.size(), static_cast<size_t>(kBacklogCases));
  const std::vector<std::string> urgent_case = OpenCases(1);
  ASSERT_EQ(urgent_case.size(), 1u);
  ASSERT_EQ(cn_->Stop(), 0) << cn_->Log();
  std::vector<BurstMessage> backlog;
  {
    Burst burst(cases, kThreads, kBacklogPerCase, pk_->office_endpoint());
    burst.Join();
    backlog = burst.messages();
  }
  ASSERT_EQ(backlog.size(),
            static_cast<size_t>(kBacklogCases * kBacklogPerCase));

  // Then a life-at-risk message in a case of its own.
  v1::SendMessageRequest request;
  v1::CaseMessage* m = request.mutable_message();
  m->set_exchange_id(urgent_case[0]);
  m->set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
  m->set_priority(v1::PRIORITY_URGENT);
  m->set_body("URGENT: victim V1 to be moved out of Handan tonight.");
  ASSERT_OK_AND_ASSIGN(v1::SendMessageResponse urgent,
                       Pk()->SendMessage(request));
  const std::string& urgent_id = urgent.message_id();
  // It waits in the outbox like the backlog while the link fails to come
  // up again and again, as in any outage longer than a few seconds; none of
  // them is written to a stream the peer has not admitted.
  auto office = Pk();
  const size_t downs = CountLines(pk_->Log(), "\"peer.link_down\"");
  ASSERT_TRUE(WaitUntil([&] {
    return CountLines(pk_->Log(), "\"peer.link_down\"") >= downs + 4;
  })) << Logs();
  ASSERT_OK_AND_ASSIGN(const v1::DeliveryStatus waiting,
                       office->GetDeliveryStatus(urgent_id));
  EXPECT_EQ(waiting.attempts(), 0) << waiting.ShortDebugString();

  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  std::vector<std::string> ids = IdsOf(backlog);
  ids.push_back(urgent_id);
  ASSERT_TRUE(WaitAllDelivered(ids, absl::Seconds(90)));
  auto inbox =
      ReadWholeInbox("", ids.size() + cases.size() + 1, absl::Seconds(30));
  // The shares, delivered before the outage, are not what is timed.
  std::erase_if(inbox, [](const v1::WatchInboxResponse& r) {
    return r.message().kind() == v1::MESSAGE_KIND_CASE_SHARE;
  });

  // Where the URGENT message landed among the arrivals. Of each case only the
  // oldest undelivered envelope is a candidate (ExchangeStore::ReadyToSend),
  // so when the link is back the outbox offers 31 envelopes: one head per
  // backlog case and the URGENT one, URGENT first (all of them are due then:
  // what held them back was the peer's absence, and it is over). They fit in
  // one window (delivery_window = 64 > 31), so PeerLink writes the URGENT
  // envelope first, together with at most 30 ROUTINE ones. A case's next
  // envelope goes only after the receipt for its head was stored at PK, so
  // a ROUTINE envelope can overtake the URGENT one only if CN takes longer
  // to commit the URGENT envelope than a whole round trip of another case:
  // before it there can be the 30 heads and, allowing for that, a few more —
  // well within the first window's worth of arrivals, and far ahead of the
  // other 270 ROUTINE messages.
  const auto at = std::find_if(inbox.begin(), inbox.end(), [&](const auto& r) {
    return r.message().message_id() == urgent_id;
  });
  ASSERT_NE(at, inbox.end()) << Logs();
  const auto received = [](const v1::WatchInboxResponse& r) {
    return absl::FromUnixSeconds(r.message().received_at().seconds()) +
           absl::Nanoseconds(r.message().received_at().nanos());
  };
  auto urgent_status = office->GetDeliveryStatus(urgent_id);
  ASSERT_OK(urgent_status);
  urgent_status->clear_receipt();
  EXPECT_LT(at - inbox.begin(), kDeliveryWindow)
      << "URGENT arrived after " << (at - inbox.begin())
      << " ROUTINE messages: CN received the first at "
      << absl::FormatTime(received(inbox.front())) << ", the URGENT one "
      << (received(*at) - received(inbox.front()))
      << " later; PK's status of the URGENT message: "
      << urgent_status->ShortDebugString() << Logs();
  EXPECT_EQ(at->message().priority(), v1::PRIORITY_URGENT);

  // And the rest: every message once, each backlog case in order.
  const size_t urgent_copies = std::count_if(
      inbox.begin(), inbox.end(),
      [&](const auto& r) { return r.message().message_id() == urgent_id; });
  EXPECT_EQ(urgent_copies, 1u);
  inbox.erase(std::remove_if(inbox.begin(), inbox.end(),
                             [&](const auto& r) {
                               return r.message().message_id() == urgent_id;
                             }),
              inbox.end());
  ExpectExactlyOnceInCaseOrder(cases, backlog, inbox);
}

}  // namespace
}  // namespace casebridge::testing
