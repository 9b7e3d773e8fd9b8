#include "server/call_limits.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "server/sqlite_case_store.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kFia[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kEmbassy[] = "spiffe://pk.casebridge/office/embassy-beijing";

CallLimiter::Options Options(double rate, double burst, int streams = 2) {
  CallLimiter::Options options;
  options.calls_per_second = rate;
  options.burst = burst;
  options.max_streams = streams;
  return options;
}

TEST(CallLimiterTest, AdmitsTheBurstThenRefusesWithResourceExhausted) {
  FakeClock clock;
  CallLimiter limiter(Options(2, 3), &clock);
  for (int i = 0; i < 3; ++i) EXPECT_OK(limiter.AdmitCall(kFia).status);
  EXPECT_THAT(limiter.AdmitCall(kFia).status,
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("limits.office_calls_per_second")));
  // Another identity has its own bucket.
  EXPECT_OK(limiter.AdmitCall(kEmbassy).status);
}

TEST(CallLimiterTest, RefillsAtTheConfiguredRateUpToTheBurst) {
  FakeClock clock;
  CallLimiter limiter(Options(2, 3), &clock);
  for (int i = 0; i < 3; ++i) ASSERT_OK(limiter.AdmitCall(kFia).status);
  ASSERT_FALSE(limiter.AdmitCall(kFia).status.ok());
  clock.Advance(absl::Milliseconds(500));  // one token
  EXPECT_OK(limiter.AdmitCall(kFia).status);
  EXPECT_FALSE(limiter.AdmitCall(kFia).status.ok());
  clock.Advance(absl::Hours(1));  // never more than the burst
  for (int i = 0; i < 3; ++i) EXPECT_OK(limiter.AdmitCall(kFia).status);
  EXPECT_FALSE(limiter.AdmitCall(kFia).status.ok());
}

TEST(CallLimiterTest,
     OnlyTheFirstRefusalOfABurstIsAuditedAndTheBurstIsCounted) {
  FakeClock clock;
  CallLimiter limiter(Options(1, 1), &clock);
  ASSERT_OK(limiter.AdmitCall(kFia).status);
  EXPECT_EQ(limiter.CloseBurst(kFia).burst_refusals, 0);
  const absl::Time first = clock.Now();
  const CallLimiter::Decision opening = limiter.AdmitCall(kFia);
  EXPECT_FALSE(opening.status.ok());
  EXPECT_TRUE(opening.audit);
  for (int i = 0; i < 4; ++i) {
    clock.Advance(absl::Milliseconds(100));
    const CallLimiter::Decision inside = limiter.AdmitCall(kFia);
    EXPECT_FALSE(inside.status.ok());
    EXPECT_FALSE(inside.audit);
  }
  clock.Advance(absl::Seconds(1));
  ASSERT_OK(limiter.AdmitCall(kFia).status);
  const CallLimiter::Decision closed = limiter.CloseBurst(kFia);
  EXPECT_EQ(closed.burst_refusals, 5);
  EXPECT_EQ(closed.burst_start, first);
  // Closed once: the next refusal opens a new burst, audited again.
  EXPECT_EQ(limiter.CloseBurst(kFia).burst_refusals, 0);
  const CallLimiter::Decision next = limiter.AdmitCall(kFia);
  EXPECT_FALSE(next.status.ok());
  EXPECT_TRUE(next.audit);
}

TEST(CallLimiterTest, StreamsAreCappedPerIdentityUntilOneCloses) {
  FakeClock clock;
  CallLimiter limiter(Options(100, 100, 2), &clock);
  EXPECT_OK(limiter.OpenStream(kFia).status);
  EXPECT_OK(limiter.OpenStream(kFia).status);
  const CallLimiter::Decision third = limiter.OpenStream(kFia);
  EXPECT_THAT(third.status,
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("already has 2 WatchInbox streams open")));
  EXPECT_TRUE(third.audit);
  EXPECT_FALSE(limiter.OpenStream(kFia).audit);  // same burst
  EXPECT_OK(limiter.OpenStream(kEmbassy).status);
  EXPECT_EQ(limiter.open_streams(kFia), 2);
  limiter.StreamClosed(kFia);
  EXPECT_EQ(limiter.open_streams(kFia), 1);
  EXPECT_OK(limiter.OpenStream(kFia).status);
  EXPECT_EQ(limiter.CloseBurst(kFia).burst_refusals, 2);
}

TEST(CallLimiterTest, AnOpenBurstIsCountedWhileItGoesOnAndEndsOnceQuiet) {
  FakeClock clock;
  CallLimiter limiter(Options(1, 1), &clock);
  ASSERT_OK(limiter.AdmitCall(kFia).status);
  EXPECT_THAT(limiter.TakeOpenBursts(false), IsEmpty());
  const absl::Time began = clock.Now();
  EXPECT_TRUE(limiter.AdmitCall(kFia).audit);
  for (int i = 0; i < 2; ++i) {
    clock.Advance(absl::Milliseconds(100));
    EXPECT_FALSE(limiter.AdmitCall(kFia).audit);
  }
  clock.Advance(absl::Milliseconds(100));
  const absl::Time reported = clock.Now();
  auto open = limiter.TakeOpenBursts(false);
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].first, kFia);
  EXPECT_EQ(open[0].second.burst_refusals, 3);
  EXPECT_EQ(open[0].second.burst_start, began);
  EXPECT_FALSE(open[0].second.reported_before);
  EXPECT_FALSE(open[0].second.ended);

  // Still the same burst: only counted, and only what came since.
  clock.Advance(absl::Milliseconds(100));
  const CallLimiter::Decision inside = limiter.AdmitCall(kFia);
  EXPECT_FALSE(inside.status.ok());
  EXPECT_FALSE(inside.audit);
  clock.Advance(absl::Seconds(1));
  ASSERT_OK(limiter.AdmitCall(kFia).status);
  const CallLimiter::Decision closed = limiter.CloseBurst(kFia);
  EXPECT_EQ(closed.burst_refusals, 1);
  EXPECT_EQ(closed.burst_start, reported);
  EXPECT_EQ(closed.burst_began, began);
  EXPECT_TRUE(closed.reported_before);
  EXPECT_TRUE(closed.ended);

  // A burst with nothing since its last count has ended: the next refusal
  // is audited on its own again.
  EXPECT_TRUE(limiter.AdmitCall(kFia).audit);
  open = limiter.TakeOpenBursts(false);
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].second.burst_refusals, 1);
  EXPECT_FALSE(open[0].second.ended);
  open = limiter.TakeOpenBursts(false);
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].second.burst_refusals, 0);
  EXPECT_TRUE(open[0].second.ended);
  EXPECT_THAT(limiter.TakeOpenBursts(false), IsEmpty());
  EXPECT_TRUE(limiter.AdmitCall(kFia).audit);
}

