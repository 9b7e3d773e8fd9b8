// Abuse limits of the office port on a real gateway process: per-identity
// call rate and open streams, required deadlines, field sizes. Every
// refusal is checked for its code, its audit entry, and that nothing was
// stored. Also the size of the work pool (limits.work_threads).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <future>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "casebridge/v1/office.grpc.pb.h"
#include "casebridge/v1/peer.grpc.pb.h"
#include "client/office_client.h"
#include "nlohmann/json.hpp"
#include "server/sqlite_case_store.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kFiaId[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kAuditor[] = "pk/auditors/pk-auditor";
constexpr char kMps[] = "cn/offices/mps-liaison";
constexpr char kMpsId[] = "spiffe://cn.casebridge/office/mps-liaison";
// Summary actors of the calls a port can only refuse.
constexpr char kNotThePeer[] =
    "callers other than the peer gateway on the peer port";
constexpr char kNoIdentity[] =
    "callers without one spiffe:// identity on the office port";
// The gateway's log line of an admitted WatchInbox stream.
constexpr char kWatchAdmitted[] =
    "\"event\":\"rpc.ok\",\"action\":\"inbox.watch\"";

class LimitsTest : public ::testing::Test {
 protected:
  void StartGateway(const std::string& extra_limits) {
    dir_ = NewTempDir("limits");
    GatewayConfigOptions options;
    options.data_dir = dir_ + "/data";
    options.extra_limits = extra_limits;
    const std::string config =
        WriteFile(dir_ + "/pk.toml",
                  absl::StrReplaceAll(
                      GatewayConfigToml(options),
                      {{"log_level = \"warning\"", "log_level = \"info\""}}));
    ASSERT_OK_AND_ASSIGN(gateway_, GatewayProcess::Start(config));
  }

  std::unique_ptr<client::OfficeClient> Office(const std::string& stem) {
    return OfficeClientFor(stem, gateway_->office_endpoint());
  }

  std::vector<v1::AuditEntry> FiaAuditEntries() { return EntriesBy(kFiaId); }

  // The limit refusals among `entries`: those audited on their own (an
  // office call refused RESOURCE_EXHAUSTED), and the burst summaries
  // (limits.refused) with the refusals they count.
  struct Bursts {
    int audited_refusals = 0;
    int summaries = 0;
    int64_t summarized = 0;
  };
  static Bursts CountBursts(const std::vector<v1::AuditEntry>& entries) {
    Bursts out;
    for (const v1::AuditEntry& entry : entries) {
      const bool exhausted =
          entry.status_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
      if (entry.action() != "limits.refused") {
        if (exhausted) ++out.audited_refusals;
        continue;
      }
      ++out.summaries;
      EXPECT_TRUE(exhausted) << entry.status_code();
      int64_t count = 0;
      EXPECT_TRUE(absl::SimpleAtoi(
          entry.status_message().substr(0, entry.status_message().find(' ')),
          &count))
          << entry.status_message();
      out.summarized += count;
    }
    return out;
  }

  std::vector<v1::AuditEntry> EntriesBy(const std::string& actor) {
    std::vector<v1::AuditEntry> all = ReadAuditEntries(*Office(kAuditor));
    std::erase_if(all,
                  [&](const v1::AuditEntry& e) { return e.actor() != actor; });
    return all;
  }

  grpc::Status CallPeerPort(const std::string& stem) {
    return testing::CallPeerPort(stem, gateway_->peer_endpoint());
  }

