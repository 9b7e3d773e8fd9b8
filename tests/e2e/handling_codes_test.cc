// Handling codes enforced end to end across two gateways
// (docs/api.md#handling-codes): H2 forwarding only with the originator's
// grant, H1 and H3 notices delivered to every reader, and no message weaker
// than its case.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "casebridge/v1/audit.pb.h"
#include "client/office_client.h"
#include "core/crypto.h"
#include "core/handling_notice.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kFiaId[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kPkAuditor[] = "pk/auditors/pk-auditor";
constexpr char kMps[] = "cn/offices/mps-liaison";
constexpr char kMpsId[] = "spiffe://cn.casebridge/office/mps-liaison";
constexpr char kGuangzhou[] = "cn/offices/mps-guangzhou";
constexpr char kGuangzhouId[] = "spiffe://cn.casebridge/office/mps-guangzhou";
constexpr char kCnAuditor[] = "cn/auditors/cn-auditor";

class HandlingCodesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("handling-codes");
    const std::string pk_offices = R"([[offices]]
identity = "spiffe://pk.casebridge/office/fia-liaison-desk"
name = "FIA liaison desk"
role = "liaison_officer"

[[offices]]
identity = "spiffe://pk.casebridge/auditor/pk-auditor"
name = "PK auditor"
role = "auditor"
)";
    const GatewayPairConfigs configs =
        WriteGatewayPairConfigs(dir_, 1, [&](GatewayConfigOptions& o) {
          if (o.country == "PK") {
            o.offices = pk_offices;
            o.peer_offices =
                absl::StrCat(R"([")", kMpsId, R"(", ")", kGuangzhouId, R"("])");
          } else {
            o.offices = CnOfficesWithGuangzhou();
            o.peer_offices = absl::StrCat(R"([")", kFiaId, R"("])");
          }
        });
    ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(configs.pk));
    ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(configs.cn));
  }

  std::unique_ptr<client::OfficeClient> Pk(const std::string& stem) {
    return OfficeClientFor(stem, pk_->office_endpoint(), "PK");
  }
  std::unique_ptr<client::OfficeClient> Cn(const std::string& stem) {
    return OfficeClientFor(stem, cn_->office_endpoint(), "CN");
  }

  // Opens a case at PK under `code` and shares it with MPS liaison; returns
  // its exchange id once MPS sees it.
  std::string OpenAndShare(v1::HandlingCode code,
                           const std::string& restriction = "") {
    v1::CaseReference draft = ValidDraft();
    draft.set_handling_code(code);
    draft.set_handling_restriction(restriction);
    auto opened = Pk(kFia)->OpenCase(draft);
    EXPECT_OK(opened);
    if (!opened.ok()) return "";
    v1::ShareCaseRequest share;
    share.set_exchange_id(opened->exchange_id());
    share.add_recipient_offices(kMpsId);
    EXPECT_OK(Pk(kFia)->ShareCase(share));
    auto mps = Cn(kMps);
    EXPECT_TRUE(WaitUntil([&] {
      return mps->GetCase(opened->exchange_id()).ok();
    })) << pk_->Log()
        << cn_->Log();
    return opened->exchange_id();
  }

  // The desk applies `update` (version 1 to 2) to case `id` and shares the
  // new version with the MPS liaison; returns the share's message id once
  // CN holds it, and MPS sees version 2.
  std::string UpdateAndShareAgain(const std::string& id,
                                  v1::UpdateCaseRequest update) {
    update.mutable_case_reference()->set_exchange_id(id);
    update.set_expected_version(1);
    EXPECT_OK(Pk(kFia)->UpdateCase(update));
    v1::ShareCaseRequest share;
    share.set_exchange_id(id);
    share.add_recipient_offices(kMpsId);
    auto shared = Pk(kFia)->ShareCase(share);
    EXPECT_OK(shared);
    if (!shared.ok()) return "";
    EXPECT_TRUE(Delivered(shared->message_id())) << pk_->Log() << cn_->Log();
    auto at_mps = Cn(kMps)->GetCase(id);
    EXPECT_OK(at_mps);
    if (at_mps.ok()) {
      EXPECT_EQ(at_mps->version(), 2);
    }
    return shared->message_id();
  }

  // Waits until PK holds CN's receipt for `message_id`.
  bool Delivered(const std::string& message_id) {
    auto fia = Pk(kFia);
    return WaitUntil([&] {
      auto status = fia->GetDeliveryStatus(message_id);
      return status.ok() && status->state() == v1::DELIVERY_STATE_DELIVERED;
    });
  }

  // Message `id` as `office`'s inbox delivers it (nullopt if it does not
  // within 20 s).
  static std::optional<v1::CaseMessage> FromInbox(client::OfficeClient& office,
                                                  const std::string& id) {
    std::optional<v1::CaseMessage> found;
    EXPECT_OK(office.WatchInbox("", absl::Seconds(20),
                                [&](const v1::WatchInboxResponse& item) {
                                  if (item.message().message_id() != id)
                                    return true;
                                  found = item.message();
                                  return false;
                                }));
    return found;
  }

  // The evidence bundle of `id` asked of `office`, once both logs' entries
  // are cosigned; the bundle's envelope parsed into `envelope`.
  static absl::StatusOr<v1::EvidenceBundle> Evidence(
      client::OfficeClient& office, const std::string& id,
      v1::Envelope* envelope) {
    absl::StatusOr<v1::EvidenceBundle> bundle;
    WaitUntil([&] {
      bundle = office.GetEvidence(id);
      return bundle.status().code() != absl::StatusCode::kFailedPrecondition;
    });
    if (bundle.ok() &&
        !envelope->ParseFromString(bundle->envelope().envelope())) {
      return absl::DataLossError("the bundle's envelope does not parse");
    }
    return bundle;
  }

  // The originator permits passing case `id` on to Guangzhou, or withdraws
  // that permission; returns once CN holds the message.
  void GrantGuangzhou(const std::string& id,
                      const std::string& request_id = "") {
    v1::GrantDisseminationRequest grant;
    grant.set_request_id(request_id);
    grant.set_exchange_id(id);
    grant.add_offices(kGuangzhouId);
    ASSERT_OK_AND_ASSIGN(const v1::GrantDisseminationResponse granted,
                         Pk(kFia)->GrantDissemination(grant));
    ASSERT_TRUE(Delivered(granted.message_id())) << pk_->Log() << cn_->Log();
  }
  void WithdrawGuangzhou(const std::string& id) {
    v1::WithdrawDisseminationRequest withdraw;
    withdraw.set_exchange_id(id);
    withdraw.add_offices(kGuangzhouId);
    ASSERT_OK_AND_ASSIGN(const v1::WithdrawDisseminationResponse withdrawn,
                         Pk(kFia)->WithdrawDissemination(withdraw));
    ASSERT_TRUE(Delivered(withdrawn.message_id())) << pk_->Log() << cn_->Log();
  }

  absl::StatusOr<v1::ForwardCaseResponse> Forward(const std::string& id,
                                                  const std::string& to) {
    v1::ForwardCaseRequest request;
    request.set_exchange_id(id);
    request.set_office(to);
    return Cn(kMps)->ForwardCase(request);
  }

  std::vector<v1::AuditEntry> Entries(const std::string& auditor,
                                      const GatewayProcess& gateway,
                                      const std::string& country) {
    return ReadAuditEntries(
        *OfficeClientFor(auditor, gateway.office_endpoint(), country));
  }

  static bool HasEntry(const std::vector<v1::AuditEntry>& entries,
                       const std::string& actor, const std::string& action,
                       int status_code, const std::string& subject) {
    for (const v1::AuditEntry& e : entries) {
      if ((!actor.empty() && e.actor() != actor) || e.action() != action ||
          e.status_code() != status_code) {
        continue;
      }
      for (const std::string& s : e.subjects()) {
        if (s == subject) return true;
      }
    }
    return false;
  }

  std::string dir_;
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<GatewayProcess> cn_;
};

