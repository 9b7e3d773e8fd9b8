// What leaves the gateway of a status: ToGrpcStatus and ShownMessage.
#include "core/grpc_status.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"

namespace casebridge {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSql[] =
    "executing \"INSERT INTO messages(message_id, body) VALUES(?, ?)\": "
    "database or disk is full (sqlite 13)";

TEST(GrpcStatusTest, ARefusalOfTheChecksKeepsItsMessage) {
  const absl::Status refused =
      absl::InvalidArgumentError("message.body: is required");
  EXPECT_FALSE(HasLogOnlyDetail(refused));
  EXPECT_EQ(ShownMessage(refused), "message.body: is required");
  const grpc::Status sent = ToGrpcStatus(refused);
  EXPECT_EQ(sent.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(sent.error_message(), "message.body: is required");
}

TEST(GrpcStatusTest, StorageDetailIsReplacedByWhatTheCallerCanDo) {
  struct Case {
    absl::Status status;
    std::string shown;
  };
  for (const Case& c : std::vector<Case>{
           {absl::ResourceExhaustedError(kSql),
            "the gateway's storage is full; try again later"},
           {absl::UnavailableError(kSql),
            "the gateway's database was busy; try again"},
           {absl::AlreadyExistsError(kSql),
            "storage error at the gateway; the gateway log has details"}}) {
    const absl::Status marked = WithLogOnlyDetail(c.status);
    EXPECT_TRUE(HasLogOnlyDetail(marked));
    EXPECT_EQ(marked.code(), c.status.code());
    EXPECT_EQ(marked.message(), kSql) << "the log keeps the detail";
    EXPECT_EQ(ShownMessage(marked), c.shown);
    const grpc::Status sent = ToGrpcStatus(marked);
    EXPECT_EQ(static_cast<int>(sent.error_code()),
              static_cast<int>(c.status.code()));
    EXPECT_EQ(sent.error_message(), c.shown);
    EXPECT_THAT(sent.error_message(), Not(HasSubstr("INSERT")));
  }
}

TEST(GrpcStatusTest, InternalDetailNeverLeaves) {
  const grpc::Status sent =
      ToGrpcStatus(WithLogOnlyDetail(absl::InternalError(kSql)));
  EXPECT_EQ(sent.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(sent.error_message(),
            "internal error; the gateway log has details");
}

}  // namespace
}  // namespace casebridge