  // Calls a port can only refuse: `call` is made 30 times, then until a
  // call ends a burst (its summary entry of `group` appears), so no burst is
  // left open. Checks that each call was refused with `code`, that far fewer
  // than all were audited on their own (as `actor`), and that the summaries
  // count the rest. How many bursts the calls make depends on how fast they
  // come, so the count is checked, not fixed.
  void ExpectStrangersAuditedAtTheirRate(
      const std::function<grpc::Status()>& call, grpc::StatusCode code,
      const std::string& actor, const std::string& group) {
    int calls = 0;
    auto refused_once = [&] {
      const grpc::Status status = call();
      ++calls;
      EXPECT_EQ(status.error_code(), code) << status.error_message();
    };
    for (int i = 0; i < 30; ++i) refused_once();
    // Three from the bucket, each burst's first, one a second refilled.
    const size_t audited_early = EntriesBy(actor).size();
    EXPECT_GE(audited_early, 4u);
    EXPECT_LT(audited_early, 15u);
    // A call a refilled token admits ends the burst with its summary; the
    // calls above may already have ended one and opened the next.
    ASSERT_TRUE(WaitUntil([&] {
      const size_t before = EntriesBy(group).size();
      refused_once();
      return EntriesBy(group).size() > before;
    }));
    const std::vector<v1::AuditEntry> own = EntriesBy(actor);
    for (const v1::AuditEntry& entry : own) {
      EXPECT_EQ(entry.status_code(), code) << entry.ShortDebugString();
    }
    const std::vector<v1::AuditEntry> summaries = EntriesBy(group);
    ASSERT_GE(summaries.size(), 1u);
    int64_t summarized = 0;
    for (const v1::AuditEntry& summary : summaries) {
      EXPECT_EQ(summary.action(), "limits.refused");
      EXPECT_THAT(summary.status_message(),
                  HasSubstr("limits.stranger_audits_per_second"));
      int64_t count = 0;
      ASSERT_TRUE(absl::SimpleAtoi(summary.status_message().substr(
                                       0, summary.status_message().find(' ')),
                                   &count))
          << summary.status_message();
      EXPECT_GT(count, 0);
      summarized += count;
    }
    // Every call is audited on its own (admitted by the bucket, or a burst's
    // first refusal) or counted in a summary; each burst's first is both.
    EXPECT_EQ(static_cast<int64_t>(own.size()) + summarized -
                  static_cast<int64_t>(summaries.size()),
              calls);
    EXPECT_LT(own.size(), static_cast<size_t>(calls) / 2);
  }

  // The refusals of `identity` the gateway's log says were summarized
  // (limits.burst_counted and limits.burst_ended lines), read without a
  // call, so that waiting for them spends no one's allowance.
  int64_t LoggedSummaries(const std::string& identity) {
    int64_t refused = 0;
    for (absl::string_view line : absl::StrSplit(gateway_->Log(), '\n')) {
      if (!absl::StrContains(line, "\"limits.burst_")) continue;
      const auto json = nlohmann::json::parse(line, nullptr, false);
      if (json.is_discarded() || json.value("identity", "") != identity) {
        continue;
      }
      refused += json.value("refused", int64_t{0});
    }
    return refused;
  }

  // Calls `fia` makes beyond its allowance, all refused before a token
  // comes back; returns how many were refused.
  int Flood(client::OfficeClient& fia) {
    int refused = 0;
    for (int i = 0; i < 12; ++i) {
      const absl::Status status = fia.WhoAmI().status();
      if (status.code() == absl::StatusCode::kResourceExhausted) ++refused;
    }
    EXPECT_GE(refused, 4);
    return refused;
  }

  int CaseCount() {
    v1::ListCasesRequest request;
    request.set_page_size(500);
    auto page = Office(kAuditor)->ListCases(request);
    EXPECT_OK(page);
    return page.ok() ? page->cases_size() : -1;
  }

