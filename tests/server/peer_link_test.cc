#include "server/peer_link.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

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

TEST(PeerLinkTest, ARefusalIsNeverTakenForASuccess) {
  v1::DeliveryRefusal refusal;
  refusal.set_code(7);
  refusal.set_message("message.sender_office: not accepted");
  EXPECT_EQ(PeerLink::RefusalStatus(refusal),
            absl::PermissionDeniedError(
                "peer refused: message.sender_office: not accepted"));
  // No error, or no code gRPC knows: UNKNOWN, the reason and code kept.
  for (const int32_t code : {0, -3, 17, 1000}) {
    refusal.set_code(code);
    refusal.set_message("refused");
    const absl::Status status = PeerLink::RefusalStatus(refusal);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnknown) << code;
    EXPECT_EQ(status.message(),
              absl::StrCat("peer refused: refused (code ", code, ")"));
  }
}

}  // namespace
}  // namespace casebridge::server
