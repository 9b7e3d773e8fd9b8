// OfficeClient against the generated gMock stubs: what it sends, the
// deadline it sets, and how gateway statuses come back.
#include "client/office_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "casebridge/v1/audit_mock.grpc.pb.h"
#include "casebridge/v1/office_mock.grpc.pb.h"
#include "grpc/health/v1/health_mock.grpc.pb.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::client {
namespace {

using ::casebridge::testing::StatusIs;
using ::testing::_;
using ::testing::DoAll;
using ::testing::Return;
using ::testing::SetArgPointee;

class OfficeClientTest : public ::testing::Test {
 protected:
  OfficeClientTest() {
    auto office = std::make_unique<v1::MockOfficeServiceStub>();
    office_ = office.get();
    client_ = std::make_unique<OfficeClient>(
        std::move(office), std::make_unique<v1::MockAuditServiceStub>(),
        std::make_unique<grpc::health::v1::MockHealthStub>(), absl::Seconds(7));
  }
  v1::MockOfficeServiceStub* office_;  // owned by client_
  std::unique_ptr<OfficeClient> client_;
};

TEST_F(OfficeClientTest, OpenCaseSendsDraftAndRequestIdWithADeadline) {
  v1::CaseReference draft;
  draft.set_summary("Handan");
  v1::OpenCaseRequest sent;
  std::chrono::system_clock::time_point deadline;
  v1::OpenCaseResponse reply;
  reply.mutable_case_reference()->set_exchange_id("PK-2026-000001");
  const auto before = std::chrono::system_clock::now();
  EXPECT_CALL(*office_, OpenCase(_, _, _))
      .WillOnce(DoAll(
          [&](grpc::ClientContext* context, const v1::OpenCaseRequest& r,
              auto) {
            sent = r;
            deadline = context->deadline();  // the context dies with the call
          },
          SetArgPointee<2>(reply), Return(grpc::Status::OK)));
  ASSERT_OK_AND_ASSIGN(auto opened, client_->OpenCase(draft, "retry-1"));
  EXPECT_EQ(opened.exchange_id(), "PK-2026-000001");
  EXPECT_EQ(sent.request_id(), "retry-1");
  EXPECT_EQ(sent.case_reference().summary(), "Handan");
  EXPECT_GE(deadline, before + std::chrono::seconds(6));
  EXPECT_LE(deadline,
            std::chrono::system_clock::now() + std::chrono::seconds(7));
}

TEST_F(OfficeClientTest, GatewayStatusComesBackWithCodeAndReason) {
  EXPECT_CALL(*office_, GetCase(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                    "case PK-2026-000009 not found")));
  EXPECT_THAT(
      client_->GetCase("PK-2026-000009"),
      StatusIs(absl::StatusCode::kNotFound, "case PK-2026-000009 not found"));
}

TEST_F(OfficeClientTest, UpdateCasePassesTheRequestThrough) {
  v1::UpdateCaseRequest request;
  request.set_expected_version(3);
  request.mutable_update_mask()->add_paths("status");
  v1::UpdateCaseRequest sent;
  EXPECT_CALL(*office_, UpdateCase(_, _, _))
      .WillOnce(
          DoAll([&](auto, const v1::UpdateCaseRequest& r, auto) { sent = r; },
                Return(grpc::Status(grpc::StatusCode::ABORTED, "stale"))));
  EXPECT_THAT(client_->UpdateCase(request),
              StatusIs(absl::StatusCode::kAborted, "stale"));
  EXPECT_EQ(sent.expected_version(), 3);
  EXPECT_EQ(sent.update_mask().paths(0), "status");
}

}  // namespace
}  // namespace casebridge::client