  std::string dir_;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(LimitsTest, RateLimitRefusalsAreAuditedOncePerBurst) {
  // The auditor's few reads below fit in its own burst.
  StartGateway("office_calls_per_second = 1\noffice_burst = 5\n");
  auto fia = Office(kFia);
  int opened = 0;
  int refused = 0;
  // Spend the burst, then keep calling: the bucket refills one call a
  // second, far slower than these calls come.
  for (int i = 0; i < 12; ++i) {
    auto result = fia->OpenCase(ValidDraft());
    if (result.ok()) {
      ++opened;
    } else {
      EXPECT_THAT(result.status(),
                  StatusIs(absl::StatusCode::kResourceExhausted,
                           HasSubstr("office_calls_per_second")));
      ++refused;
    }
  }
  EXPECT_GE(refused, 4);
  // Admitted again once a token is back: that ends the burst.
  EXPECT_TRUE(WaitUntil([&] {
    const absl::Status status = fia->WhoAmI().status();
    if (status.code() == absl::StatusCode::kResourceExhausted) ++refused;
    return status.ok();
  }));

  EXPECT_EQ(CaseCount(), opened);
  const Bursts bursts = CountBursts(FiaAuditEntries());
  // One entry per burst for its first refusal, one summary per burst, and
  // the summaries count every refusal.
  EXPECT_GE(bursts.audited_refusals, 1);
  EXPECT_LT(bursts.audited_refusals, refused);
  EXPECT_EQ(bursts.summaries, bursts.audited_refusals);
  EXPECT_EQ(bursts.summarized, refused);
}

TEST_F(LimitsTest, BurstsOfAnIdentityNeverAdmittedAreSummarizedToo) {
  // A certificate of our CA for an office not in the office table: every
  // call is refused, by the rate limit or for the identity. A call the rate
  // limit lets through ends the burst as an admitted one does, so each
  // burst's first refusal is audited and its count summarized.
  StartGateway("office_calls_per_second = 1\noffice_burst = 3\n");
  constexpr char kUnlistedId[] =
      "spiffe://pk.casebridge/office/unlisted-office";
  auto unlisted = Office("bad/unconfigured");
  int refused = 0;
  auto burst = [&] {
    for (int i = 0; i < 8; ++i) {
      const absl::Status status = unlisted->WhoAmI().status();
      if (status.code() == absl::StatusCode::kResourceExhausted) ++refused;
    }
    // Let through by the rate limit again, and refused for the identity.
    EXPECT_TRUE(WaitUntil([&] {
      const absl::Status status = unlisted->WhoAmI().status();
      if (status.code() == absl::StatusCode::kResourceExhausted) {
        ++refused;
        return false;
      }
      EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
      return true;
    }));
  };
  burst();
  burst();
  EXPECT_GE(refused, 8);

  // Two bursts at least: slow calls can let a refilled token end one
  // inside the loop of eight and open the next.
  const Bursts bursts = CountBursts(EntriesBy(kUnlistedId));
  EXPECT_GE(bursts.audited_refusals, 2);
  EXPECT_EQ(bursts.summaries, bursts.audited_refusals);
  EXPECT_EQ(bursts.summarized, refused);
}

TEST_F(LimitsTest, RefusalsOfAnIdentityThatStopsCallingAreCountedAllTheSame) {
  // No call of the FIA desk ends its burst: it never calls again. The
  // burst's count is audited all the same, within the summary interval.
  StartGateway(
      "office_calls_per_second = 1\noffice_burst = 3\n"
      "refusal_summary_seconds = 1\n");
  const int refused = Flood(*Office(kFia));
  ASSERT_TRUE(WaitUntil([&] { return LoggedSummaries(kFiaId) >= refused; }))
      << gateway_->Log();
  const Bursts bursts = CountBursts(FiaAuditEntries());
  EXPECT_GE(bursts.audited_refusals, 1);
  EXPECT_LT(bursts.audited_refusals, refused);
  EXPECT_GE(bursts.summaries, bursts.audited_refusals);
  EXPECT_EQ(bursts.summarized, refused);
}

TEST_F(LimitsTest, BurstsStillOpenWhenTheGatewayStopsAreSummarized) {
  StartGateway(
      "office_calls_per_second = 1\noffice_burst = 3\n"
      "refusal_summary_seconds = 3600\n");
  const int refused = Flood(*Office(kFia));
  // Slow calls may let a refilled token end a burst inside the flood; the
  // last one is open.
  EXPECT_LT(LoggedSummaries(kFiaId), refused);
  ASSERT_EQ(gateway_->Stop(), 0) << gateway_->Log();
  EXPECT_EQ(LoggedSummaries(kFiaId), refused) << gateway_->Log();
  // On record, as a restart shows.
  gateway_.reset();
  ASSERT_OK_AND_ASSIGN(gateway_, GatewayProcess::Start(dir_ + "/pk.toml"));
  const Bursts bursts = CountBursts(FiaAuditEntries());
  EXPECT_GE(bursts.audited_refusals, 1);
  EXPECT_EQ(bursts.summaries, bursts.audited_refusals);
  EXPECT_EQ(bursts.summarized, refused);
}

TEST_F(LimitsTest, PeerPortCallsFromOtherThanThePeerAreAuditedAtALowRate) {
  // The peer CA is foreign: it can mint any number of identities that pass
  // the handshake. Each call is refused for what it is; only a few a second
  // are audited on their own, and the rest are counted in one summary.
  StartGateway("stranger_audits_per_second = 1\nstranger_audit_burst = 3\n");
  ExpectStrangersAuditedAtTheirRate(
      [&] {
        const grpc::Status status = CallPeerPort(kMps);
        EXPECT_THAT(status.error_message(),
                    HasSubstr("not the configured peer gateway"));
        return status;
      },
      grpc::StatusCode::PERMISSION_DENIED, kMpsId, kNotThePeer);
}

TEST_F(LimitsTest, OfficeCallsWithoutOneIdentityAreAuditedAtALowRate) {
  // An own-CA certificate with two spiffe:// identities names no caller:
  // every call is refused, and its refusals are audited as strangers'.
  StartGateway("stranger_audits_per_second = 1\nstranger_audit_burst = 3\n");
  auto twice = Office("bad/two-identities");
  ExpectStrangersAuditedAtTheirRate(
      [&] {
        const absl::Status status = twice->WhoAmI().status();
        EXPECT_THAT(status.message(), HasSubstr("exactly one spiffe://"));
        return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                            std::string(status.message()));
      },
      grpc::StatusCode::UNAUTHENTICATED, "unauthenticated", kNoIdentity);
}

