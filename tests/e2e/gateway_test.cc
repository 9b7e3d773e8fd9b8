// End-to-end tests of one gateway process over real mutual TLS: who gets in,
// what is refused, what is audited, what survives a restart.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "casebridge/v1/audit.grpc.pb.h"
#include "casebridge/v1/peer.grpc.pb.h"
#include "client/office_client.h"
#include "core/config.h"
#include "core/note.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/sqlite_case_store.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kEmbassy[] = "pk/offices/embassy-beijing";
constexpr char kAuditor[] = "pk/auditors/pk-auditor";
constexpr char kFiaId[] = "spiffe://pk.casebridge/office/fia-liaison-desk";

class GatewayTest : public ::testing::Test {
 protected:
  void SetUp() override { StartGateway(GatewayConfigOptions()); }

  void StartGateway(GatewayConfigOptions options) {
    dir_ = NewTempDir("gateway");
    options.data_dir = dir_ + "/data";
    config_path_ = WriteFile(dir_ + "/pk.toml", GatewayConfigToml(options));
    ASSERT_OK_AND_ASSIGN(gateway_, GatewayProcess::Start(config_path_));
  }

  std::unique_ptr<client::OfficeClient> Office(const std::string& stem) {
    return OfficeClientFor(stem, gateway_->office_endpoint());
  }

  // Every audit entry, read by the auditor.
  std::vector<v1::AuditEntry> AuditEntries() {
    auto auditor = Office(kAuditor);
    std::vector<v1::AuditEntry> all = ReadAuditEntries(*auditor);
    // Left out: the gateway's record of its keys, made at its first start
    // (and again after a key change).
    std::erase_if(all, [](const v1::AuditEntry& e) {
      return e.action() == "signing.keys" || e.action() == "peer.keys_trusted";
    });
    return all;
  }

  int CaseCount() {
    v1::ListCasesRequest request;
    request.set_page_size(500);
    // The auditor sees every case and no personal data (so counting adds
    // no audit entry of a personal-data read).
    auto page = Office(kAuditor)->ListCases(request);
    EXPECT_OK(page);
    return page.ok() ? page->cases_size() : -1;
  }