TEST_F(HandlingCodesTest, H2CaseIsForwardedOnlyAfterTheOriginatorGrants) {
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H2);
  ASSERT_FALSE(id.empty());

  // Not addressed by the originator, no grant: refused naming H2, nothing
  // stored, Guangzhou still does not know the case.
  EXPECT_THAT(Forward(id, kGuangzhouId),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("handling code H2")));
  auto guangzhou = Cn(kGuangzhou);
  EXPECT_THAT(guangzhou->GetCase(id),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(id)));
  EXPECT_TRUE(HasEntry(Entries(kCnAuditor, *cn_, "CN"), kMpsId, "case.forward",
                       grpc::StatusCode::PERMISSION_DENIED, id));

  // Only the originator's side may grant: MPS cannot grant on a PK case.
  v1::GrantDisseminationRequest self_grant;
  self_grant.set_exchange_id(id);
  self_grant.set_any_office(true);
  EXPECT_THAT(Cn(kMps)->GrantDissemination(self_grant),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("only its originator can permit")));

  // The owner grants Guangzhou; the grant crosses and is audited both sides.
  v1::GrantDisseminationRequest grant;
  grant.set_exchange_id(id);
  grant.add_offices(kGuangzhouId);
  ASSERT_OK_AND_ASSIGN(const v1::GrantDisseminationResponse granted,
                       Pk(kFia)->GrantDissemination(grant));
  ASSERT_TRUE(Delivered(granted.message_id())) << pk_->Log() << cn_->Log();
  EXPECT_TRUE(HasEntry(Entries(kPkAuditor, *pk_, "PK"), kFiaId, "case.grant", 0,
                       granted.message_id()));
  EXPECT_TRUE(HasEntry(Entries(kCnAuditor, *cn_, "CN"), "", "envelope.received",
                       0, granted.message_id()));

  // Now MPS may pass it on, and Guangzhou reads it with the H2 notice.
  ASSERT_OK_AND_ASSIGN(const v1::ForwardCaseResponse forwarded,
                       Forward(id, kGuangzhouId));
  EXPECT_EQ(forwarded.forwarded_messages(), 1);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference at_guangzhou,
                       guangzhou->GetCase(id));
  EXPECT_THAT(at_guangzhou.handling_notice(), HasSubstr("H2: no onward"));
  EXPECT_TRUE(HasEntry(Entries(kCnAuditor, *cn_, "CN"), kMpsId, "case.forward",
                       0, kGuangzhouId));
  // Forwarding again adds nothing.
  ASSERT_OK_AND_ASSIGN(const v1::ForwardCaseResponse again,
                       Forward(id, kGuangzhouId));
  EXPECT_EQ(again.forwarded_messages(), 0);
}