TEST_F(LimitsTest, AFloodTheRateLimitRefusesWaitsForNoWorker) {
  // Every worker is held by a call waiting for the store's writer, which
  // the test holds. A flood of the FIA desk's calls is refused by its rate
  // limit all the same: answered at once, without a worker, so a stolen
  // certificate in a loop takes no place in the queue the other offices'
  // calls wait in.
  StartGateway(
      "office_calls_per_second = 1\noffice_burst = 10\nwork_threads = 4\n");
  auto fia = v1::OfficeService::NewStub(
      ChannelFor(kFia, gateway_->office_endpoint(), "PK"));
  auto who_am_i = [&fia](absl::Duration timeout) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::WhoAmIResponse response;
    return fia->WhoAmI(&context, v1::WhoAmIRequest(), &response);
  };
  // The desk spends its burst, and its first refusal is on record.
  ASSERT_TRUE(WaitUntil([&] {
    return who_am_i(absl::Seconds(5)).error_code() ==
           grpc::StatusCode::RESOURCE_EXHAUSTED;
  }));

  sqlite3* db = nullptr;
  ASSERT_EQ(
      sqlite3_open(server::GatewayStore::DatabasePath(dir_ + "/data").c_str(),
                   &db),
      SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  // Twice as many writes as workers: four wait for the writer, four more
  // for a worker.
  auto embassy = Office("pk/offices/embassy-beijing");
  std::vector<std::future<absl::StatusOr<v1::CaseReference>>> held;
  for (int i = 0; i < 8; ++i) {
    held.push_back(std::async(std::launch::async, [&embassy] {
      return embassy->OpenCase(ValidDraft());
    }));
  }
  // Every worker is busy once a call that needs nothing but a worker waits
  // past its deadline.
  auto auditor_stub = v1::OfficeService::NewStub(
      ChannelFor(kAuditor, gateway_->office_endpoint(), "PK"));
  ASSERT_TRUE(WaitUntil([&] {
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Milliseconds(300)));
    v1::WhoAmIResponse response;
    return auditor_stub->WhoAmI(&context, v1::WhoAmIRequest(), &response)
               .error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  }));

  std::vector<std::future<grpc::Status>> flood;
  for (int i = 0; i < 30; ++i) {
    flood.push_back(std::async(std::launch::async,
                               [&] { return who_am_i(absl::Seconds(3)); }));
  }
  int refused = 0;
  for (auto& call : flood) {
    const grpc::Status status = call.get();
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      EXPECT_THAT(status.error_message(),
                  HasSubstr("limits.office_calls_per_second"));
      ++refused;
    } else {
      // Admitted by a token the bucket got back, or the first refusal of a
      // new burst (audited, so it waits for a worker).
      EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
          << status.error_message();
    }
  }
  // The bucket refills one call a second: most of the flood is refused.
  EXPECT_GE(refused, 20);
  // All the while, no worker was free.
  for (auto& call : held) {
    EXPECT_EQ(call.wait_for(std::chrono::seconds(0)),
              std::future_status::timeout);
  }

  ASSERT_EQ(sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  int opened = 0;
  for (auto& call : held) {
    const auto result = call.get();
    EXPECT_OK(result);
    if (result.ok()) ++opened;
  }
  EXPECT_EQ(CaseCount(), opened);
  // The refusals are counted on record once the desk is admitted again.
  ASSERT_TRUE(WaitUntil([&] { return who_am_i(absl::Seconds(5)).ok(); }));
  const Bursts bursts = CountBursts(FiaAuditEntries());
  EXPECT_GE(bursts.audited_refusals, 1);
  EXPECT_GE(bursts.summarized, refused);
}

