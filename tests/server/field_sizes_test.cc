// Byte limits of every string and bytes field of office requests, and
// fields the gateway does not know, checked before the field rules
// (docs/api.md#field-sizes).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "casebridge/v1/audit.pb.h"
#include "casebridge/v1/office.pb.h"
#include "google/protobuf/unknown_field_set.h"
#include "server/validation.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::StatusIs;
using ::testing::HasSubstr;

TEST(FieldSizesTest, TextFieldsMayHoldFourBytesPerCharacterOfTheirLimit) {
  EXPECT_EQ(MaxFieldBytes("casebridge.v1.CaseReference.summary"), 16000u);
  EXPECT_EQ(MaxFieldBytes("casebridge.v1.CaseMessage.body"), 64000u);
  EXPECT_EQ(MaxFieldBytes("casebridge.v1.AcknowledgeRequest.note"), 4000u);
  EXPECT_EQ(MaxFieldBytes("casebridge.v1.GetDeliveryStatusRequest.message_id"),
            kDefaultMaxFieldBytes);
}

TEST(FieldSizesTest, SummaryOfLongestCharactersPassesOneByteMoreDoesNot) {
  v1::OpenCaseRequest request;
  // 4,000 four-byte characters: at the limit.
  std::string summary;
  for (int i = 0; i < 4000; ++i) summary += "\xF0\x9F\x98\x80";
  request.mutable_case_reference()->set_summary(summary);
  EXPECT_OK(CheckRequestFields(request));
  request.mutable_case_reference()->set_summary(summary + "x");
  EXPECT_THAT(CheckRequestFields(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "case_reference.summary: is longer than 16000 bytes"));
}

TEST(FieldSizesTest, NamesTheFieldPathInsideRepeatedMessages) {
  v1::OpenCaseRequest request;
  request.mutable_case_reference()->add_victims()->set_pseudonym("V1");
  request.mutable_case_reference()->add_victims()->set_remarks(
      std::string(4001, 'r'));
  EXPECT_THAT(
      CheckRequestFields(request),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "case_reference.victims[1].remarks: is longer than 4000 bytes"));
}

TEST(FieldSizesTest, FieldsWithoutAnOwnRuleGetTheDefault) {
  v1::GetDeliveryStatusRequest status;
  status.set_message_id(std::string(kDefaultMaxFieldBytes, 'm'));
  EXPECT_OK(CheckRequestFields(status));
  status.set_message_id(std::string(kDefaultMaxFieldBytes + 1, 'm'));
  EXPECT_THAT(CheckRequestFields(status),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("message_id: is longer than 256 bytes")));

  v1::ShareCaseRequest share;
  share.add_recipient_offices("spiffe://cn.casebridge/office/mps-liaison");
  share.add_recipient_offices(std::string(300, 'o'));
  EXPECT_THAT(CheckRequestFields(share),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("recipient_offices[1]: is longer than")));

  v1::UpdateCaseRequest update;
  update.mutable_update_mask()->add_paths(std::string(1000, 'p'));
  EXPECT_THAT(CheckRequestFields(update),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("update_mask.paths[0]: is longer than")));

  v1::GetEvidenceRequest evidence;
  evidence.set_envelope_id(std::string(257, 'e'));
  EXPECT_THAT(CheckRequestFields(evidence),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("envelope_id: is longer than 256 bytes")));
}

// Adds field number `number` to `message` as a field it does not know.
void AddUnknownField(google::protobuf::Message* message, int number) {
  message->GetReflection()->MutableUnknownFields(message)->AddLengthDelimited(
      number, "unknown");
}

TEST(FieldSizesTest, FieldsTheGatewayDoesNotKnowAreRefusedAtAnyDepth) {
  v1::OpenCaseRequest request;
  request.mutable_case_reference()->set_summary("A summary");
  request.mutable_case_reference()->add_victims()->set_pseudonym("V1");
  ASSERT_OK(CheckRequestFields(request));

  v1::OpenCaseRequest top = request;
  AddUnknownField(&top, 99);
  EXPECT_THAT(CheckRequestFields(top),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "request: carries field number 99, which this gateway "
                       "does not know (is the client newer than the "
                       "gateway?)"));
  v1::OpenCaseRequest nested = request;
  AddUnknownField(nested.mutable_case_reference(), 40);
  EXPECT_THAT(CheckRequestFields(nested),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("case_reference: carries field number 40")));
  v1::OpenCaseRequest deep = request;
  AddUnknownField(deep.mutable_case_reference()->mutable_victims(0), 7);
  EXPECT_THAT(
      CheckRequestFields(deep),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("case_reference.victims[0]: carries field number 7")));

  // Parsed from the wire as the gateway does.
  v1::OpenCaseRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(deep.SerializeAsString()));
  EXPECT_THAT(CheckRequestFields(parsed),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("case_reference.victims[0]")));
}

TEST(FieldSizesTest, MessageBodyAndNestedCaseReferenceAreChecked) {
  v1::SendMessageRequest request;
  request.mutable_message()->set_body(std::string(64001, 'b'));
  EXPECT_THAT(CheckRequestFields(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "message.body: is longer than 64000 bytes"));
  request.mutable_message()->set_body("fine");
  request.mutable_message()
      ->mutable_case_reference()
      ->add_last_known_locations()
      ->set_description(std::string(2001, 'd'));
  EXPECT_THAT(
      CheckRequestFields(request),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("message.case_reference.last_known_locations[0]"
                         ".description: is longer than 2000 bytes")));
}

}  // namespace
}  // namespace casebridge::server