  std::string dir_;
  std::string config_path_;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(GatewayTest, ConfiguredOfficeIsKnownByItsUriSan) {
  ASSERT_OK_AND_ASSIGN(auto who, Office(kFia)->WhoAmI());
  EXPECT_EQ(who.identity(), "spiffe://pk.casebridge/office/fia-liaison-desk");
  EXPECT_EQ(who.display_name(), "FIA liaison desk");
  EXPECT_EQ(who.role(), v1::ROLE_LIAISON_OFFICER);
  EXPECT_EQ(who.country(), v1::COUNTRY_PK);
  EXPECT_EQ(who.gateway_identity(), "spiffe://pk.casebridge/gateway");
  // The recipients its messages may name: the peer.offices of the config.
  EXPECT_THAT(
      who.peer_offices(),
      ::testing::ElementsAre("spiffe://cn.casebridge/office/mps-liaison"));
}

TEST_F(GatewayTest, HealthIsServingOnBothPorts) {
  ASSERT_OK_AND_ASSIGN(auto office, Office(kFia)->Health());
  EXPECT_EQ(office, grpc::health::v1::HealthCheckResponse::SERVING);
  ASSERT_OK_AND_ASSIGN(auto service,
                       Office(kFia)->Health("casebridge.v1.OfficeService"));
  EXPECT_EQ(service, grpc::health::v1::HealthCheckResponse::SERVING);
  auto peer = grpc::health::v1::Health::NewStub(
      ChannelFor("cn/gateway", gateway_->peer_endpoint(), "PK"));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("casebridge.v1.PeerService");
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(peer->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

class BadCertificateTest : public GatewayTest,
                           public ::testing::WithParamInterface<const char*> {};

TEST_P(BadCertificateTest, IsRefusedAtTheHandshakeAndNothingIsStored) {
  const size_t audit_before = AuditEntries().size();
  auto intruder = Office(GetParam());
  ASSERT_NE(intruder, nullptr);
  EXPECT_THAT(intruder->OpenCase(ValidDraft()),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(intruder->WhoAmI(),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_EQ(CaseCount(), 0);
  EXPECT_EQ(AuditEntries().size(), audit_before);
}

INSTANTIATE_TEST_SUITE_P(Certificates, BadCertificateTest,
                         ::testing::Values("bad/expired", "bad/not-yet-valid",
                                           "bad/unknown-ca", "bad/self-signed",
                                           "bad/revoked", "bad/cn-office"),
                         [](const auto& param_info) {
                           std::string name =
                               std::string(param_info.param).substr(4);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST_F(GatewayTest, UnconfiguredIdentityIsDeniedAndAudited) {
  auto unlisted = Office("bad/unconfigured");
  EXPECT_THAT(
      unlisted->OpenCase(ValidDraft()),
      StatusIs(absl::StatusCode::kPermissionDenied,
               HasSubstr("spiffe://pk.casebridge/office/unlisted-office")));
  EXPECT_EQ(CaseCount(), 0);
  const auto entries = AuditEntries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].actor(),
            "spiffe://pk.casebridge/office/unlisted-office");
  EXPECT_EQ(entries[0].action(), "case.open");
  EXPECT_EQ(entries[0].status_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(GatewayTest, OwnGatewayCertificateIsNotAnOffice) {
  EXPECT_THAT(Office("pk/gateway")->WhoAmI(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("not in this gateway's office table")));
}

TEST_F(GatewayTest, PeerGatewayCertificateCannotUseTheOfficePort) {
  EXPECT_THAT(Office("cn/gateway")->WhoAmI(),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
}

TEST_F(GatewayTest, OfficeCertificateCannotUseThePeerPort) {
  auto stub = v1::PeerService::NewStub(
      ChannelFor(kFia, gateway_->peer_endpoint(), "PK"));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::AddCheckpointResponse response;
  const grpc::Status status =
      stub->AddCheckpoint(&context, v1::AddCheckpointRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message();
}

TEST_F(GatewayTest, PeerPortAdmitsOnlyThePinnedPeerGateway) {
  auto call = [&](const std::string& stem) {
    return CallPeerPort(stem, gateway_->peer_endpoint());
  };
  // The CN gateway passes TLS and identity and reaches the witness, which
  // refuses an empty checkpoint.
  const grpc::Status peer = call("cn/gateway");
  EXPECT_EQ(peer.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(peer.error_message(), HasSubstr("checkpoint"));
  // A CN office has a certificate of the trusted CN CA, but is not the peer.
  const grpc::Status office = call("cn/offices/mps-liaison");
  EXPECT_EQ(office.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(office.error_message(),
              HasSubstr("not the configured peer gateway"));
  const auto entries = AuditEntries();
  ASSERT_FALSE(entries.empty());
  EXPECT_EQ(entries.back().actor(),
            "spiffe://cn.casebridge/office/mps-liaison");
  EXPECT_EQ(entries.back().action(), "peer.add_checkpoint");
}

TEST_F(GatewayTest, SuccessAndRefusalBothLeaveAuditEntries) {
  auto fia = Office(kFia);
  ASSERT_OK_AND_ASSIGN(auto opened, fia->OpenCase(ValidDraft()));
  v1::CaseReference bad = ValidDraft();
  bad.clear_summary();
  EXPECT_THAT(fia->OpenCase(bad),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith("case_reference.summary: ")));
  EXPECT_EQ(CaseCount(), 1);

  const auto entries = AuditEntries();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].action(), "case.open");
  EXPECT_EQ(entries[0].status_code(), 0);
  EXPECT_THAT(entries[0].subjects(),
              ::testing::ElementsAre(opened.exchange_id()));
  EXPECT_EQ(entries[0].payload_hash().size(), 32u);
  EXPECT_EQ(entries[1].action(), "case.open");
  EXPECT_EQ(entries[1].status_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(entries[1].status_message(), HasSubstr("case_reference.summary"));
}

TEST_F(GatewayTest, OfficersSeeOnlyTheirOwnAuditEntries) {
  ASSERT_OK(Office(kFia)->OpenCase(ValidDraft()).status());
  ASSERT_OK(Office(kEmbassy)->OpenCase(ValidDraft("Walk-in report")).status());
  v1::CaseReference bad = ValidDraft();
  bad.clear_summary();
  ASSERT_FALSE(Office(kEmbassy)->OpenCase(bad).ok());
  ASSERT_OK(Office(kFia)->OpenCase(ValidDraft("Second report")).status());
  ASSERT_EQ(AuditEntries().size(), 4u);

  // Paged one at a time: skipped entries never stall the paging.
  std::vector<uint64_t> seen;
  uint64_t start = 0;
  for (int page = 0; page < 10; ++page) {
    ASSERT_OK_AND_ASSIGN(auto got, Office(kFia)->GetAuditEntries(start, 1));
    for (const auto& e : got.entries()) {
      EXPECT_EQ(e.actor(), "spiffe://pk.casebridge/office/fia-liaison-desk");
      seen.push_back(e.index());
    }
    if (got.next_start() == start) break;
    start = got.next_start();
  }
  // Entries 0 and 1 are the gateway's record of its keys.
  EXPECT_EQ(seen, (std::vector<uint64_t>{2, 5}));
  ASSERT_OK_AND_ASSIGN(auto embassy, Office(kEmbassy)->GetAuditEntries(0, 100));
  ASSERT_EQ(embassy.entries_size(), 2);
  EXPECT_EQ(embassy.entries(1).status_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(embassy.next_start(), 6u);
}

TEST_F(GatewayTest, ProofsAreServedUpToTheNewestCheckpoint) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK(
        Office(kFia)->OpenCase(ValidDraft(absl::StrCat("case ", i))).status());
  }
  auto audit = v1::AuditService::NewStub(
      ChannelFor(kAuditor, gateway_->office_endpoint(), "PK"));
  auto call = [&](auto method, const auto& request, auto* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    return (audit.get()->*method)(&context, request, response);
  };
  // The checkpointer signs the entries within about a second. (Asking
  // before the first checkpoint is a refusal, audited: the log grows.)
  uint64_t size = 0;
  ASSERT_TRUE(WaitUntil([&] {
    v1::GetCheckpointResponse response;
    if (!call(&v1::AuditService::Stub::GetCheckpoint,
              v1::GetCheckpointRequest(), &response)
             .ok()) {
      return false;
    }
    auto parsed = note::Parse(response.checkpoint());
    if (!parsed.ok()) return false;
    auto body = note::ParseCheckpoint(parsed->text);
    if (!body.ok() || body->origin != "pk.casebridge/audit") return false;
    size = body->size;
    return size >= 5;
  }));

  v1::GetInclusionProofRequest inclusion;
  v1::GetInclusionProofResponse proof;
  inclusion.set_index(2);
  inclusion.set_tree_size(size);
  ASSERT_TRUE(
      call(&v1::AuditService::Stub::GetInclusionProof, inclusion, &proof).ok());
  EXPECT_EQ(proof.index(), 2u);
  EXPECT_EQ(proof.tree_size(), size);
  EXPECT_FALSE(proof.hashes().empty());
  inclusion.set_tree_size(size + 1000);  // beyond the newest checkpoint
  grpc::Status refused =
      call(&v1::AuditService::Stub::GetInclusionProof, inclusion, &proof);
  EXPECT_EQ(refused.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("tree_size"));
  inclusion.set_index(size);
  inclusion.set_tree_size(size);
  refused = call(&v1::AuditService::Stub::GetInclusionProof, inclusion, &proof);
  EXPECT_EQ(refused.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("index"));

  v1::GetConsistencyProofRequest consistency;
  v1::GetConsistencyProofResponse hashes;
  consistency.set_first_size(3);
  consistency.set_second_size(size);
  ASSERT_TRUE(
      call(&v1::AuditService::Stub::GetConsistencyProof, consistency, &hashes)
          .ok());
  EXPECT_FALSE(hashes.hashes().empty());
  consistency.set_first_size(0);
  refused =
      call(&v1::AuditService::Stub::GetConsistencyProof, consistency, &hashes);
  EXPECT_EQ(refused.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("first_size"));
}

TEST_F(GatewayTest, ForbiddenUpdateIsDeniedAuditedAndChangesNothing) {
  ASSERT_OK_AND_ASSIGN(auto opened, Office(kFia)->OpenCase(ValidDraft()));
  v1::UpdateCaseRequest request;
  request.mutable_case_reference()->set_exchange_id(opened.exchange_id());
  request.mutable_case_reference()->set_status(v1::CASE_STATUS_CLOSED);
  request.mutable_update_mask()->add_paths("status");
  request.set_expected_version(1);
  EXPECT_THAT(
      Office(kEmbassy)->UpdateCase(request),
      StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("owned by")));
  EXPECT_THAT(Office(kAuditor)->UpdateCase(request),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("role auditor may not call UpdateCase")));
  ASSERT_OK_AND_ASSIGN(auto after, Office(kFia)->GetCase(opened.exchange_id()));
  EXPECT_EQ(after.version(), 1);
  EXPECT_EQ(after.status(), v1::CASE_STATUS_OPEN);
  const auto entries = AuditEntries();
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[1].status_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(entries[2].status_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The owner's read of the case, personal data included, is on record.
  EXPECT_EQ(entries[3].action(), "case.get.personal_data");
  EXPECT_THAT(entries[3].subjects(),
              ::testing::ElementsAre(opened.exchange_id()));
}

TEST_F(GatewayTest, AReadyFileThatCannotBeRemovedLeavesTheStopClean) {
  // Replaced by a folder with something in it, which remove() refuses.
  const std::string ready = gateway_->ready_path();
  ASSERT_TRUE(std::filesystem::remove(ready));
  std::filesystem::create_directories(ready + "/held");
  EXPECT_EQ(gateway_->Stop(), 0) << gateway_->Log();
  EXPECT_THAT(gateway_->Log(), HasSubstr("\"gateway.ready_file_kept\""));
  std::filesystem::remove_all(ready);
}

TEST_F(GatewayTest, AnUpdatesAnswerWithPersonalDataIsOnRecordBesideTheUpdate) {
  ASSERT_OK_AND_ASSIGN(auto opened, Office(kFia)->OpenCase(ValidDraft()));
  v1::UpdateCaseRequest request;
  request.mutable_case_reference()->set_exchange_id(opened.exchange_id());
  request.mutable_case_reference()->set_summary("Victim moved to Handan.");
  request.mutable_update_mask()->add_paths("summary");
  request.set_expected_version(1);
  ASSERT_OK_AND_ASSIGN(auto updated, Office(kFia)->UpdateCase(request));
  EXPECT_EQ(updated.version(), 2);
  ASSERT_FALSE(updated.last_known_locations().empty());
  // Written in the update's own commit (CaseStoreTest.
  // AnUpdateAndTheReleaseOfItsAnswerCommitTogether): open, update, release.
  const auto entries = AuditEntries();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[1].action(), "case.update");
  EXPECT_EQ(entries[2].action(), "case.update.personal_data");
  EXPECT_EQ(entries[2].actor(), kFiaId);
  EXPECT_THAT(entries[2].subjects(),
              ::testing::ElementsAre(opened.exchange_id()));
}

TEST_F(GatewayTest, TwoOfficesCannotSilentlyOverwriteEachOther) {
  ASSERT_OK_AND_ASSIGN(auto opened, Office(kFia)->OpenCase(ValidDraft()));
  v1::UpdateCaseRequest first;
  first.mutable_case_reference()->set_exchange_id(opened.exchange_id());
  first.mutable_case_reference()->set_summary("first writer");
  first.mutable_update_mask()->add_paths("summary");
  first.set_expected_version(1);
  ASSERT_OK(Office(kFia)->UpdateCase(first));
  v1::UpdateCaseRequest second = first;
  second.mutable_case_reference()->set_summary("second writer, stale read");
  EXPECT_THAT(Office(kFia)->UpdateCase(second),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("version 2")));
  ASSERT_OK_AND_ASSIGN(auto now, Office(kFia)->GetCase(opened.exchange_id()));
  EXPECT_EQ(now.summary(), "first writer");
  EXPECT_EQ(now.version(), 2);
}

TEST_F(GatewayTest, UnknownCaseIsNotFound) {
  EXPECT_THAT(
      Office(kFia)->GetCase(PkExchangeId(999999)),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr(PkExchangeId(999999))));
  EXPECT_THAT(Office(kFia)->GetCase("not-an-id"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith("exchange_id: ")));
}

TEST_F(GatewayTest, UrduAndChineseTextRoundTripsByteForByte) {
  const std::string urdu = "خاندان کے مطابق اسے زبردستی روکا گیا ہے۔";
  const std::string chinese =
      "河北邯郸警方接报：一名巴基斯坦籍女子被限制人身自由。";
  v1::CaseReference draft = ValidDraft(urdu + "\n" + chinese);
  draft.set_local_reference("冀公刑〔2026〕118号");
  draft.mutable_victims(0)->set_remarks("عمر 19 سال، پنجابی");
  draft.mutable_last_known_locations(0)->set_description("邯郸市丛台区");
  ASSERT_OK_AND_ASSIGN(auto opened, Office(kFia)->OpenCase(draft));
  ASSERT_OK_AND_ASSIGN(auto read,
                       Office(kEmbassy)->GetCase(opened.exchange_id()));
  EXPECT_EQ(read.summary(), urdu + "\n" + chinese);
  EXPECT_EQ(read.local_reference(), "冀公刑〔2026〕118号");
  EXPECT_EQ(read.victims(0).remarks(), "عمر 19 سال، پنجابی");
  EXPECT_EQ(read.last_known_locations(0).description(), "邯郸市丛台区");
  v1::ListCasesRequest search;
  search.set_text("巴基斯坦");
  ASSERT_OK_AND_ASSIGN(auto found, Office(kFia)->ListCases(search));
  ASSERT_EQ(found.cases_size(), 1);
  EXPECT_EQ(found.cases(0).exchange_id(), opened.exchange_id());
}

// Sends OpenCase as raw bytes, bypassing the generated serializer.
grpc::Status RawOpenCase(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& bytes) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/casebridge.v1.OfficeService/OpenCase",
                 grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  auto future = done.get_future();
  if (future.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "no answer");
  }
  return future.get();
}

TEST_F(GatewayTest, InvalidUtf8IsRefusedAndNothingIsStored) {
  v1::OpenCaseRequest request;
  *request.mutable_case_reference() = ValidDraft("PLACEHOLDER-SUMMARY");
  std::string bytes = request.SerializeAsString();
  const size_t at = bytes.find("PLACEHOLDER-SUMMARY");
  ASSERT_NE(at, std::string::npos);
  bytes[at] = '\xC0';  // an overlong lead byte: never valid UTF-8
  bytes[at + 1] = '\xAF';
  const grpc::Status status =
      RawOpenCase(ChannelFor(kFia, gateway_->office_endpoint(), "PK"), bytes);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "case_reference.summary: is not valid UTF-8");
  EXPECT_EQ(CaseCount(), 0);
  const auto entries = AuditEntries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].action(), "case.open");
  EXPECT_EQ(entries[0].status_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

class SmallLimitGatewayTest : public GatewayTest {
 protected:
  void SetUp() override {
    GatewayConfigOptions options;
    options.max_message_bytes = 64 << 10;
    StartGateway(options);
  }
};

TEST_F(SmallLimitGatewayTest, OversizedRequestIsRefusedAndNothingIsStored) {
  v1::CaseReference draft = ValidDraft();
  draft.clear_victims();
  for (int i = 0; i < 50; ++i) {
    v1::VictimReference* v = draft.add_victims();
    v->set_pseudonym("V" + std::to_string(i));
    std::string remarks;
    for (int k = 0; k < 1000; ++k) remarks += "字";  // 3 bytes each
    v->set_remarks(remarks);
  }
  EXPECT_THAT(Office(kFia)->OpenCase(draft),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::_));
  EXPECT_EQ(CaseCount(), 0);
}

