// Rotation of the PK gateway's envelope signing key on real gateways: an
// envelope queued under the old key before the rotation is still delivered
// during the stated overlap, new envelopes go under the new key, both sides
// record the change in their audit logs, and evidence of a message signed
// under the old key still verifies offline.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "client/office_client.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kMps[] = "cn/offices/mps-liaison";
constexpr char kMpsId[] = "spiffe://cn.casebridge/office/mps-liaison";
constexpr char kPkAuditor[] = "pk/auditors/pk-auditor";
constexpr char kCnAuditor[] = "cn/auditors/cn-auditor";

class KeyRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("key-rotation");
    pk_peer_ = ReserveFreePort();
    cn_peer_ = ReserveFreePort();
    // The PK gateway's next envelope key.
    new_key_ = dir_ + "/pk-envelope-2027.key";
    new_pub_ = dir_ + "/pk-envelope-2027.pub";
    ASSERT_EQ(RunCommand({"/usr/bin/openssl", "genpkey", "-algorithm",
                          "ed25519", "-out", new_key_})
                  .exit_code,
              0);
    ASSERT_EQ(RunCommand({"/usr/bin/openssl", "pkey", "-in", new_key_,
                          "-pubout", "-out", new_pub_})
                  .exit_code,
              0);
    WriteConfigs(/*rotated=*/false);
  }

  // Before the rotation: the dev PKI's keys. After: PK signs with the new
  // key; CN trusts it, and the old one for a day.
  void WriteConfigs(bool rotated) {
    auto base = [&](const std::string& country, int own, int theirs) {
      GatewayConfigOptions o;
      o.country = country;
      o.data_dir = dir_ + "/" + country + "-data";
      o.peer_address = absl::StrCat("127.0.0.1:", own);
      o.peer_endpoint = absl::StrCat("127.0.0.1:", theirs);
      o.retry_max_seconds = 1;
      o.extra_offices = "\n[audit]\ncheckpoint_interval_ms = 200\n";
      return GatewayConfigToml(o);
    };
    std::string pk = base("PK", pk_peer_, cn_peer_);
    std::string cn = base("CN", cn_peer_, pk_peer_);
    if (rotated) {
      const std::string old_key = Pki("pk/signing/envelope.key");
      const std::string old_pub = Pki("pk/signing/envelope.pub");
      ASSERT_NE(pk.find(old_key), std::string::npos);
      ASSERT_NE(cn.find(old_pub), std::string::npos);
      pk = absl::StrReplaceAll(pk, {{old_key, new_key_}});
      cn = absl::StrReplaceAll(cn, {{old_pub, new_pub_}});
      cn += absl::StrCat(
          "\n[[peer.previous_envelope_keys]]\nfile = \"", old_pub,
          "\"\ntrusted_until = \"",
          absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now() + absl::Hours(24),
                           absl::UTCTimeZone()),
          "\"\n");
    }
    pk_config_ = WriteFile(dir_ + "/PK.toml", pk);
    cn_config_ = WriteFile(dir_ + "/CN.toml", cn);
  }

  std::unique_ptr<client::OfficeClient> Pk(const std::string& stem) {
    return OfficeClientFor(stem, pk_->office_endpoint(), "PK");
  }
  std::unique_ptr<client::OfficeClient> Cn(const std::string& stem) {
    return OfficeClientFor(stem, cn_->office_endpoint(), "CN");
  }

  bool Delivered(const std::string& message_id) {
    auto status = Pk(kFia)->GetDeliveryStatus(message_id);
    return status.ok() && status->state() >= v1::DELIVERY_STATE_DELIVERED;
  }

  // The entries of `action`, read by the auditor of `endpoint`.
  std::vector<v1::AuditEntry> EntriesOf(const std::string& auditor,
                                        const std::string& endpoint,
                                        const std::string& country,
                                        const std::string& action) {
    auto client = OfficeClientFor(auditor, endpoint, country);
    std::vector<v1::AuditEntry> out;
    uint64_t start = 0;
    while (true) {
      auto page = client->GetAuditEntries(start, 1000);
      EXPECT_OK(page);
      if (!page.ok() || page->entries().empty()) break;
      for (const v1::AuditEntry& e : page->entries()) {
        if (e.action() == action) out.push_back(e);
      }
      start = page->next_start();
    }
    return out;
  }

  // A keys file for offline checks: the dev PKI's, with PK's envelope key
  // replaced by the new one and, if `with_previous`, the old one listed.
  std::string KeysFile(const std::string& name, bool with_previous) {
    std::ifstream in(Pki("public-keys.toml"));
    std::string text((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    text = absl::StrReplaceAll(text, {{"\"pk/", "\"" + TestPkiDir() + "/pk/"},
                                      {"\"cn/", "\"" + TestPkiDir() + "/cn/"}});
    text = absl::StrReplaceAll(
        text, {{TestPkiDir() + "/pk/signing/envelope.pub", new_pub_}});
    if (with_previous) {
      text = absl::StrReplaceAll(
          text, {{"[cn]",
                  absl::StrCat("previous_envelope_public_keys = [\"",
                               Pki("pk/signing/envelope.pub"), "\"]\n[cn]")}});
    }
    return WriteFile(dir_ + "/" + name, text);
  }

  std::string dir_;
  int pk_peer_ = 0;
  int cn_peer_ = 0;
  std::string new_key_;
  std::string new_pub_;
  std::string pk_config_;
  std::string cn_config_;
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<GatewayProcess> cn_;
};

TEST_F(KeyRotationTest, OldSignaturesStayVerifiableAndTheRotationIsOnRecord) {
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  auto fia = Pk(kFia);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference opened,
                       fia->OpenCase(ValidDraft()));
  v1::ShareCaseRequest share;
  share.set_exchange_id(opened.exchange_id());
  share.add_recipient_offices(kMpsId);
  ASSERT_OK_AND_ASSIGN(const v1::ShareCaseResponse shared,
                       fia->ShareCase(share));
  ASSERT_TRUE(WaitUntil([&] { return Delivered(shared.message_id()); }))
      << pk_->Log() << cn_->Log();
  // Evidence of the share, signed under the old key, once both logs'
  // entries are cosigned.
  v1::EvidenceBundle old_evidence;
  ASSERT_TRUE(WaitUntil([&] {
    auto bundle = fia->GetEvidence(shared.message_id());
    if (bundle.ok()) old_evidence = *bundle;
    return bundle.ok();
  })) << pk_->Log();

  // CN goes away; PK queues a message under the old key, then stops.
  ASSERT_EQ(cn_->Stop(), 0);
  v1::SendMessageRequest send;
  send.mutable_message()->set_exchange_id(opened.exchange_id());
  send.mutable_message()->set_kind(v1::MESSAGE_KIND_NOTE);
  send.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
  send.mutable_message()->set_body("queued before the key rotation");
  send.mutable_message()->set_handling_code(v1::HANDLING_CODE_H2);
  send.mutable_message()->set_recipient_office(kMpsId);
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse queued,
                       fia->SendMessage(send));
  fia.reset();
  ASSERT_EQ(pk_->Stop(), 0);

  // The rotation: PK signs with its new key, CN trusts the old one for a
  // day more.
  WriteConfigs(/*rotated=*/true);
  ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  ASSERT_TRUE(WaitUntil([&] { return Delivered(queued.message_id()); }))
      << pk_->Log() << cn_->Log();
  send.mutable_message()->set_body("signed under the new key");
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse fresh,
                       Pk(kFia)->SendMessage(send));
  ASSERT_TRUE(WaitUntil([&] { return Delivered(fresh.message_id()); }))
      << pk_->Log() << cn_->Log();
  int arrived = 0;
  ASSERT_OK(Cn(kMps)->WatchInbox(
      "", absl::Seconds(10), [&](const v1::WatchInboxResponse& item) {
        if (item.message().message_id() == queued.message_id() ||
            item.message().message_id() == fresh.message_id()) {
          ++arrived;
        }
        return arrived < 2;
      }));
  EXPECT_EQ(arrived, 2);

  // On record on both sides: PK's keys changed, CN's trusted keys changed.
  const auto pk_keys =
      EntriesOf(kPkAuditor, pk_->office_endpoint(), "PK", "signing.keys");
  ASSERT_EQ(pk_keys.size(), 2u);
  EXPECT_NE(pk_keys[0].subjects(0), pk_keys[1].subjects(0));
  EXPECT_THAT(pk_keys[1].subjects(0), ::testing::StartsWith("envelope:"));
  const auto cn_trust =
      EntriesOf(kCnAuditor, cn_->office_endpoint(), "CN", "peer.keys_trusted");
  ASSERT_EQ(cn_trust.size(), 2u);
  bool overlap_recorded = false;
  for (const std::string& s : cn_trust[1].subjects()) {
    overlap_recorded |= absl::StrContains(s, ":until:");
  }
  EXPECT_TRUE(overlap_recorded);

  // The old evidence verifies offline with the old key listed as previous,
  // and not without it.
  const std::string bundle = dir_ + "/old.evidence";
  WriteFile(bundle, old_evidence.SerializeAsString());
  CommandResult ok =
      RunCommand({CliBinary(), "audit", "evidence", "verify", bundle, "--keys",
                  KeysFile("keys-with-previous.toml", true)});
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  CommandResult refused =
      RunCommand({CliBinary(), "audit", "evidence", "verify", bundle, "--keys",
                  KeysFile("keys-without-previous.toml", false)});
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
}

}  // namespace
}  // namespace casebridge::testing