TEST_F(HandlingCodesTest, WithdrawnGrantRefusesForwardingUntilGrantedAgain) {
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H2);
  ASSERT_FALSE(id.empty());
  v1::GrantDisseminationRequest grant;
  grant.set_request_id("grant-1");
  grant.set_exchange_id(id);
  grant.set_any_office(true);
  ASSERT_OK_AND_ASSIGN(const v1::GrantDisseminationResponse granted,
                       Pk(kFia)->GrantDissemination(grant));
  ASSERT_TRUE(Delivered(granted.message_id())) << pk_->Log() << cn_->Log();

  // A withdrawal is no replay of the grant whose request id it reuses.
  v1::WithdrawDisseminationRequest reusing_grant_id;
  reusing_grant_id.set_request_id("grant-1");
  reusing_grant_id.set_exchange_id(id);
  reusing_grant_id.set_any_office(true);
  EXPECT_THAT(Pk(kFia)->WithdrawDissemination(reusing_grant_id),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr("request_id \"grant-1\"")));

  // Only the originator's side may withdraw.
  v1::WithdrawDisseminationRequest self_withdraw;
  self_withdraw.set_exchange_id(id);
  self_withdraw.set_any_office(true);
  EXPECT_THAT(Cn(kMps)->WithdrawDissemination(self_withdraw),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("only its originator can withdraw")));
  // Offices or any_office, exactly one.
  v1::WithdrawDisseminationRequest neither;
  neither.set_exchange_id(id);
  EXPECT_THAT(Pk(kFia)->WithdrawDissemination(neither),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("offices: name the counterpart offices")));

  // The owner withdraws every permission; idempotent by request id.
  v1::WithdrawDisseminationRequest withdraw;
  withdraw.set_request_id("withdraw-1");
  withdraw.set_exchange_id(id);
  withdraw.set_any_office(true);
  ASSERT_OK_AND_ASSIGN(const v1::WithdrawDisseminationResponse withdrawn,
                       Pk(kFia)->WithdrawDissemination(withdraw));
  ASSERT_OK_AND_ASSIGN(const v1::WithdrawDisseminationResponse replayed,
                       Pk(kFia)->WithdrawDissemination(withdraw));
  EXPECT_EQ(replayed.message_id(), withdrawn.message_id());
  v1::WithdrawDisseminationRequest reused = withdraw;
  reused.clear_any_office();
  reused.add_offices(kGuangzhouId);
  EXPECT_THAT(
      Pk(kFia)->WithdrawDissemination(reused),
      StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("request_id")));
  ASSERT_TRUE(Delivered(withdrawn.message_id())) << pk_->Log() << cn_->Log();
  EXPECT_TRUE(HasEntry(Entries(kPkAuditor, *pk_, "PK"), kFiaId,
                       "case.withdraw_grant", 0, withdrawn.message_id()));
  EXPECT_TRUE(HasEntry(Entries(kCnAuditor, *cn_, "CN"), "", "envelope.received",
                       0, withdrawn.message_id()));
  // It went in no inbox: MPS's inbox holds the case share alone.
  std::vector<v1::WatchInboxResponse> items;
  EXPECT_OK(Cn(kMps)->WatchInbox("", absl::Milliseconds(500),
                                 [&](const v1::WatchInboxResponse& item) {
                                   items.push_back(item);
                                   return true;
                                 }));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].message().kind(), v1::MESSAGE_KIND_CASE_SHARE);

  // Passing it on is refused again, naming H2, audited, nothing stored.
  EXPECT_THAT(Forward(id, kGuangzhouId),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("handling code H2")));
  EXPECT_TRUE(HasEntry(Entries(kCnAuditor, *cn_, "CN"), kMpsId, "case.forward",
                       grpc::StatusCode::PERMISSION_DENIED, id));
  EXPECT_THAT(Cn(kGuangzhou)->GetCase(id),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(id)));

  // A new grant gives the permission anew.
  grant.set_request_id("grant-2");
  grant.clear_any_office();
  grant.add_offices(kGuangzhouId);
  ASSERT_OK_AND_ASSIGN(const v1::GrantDisseminationResponse regranted,
                       Pk(kFia)->GrantDissemination(grant));
  ASSERT_TRUE(Delivered(regranted.message_id())) << pk_->Log() << cn_->Log();
  ASSERT_OK_AND_ASSIGN(const v1::ForwardCaseResponse forwarded,
                       Forward(id, kGuangzhouId));
  EXPECT_EQ(forwarded.forwarded_messages(), 1);
}

