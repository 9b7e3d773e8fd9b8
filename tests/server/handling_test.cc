#include "server/handling.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "core/envelope.h"
#include "core/grpc_status.h"
#include "core/handling_notice.h"
#include "server/inbound.h"
#include "server/validation.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

v1::CaseReference Case(v1::HandlingCode code,
                       const std::string& restriction = "") {
  v1::CaseReference c;
  c.set_exchange_id("PK-2026-000042");
  c.set_handling_code(code);
  c.set_handling_restriction(restriction);
  c.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
  c.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_2);
  return c;
}

v1::CaseMessage Note() {
  v1::CaseMessage m;
  m.set_exchange_id("PK-2026-000042");
  m.set_kind(v1::MESSAGE_KIND_NOTE);
  m.set_priority(v1::PRIORITY_ROUTINE);
  m.set_body("note");
  return m;
}

TEST(HandlingTest, MessageWithoutCodeInheritsTheCasesCodeAndEvaluation) {
  v1::CaseMessage m = Note();
  ASSERT_OK(ApplyCaseHandling(Case(v1::HANDLING_CODE_H2), &m));
  EXPECT_EQ(m.handling_code(), v1::HANDLING_CODE_H2);
  EXPECT_EQ(m.evaluation().source_reliability(), v1::SOURCE_RELIABILITY_B);
  EXPECT_EQ(m.evaluation().information_accuracy(), v1::INFORMATION_ACCURACY_2);
  EXPECT_OK(CheckMessageHandling(m, "message"));
}

TEST(HandlingTest, MessageKeepsItsOwnEvaluation) {
  v1::CaseMessage m = Note();
  m.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_A);
  m.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_1);
  ASSERT_OK(ApplyCaseHandling(Case(v1::HANDLING_CODE_H0), &m));
  EXPECT_EQ(m.evaluation().source_reliability(), v1::SOURCE_RELIABILITY_A);
}

TEST(HandlingTest, H3CaseCarriesItsRestrictionToTheMessage) {
  v1::CaseMessage m = Note();
  ASSERT_OK(ApplyCaseHandling(Case(v1::HANDLING_CODE_H3, "no press"), &m));
  EXPECT_EQ(m.handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(m.handling_restriction(), "no press");
  EXPECT_OK(CheckMessageHandling(m, "message"));

  v1::CaseMessage other = Note();
  other.set_handling_restriction("anything goes");
  EXPECT_THAT(ApplyCaseHandling(Case(v1::HANDLING_CODE_H3, "no press"), &other),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("message.handling_restriction")));
  EXPECT_EQ(other.handling_code(), v1::HANDLING_CODE_UNSPECIFIED);
}

TEST(HandlingTest, MessageMayTightenAnH0Case) {
  for (v1::HandlingCode code :
       {v1::HANDLING_CODE_H1, v1::HANDLING_CODE_H2, v1::HANDLING_CODE_H3}) {
    v1::CaseMessage m = Note();
    m.set_handling_code(code);
    if (code == v1::HANDLING_CODE_H3) m.set_handling_restriction("no press");
    EXPECT_OK(ApplyCaseHandling(Case(v1::HANDLING_CODE_H0), &m));
    EXPECT_EQ(m.handling_code(), code);
    EXPECT_OK(CheckMessageHandling(m, "message"));
  }
}

TEST(HandlingTest, MessageMayNotDropItsCasesRestriction) {
  struct Refused {
    v1::HandlingCode case_code;
    v1::HandlingCode message_code;
    const char* named;
  };
  for (const Refused& r : std::vector<Refused>{
           {v1::HANDLING_CODE_H2, v1::HANDLING_CODE_H0, "handling code H2"},
           {v1::HANDLING_CODE_H2, v1::HANDLING_CODE_H1, "handling code H2"},
           {v1::HANDLING_CODE_H1, v1::HANDLING_CODE_H0, "handling code H1"},
           {v1::HANDLING_CODE_H3, v1::HANDLING_CODE_H2, "handling code H3"},
           {v1::HANDLING_CODE_H1, v1::HANDLING_CODE_H3, "handling code H1"},
       }) {
    v1::CaseMessage m = Note();
    m.set_handling_code(r.message_code);
    const v1::CaseMessage before = m;
    EXPECT_THAT(
        ApplyCaseHandling(
            Case(r.case_code,
                 r.case_code == v1::HANDLING_CODE_H3 ? "no press" : ""),
            &m),
        StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr(r.named)));
    EXPECT_EQ(m.SerializeAsString(), before.SerializeAsString());
  }
}