TEST_F(GatewayTest, EveryCaseWhosePersonalDataAPageReleasesIsOnRecord) {
  // 70 cases with victims' remarks listed at once: an audit entry names 64
  // ids at most, so the release takes two, and every id is in one of them.
  auto fia = Office(kFia);
  std::set<std::string> opened;
  for (int i = 0; i < 70; ++i) {
    ASSERT_OK_AND_ASSIGN(const v1::CaseReference c,
                         fia->OpenCase(ValidDraft()));
    opened.insert(c.exchange_id());
  }
  v1::ListCasesRequest request;
  request.set_page_size(100);
  ASSERT_OK_AND_ASSIGN(const v1::ListCasesResponse page,
                       fia->ListCases(request));
  ASSERT_EQ(page.cases_size(), 70);
  EXPECT_FALSE(page.personal_data_withheld());
  std::set<std::string> recorded;
  int entries = 0;
  for (const v1::AuditEntry& e : ReadAuditEntries(*Office(kAuditor))) {
    if (e.action() != "case.list.personal_data") continue;
    ++entries;
    EXPECT_EQ(e.actor(), kFiaId);
    EXPECT_LE(e.subjects_size(), 64);
    recorded.insert(e.subjects().begin(), e.subjects().end());
  }
  EXPECT_EQ(entries, 2);
  EXPECT_EQ(recorded, opened);
}