TEST_F(HandlingCodesTest, AForwardedCopyGetsNoNewerVersionOnceWithdrawn) {
  // An H2 case, passed on to Guangzhou with the originator's permission.
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H2);
  ASSERT_FALSE(id.empty());
  ASSERT_NO_FATAL_FAILURE(GrantGuangzhou(id));
  ASSERT_OK_AND_ASSIGN(const v1::ForwardCaseResponse first,
                       Forward(id, kGuangzhouId));
  EXPECT_EQ(first.forwarded_messages(), 1);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference given,
                       Cn(kGuangzhou)->GetCase(id));
  ASSERT_EQ(given.version(), 1);
  // The liaison's handling of the share is its own business: Guangzhou's
  // audit entries name no message it was not addressed.
  std::optional<v1::CaseMessage> share_in_inbox;
  ASSERT_OK(Cn(kMps)->WatchInbox("", absl::Seconds(20),
                                 [&](const v1::WatchInboxResponse& item) {
                                   share_in_inbox = item.message();
                                   return false;
                                 }));
  ASSERT_TRUE(share_in_inbox.has_value());
  ASSERT_OK(Cn(kMps)->Acknowledge(share_in_inbox->message_id(),
                                  v1::ACKNOWLEDGEMENT_KIND_READ, "seen"));
  ASSERT_TRUE(HasEntry(Entries(kCnAuditor, *cn_, "CN"), kMpsId,
                       "message.acknowledge", 0, share_in_inbox->message_id()));
  for (const v1::AuditEntry& e : ReadAuditEntries(*Cn(kGuangzhou))) {
    EXPECT_THAT(
        e.subjects(),
        ::testing::Not(::testing::Contains(share_in_inbox->message_id())))
        << e.action() << " by " << e.actor();
  }

  // The permission is withdrawn; then the desk learns more and shares the
  // new version with the MPS liaison alone.
  ASSERT_NO_FATAL_FAILURE(WithdrawGuangzhou(id));
  v1::UpdateCaseRequest update;
  update.mutable_case_reference()->set_summary(
      "Second address found: flat 501, building 3");
  update.mutable_update_mask()->add_paths("summary");
  ASSERT_FALSE(UpdateAndShareAgain(id, update).empty());

  // Guangzhou keeps what it was given, and nothing newer: its copy is
  // version 1, under the case's handling.
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference kept,
                       Cn(kGuangzhou)->GetCase(id));
  EXPECT_EQ(kept.version(), 1);
  EXPECT_EQ(kept.summary(), given.summary());
  EXPECT_EQ(kept.handling_code(), v1::HANDLING_CODE_H2);
  EXPECT_THAT(kept.handling_notice(), HasSubstr("H2"));
  v1::ListCasesRequest list;
  ASSERT_OK_AND_ASSIGN(v1::ListCasesResponse listed,
                       Cn(kGuangzhou)->ListCases(list));
  ASSERT_EQ(listed.cases_size(), 1);
  EXPECT_EQ(listed.cases(0).version(), 1);
  // Nor does a search tell it what the newer version says: the filters
  // test the version it was given, and neither a page nor its token
  // depends on the other. (A case of its own with the words, listed after
  // the held one, would show a short page with a token if they did.)
  v1::CaseReference decoy = ValidDraft("Decoy: flat 501 in the same block");
  decoy.set_handling_code(v1::HANDLING_CODE_H0);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference own,
                       Cn(kGuangzhou)->OpenCase(decoy));
  list.set_text("flat 501");
  list.set_page_size(1);
  ASSERT_OK_AND_ASSIGN(listed, Cn(kGuangzhou)->ListCases(list));
  ASSERT_EQ(listed.cases_size(), 1);
  EXPECT_EQ(listed.cases(0).exchange_id(), own.exchange_id());
  EXPECT_EQ(listed.next_page_token(), "");
  list.set_text(given.summary());
  ASSERT_OK_AND_ASSIGN(listed, Cn(kGuangzhou)->ListCases(list));
  ASSERT_EQ(listed.cases_size(), 1);
  EXPECT_EQ(listed.cases(0).exchange_id(), id);
  EXPECT_EQ(listed.cases(0).version(), 1);
  list.set_text("flat 501");
  list.set_page_size(10);
  ASSERT_OK_AND_ASSIGN(listed, Cn(kMps)->ListCases(list));
  EXPECT_EQ(listed.cases_size(), 2);
  // Nor does a change it may not make: it is refused for the case being
  // the peer's, before any version is compared.
  v1::UpdateCaseRequest change;
  change.mutable_case_reference()->set_exchange_id(id);
  change.mutable_case_reference()->set_summary("x");
  change.mutable_update_mask()->add_paths("summary");
  change.set_expected_version(1);
  EXPECT_THAT(Cn(kGuangzhou)->UpdateCase(change),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("was shared by the peer")));

  // Writing to the desk and being acknowledged is no sharing: it still
  // reads version 1.
  v1::SendMessageRequest note;
  note.mutable_message()->set_exchange_id(id);
  note.mutable_message()->set_kind(v1::MESSAGE_KIND_NOTE);
  note.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
  note.mutable_message()->set_body("Is there anything new on this case?");
  note.mutable_message()->set_recipient_office(kFiaId);
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse asked,
                       Cn(kGuangzhou)->SendMessage(note));
  auto fia = Pk(kFia);
  ASSERT_TRUE(FromInbox(*fia, asked.message_id()).has_value())
      << pk_->Log() << cn_->Log();
  ASSERT_OK_AND_ASSIGN(
      const std::string ack_id,
      fia->Acknowledge(asked.message_id(), v1::ACKNOWLEDGEMENT_KIND_READ, ""));
  auto guangzhou = Cn(kGuangzhou);
  ASSERT_TRUE(FromInbox(*guangzhou, ack_id).has_value())
      << pk_->Log() << cn_->Log();
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference after_ack,
                       guangzhou->GetCase(id));
  EXPECT_EQ(after_ack.version(), 1);

  // The copy it was forwarded is no addressing by the originator: passing
  // the case on to it again is refused, audited, and adds nothing.
  EXPECT_THAT(Forward(id, kGuangzhouId),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("handling code H2")));
  EXPECT_TRUE(HasEntry(Entries(kCnAuditor, *cn_, "CN"), kMpsId, "case.forward",
                       grpc::StatusCode::PERMISSION_DENIED, id));
  std::vector<v1::WatchInboxResponse> items;
  EXPECT_OK(Cn(kGuangzhou)
                ->WatchInbox("", absl::Milliseconds(500),
                             [&](const v1::WatchInboxResponse& item) {
                               if (item.message().kind() ==
                                   v1::MESSAGE_KIND_CASE_SHARE) {
                                 items.push_back(item);
                               }
                               return true;
                             }));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].message().case_reference().version(), 1);

  // A new permission lets the newer version through.
  ASSERT_NO_FATAL_FAILURE(GrantGuangzhou(id, "grant-again"));
  ASSERT_OK_AND_ASSIGN(const v1::ForwardCaseResponse again,
                       Forward(id, kGuangzhouId));
  EXPECT_EQ(again.forwarded_messages(), 1);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference now,
                       Cn(kGuangzhou)->GetCase(id));
  EXPECT_EQ(now.version(), 2);
}