TEST(HandlingTest, CrossingMessageNeedsCodeEvaluationAndH3Text) {
  v1::CaseMessage m = Note();
  EXPECT_THAT(CheckMessageHandling(m, "message"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("message.handling_code: is required")));
  m.set_handling_code(v1::HANDLING_CODE_H1);
  EXPECT_THAT(CheckMessageHandling(m, "message"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("message.evaluation: is required")));
  m.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_X);
  m.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_4);
  EXPECT_OK(CheckMessageHandling(m, "message"));
  m.set_handling_code(v1::HANDLING_CODE_H3);
  EXPECT_THAT(CheckMessageHandling(m, "message"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("message.handling_restriction: is required")));
}

TEST(HandlingTest, NoticeNamesTheCodeAndCarriesH3Text) {
  EXPECT_THAT(HandlingNotice(v1::HANDLING_CODE_H1, ""),
              HasSubstr("H1: not for use as evidence in judicial proceedings"));
  EXPECT_THAT(HandlingNotice(v1::HANDLING_CODE_H2, ""),
              HasSubstr("H2: no onward dissemination"));
  EXPECT_EQ(HandlingNotice(v1::HANDLING_CODE_H3, "no press"),
            "H3: restricted by the originator: no press");
  EXPECT_EQ(HandlingNotice(v1::HANDLING_CODE_UNSPECIFIED, ""), "");

  v1::CaseMessage share = Note();
  share.set_kind(v1::MESSAGE_KIND_CASE_SHARE);
  share.set_handling_code(v1::HANDLING_CODE_H1);
  *share.mutable_case_reference() = Case(v1::HANDLING_CODE_H1);
  MarkHandling(&share);
  EXPECT_THAT(share.handling_notice(), HasSubstr("H1:"));
  EXPECT_THAT(share.case_reference().handling_notice(), HasSubstr("H1:"));
}

