#ifndef CASEBRIDGE_TESTS_TESTING_FAKE_CLOCK_H_
#define CASEBRIDGE_TESTS_TESTING_FAKE_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "core/clock.h"

namespace casebridge::testing {

// A clock that moves only when told. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromCivil(
                         absl::CivilSecond(2026, 11, 29, 12, 0, 0),
                         absl::UTCTimeZone()))
      : now_(start) {}
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    absl::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace casebridge::testing

#endif  // CASEBRIDGE_TESTS_TESTING_FAKE_CLOCK_H_
