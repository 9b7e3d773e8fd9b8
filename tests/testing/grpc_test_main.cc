// The main of every test binary: Google Test's, with the gRPC library held
// initialized for the whole run and shut down before the process exits.
//
// Without it, the last gRPC object a test destroys (a client channel, say)
// drops the library's last reference, and grpc_shutdown starts the clean-up
// on a detached thread. When that is the end of the run, the clean-up can
// still be running while the process exits and destroys its static objects:
// a crash after every test passed (seen once, under load, in
// GatewayTest.PeerGatewayCertificateCannotUseTheOfficePort). Holding a
// reference from the start and releasing it with grpc_shutdown_blocking
// does the clean-up on this thread, before exit.
#include <grpc/grpc.h>
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  grpc_init();
  ::testing::InitGoogleTest(&argc, argv);
  const int result = RUN_ALL_TESTS();
  grpc_shutdown_blocking();
  return result;
}