TEST(HandlingTest, GrantMessagesNameOfficesOrAnyOffice) {
  v1::CaseMessage m = Note();
  m.set_kind(v1::MESSAGE_KIND_DISSEMINATION_GRANT);
  EXPECT_THAT(ValidateMessageContent(m, "message"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("message.dissemination_grant: is required")));
  m.mutable_dissemination_grant();
  EXPECT_THAT(ValidateMessageContent(m, "message"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("exactly one of offices and any_office")));
  m.mutable_dissemination_grant()->set_any_office(true);
  EXPECT_OK(ValidateMessageContent(m, "message"));
  m.mutable_dissemination_grant()->add_offices(
      "spiffe://cn.casebridge/office/mps-guangzhou");
  EXPECT_THAT(ValidateMessageContent(m, "message"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("exactly one of offices and any_office")));

  v1::CaseMessage note = Note();
  note.mutable_dissemination_grant()->set_any_office(true);
  EXPECT_THAT(ValidateMessageContent(note, "message"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is only allowed with DISSEMINATION_GRANT")));
}

TEST(HandlingTest, WithdrawalMessagesNameOfficesOrAnyOffice) {
  v1::CaseMessage m = Note();
  m.set_kind(v1::MESSAGE_KIND_DISSEMINATION_WITHDRAWAL);
  EXPECT_THAT(
      ValidateMessageContent(m, "message"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("message.dissemination_grant: is required with "
                         "DISSEMINATION_GRANT and DISSEMINATION_WITHDRAWAL")));
  m.mutable_dissemination_grant();
  EXPECT_THAT(ValidateMessageContent(m, "message"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("exactly one of offices and any_office")));
  m.mutable_dissemination_grant()->add_offices(
      "spiffe://cn.casebridge/office/mps-guangzhou");
  EXPECT_OK(ValidateMessageContent(m, "message"));
}

// A message from the peer with `code` (and `restriction` under H3).
v1::CaseMessage Received(v1::HandlingCode code,
                         const std::string& restriction = "") {
  v1::CaseMessage m = Note();
  m.set_handling_code(code);
  m.set_handling_restriction(restriction);
  *m.mutable_evaluation() = Case(code).evaluation();
  return m;
}

TEST(HandlingTest, ReceiverHoldsAnH0MessageToTheCasesCode) {
  // The peer's copy of the case may be older than ours (or a peer may
  // weaken a message): it is kept, under the case's code.
  for (v1::HandlingCode code : {v1::HANDLING_CODE_H1, v1::HANDLING_CODE_H2}) {
    v1::CaseMessage m = Received(v1::HANDLING_CODE_H0);
    EXPECT_TRUE(HoldToHeldCase(Case(code), &m));
    EXPECT_EQ(m.handling_code(), code);
    EXPECT_EQ(m.handling_restriction(), "");
  }
  v1::CaseMessage m = Received(v1::HANDLING_CODE_H0);
  EXPECT_TRUE(HoldToHeldCase(Case(v1::HANDLING_CODE_H3, "no press"), &m));
  EXPECT_EQ(m.handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(m.handling_restriction(), "no press");
  // The rest of the message is as sent.
  EXPECT_EQ(m.body(), "note");
  EXPECT_EQ(m.kind(), v1::MESSAGE_KIND_NOTE);
}

TEST(HandlingTest, ReceiverLeavesAMessageUnderTheCasesCodeAsSent) {
  // The case's own code, or anything on an H0 case.
  for (v1::HandlingCode code :
       {v1::HANDLING_CODE_H0, v1::HANDLING_CODE_H1, v1::HANDLING_CODE_H2}) {
    for (v1::HandlingCode held :
         {code, v1::HANDLING_CODE_H0, v1::HANDLING_CODE_UNSPECIFIED}) {
      v1::CaseMessage m = Received(code);
      EXPECT_FALSE(HoldToHeldCase(Case(held), &m))
          << HandlingCodeName(code) << " on " << HandlingCodeName(held);
      EXPECT_EQ(m.handling_code(), code);
    }
  }
  for (v1::HandlingCode held : {v1::HANDLING_CODE_H0, v1::HANDLING_CODE_H3}) {
    v1::CaseMessage m = Received(v1::HANDLING_CODE_H3, "no press");
    EXPECT_FALSE(HoldToHeldCase(
        Case(held, held == v1::HANDLING_CODE_H3 ? "no press" : ""), &m));
    EXPECT_EQ(m.handling_restriction(), "no press");
  }
  // A case share carries the case itself, which its originator may have
  // relaxed since the copy held here.
  v1::CaseMessage share = Received(v1::HANDLING_CODE_H0);
  share.set_kind(v1::MESSAGE_KIND_CASE_SHARE);
  EXPECT_FALSE(HoldToHeldCase(Case(v1::HANDLING_CODE_H2), &share));
  EXPECT_EQ(share.handling_code(), v1::HANDLING_CODE_H0);
}

TEST(HandlingTest, ReceiverStatesBothRestrictionsWhenNeitherCoversTheOther) {
  // Our case raised from H2 to H3 and not shared again: the peer's messages
  // still carry H2. Both apply.
  v1::CaseMessage m = Received(v1::HANDLING_CODE_H2);
  EXPECT_TRUE(HoldToHeldCase(Case(v1::HANDLING_CODE_H3, "no press"), &m));
  EXPECT_EQ(m.handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(m.handling_restriction(),
            "no press; and as sent: H2: no onward dissemination without the "
            "originator's permission");
  EXPECT_OK(CheckMessageHandling(m, "message"));

  // H1 and H2 restrict different things: neither stands for the other.
  m = Received(v1::HANDLING_CODE_H2);
  EXPECT_TRUE(HoldToHeldCase(Case(v1::HANDLING_CODE_H1), &m));
  EXPECT_EQ(m.handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(m.handling_restriction(),
            "H1: not for use as evidence in judicial proceedings without the "
            "originator's permission; and as sent: H2: no onward "
            "dissemination without the originator's permission");

  // An H3 message on an H1 case: its text does not say H1's.
  m = Received(v1::HANDLING_CODE_H3, "no press");
  EXPECT_TRUE(HoldToHeldCase(Case(v1::HANDLING_CODE_H1), &m));
  EXPECT_EQ(m.handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(m.handling_restriction(),
            "H1: not for use as evidence in judicial proceedings without the "
            "originator's permission; and as sent: no press");

  // Two H3 texts: the case's restriction was changed on one side only.
  m = Received(v1::HANDLING_CODE_H3, "may be shared with Interpol");
  EXPECT_TRUE(HoldToHeldCase(Case(v1::HANDLING_CODE_H3, "no press"), &m));
  EXPECT_EQ(m.handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(m.handling_restriction(),
            "no press; and as sent: may be shared with Interpol");
}

TEST(HandlingTest, ATextStatingBothIsHeldAgainWithoutRepeatingItsParts) {
  // Held once on arrival, then held again to the same case (an
  // acknowledgement of it): nothing to add.
  v1::CaseMessage m = Received(v1::HANDLING_CODE_H2);
  ASSERT_TRUE(HoldToHeldCase(Case(v1::HANDLING_CODE_H3, "no press"), &m));
  const std::string both = m.handling_restriction();
  EXPECT_FALSE(HoldToCaseHandling(v1::HANDLING_CODE_H3, "no press", &m));
  EXPECT_FALSE(HoldToCaseHandling(v1::HANDLING_CODE_H2, "", &m));
  EXPECT_EQ(m.handling_restriction(), both);
  // The case changed again: only what is new is added, once.
  EXPECT_TRUE(HoldToCaseHandling(v1::HANDLING_CODE_H1, "", &m));
  EXPECT_EQ(m.handling_restriction(),
            "H1: not for use as evidence in judicial proceedings without the "
            "originator's permission; and as sent: no press; and as sent: H2: "
            "no onward dissemination without the originator's permission");
  // An H0 case asks nothing more.
  EXPECT_FALSE(HoldToCaseHandling(v1::HANDLING_CODE_H0, "", &m));
}

TEST(HandlingTest, OtherDenialsOfAnEnvelopeAreNotPermanent) {
  EXPECT_FALSE(Inbound::IsPermanent(absl::PermissionDeniedError(
      "message.sender_office: \"x\" is not among the peer offices")));
}

TEST(HandlingTest, PermanenceIsMarkedWhereTheCheckIsMadeNotReadFromTheWording) {
  // A refusal worded like a permanent one but not marked (a full disk, say)
  // keeps the envelope coming.
  EXPECT_FALSE(Inbound::IsPermanent(
      absl::ResourceExhaustedError("envelope: no room left on the disk")));
  EXPECT_FALSE(Inbound::IsPermanent(
      absl::UnauthenticatedError("signature: key k1 is not trusted yet")));
  // Marking keeps the code and the message.
  const absl::Status marked = exchange::Permanently(
      absl::UnauthenticatedError("signature: does not verify for key k1"));
  EXPECT_TRUE(Inbound::IsPermanent(marked));
  EXPECT_EQ(marked.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(marked.message(), "signature: does not verify for key k1");
  // Malformed bytes never change, marked or not.
  EXPECT_TRUE(Inbound::IsPermanent(absl::InvalidArgumentError("x")));
  // A reused id is final where the store says so; the database's own
  // constraint errors (ALREADY_EXISTS too) are not.
  EXPECT_FALSE(Inbound::IsPermanent(WithLogOnlyDetail(absl::AlreadyExistsError(
      "executing \"INSERT INTO inbox(office, message_id) VALUES(?, ?)\": "
      "UNIQUE constraint failed (sqlite 2067)"))));
}

TEST(HandlingTest, RestrictionTextOnlyWithH3) {
  v1::CaseMessage m = Note();
  m.set_handling_code(v1::HANDLING_CODE_H1);
  m.set_handling_restriction("no press");
  EXPECT_THAT(ValidateMessageContent(m, "message"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("message.handling_restriction: is only "
                                 "allowed with handling code H3")));
}

}  // namespace
}  // namespace casebridge::server
