// Finishing a gRPC callback reactor safely from any thread.
//
// Once a reactor calls Finish, gRPC may run OnDone (which deletes the
// reactor) on another thread at any moment, so nothing may touch the reactor
// afterwards, not even unlocking its mutex. A reactor's state lives under one
// mutex; ReactorLock holds it for a scope, in which the code records the
// status to finish with instead of calling Finish. Leaving
// the scope releases the mutex and then calls Finish, as the scope's last use
// of the reactor. No exit path can forget it. The reactor sets
// `ReactorState::end` at most once (it keeps its own `finished` flag).
#ifndef CASEBRIDGE_SERVER_REACTOR_LOCK_H_
#define CASEBRIDGE_SERVER_REACTOR_LOCK_H_

#include <grpcpp/grpcpp.h>

#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace casebridge::server {

// The part of a reactor ReactorLock works on: its mutex, and the status it
// is to finish with once that is released.
struct ReactorState {
  absl::Mutex mu;
  std::optional<grpc::Status> end ABSL_GUARDED_BY(mu);
};

// `Reactor` has a public Finish(grpc::Status) (every gRPC server reactor
// does).
template <typename Reactor>
class ABSL_SCOPED_LOCKABLE ReactorLock {
 public:
  ReactorLock(Reactor* reactor, ReactorState* state)
      ABSL_EXCLUSIVE_LOCK_FUNCTION(state->mu)
      : reactor_(reactor), state_(state) {
    state_->mu.Lock();
  }
  ~ReactorLock() ABSL_UNLOCK_FUNCTION() {
    std::optional<grpc::Status> end;
    end.swap(state_->end);
    Reactor* const reactor = reactor_;
    state_->mu.Unlock();
    if (end.has_value()) reactor->Finish(*std::move(end));
  }
  ReactorLock(const ReactorLock&) = delete;
  ReactorLock& operator=(const ReactorLock&) = delete;

 private:
  Reactor* const reactor_;
  ReactorState* const state_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_REACTOR_LOCK_H_