TEST_F(HandlingCodesTest, AForwardedCopyPurgedByRetentionLeavesTheCaseKnown) {
  // Guangzhou holds an H2 case only through a copy forwarded under a
  // permission since withdrawn.
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H2);
  ASSERT_FALSE(id.empty());
  ASSERT_NO_FATAL_FAILURE(GrantGuangzhou(id));
  ASSERT_OK(Forward(id, kGuangzhouId));
  ASSERT_NO_FATAL_FAILURE(WithdrawGuangzhou(id));
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference given,
                       Cn(kGuangzhou)->GetCase(id));
  ASSERT_EQ(given.version(), 1);

  // CN keeps messages a day; two days pass while it is stopped, and the
  // purge runs as it starts.
  ASSERT_EQ(cn_->Stop(), 0) << cn_->Log();
  const std::string cn_config = dir_ + "/CN.toml";
  ASSERT_OK_AND_ASSIGN(const std::string config_text,
                       crypto::ReadFile(cn_config));
  WriteFile(cn_config,
            absl::StrCat(config_text, "\n[retention]\nmessage_days = 1\n"));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((dir_ + "/CN-data/gateway.db").c_str(), &db,
                            SQLITE_OPEN_READWRITE, nullptr),
            SQLITE_OK);
  constexpr int64_t kTwoDaysUs = int64_t{2} * 24 * 3600 * 1000000;
  EXPECT_EQ(sqlite3_exec(db,
                         absl::StrCat("UPDATE messages SET created_us = "
                                      "created_us - ",
                                      kTwoDaysUs)
                             .c_str(),
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config));

  // The copy it was given is gone: Guangzhou still knows the case, by its
  // ids, owner and handling, and reads nothing of any version.
  auto guangzhou = Cn(kGuangzhou);
  absl::StatusOr<v1::CaseReference> known;
  EXPECT_TRUE(WaitUntil([&] {
    known = guangzhou->GetCase(id);
    return known.ok() && known->version() == 0;
  })) << known.status()
      << cn_->Log();
  ASSERT_OK(known.status());
  EXPECT_EQ(known->exchange_id(), id);
  EXPECT_EQ(known->owner_office(), kFiaId);
  EXPECT_EQ(known->handling_code(), v1::HANDLING_CODE_H2);
  EXPECT_THAT(known->handling_notice(), HasSubstr("H2"));
  EXPECT_EQ(known->summary(), "");
  EXPECT_EQ(known->victims_size(), 0);
  EXPECT_EQ(known->last_known_locations_size(), 0);
  // The MPS liaison, which the originator addressed, reads the case as
  // held here.
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference at_mps, Cn(kMps)->GetCase(id));
  EXPECT_EQ(at_mps.version(), 1);
  EXPECT_EQ(at_mps.summary(), given.summary());
}

TEST_F(HandlingCodesTest, CliWithdrawsAGrantAndCopiesAlreadyForwardedStay) {
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H2);
  ASSERT_FALSE(id.empty());
  v1::GrantDisseminationRequest grant;
  grant.set_exchange_id(id);
  grant.add_offices(kGuangzhouId);
  ASSERT_OK_AND_ASSIGN(const v1::GrantDisseminationResponse granted,
                       Pk(kFia)->GrantDissemination(grant));
  ASSERT_TRUE(Delivered(granted.message_id())) << pk_->Log() << cn_->Log();
  ASSERT_OK(Forward(id, kGuangzhouId));

  const std::string fia = WriteFile(
      dir_ + "/fia.toml", ClientConfigToml(pk_->office_endpoint(), kFia));
  CommandResult r = RunCommand({CliBinary(), "--config", fia, "case", "grant",
                                id, "--to", kGuangzhouId, "--withdraw"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat(
                         "Withdrew the permission to pass case ", id,
                         " on from ", kGuangzhouId, " as message PK-M-")));
  const size_t at = r.out.find("PK-M-");
  const std::string message_id = r.out.substr(at, r.out.find(' ', at) - at);
  ASSERT_TRUE(Delivered(message_id)) << pk_->Log() << cn_->Log();

  // The copy Guangzhou already has stays where it is.
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference kept,
                       Cn(kGuangzhou)->GetCase(id));
  EXPECT_THAT(kept.handling_notice(), HasSubstr("H2"));
}

TEST_F(HandlingCodesTest, CliGrantsOnwardDisseminationToAnyOffice) {
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H2);
  ASSERT_FALSE(id.empty());
  const std::string fia = WriteFile(
      dir_ + "/fia.toml", ClientConfigToml(pk_->office_endpoint(), kFia));
  CommandResult usage =
      RunCommand({CliBinary(), "--config", fia, "case", "grant", id});
  EXPECT_EQ(usage.exit_code, 2) << usage.out << usage.err;
  CommandResult r = RunCommand(
      {CliBinary(), "--config", fia, "case", "grant", id, "--any-office"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(
      r.out, HasSubstr(absl::StrCat("Granted onward dissemination of case ", id,
                                    " to any office as message PK-M-")));
  const std::string message_id =
      r.out.substr(r.out.find("PK-M-"),
                   r.out.find(' ', r.out.find("PK-M-")) - r.out.find("PK-M-"));
  ASSERT_TRUE(Delivered(message_id)) << pk_->Log() << cn_->Log();
  ASSERT_OK(Forward(id, kGuangzhouId));
  EXPECT_OK(Cn(kGuangzhou)->GetCase(id));
}

TEST_F(HandlingCodesTest, H0CaseIsForwardedWithoutGrant) {
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H0);
  ASSERT_FALSE(id.empty());
  auto guangzhou = Cn(kGuangzhou);
  EXPECT_THAT(guangzhou->GetCase(id),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(id)));
  ASSERT_OK_AND_ASSIGN(const v1::ForwardCaseResponse forwarded,
                       Forward(id, kGuangzhouId));
  EXPECT_EQ(forwarded.forwarded_messages(), 1);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference c, guangzhou->GetCase(id));
  EXPECT_THAT(c.handling_notice(), HasSubstr("H0"));
  // The forwarded case reference is in Guangzhou's inbox.
  std::vector<v1::WatchInboxResponse> items;
  EXPECT_OK(guangzhou->WatchInbox("", absl::Seconds(10),
                                  [&](const v1::WatchInboxResponse& item) {
                                    items.push_back(item);
                                    return false;
                                  }));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].message().kind(), v1::MESSAGE_KIND_CASE_SHARE);
  EXPECT_EQ(items[0].message().exchange_id(), id);
}