TEST_F(SmallLimitGatewayTest, ListPagesEndBeforeTheResponseLimit) {
  // Eight cases of about 12 KB each: 50 of them would not fit in one
  // 64 KiB response, and the listing would fail for everyone.
  auto fia = Office(kFia);
  std::string summary;
  for (int k = 0; k < 4000; ++k) summary += "字";  // 3 bytes each
  std::set<std::string> opened;
  for (int i = 0; i < 8; ++i) {
    ASSERT_OK_AND_ASSIGN(const v1::CaseReference c,
                         fia->OpenCase(ValidDraft(summary)));
    opened.insert(c.exchange_id());
  }
  for (const char* who : {kFia, kAuditor}) {
    auto office = Office(who);
    v1::ListCasesRequest request;
    std::set<std::string> listed;
    int pages = 0;
    do {
      ASSERT_OK_AND_ASSIGN(const v1::ListCasesResponse page,
                           office->ListCases(request));
      ++pages;
      ASSERT_GE(page.cases_size(), 1) << who;
      EXPECT_LE(page.ByteSizeLong(), size_t{64 << 10}) << who;
      for (const v1::CaseReference& c : page.cases()) {
        EXPECT_TRUE(listed.insert(c.exchange_id()).second)
            << c.exchange_id() << " listed twice for " << who;
      }
      request.set_page_token(page.next_page_token());
    } while (!request.page_token().empty() && pages < 20);
    EXPECT_EQ(listed, opened) << who;
    EXPECT_GE(pages, 2) << who;
  }
}

