#include "server/work_queue.h"

#include <pthread.h>

namespace casebridge::server {

WorkQueue::WorkQueue(int threads) {
  threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] { Run(); });
    // Named here, before the constructor returns: once the gateway is up,
    // the whole pool is named. (A failure leaves the process's name.)
    (void)pthread_setname_np(threads_.back().native_handle(), kThreadName);
  }
}

WorkQueue::~WorkQueue() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void WorkQueue::Post(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
}

void WorkQueue::PostFirst(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  first_.push_back(std::move(task));
}

void WorkQueue::Run() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WorkQueue* q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(q->mu_) {
            return q->stopping_ || !q->first_.empty() || !q->tasks_.empty();
          },
          this));
      const bool first =
          !first_.empty() && (tasks_.empty() || streak_.MayGoFirst());
      std::deque<std::function<void()>>& from = first ? first_ : tasks_;
      if (from.empty()) return;  // stopping, and nothing left
      task = std::move(from.front());
      from.pop_front();
      streak_.Went(first, !tasks_.empty());
    }
    task();
  }
}

}  // namespace casebridge::server