TEST_F(HandlingCodesTest,
       AnOlderVersionMarkedH2StaysBehindWhenTheCaseIsNoLonger) {
  // Version 1 crosses under H2 with the victims' details; the desk takes
  // them out, lowers the case to H0 and shares version 2. Passing the case
  // on without the originator's permission gives Guangzhou version 2 only.
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H2);
  ASSERT_FALSE(id.empty());
  v1::UpdateCaseRequest update;
  update.mutable_case_reference()->set_summary(
      "Sensitive details withdrawn; coordination only");
  update.mutable_case_reference()->set_handling_code(v1::HANDLING_CODE_H0);
  update.mutable_update_mask()->add_paths("summary");
  update.mutable_update_mask()->add_paths("handling_code");
  const std::string shared = UpdateAndShareAgain(id, update);
  ASSERT_FALSE(shared.empty());
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference at_mps, Cn(kMps)->GetCase(id));
  ASSERT_EQ(at_mps.handling_code(), v1::HANDLING_CODE_H0);

  ASSERT_OK_AND_ASSIGN(const v1::ForwardCaseResponse forwarded,
                       Forward(id, kGuangzhouId));
  EXPECT_EQ(forwarded.forwarded_messages(), 1);
  auto guangzhou = Cn(kGuangzhou);
  std::vector<v1::CaseMessage> given;
  EXPECT_OK(guangzhou->WatchInbox("", absl::Seconds(2),
                                  [&](const v1::WatchInboxResponse& item) {
                                    given.push_back(item.message());
                                    return true;
                                  }));
  ASSERT_EQ(given.size(), 1u);
  EXPECT_EQ(given[0].message_id(), shared);
  EXPECT_EQ(given[0].case_reference().version(), 2);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference at_guangzhou,
                       guangzhou->GetCase(id));
  EXPECT_EQ(at_guangzhou.version(), 2);

  // With the originator's permission, version 1 follows.
  ASSERT_NO_FATAL_FAILURE(GrantGuangzhou(id));
  ASSERT_OK_AND_ASSIGN(const v1::ForwardCaseResponse granted,
                       Forward(id, kGuangzhouId));
  EXPECT_EQ(granted.forwarded_messages(), 1);
}

TEST_F(HandlingCodesTest, H1MarkingReachesTheReaderAndTheCli) {
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H1);
  ASSERT_FALSE(id.empty());
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference c, Cn(kMps)->GetCase(id));
  EXPECT_THAT(c.handling_notice(),
              HasSubstr("H1: not for use as evidence in judicial proceedings"));
  ASSERT_OK_AND_ASSIGN(const v1::ListCasesResponse listed,
                       Cn(kMps)->ListCases(v1::ListCasesRequest()));
  ASSERT_EQ(listed.cases_size(), 1);
  EXPECT_EQ(listed.cases(0).handling_notice(), c.handling_notice());

  const std::string mps = WriteFile(
      dir_ + "/mps.toml", ClientConfigToml(cn_->office_endpoint(), kMps, "CN"));
  CommandResult get =
      RunCommand({CliBinary(), "--config", mps, "case", "get", id});
  ASSERT_EQ(get.exit_code, 0) << get.out << get.err;
  EXPECT_EQ(get.out.rfind("*** Handling H1: not for use as evidence", 0), 0u)
      << get.out;
  CommandResult list =
      RunCommand({CliBinary(), "--config", mps, "case", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.out << list.err;
  EXPECT_THAT(list.out,
              HasSubstr(absl::StrCat("*** ", id, ": H1: not for use")));
  CommandResult json =
      RunCommand({CliBinary(), "--config", mps, "--json", "case", "get", id});
  ASSERT_EQ(json.exit_code, 0) << json.out << json.err;
  EXPECT_THAT(json.out, HasSubstr("\"handling_notice\":\"H1: not for use"));
}

TEST_F(HandlingCodesTest, CliSendsAMessageUnderItsOwnHandlingAndEvaluation) {
  // An H0 case; the desk marks one message of it H3 with its own
  // evaluation, from the CLI.
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H0);
  ASSERT_FALSE(id.empty());
  const std::string fia = WriteFile(
      dir_ + "/fia.toml", ClientConfigToml(pk_->office_endpoint(), kFia));
  CommandResult sent = RunCommand(
      {CliBinary(), "--config", fia, "--json", "message", "send", id, "--kind",
       "note", "--body", "The informant's name is in the attached file", "--to",
       kMpsId, "--handling", "H3", "--restriction",
       "not to be shown to the family", "--evaluation", "A1"});
  ASSERT_EQ(sent.exit_code, 0) << sent.out << sent.err;
  const std::string message_id =
      nlohmann::json::parse(sent.out).at("message_id").get<std::string>();
  auto mps = Cn(kMps);
  const std::optional<v1::CaseMessage> got = FromInbox(*mps, message_id);
  ASSERT_TRUE(got.has_value()) << pk_->Log() << cn_->Log();
  EXPECT_EQ(got->handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(got->handling_restriction(), "not to be shown to the family");
  EXPECT_EQ(got->evaluation().source_reliability(), v1::SOURCE_RELIABILITY_A);
  EXPECT_EQ(got->evaluation().information_accuracy(),
            v1::INFORMATION_ACCURACY_1);
}

TEST_F(HandlingCodesTest, H3RestrictionTravelsWithTheCaseAndEveryMessage) {
  const std::string restriction = "Do not contact the family in Gujranwala";
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H3, restriction);
  ASSERT_FALSE(id.empty());
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference c, Cn(kMps)->GetCase(id));
  EXPECT_EQ(c.handling_notice(),
            absl::StrCat("H3: restricted by the originator: ", restriction));

  // A message with no code of its own inherits the case's, text included.
  v1::SendMessageRequest send;
  v1::CaseMessage* m = send.mutable_message();
  m->set_exchange_id(id);
  m->set_kind(v1::MESSAGE_KIND_NOTE);
  m->set_priority(v1::PRIORITY_ROUTINE);
  m->set_recipient_office(kMpsId);
  m->set_body("Victim V1 moved to a shelter.");
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse sent,
                       Pk(kFia)->SendMessage(send));
  std::vector<v1::WatchInboxResponse> items;
  ASSERT_OK(Cn(kMps)->WatchInbox(
      "", absl::Seconds(20), [&](const v1::WatchInboxResponse& item) {
        items.push_back(item);
        return item.message().message_id() != sent.message_id();
      }));
  ASSERT_EQ(items.size(), 2u);  // the case share, then the note
  for (const v1::WatchInboxResponse& item : items) {
    EXPECT_EQ(item.message().handling_code(), v1::HANDLING_CODE_H3);
    EXPECT_EQ(item.message().handling_restriction(), restriction);
    EXPECT_THAT(item.message().handling_notice(), HasSubstr(restriction));
  }
  EXPECT_EQ(items[1].message().evaluation().source_reliability(),
            c.evaluation().source_reliability());
}