TEST_F(GatewayTest, RestartKeepsAllData) {
  auto fia = Office(kFia);
  std::vector<v1::CaseReference> opened;
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK_AND_ASSIGN(
        auto c, fia->OpenCase(ValidDraft("case " + std::to_string(i))));
    opened.push_back(c);
  }
  v1::UpdateCaseRequest update;
  update.mutable_case_reference()->set_exchange_id(opened[1].exchange_id());
  update.mutable_case_reference()->set_status(v1::CASE_STATUS_VICTIM_LOCATED);
  update.mutable_update_mask()->add_paths("status");
  update.set_expected_version(1);
  ASSERT_OK_AND_ASSIGN(opened[1], fia->UpdateCase(update));
  const auto audit_before = AuditEntries();
  fia.reset();

  ASSERT_EQ(gateway_->Stop(), 0) << gateway_->Log();
  ASSERT_OK_AND_ASSIGN(gateway_, GatewayProcess::Start(config_path_));

  fia = Office(kFia);
  for (const auto& c : opened) {
    ASSERT_OK_AND_ASSIGN(auto read, fia->GetCase(c.exchange_id()));
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(read, c))
        << read.DebugString() << " vs " << c.DebugString();
  }
  ASSERT_OK_AND_ASSIGN(auto next, fia->OpenCase(ValidDraft("after restart")));
  EXPECT_EQ(next.exchange_id(), PkExchangeId(4));
  // Three reads of personal data and one new case since.
  const auto audit_after = AuditEntries();
  ASSERT_EQ(audit_after.size(), audit_before.size() + 4);
  EXPECT_EQ(audit_after[audit_before.size()].action(),
            "case.get.personal_data");
  EXPECT_EQ(audit_after.back().action(), "case.open");
  for (size_t i = 0; i < audit_before.size(); ++i) {
    EXPECT_EQ(audit_after[i].encoded(), audit_before[i].encoded())
        << "entry " << i;
  }
}

