// The gRPC library's lifetime in a process's main.
#ifndef CASEBRIDGE_CORE_GRPC_LIFETIME_H_
#define CASEBRIDGE_CORE_GRPC_LIFETIME_H_

#include <functional>

namespace casebridge {

// Runs `body` with the gRPC library held initialized, then shuts the library
// down on this thread and returns `body`'s result. Every gRPC object `body`
// made must be gone when it returns.
//
// Without it, the last gRPC object destroyed (a client channel, a server)
// drops the library's last reference, and grpc_shutdown starts the clean-up
// on a detached thread ("can happen in another thread", grpc/grpc.h). When
// that is the end of main, the clean-up can still run while the process
// exits and destroys its static objects: a crash after the work was done.
int RunWithGrpc(const std::function<int()>& body);

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_GRPC_LIFETIME_H_
