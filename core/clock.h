// Time, injected. Logic never reads the system clock directly, so tests can
// drive it with a fake (tests/testing/fake_clock.h).
#ifndef CASEBRIDGE_CORE_CLOCK_H_
#define CASEBRIDGE_CORE_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace casebridge {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time. Thread-safe.
  virtual absl::Time Now() const = 0;
};

// The system clock.
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  // Process-wide instance; never destroyed.
  static Clock& Get() {
    static RealClock* clock = new RealClock();
    return *clock;
  }
};

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_CLOCK_H_
