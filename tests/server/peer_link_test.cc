#include "server/peer_link.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace casebridge::server {
namespace {

TEST(PeerLinkTest, ADownLinkIsToldInGeneralTerms) {
  EXPECT_EQ(PeerLink::DownReason(absl::UnavailableError(
                "failed to connect to all addresses; last error: "
                "ipv4:127.0.0.1:1: Connection refused")),
            "the peer gateway cannot be reached");
  EXPECT_EQ(PeerLink::DownReason(absl::DeadlineExceededError("deadline")),
            "the peer gateway cannot be reached");
  EXPECT_EQ(PeerLink::DownReason(absl::CancelledError("torn down")),
            "the peer gateway cannot be reached");
  EXPECT_EQ(PeerLink::DownReason(absl::PermissionDeniedError(
                "identity spiffe://pk.casebridge/gateway is not the "
                "configured peer gateway")),
            "the peer gateway refuses this gateway's connection");
  EXPECT_EQ(PeerLink::DownReason(absl::UnauthenticatedError("revoked")),
            "the peer gateway refuses this gateway's connection");
  // Other codes are named, never their messages.
  const std::string other = PeerLink::DownReason(
      absl::ResourceExhaustedError("rate limit: 127.0.0.1"));
  EXPECT_EQ(other, "the link to the peer gateway failed (RESOURCE_EXHAUSTED)");
}

}  // namespace
}  // namespace casebridge::server
