// The sending side checks the peer gateway's certificate against its own
// CRLs, end to end: a real PK and CN gateway, and a CRL of the CN CA that
// revokes the CN gateway's certificate, installed in the PK gateway's
// tls.crl_dir while they are linked, and present when the PK gateway starts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_crl.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kPkAuditor[] = "pk/auditors/pk-auditor";
constexpr char kCnAuditor[] = "cn/auditors/cn-auditor";
constexpr char kPkGateway[] = "spiffe://pk.casebridge/gateway";
constexpr char kCnGateway[] = "spiffe://cn.casebridge/gateway";
constexpr char kLinkHealth[] = "casebridge.peer_link";
constexpr char kRefusedReason[] =
    "this gateway refuses the peer gateway's certificate: it is revoked";

class PeerCertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("peer-cert");
    pk_crl_dir_ = dir_ + "/pk-crl";
    CopyTestCrls(pk_crl_dir_);
    cn_hash_ = SubjectHash(Pki("cn/ca.crt"));
    // The PK gateway reads its own CRL folder, checked every second.
    const GatewayPairConfigs configs =
        WriteGatewayPairConfigs(dir_, 1, [&](GatewayConfigOptions& options) {
          if (options.country != "PK") return;
          options.crl_dir = pk_crl_dir_;
          options.extra_tls = "crl_refresh_seconds = 1\n";
        });
    pk_config_ = configs.pk;
    cn_config_ = configs.cn;
  }

  std::unique_ptr<client::OfficeClient> Pk(const std::string& stem) {
    return OfficeClientFor(stem, pk_->office_endpoint(), "PK");
  }
  std::unique_ptr<client::OfficeClient> Cn(const std::string& stem) {
    return OfficeClientFor(stem, cn_->office_endpoint(), "CN");
  }

  bool LinkServing() {
    auto health = Pk(kFia)->Health(kLinkHealth);
    return health.ok() &&
           *health == grpc::health::v1::HealthCheckResponse::SERVING;
  }

  // A CN CRL revoking the CN gateway's certificate, as <hash>.r1 beside
  // the test PKI's own CN CRL (.r0).
  void RevokeCnGateway() {
    CrlOptions options;
    options.ca_cert = Pki("cn/ca.crt");
    options.ca_key = Pki("cn/ca.key");
    options.revoked = {Pki("cn/gateway.crt")};
    ASSERT_OK_AND_ASSIGN(const std::string crl, IssueCrl(options));
    InstallFile(pk_crl_dir_, cn_hash_ + ".r1", crl);
  }

  absl::StatusOr<std::string> Send(const std::string& exchange_id,
                                   const std::string& body) {
    v1::SendMessageRequest request;
    v1::CaseMessage* m = request.mutable_message();
    m->set_exchange_id(exchange_id);
    m->set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
    m->set_priority(v1::PRIORITY_URGENT);
    m->set_body(body);
    auto sent = Pk(kFia)->SendMessage(request);
    if (!sent.ok()) return sent.status();
    return sent->message_id();
  }

  v1::DeliveryStatus StatusOf(const std::string& message_id) {
    auto status = Pk(kFia)->GetDeliveryStatus(message_id);
    EXPECT_OK(status);
    return status.ok() ? *status : v1::DeliveryStatus();
  }

  std::vector<v1::AuditEntry> Entries(client::OfficeClient& auditor,
                                      const std::string& action) {
    return ReadAuditEntries(auditor, action);
  }

  // Lines of the PK gateway's log that say it refused the peer's
  // certificate.
  int RefusalsLogged() {
    int n = 0;
    for (absl::string_view line : absl::StrSplit(pk_->Log(), '\n')) {
      if (absl::StrContains(line, "\"event\":\"peer.cert_refused\"")) ++n;
    }
    return n;
  }

  std::string dir_;
  std::string pk_crl_dir_;
  std::string cn_hash_;
  std::string pk_config_;
  std::string cn_config_;
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<GatewayProcess> cn_;
};

