#include "server/call_limits.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::StatusIs;
using ::testing::HasSubstr;

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

}  // namespace
}  // namespace casebridge::server