TEST_F(HandlingCodesTest, AcknowledgementFollowsACaseRaisedSinceItsMessage) {
  // FIA writes under H0; the case is then raised to H2 and shared again.
  // MPS's acknowledgement of the earlier message goes under H2: held to the
  // case as MPS holds it now, not to the message's old H0.
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H0);
  ASSERT_FALSE(id.empty());
  v1::SendMessageRequest send;
  send.set_request_id("note-before-raise");
  v1::CaseMessage* m = send.mutable_message();
  m->set_exchange_id(id);
  m->set_kind(v1::MESSAGE_KIND_NOTE);
  m->set_priority(v1::PRIORITY_ROUTINE);
  m->set_body("Shelter confirmed the transfer.");
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse sent,
                       Pk(kFia)->SendMessage(send));
  ASSERT_TRUE(Delivered(sent.message_id())) << pk_->Log() << cn_->Log();

  v1::UpdateCaseRequest raise;
  raise.mutable_case_reference()->set_exchange_id(id);
  raise.mutable_case_reference()->set_handling_code(v1::HANDLING_CODE_H2);
  raise.mutable_update_mask()->add_paths("handling_code");
  raise.set_expected_version(1);
  ASSERT_OK(Pk(kFia)->UpdateCase(raise).status());
  v1::ShareCaseRequest share;
  share.set_exchange_id(id);
  share.add_recipient_offices(kMpsId);
  ASSERT_OK(Pk(kFia)->ShareCase(share).status());
  auto mps = Cn(kMps);
  ASSERT_TRUE(WaitUntil([&] {
    auto c = mps->GetCase(id);
    return c.ok() && c->handling_code() == v1::HANDLING_CODE_H2;
  })) << cn_->Log();

  ASSERT_OK_AND_ASSIGN(
      const std::string ack_id,
      mps->Acknowledge(sent.message_id(), v1::ACKNOWLEDGEMENT_KIND_READ, ""));
  absl::StatusOr<v1::DeliveryStatus> status;
  EXPECT_TRUE(WaitUntil([&] {
    status = mps->GetDeliveryStatus(ack_id);
    return status.ok() && (status->state() == v1::DELIVERY_STATE_DELIVERED ||
                           status->state() == v1::DELIVERY_STATE_FAILED);
  })) << cn_->Log();
  ASSERT_OK(status.status());
  EXPECT_EQ(status->state(), v1::DELIVERY_STATE_DELIVERED)
      << status->DebugString() << pk_->Log();
  // MPS signed it under H2: PK would hold an H0 acknowledgement to its H2
  // case as well, so the envelope itself is looked at.
  v1::Envelope signed_ack;
  ASSERT_OK_AND_ASSIGN(const v1::EvidenceBundle bundle,
                       Evidence(*Cn(kMps), ack_id, &signed_ack));
  EXPECT_EQ(signed_ack.message().handling_code(), v1::HANDLING_CODE_H2);
  // PK holds it as signed: the bundle states no other handling.
  EXPECT_EQ(bundle.held_handling_code(), v1::HANDLING_CODE_UNSPECIFIED);
}