TEST_F(GatewayTest, OfflineVerifierFindsAnEditedAuditRow) {
  auto fia = Office(kFia);
  for (int i = 0; i < 4; ++i) ASSERT_OK(fia->OpenCase(ValidDraft()));
  fia.reset();
  ASSERT_EQ(gateway_->Stop(), 0) << gateway_->Log();
  const std::string data = dir_ + "/data";

  CommandResult clean =
      RunCommand({CliBinary(), "audit", "verify", "--data-dir", data, "--keys",
                  Pki("public-keys.toml"), "--allow-unwitnessed"});
  EXPECT_EQ(clean.exit_code, 0) << clean.err;
  // The gateway's two records of its keys, then the four cases.
  EXPECT_THAT(clean.out, HasSubstr("OK, 6 entries"));

  // An insider changes the actor of entry 4 (the third case.open) in place.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(server::GatewayStore::DatabasePath(data).c_str(), &db),
            SQLITE_OK);
  char* error = nullptr;
  ASSERT_EQ(sqlite3_exec(db,
                         "UPDATE audit_log SET entry = replace(entry, "
                         "CAST('fia-liaison-desk' AS BLOB), "
                         "CAST('embassy-beijing!' AS BLOB)) WHERE idx = 4",
                         nullptr, nullptr, &error),
            SQLITE_OK)
      << error;
  ASSERT_EQ(sqlite3_changes(db), 1);
  sqlite3_close(db);

  CommandResult damaged =
      RunCommand({CliBinary(), "audit", "verify", "--data-dir", data, "--keys",
                  Pki("public-keys.toml"), "--allow-unwitnessed"});
  EXPECT_EQ(damaged.exit_code, 3);
  EXPECT_THAT(damaged.out, HasSubstr("DAMAGED at entry 4"));
}

