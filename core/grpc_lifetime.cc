#include "core/grpc_lifetime.h"

#include <grpc/grpc.h>

namespace casebridge {

int RunWithGrpc(const std::function<int()>& body) {
  grpc_init();
  const int result = body();
  // The last reference: the clean-up runs here, not on a detached thread.
  grpc_shutdown_blocking();
  return result;
}

}  // namespace casebridge