TEST_F(LimitsTest, ThePeerGatewayHasARateOfItsOwn) {
  StartGateway("peer_calls_per_second = 1\npeer_burst = 3\n");
  constexpr char kCnGatewayId[] = "spiffe://cn.casebridge/gateway";
  int refused = 0;
  for (int i = 0; i < 10; ++i) {
    const grpc::Status status = CallPeerPort("cn/gateway");
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      EXPECT_THAT(status.error_message(),
                  HasSubstr("limits.peer_calls_per_second"));
      ++refused;
    } else {
      // Admitted: the witness refuses the empty checkpoint.
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << status.error_message();
    }
  }
  EXPECT_GE(refused, 5);
  EXPECT_TRUE(WaitUntil([&] {
    const grpc::Status status = CallPeerPort("cn/gateway");
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
      return false;
    }
    return true;
  }));
  // One burst, or more when calls are slow enough for a refilled token to
  // end one inside the loop: each burst's first refusal audited, and every
  // refusal counted in a summary.
  const Bursts bursts = CountBursts(EntriesBy(kCnGatewayId));
  EXPECT_GE(bursts.audited_refusals, 1);
  EXPECT_LT(bursts.audited_refusals, refused);
  EXPECT_EQ(bursts.summaries, bursts.audited_refusals);
  EXPECT_EQ(bursts.summarized, refused);
  // The office port's limits are apart: the peer's bucket left them alone.
  EXPECT_OK(Office(kFia)->WhoAmI().status());
}

TEST_F(LimitsTest, StreamLimitRefusesAnExtraWatcherUntilOneEnds) {
  StartGateway("office_streams_per_identity = 1\n");
  auto first = Office(kFia);
  auto watch = std::async(std::launch::async, [&first] {
    return first->WatchInbox(
        "", absl::Seconds(4),
        [](const v1::WatchInboxResponse&) { return true; });
  });
  ASSERT_TRUE(WaitUntil([&] {
    return absl::StrContains(gateway_->Log(), kWatchAdmitted);
  })) << gateway_->Log();
  auto second = Office(kFia);
  EXPECT_THAT(
      second->WatchInbox("", absl::Seconds(5),
                         [](const v1::WatchInboxResponse&) { return true; }),
      StatusIs(absl::StatusCode::kResourceExhausted,
               HasSubstr("office_streams_per_identity")));
  EXPECT_OK(watch.get());  // ended at its deadline
  // Its slot is free again.
  EXPECT_TRUE(WaitUntil([&] {
    return second
        ->WatchInbox("", absl::Milliseconds(200),
                     [](const v1::WatchInboxResponse&) { return true; })
        .ok();
  }));
  int audited = 0;
  for (const v1::AuditEntry& entry : FiaAuditEntries()) {
    if (entry.action() == "inbox.watch" && entry.status_code() == 8) ++audited;
  }
  EXPECT_EQ(audited, 1);
}

