#include "server/work_queue.h"

namespace casebridge::server {

WorkQueue::WorkQueue(int threads) {
  threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
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
      const bool first = !first_.empty() &&
                         (tasks_.empty() || first_streak_ < kMaxFirstStreak);
      std::deque<std::function<void()>>& from = first ? first_ : tasks_;
      if (from.empty()) return;  // stopping, and nothing left
      first_streak_ = first ? first_streak_ + 1 : 0;
      task = std::move(from.front());
      from.pop_front();
    }
    task();
  }
}

}  // namespace casebridge::server
