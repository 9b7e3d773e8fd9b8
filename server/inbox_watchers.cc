#include "server/inbox_watchers.h"

namespace casebridge::server {

InboxWatchers::InboxWatchers(ExchangeStore* store) : store_(store) {
  // The head as of construction, not as of the thread's first run: a message
  // stored in between must still wake the streams.
  thread_ = std::thread([this, head = store_->InboxHead()] { Run(head); });
}

InboxWatchers::~InboxWatchers() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

int InboxWatchers::Register(std::function<void()> poke) {
  absl::MutexLock lock(&mu_);
  const int handle = next_handle_++;
  watchers_[handle] = std::move(poke);
  return handle;
}

void InboxWatchers::Unregister(int handle) {
  // Pokes run under mu_, so once we hold it no poke of `handle` is running.
  absl::MutexLock lock(&mu_);
  watchers_.erase(handle);
}

void InboxWatchers::Run(int64_t head) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    // Bounded wait, so a stop is noticed within a quarter second.
    if (!store_->WaitForInbox(head, absl::Milliseconds(250))) continue;
    head = store_->InboxHead();
    absl::MutexLock lock(&mu_);
    for (auto& [handle, poke] : watchers_) poke();  // pokes only post work
  }
}

}  // namespace casebridge::server