TEST_F(LimitsTest, CallWithoutDeadlineIsRefusedAndAudited) {
  StartGateway("");
  auto stub = v1::OfficeService::NewStub(
      ChannelFor(kFia, gateway_->office_endpoint(), "PK"));
  {
    grpc::ClientContext context;  // no deadline
    v1::OpenCaseRequest request;
    *request.mutable_case_reference() = ValidDraft();
    v1::OpenCaseResponse response;
    const grpc::Status status = stub->OpenCase(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("deadline: is required"));
  }
  EXPECT_EQ(CaseCount(), 0);
  const auto entries = FiaAuditEntries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].action(), "case.open");
  EXPECT_EQ(entries[0].status_code(), 3);
  EXPECT_THAT(entries[0].status_message(), HasSubstr("deadline"));

  // A standing WatchInbox may go without one.
  grpc::ClientContext watch_context;
  auto reader = stub->WatchInbox(&watch_context, v1::WatchInboxRequest());
  EXPECT_TRUE(WaitUntil(
      [&] { return absl::StrContains(gateway_->Log(), kWatchAdmitted); }));
  watch_context.TryCancel();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(FiaAuditEntries().size(), 1u);
}

TEST_F(LimitsTest,
       OversizedOrUnknownFieldsAreRefusedNamingTheFieldAndNothingIsStored) {
  StartGateway("");
  auto fia = Office(kFia);
  EXPECT_THAT(fia->OpenCase(ValidDraft(std::string(16001, 's'))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "case_reference.summary: is longer than 16000 bytes"));
  EXPECT_THAT(fia->GetDeliveryStatus(std::string(300, 'm')),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "message_id: is longer than 256 bytes"));
  // A field this gateway does not know, as a newer client might send: it
  // would be stored with the case and shared abroad unchecked.
  v1::CaseReference draft = ValidDraft();
  draft.GetReflection()->MutableUnknownFields(&draft)->AddLengthDelimited(
      99, std::string(100000, 'u'));
  EXPECT_THAT(fia->OpenCase(draft),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("case_reference: carries field number 99, "
                                 "which this gateway does not know")));
  EXPECT_EQ(CaseCount(), 0);
  const auto entries = FiaAuditEntries();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].action(), "case.open");
  EXPECT_EQ(entries[0].status_code(), 3);
  EXPECT_EQ(entries[1].action(), "message.status");
  EXPECT_EQ(entries[1].status_code(), 3);
  EXPECT_EQ(entries[2].action(), "case.open");
  EXPECT_EQ(entries[2].status_code(), 3);
}

// The gateway's threads named `name` (/proc/<pid>/task/*/comm).
int ThreadsNamed(pid_t pid, const std::string& name) {
  int count = 0;
  for (const auto& task : std::filesystem::directory_iterator(
           "/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string line;
    if (std::getline(comm, line) && line == name) ++count;
  }
  return count;
}

// A thread started from a pool thread would inherit its name and be counted
// too: no task of the work queue starts threads.
TEST_F(LimitsTest, WorkThreadsSetsTheSizeOfTheWorkPool) {
  StartGateway("work_threads = 5\n");
  // The pool starts before the listeners, so it is complete once the
  // gateway is ready; and it serves calls.
  EXPECT_EQ(ThreadsNamed(gateway_->pid(), "cb-work"), 5);
  EXPECT_EQ(CaseCount(), 0);
}

}  // namespace
}  // namespace casebridge::testing
