// Wakes WatchInbox streams when messages arrive. One thread waits on the
// store's inbox head (ExchangeStore::WaitForInbox) and pokes every
// registered stream, which then reads its own office's inbox; no stream
// blocks a thread while it waits.
#ifndef CASEBRIDGE_SERVER_INBOX_WATCHERS_H_
#define CASEBRIDGE_SERVER_INBOX_WATCHERS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/exchange_store.h"

namespace casebridge::server {

class InboxWatchers {
 public:
  // `store` must outlive this object. Starts the waiting thread.
  explicit InboxWatchers(ExchangeStore* store);
  // Stops and joins the thread.
  ~InboxWatchers();
  InboxWatchers(const InboxWatchers&) = delete;
  InboxWatchers& operator=(const InboxWatchers&) = delete;

  // `poke` is called (from the waiting thread, never concurrently with
  // Unregister returning) whenever the inbox head moves. Returns a handle.
  int Register(std::function<void()> poke);
  // After this returns, `poke` of `handle` is never called again.
  void Unregister(int handle);

 private:
  // Pokes whenever the inbox head moves past `head`.
  void Run(int64_t head);

  ExchangeStore* const store_;
  absl::Mutex mu_;
  std::map<int, std::function<void()>> watchers_ ABSL_GUARDED_BY(mu_);
  int next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_INBOX_WATCHERS_H_
