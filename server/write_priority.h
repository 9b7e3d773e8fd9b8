// The order in which the gateway's database writes wait for the writer.
// A hint carried by the calling thread, so that the code which knows what a
// write is for (the exchange's sender, the receiver, an URGENT office call)
// can set it without every store interface taking a parameter.
#ifndef CASEBRIDGE_SERVER_WRITE_PRIORITY_H_
#define CASEBRIDGE_SERVER_WRITE_PRIORITY_H_

namespace casebridge::server {

// How soon a write runs. A kFirst write goes ahead of every kNormal write
// still waiting (never into the batch already running, which gives way to
// it after the unit it is running, sqlite::Database): writes that move
// accepted work along (the exchange's rounds, receipts, inbound batches) and
// those carrying an URGENT message, so that a queue of new office calls does
// not hold them up. Among writes of one priority the order is first come,
// first served.
enum class WritePriority { kNormal, kFirst };

// The rule that keeps a first lane from starving the other: work from the
// first lane goes ahead, but after `max` of it in a row while other work
// waited, the other goes once. Used by WorkQueue (URGENT office calls) and
// sqlite::Database (kFirst writes); not thread-safe (its owner's lock).
class FirstLaneStreak {
 public:
  explicit FirstLaneStreak(int max) : max_(max) {}
  // Whether first-lane work may still go ahead of other work waiting.
  bool MayGoFirst() const { return streak_ < max_; }
  // Records what just went: from the first lane or not, and whether other
  // work was left waiting.
  void Went(bool first, bool others_waiting) {
    streak_ = first && others_waiting ? streak_ + 1 : 0;
  }

 private:
  const int max_;
  int streak_ = 0;
};

// Sets the priority of the sqlite::Database::Write calls this thread makes
// while it lives (scopes nest; the innermost wins).
class ScopedWritePriority {
 public:
  explicit ScopedWritePriority(WritePriority priority);
  ~ScopedWritePriority();
  ScopedWritePriority(const ScopedWritePriority&) = delete;
  ScopedWritePriority& operator=(const ScopedWritePriority&) = delete;

  // This thread's current priority.
  static WritePriority Current();

 private:
  WritePriority previous_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_WRITE_PRIORITY_H_