TEST(CallLimiterTest, EndingAllBurstsReportsEachOnceAndClosesIt) {
  FakeClock clock;
  CallLimiter limiter(Options(1, 1), &clock);
  for (const char* id : {kFia, kEmbassy}) {
    ASSERT_OK(limiter.AdmitCall(id).status);
    for (int i = 0; i < 3; ++i) EXPECT_FALSE(limiter.AdmitCall(id).status.ok());
  }
  const auto all = limiter.TakeOpenBursts(true);
  ASSERT_EQ(all.size(), 2u);
  for (const auto& [id, counted] : all) {
    EXPECT_EQ(counted.burst_refusals, 3) << id;
    EXPECT_TRUE(counted.ended) << id;
  }
  EXPECT_THAT(limiter.TakeOpenBursts(true), IsEmpty());
  EXPECT_EQ(limiter.CloseBurst(kFia).burst_refusals, 0);
}

class OpenBurstReporterTest : public ::testing::Test {
 protected:
  OpenBurstReporterTest() : dir_(NewTempDir("burst-reporter")) {
    auto store = GatewayStore::Open(dir_ + "/data", v1::COUNTRY_PK, &clock_);
    EXPECT_OK(store);
    if (store.ok()) store_ = *std::move(store);
  }

  // The limits.refused entries' messages, in log order.
  std::vector<std::string> Summaries() {
    std::vector<std::string> out;
    auto size = store_->audit_log().Size();
    EXPECT_OK(size);
    if (!size.ok()) return out;
    auto entries = store_->audit_log().Read(0, *size);
    EXPECT_OK(entries);
    if (!entries.ok()) return out;
    for (const StoredEntry& e : *entries) {
      if (e.entry.action != "limits.refused") continue;
      EXPECT_EQ(e.entry.actor, kFia);
      EXPECT_EQ(e.entry.status_code, grpc::StatusCode::RESOURCE_EXHAUSTED);
      out.push_back(e.entry.status_message);
    }
    return out;
  }

  FakeClock clock_;
  std::string dir_;
  std::unique_ptr<GatewayStore> store_;
};

TEST_F(OpenBurstReporterTest, CountsGoToTheLogWhileABurstGoesOnAndAtStop) {
  ASSERT_NE(store_, nullptr);
  clock_.Set(absl::FromUnixSeconds(1796000000));  // 2026-11-30T00:53:20Z
  // A token every 1,000 s: none comes back between the rounds below.
  CallLimiter::Options options = Options(0.001, 1);
  options.beyond = " beyond limits.test";
  CallLimiter limiter(options, &clock_);
  // An hour between rounds: only Report and Stop make them here.
  OpenBurstReporter reporter({&limiter}, &store_->audit_log(), absl::Hours(1));
  ASSERT_OK(limiter.AdmitCall(kFia).status);
  for (int i = 0; i < 5; ++i) ASSERT_FALSE(limiter.AdmitCall(kFia).status.ok());
  clock_.Advance(absl::Seconds(60));
  reporter.Report(false);
  for (int i = 0; i < 2; ++i) ASSERT_FALSE(limiter.AdmitCall(kFia).status.ok());
  clock_.Advance(absl::Seconds(60));
  reporter.Report(false);
  reporter.Report(false);  // nothing since: the burst ended, no entry
  EXPECT_TRUE(limiter.AdmitCall(kFia).audit);
  reporter.Stop();
  reporter.Stop();  // once only
  EXPECT_THAT(
      Summaries(),
      ElementsAre(
          "5 calls refused by the limits since 2026-11-30T00:53:20Z beyond "
          "limits.test; only the first was audited on its own",
          "2 more calls refused by the limits since 2026-11-30T00:54:20Z "
          "beyond limits.test (the burst began 2026-11-30T00:53:20Z); none "
          "was audited on its own",
          "1 calls refused by the limits since 2026-11-30T00:55:20Z beyond "
          "limits.test; only the first was audited on its own"));
}

TEST_F(OpenBurstReporterTest, ItsThreadReportsEveryInterval) {
  ASSERT_NE(store_, nullptr);
  CallLimiter limiter(Options(1, 1), &clock_);
  OpenBurstReporter reporter({&limiter}, &store_->audit_log(),
                             absl::Milliseconds(20));
  ASSERT_OK(limiter.AdmitCall(kFia).status);
  for (int i = 0; i < 3; ++i) ASSERT_FALSE(limiter.AdmitCall(kFia).status.ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Summaries().empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(Summaries().size(), 1u);
  EXPECT_THAT(Summaries()[0], HasSubstr("3 calls refused by the limits"));
}

}  // namespace
}  // namespace casebridge::server