TEST_F(GatewayTest, SecondGatewayOnTheSameDataDirRefusesToStart) {
  GatewayConfigOptions options;
  options.data_dir = dir_ + "/data";
  const std::string second =
      WriteFile(dir_ + "/second.toml", GatewayConfigToml(options));
  CommandResult r = RunCommand({GatewayBinary(), "--config", second});
  // 1, not 2: it may pass (the first one stopping), so it is restarted.
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("in use by another running gateway"));
  EXPECT_OK(Office(kFia)->WhoAmI());  // the first one is unharmed
}

TEST_F(GatewayTest, SecondGatewayOnATakenPortRefusesToStart) {
  GatewayConfigOptions options;
  options.data_dir = NewTempDir("second-data");
  options.office_address = gateway_->office_endpoint();
  const std::string second =
      WriteFile(dir_ + "/second.toml", GatewayConfigToml(options));
  CommandResult r = RunCommand({GatewayBinary(), "--config", second});
  EXPECT_EQ(r.exit_code, 1);  // the port may be freed
  EXPECT_THAT(r.err, HasSubstr("listen.office: cannot listen on " +
                               gateway_->office_endpoint()));
}

class BadConfigTest : public ::testing::Test {
 protected:
  // Runs the gateway on `toml`; expects exit 2 and one stderr line with
  // `expected` in it.
  void ExpectStartFails(const std::string& toml, const std::string& expected) {
    const std::string dir = NewTempDir("badconfig");
    const std::string path = WriteFile(dir + "/gw.toml", toml);
    CommandResult r =
        RunCommand({GatewayBinary(), "--config", path}, absl::Seconds(30));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr(expected));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  std::string Valid() {
    GatewayConfigOptions o;
    o.data_dir = NewTempDir("data");
    return GatewayConfigToml(o);
  }
};

