// A fixed pool of threads for work that blocks (SQLite commits, fsync), so
// that gRPC's callback threads never do.
#ifndef CASEBRIDGE_SERVER_WORK_QUEUE_H_
#define CASEBRIDGE_SERVER_WORK_QUEUE_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/write_priority.h"

namespace casebridge::server {

class WorkQueue {
 public:
  // The threads are named kThreadName (as top -H and perf show them).
  explicit WorkQueue(int threads);
  // Runs every task already posted, then joins the threads.
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Runs `task` on a pool thread. Thread-safe.
  void Post(std::function<void()> task);
  // The same, ahead of the tasks posted with Post() and not yet started;
  // first come, first served among these (an URGENT office call). After
  // kMaxFirstStreak of them in a row while other tasks wait, one of those
  // runs: a flood of URGENT calls (their callers are past the rate limit
  // but not yet authorized when they are queued) slows the rest of the work
  // but never stops it.
  void PostFirst(std::function<void()> task);

  static constexpr int kMaxFirstStreak = 4;
  static constexpr char kThreadName[] = "cb-work";

 private:
  void Run();

  absl::Mutex mu_;
  std::deque<std::function<void()>> first_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  FirstLaneStreak streak_ ABSL_GUARDED_BY(mu_){kMaxFirstStreak};
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_WORK_QUEUE_H_