TEST_F(HandlingCodesTest, MessagesOnACaseRaisedOnOneSideOnlyAreKeptUnderBoth) {
  // FIA's H2 case is shared; FIA then raises it to H3 without sharing it
  // again, so MPS still holds it under H2 and writes under H2.
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H2);
  ASSERT_FALSE(id.empty());
  const std::string restriction = "Not to be shared with the press";
  v1::UpdateCaseRequest raise;
  raise.mutable_case_reference()->set_exchange_id(id);
  raise.mutable_case_reference()->set_handling_code(v1::HANDLING_CODE_H3);
  raise.mutable_case_reference()->set_handling_restriction(restriction);
  raise.mutable_update_mask()->add_paths("handling_code");
  raise.mutable_update_mask()->add_paths("handling_restriction");
  raise.set_expected_version(1);
  ASSERT_OK(Pk(kFia)->UpdateCase(raise).status());

  v1::SendMessageRequest send;
  v1::CaseMessage* m = send.mutable_message();
  m->set_exchange_id(id);
  m->set_kind(v1::MESSAGE_KIND_RESCUE_UPDATE);
  m->set_rescue_stage(v1::RESCUE_STAGE_IN_SHELTER);
  m->set_priority(v1::PRIORITY_URGENT);
  m->set_body("V1 is in the shelter in Guangzhou.");
  auto mps = Cn(kMps);
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse sent,
                       mps->SendMessage(send));
  absl::StatusOr<v1::DeliveryStatus> status;
  ASSERT_TRUE(WaitUntil([&] {
    status = mps->GetDeliveryStatus(sent.message_id());
    return status.ok() && (status->state() == v1::DELIVERY_STATE_DELIVERED ||
                           status->state() == v1::DELIVERY_STATE_FAILED);
  })) << cn_->Log();
  // Not refused: the update reaches the desk, under both restrictions.
  ASSERT_EQ(status->state(), v1::DELIVERY_STATE_DELIVERED)
      << status->DebugString() << pk_->Log();
  const std::string both = absl::StrCat(
      restriction, kAndAsSent,
      "H2: no onward dissemination without the originator's permission");
  const std::optional<v1::CaseMessage> update =
      FromInbox(*Pk(kFia), sent.message_id());
  ASSERT_TRUE(update.has_value());
  EXPECT_EQ(update->body(), "V1 is in the shelter in Guangzhou.");
  EXPECT_EQ(update->handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(update->handling_restriction(), both);
  EXPECT_EQ(update->handling_notice(),
            absl::StrCat("H3: restricted by the originator: ", both));
  // The evidence of it, from either side, proves the envelope as MPS signed
  // it (H2) and carries PK's held handling beside it.
  auto expect_held_in_evidence = [&](client::OfficeClient& office) {
    v1::Envelope envelope;
    ASSERT_OK_AND_ASSIGN(const v1::EvidenceBundle bundle,
                         Evidence(office, sent.message_id(), &envelope));
    EXPECT_EQ(envelope.message().handling_code(), v1::HANDLING_CODE_H2);
    EXPECT_EQ(bundle.held_handling_code(), v1::HANDLING_CODE_H3);
    EXPECT_EQ(bundle.held_handling_restriction(), both);
  };
  expect_held_in_evidence(*Pk(kFia));
  expect_held_in_evidence(*mps);
  // The desk's CLI writes the bundle and shows both markings; verified
  // offline, the file still shows both, the held one as unsigned.
  const std::string fia = WriteFile(
      dir_ + "/fia.toml", ClientConfigToml(pk_->office_endpoint(), kFia));
  const std::string file = dir_ + "/update.evidence";
  CommandResult got =
      RunCommand({CliBinary(), "--config", fia, "audit", "evidence", "get",
                  sent.message_id(), "--out", file});
  ASSERT_EQ(got.exit_code, 0) << got.out << got.err;
  const std::string held_line = absl::StrCat(
      "*** Held by the receiving gateway under H3: restricted by the "
      "originator: ",
      both, " (its copy of the case differs; not signed) ***\n");
  EXPECT_THAT(got.out,
              ::testing::StartsWith(absl::StrCat(
                  "*** Handling H2: no onward dissemination without the "
                  "originator's permission ***\n",
                  held_line)));
  CommandResult verified =
      RunCommand({CliBinary(), "audit", "evidence", "verify", file, "--keys",
                  Pki("public-keys.toml"), "--json"});
  ASSERT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_THAT(verified.out, HasSubstr("\"ok\":true"));
  EXPECT_THAT(verified.out,
              HasSubstr("\"handling_code\":\"HANDLING_CODE_H2\""));
  EXPECT_THAT(verified.out,
              HasSubstr("\"held_handling_code\":\"HANDLING_CODE_H3\""));
  EXPECT_THAT(verified.out, HasSubstr("\"held_handling_signed\":false"));
  EXPECT_THAT(verified.out, HasSubstr("held handling: pk states"));

  // FIA's acknowledgement goes back under both as well, and MPS, holding
  // the case under H2, takes it as it is.
  ASSERT_OK_AND_ASSIGN(
      const std::string ack_id,
      Pk(kFia)->Acknowledge(sent.message_id(), v1::ACKNOWLEDGEMENT_KIND_ACTED,
                            "Family informed."));
  ASSERT_TRUE(Delivered(ack_id)) << pk_->Log() << cn_->Log();
  const std::optional<v1::CaseMessage> ack = FromInbox(*mps, ack_id);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->body(), "Acted on: Family informed.");
  EXPECT_EQ(ack->handling_code(), v1::HANDLING_CODE_H3);
  EXPECT_EQ(ack->handling_restriction(), both);

  // Nothing was refused: PK received the update, CN the share and the
  // acknowledgement.
  for (const auto& [auditor, gateway, country, expected] :
       {std::tuple{kPkAuditor, pk_.get(), "PK", 1},
        std::tuple{kCnAuditor, cn_.get(), "CN", 2}}) {
    int received = 0;
    for (const v1::AuditEntry& e : Entries(auditor, *gateway, country)) {
      if (e.action() != "envelope.received") continue;
      ++received;
      EXPECT_EQ(e.status_code(), 0) << country << ": " << e.status_message();
    }
    EXPECT_EQ(received, expected) << country;
  }
}

TEST_F(HandlingCodesTest, MessageMayNotWeakenItsCasesCode) {
  const std::string id = OpenAndShare(v1::HANDLING_CODE_H2);
  ASSERT_FALSE(id.empty());
  v1::SendMessageRequest send;
  v1::CaseMessage* m = send.mutable_message();
  m->set_exchange_id(id);
  m->set_kind(v1::MESSAGE_KIND_NOTE);
  m->set_priority(v1::PRIORITY_ROUTINE);
  m->set_body("Please pass this to the Guangzhou bureau.");
  m->set_handling_code(v1::HANDLING_CODE_H0);
  EXPECT_THAT(Pk(kFia)->SendMessage(send),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("handling code H2")));
  EXPECT_TRUE(HasEntry(Entries(kPkAuditor, *pk_, "PK"), kFiaId, "message.send",
                       grpc::StatusCode::PERMISSION_DENIED, id));
  // Nothing was queued: the only outgoing message is the case share, and the
  // sender's audit entries show one send.
  int sends = 0;
  for (const v1::AuditEntry& e : Entries(kPkAuditor, *pk_, "PK")) {
    if (e.action() == "message.send" && e.status_code() == 0) ++sends;
  }
  EXPECT_EQ(sends, 0);
  // The same code, or none, goes through.
  m->set_handling_code(v1::HANDLING_CODE_H2);
  EXPECT_OK(Pk(kFia)->SendMessage(send));
  m->clear_handling_code();
  EXPECT_OK(Pk(kFia)->SendMessage(send));
}

}  // namespace
}  // namespace casebridge::testing