TEST_F(PeerCertTest, ARevokedPeerCertificateCutsTheLinkAndNothingMoreIsSent) {
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  ASSERT_TRUE(WaitUntil([&] { return LinkServing(); })) << pk_->Log();
  ASSERT_OK_AND_ASSIGN(const std::string exchange_id,
                       OpenSharedCase(*Pk(kFia)));
  ASSERT_OK_AND_ASSIGN(const std::string first, Send(exchange_id, "first"));
  ASSERT_TRUE(WaitUntil([&] {
    return StatusOf(first).state() == v1::DELIVERY_STATE_DELIVERED;
  })) << pk_->Log();

  // Revoked while the link is up: the connection is dropped, not only
  // new handshakes refused.
  RevokeCnGateway();
  ASSERT_TRUE(WaitUntil([&] { return !LinkServing(); })) << pk_->Log();
  const int refused_before = RefusalsLogged();
  ASSERT_OK_AND_ASSIGN(const std::string held, Send(exchange_id, "held"));
  // The sender tries again and its handshake is refused.
  ASSERT_TRUE(WaitUntil([&] { return RefusalsLogged() > refused_before; }))
      << pk_->Log();
  const v1::DeliveryStatus waiting = StatusOf(held);
  EXPECT_NE(waiting.state(), v1::DELIVERY_STATE_DELIVERED);
  EXPECT_TRUE(waiting.has_peer_link_down_since()) << waiting.ShortDebugString();
  EXPECT_EQ(waiting.peer_link_down_reason(), kRefusedReason);
  // The operator reads why in the log, also for the stream that was up
  // (cancelled under the channel replaced, no handshake refused).
  bool said_why = false;
  for (absl::string_view line : absl::StrSplit(pk_->Log(), '\n')) {
    said_why |=
        absl::StrContains(line, "\"peer.link_down\"") &&
        absl::StrContains(line, "refuses the peer gateway's certificate");
  }
  EXPECT_TRUE(said_why) << pk_->Log();
  // The CN gateway received the case's share and the first message only.
  auto cn_auditor = Cn(kCnAuditor);
  EXPECT_EQ(Entries(*cn_auditor, "envelope.received").size(), 2u);

  // Audited once at PK, however often the handshake is refused.
  auto pk_auditor = Pk(kPkAuditor);
  const std::vector<v1::AuditEntry> refusals =
      Entries(*pk_auditor, "peer.cert_refused");
  ASSERT_EQ(refusals.size(), 1u);
  EXPECT_EQ(refusals[0].actor(), kPkGateway);
  EXPECT_THAT(refusals[0].subjects(), ElementsAre(kCnGateway));
  EXPECT_EQ(refusals[0].status_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(refusals[0].status_message(),
              HasSubstr(std::string("of ") + kCnGateway + " was revoked"));

  // Started with the CRL in place: the first handshake is refused.
  ASSERT_EQ(pk_->Stop(), 0) << pk_->Log();
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  ASSERT_TRUE(WaitUntil([&] { return RefusalsLogged() > 0; })) << pk_->Log();
  EXPECT_FALSE(LinkServing());
  EXPECT_EQ(StatusOf(held).peer_link_down_reason(), kRefusedReason);
  EXPECT_EQ(Entries(*Pk(kPkAuditor), "peer.cert_refused").size(), 2u);
  EXPECT_EQ(Entries(*cn_auditor, "envelope.received").size(), 2u);

  // The revocation withdrawn (a restart puts CRLs out of force): the held
  // message goes, once.
  ASSERT_EQ(pk_->Stop(), 0) << pk_->Log();
  std::filesystem::remove(pk_crl_dir_ + "/" + cn_hash_ + ".r1");
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  ASSERT_TRUE(WaitUntil([&] {
    return StatusOf(held).state() == v1::DELIVERY_STATE_DELIVERED;
  })) << pk_->Log();
  EXPECT_TRUE(StatusOf(held).peer_link_down_reason().empty());
  EXPECT_EQ(Entries(*cn_auditor, "envelope.received").size(), 3u);
}

}  // namespace
}  // namespace casebridge::testing