TEST_F(BadConfigTest, MissingFileExits2) {
  CommandResult r =
      RunCommand({GatewayBinary(), "--config", "/nonexistent/gw.toml"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/gw.toml"));
}

TEST_F(BadConfigTest, UnknownKeyExits2NamingIt) {
  std::string toml = Valid();
  toml.insert(toml.find("[listen]"), "colour = \"green\"\n");
  ExpectStartFails(toml, "colour: unknown key");
}

TEST_F(BadConfigTest, MissingKeyFileExits2NamingFieldAndFile) {
  std::string toml = Valid();
  const std::string key = Pki("pk/gateway.key");
  toml.replace(toml.find(key), key.size(), "/nonexistent/gateway.key");
  ExpectStartFails(toml, "tls.key: cannot read /nonexistent/gateway.key");
}

TEST_F(BadConfigTest, GarbageSigningKeyExits2NamingTheField) {
  const std::string dir = NewTempDir("garbage");
  const std::string garbage = WriteFile(dir + "/envelope.key", "not a key\n");
  std::string toml = Valid();
  const std::string key = Pki("pk/signing/envelope.key");
  toml.replace(toml.find(key), key.size(), garbage);
  ExpectStartFails(toml, "signing.envelope_key: ");
}

TEST_F(BadConfigTest, MismatchedTlsKeyExits2) {
  std::string toml = Valid();
  const std::string key = Pki("pk/gateway.key");
  toml.replace(toml.find(key), key.size(), Pki("cn/gateway.key"));
  ExpectStartFails(toml, "does not match the certificate");
}

TEST_F(BadConfigTest, CrlDirectoryWithoutOurCasCrlExits2) {
  const std::string crl_dir = NewTempDir("crl-missing");
  std::string toml = Valid();
  const std::string dir = Pki("crl");
  toml.replace(toml.find(dir), dir.size(), crl_dir);
  ExpectStartFails(toml, "has no CRL for trusted CA");
}

TEST_F(BadConfigTest, OwnCaTrustedOnThePeerPortExits2) {
  std::string toml = Valid();
  const std::string peer_ca = Pki("cn/ca.crt");
  toml.replace(toml.find(peer_ca), peer_ca.size(), Pki("pk/ca.crt"));
  ExpectStartFails(toml, "tls.peer_ca: CA ");
}

TEST_F(BadConfigTest, AFileWithoutACertificateIsNamedByItsOwnKey) {
  // A DER file, say, where a PEM certificate was expected: the refusal
  // names the key that holds it, not another key the same check reads.
  const std::string dir = NewTempDir("not-pem");
  const std::string not_pem = WriteFile(dir + "/ca.der", "0\x82\x01\x0a");
  for (const auto& [file, key] :
       std::vector<std::pair<std::string, std::string>>{
           {Pki("pk/ca.crt"), "tls.own_ca: "},
           {Pki("pk/gateway-chain.crt"), "tls.cert: "}}) {
    std::string toml = Valid();
    const size_t at = toml.find("\"" + file + "\"");
    ASSERT_NE(at, std::string::npos) << file;
    toml.replace(at + 1, file.size(), not_pem);
    ExpectStartFails(toml, key + not_pem);
  }
}

TEST_F(BadConfigTest, WrongIdentityForCountryExits2) {
  std::string toml = Valid();
  const std::string ours = "identity = \"spiffe://pk.casebridge/gateway\"";
  toml.replace(toml.find(ours), ours.size(),
               "identity = \"spiffe://cn.casebridge/gateway\"");
  ExpectStartFails(toml, "identity: must be spiffe://pk.casebridge/gateway");
}

}  // namespace
}  // namespace casebridge::testing
