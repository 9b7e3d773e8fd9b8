// The main of every test binary: Google Test's, run with the gRPC library
// shut down on the main thread before the process exits (RunWithGrpc). A
// test binary once crashed after its one test passed, most likely in the
// clean-up grpc_shutdown leaves to a detached thread.
#include <gtest/gtest.h>

#include "core/grpc_lifetime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return casebridge::RunWithGrpc([] { return RUN_ALL_TESTS(); });
}
