// Evidence of an exchange between two real gateway processes: fetched over
// mutual TLS, written by the real CLI, checked offline by the real CLI with
// nothing but the public keys file; and both audit logs verified offline
// once the gateways are stopped.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "casebridge/v1/audit.grpc.pb.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/evidence_check.h"
#include "core/public_keys.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kEmbassy[] = "pk/offices/embassy-beijing";
constexpr char kMps[] = "cn/offices/mps-liaison";

class EvidenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("evidence");
    // Checkpoints every 200 ms, so evidence is ready soon after delivery.
    const GatewayPairConfigs configs =
        WriteGatewayPairConfigs(dir_, 1, [](GatewayConfigOptions& o) {
          o.extra_offices = "\n[audit]\ncheckpoint_interval_ms = 200\n";
        });
    ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(configs.pk));
    ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(configs.cn));
  }

  std::string DataDir(const std::string& country) const {
    return dir_ + "/" + country + "-data";
  }

  std::unique_ptr<client::OfficeClient> Pk(const std::string& stem) {
    return OfficeClientFor(stem, pk_->office_endpoint(), "PK");
  }
  std::unique_ptr<client::OfficeClient> Cn(const std::string& stem) {
    return OfficeClientFor(stem, cn_->office_endpoint(), "CN");
  }

  std::string Logs() const {
    return absl::StrCat("\nPK log:\n", pk_->Log(), "\nCN log:\n", cn_->Log());
  }

  // FIA sends an urgent rescue request to MPS, on a case under `code`;
  // returns the envelope id once the CN gateway's receipt is back.
  std::string SendAndDeliver(v1::HandlingCode code = v1::HANDLING_CODE_H2) {
    v1::CaseReference draft = ValidDraft();
    draft.set_handling_code(code);
    auto opened = OpenSharedCase(*Pk(kFia), draft);
    EXPECT_OK(opened);
    v1::SendMessageRequest request;
    v1::CaseMessage* m = request.mutable_message();
    m->set_exchange_id(opened.ok() ? *opened : "");
    m->set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
    m->set_priority(v1::PRIORITY_URGENT);
    m->set_recipient_office("spiffe://cn.casebridge/office/mps-liaison");
    m->set_body("URGENT: victim V1 seen at Handan station. فوری مدد درکار ہے۔");
    auto sent = Pk(kFia)->SendMessage(request);
    EXPECT_OK(sent);
    if (!sent.ok()) return "";
    message_id_ = sent->message_id();
    v1::DeliveryStatus status;
    EXPECT_TRUE(WaitUntil([&] {
      auto s = Pk(kFia)->GetDeliveryStatus(sent->message_id());
      if (s.ok()) status = *s;
      return s.ok() && s->state() == v1::DELIVERY_STATE_DELIVERED;
    })) << "state "
        << status.state() << Logs();
    v1::Receipt receipt;
    EXPECT_TRUE(receipt.ParseFromString(status.receipt().receipt()));
    return receipt.envelope_id();
  }

  // Polls GetEvidence until both logs' entries are under cosigned
  // checkpoints (FAILED_PRECONDITION until then).
  absl::StatusOr<v1::EvidenceBundle> AwaitEvidence(
      client::OfficeClient& office, const std::string& envelope_id) {
    absl::StatusOr<v1::EvidenceBundle> bundle =
        absl::DeadlineExceededError("not asked yet");
    WaitUntil([&] {
      bundle = office.GetEvidence(envelope_id);
      return bundle.status().code() != absl::StatusCode::kFailedPrecondition;
    });
    return bundle;
  }

  CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), CliBinary());
    return RunCommand(args);
  }

  std::string dir_;
  std::string message_id_;  // of the last SendAndDeliver
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<GatewayProcess> cn_;
};

TEST_F(EvidenceTest, BundlesFromBothSidesVerifyOfflineAndLogsVerifyAfter) {
  const std::string envelope_id = SendAndDeliver();
  ASSERT_FALSE(envelope_id.empty());

  // The sender's office fetches the bundle through the CLI.
  auto fia_client = Pk(kFia);
  ASSERT_OK(AwaitEvidence(*fia_client, envelope_id).status()) << Logs();
  const std::string fia_config = WriteFile(
      dir_ + "/fia.toml", ClientConfigToml(pk_->office_endpoint(), kFia));
  const std::string file = dir_ + "/evidence.pb";
  CommandResult got = Cli({"--config", fia_config, "audit", "evidence", "get",
                           envelope_id, "--out", file});
  ASSERT_EQ(got.exit_code, 0) << got.err << Logs();
  EXPECT_THAT(got.out, HasSubstr(envelope_id));
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Never over a file that exists, nor through a symbolic link planted
  // where the bundle is to go: what they name is left as it was.
  const std::string notes = WriteFile(dir_ + "/notes.txt", "precious notes");
  ASSERT_EQ(::chmod(notes.c_str(), 0644), 0);
  ASSERT_EQ(::symlink(notes.c_str(), (dir_ + "/link.pb").c_str()), 0);
  for (const std::string& taken : {file, dir_ + "/link.pb"}) {
    CommandResult again = Cli({"--config", fia_config, "audit", "evidence",
                               "get", envelope_id, "--out", taken});
    EXPECT_EQ(again.exit_code, 2) << again.out;
    EXPECT_THAT(again.err, HasSubstr(taken)) << again.err;
  }
  EXPECT_THAT(Cli({"--config", fia_config, "audit", "evidence", "get",
                   envelope_id, "--out", file})
                  .err,
              HasSubstr("exists already; choose another --out"));
  std::ifstream kept(notes);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(kept), {}),
            "precious notes");
  ASSERT_EQ(::stat(notes.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);

  // Checked offline with the public keys file alone.
  const std::string keys_file = Pki("public-keys.toml");
  CommandResult verified =
      Cli({"audit", "evidence", "verify", file, "--keys", keys_file});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_THAT(
      verified.out,
      MatchesRegex(absl::StrCat(
          "\\*\\*\\* Handling H2: no onward dissemination without the "
          "originator's permission \\*\\*\\*\n"
          "evidence .*evidence.pb: OK: envelope ",
          envelope_id,
          ", sent entry [0-9]+ in pk's log under checkpoint [0-9]+ cosigned "
          "by cn, received entry [0-9]+ in cn's log under checkpoint [0-9]+ "
          "cosigned by pk\n")));

  // One changed byte and it is INVALID.
  ASSERT_OK_AND_ASSIGN(std::string bytes, crypto::ReadFile(file));
  bytes[bytes.size() / 2] ^= 0x01;
  const std::string damaged = WriteFile(dir_ + "/damaged.pb", bytes);
  CommandResult refused =
      Cli({"audit", "evidence", "verify", damaged, "--keys", keys_file});
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
  EXPECT_THAT(refused.out, HasSubstr(": INVALID: "));
  // No keys file: a usage error, not a verdict.
  EXPECT_EQ(
      Cli({"audit", "evidence", "verify", file, "--keys", dir_ + "/none.toml"})
          .exit_code,
      2);

  // The receiving office gets a bundle from its own gateway, which asks the
  // PK gateway for the SENT part.
  auto mps = Cn(kMps);
  ASSERT_OK_AND_ASSIGN(v1::EvidenceBundle from_cn,
                       AwaitEvidence(*mps, envelope_id));
  ASSERT_OK_AND_ASSIGN(keys::PublicKeys public_keys,
                       keys::LoadPublicKeys(keys_file));
  const evidence::EvidenceReport report =
      evidence::VerifyEvidence(from_cn, public_keys);
  EXPECT_TRUE(report.ok()) << report.problem;
  EXPECT_EQ(report.envelope_id, envelope_id);
  EXPECT_EQ(report.origin, v1::COUNTRY_PK);
  // Offices know messages by message id: that finds the same envelope, on
  // both sides.
  for (client::OfficeClient* office : {mps.get(), fia_client.get()}) {
    ASSERT_OK_AND_ASSIGN(const v1::EvidenceBundle by_message,
                         AwaitEvidence(*office, message_id_));
    EXPECT_EQ(by_message.envelope().SerializeAsString(),
              from_cn.envelope().SerializeAsString());
  }

  // An office that neither sent nor received the message gets nothing, and
  // is told what it would be told of an envelope that does not exist.
  EXPECT_THAT(Pk(kEmbassy)->GetEvidence(envelope_id),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("envelope " + envelope_id +
                                 " was not exchanged here")));
  const std::string unknown_envelope = "PK-E-01JDX3Q4W5ZC8N6T2V9B7K1HRA";
  EXPECT_THAT(Pk(kEmbassy)->GetEvidence(unknown_envelope),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("envelope " + unknown_envelope +
                                 " was not exchanged here")));

  // The newest checkpoint, as a signed note.
  CommandResult checkpoint =
      Cli({"--config", fia_config, "audit", "checkpoint"});
  EXPECT_EQ(checkpoint.exit_code, 0) << checkpoint.err;
  EXPECT_THAT(checkpoint.out, MatchesRegex("pk\\.casebridge/audit\n[0-9]+\n"
                                           "(.|\n)*\n\n— pk\\.casebridge/audit "
                                           "(.|\n)*"));

  // Stopped, both logs verify offline and were witnessed by the other side.
  fia_client.reset();
  mps.reset();
  ASSERT_EQ(pk_->Stop(), 0) << Logs();
  ASSERT_EQ(cn_->Stop(), 0) << Logs();
  for (const std::string country : {"PK", "CN"}) {
    SCOPED_TRACE(country);
    CommandResult text = Cli({"audit", "verify", "--data-dir", DataDir(country),
                              "--keys", keys_file});
    EXPECT_EQ(text.exit_code, 0) << text.out << text.err;
    EXPECT_THAT(text.out,
                MatchesRegex(absl::StrCat(
                    "audit log .*: OK, [0-9]+ entries, [0-9]+ checkpoints? "
                    "\\([1-9][0-9]* cosigned by the peer\\), 0 payloads "
                    "purged under retention; ",
                    country == "PK" ? "1 case" : "0 cases",
                    " of this gateway at the version the log gives\n(.|\n)*")));
    CommandResult json = Cli({"audit", "verify", "--data-dir", DataDir(country),
                              "--keys", keys_file, "--json"});
    ASSERT_EQ(json.exit_code, 0) << json.out << json.err;
    const nlohmann::json parsed = nlohmann::json::parse(json.out);
    EXPECT_TRUE(parsed.at("ok").get<bool>());
    EXPECT_GE(parsed.at("cosigned").get<int>(), 1);
    EXPECT_EQ(parsed.at("origin").get<std::string>(),
              country == "PK" ? "pk.casebridge/audit" : "cn.casebridge/audit");
    // CN received two payloads: the case's share and the message.
    EXPECT_EQ(parsed.at("payloads_checked").get<int>(),
              country == "CN" ? 2 : 0);
    // PK opened the one case; CN holds it as shared.
    EXPECT_EQ(parsed.at("cases_checked").get<int>(), country == "PK" ? 1 : 0);
  }
  // A missing keys file is a usage error.
  EXPECT_EQ(Cli({"audit", "verify", "--data-dir", DataDir("PK"), "--keys",
                 dir_ + "/none.toml"})
                .exit_code,
            2);
}

TEST_F(EvidenceTest, AQuestionToAPeerThatDoesNotAnswerEndsWithTheCall) {
  const std::string envelope_id = SendAndDeliver();
  ASSERT_OK(AwaitEvidence(*Pk(kFia), envelope_id).status());
  // The CN gateway is frozen: its connections stay up, it answers nothing.
  ASSERT_EQ(::kill(cn_->pid(), SIGSTOP), 0);
  const absl::Cleanup thaw = [this] { ::kill(cn_->pid(), SIGCONT); };
  auto stub =
      v1::AuditService::NewStub(ChannelFor(kFia, pk_->office_endpoint(), "PK"));
  // Each question gives up long before the gateway's own 10 s for the peer:
  // the question to the peer ends with it, and frees its place at once.
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Milliseconds(1500)));
    v1::GetEvidenceRequest request;
    request.set_envelope_id(envelope_id);
    v1::GetEvidenceResponse response;
    EXPECT_EQ(stub->GetEvidence(&context, request, &response).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  // Each ended with its call, not at the gateway's own deadline for the
  // peer: the gateway's log has how long each took.
  std::vector<double> took;
  ASSERT_TRUE(WaitUntil([&] {
    took.clear();
    for (absl::string_view line : absl::StrSplit(pk_->Log(), '\n')) {
      const auto json = nlohmann::json::parse(line, nullptr, false);
      if (json.is_discarded() || json.value("port", "") != "office" ||
          json.value("action", "") != "audit.get_evidence" ||
          json.value("code", "") == "OK" ||
          json.value("code", "") == "FAILED_PRECONDITION") {
        continue;
      }
      took.push_back(json.value("ms", 0.0));
    }
    return took.size() >= 2;
  })) << Logs();
  for (const double ms : took) EXPECT_LT(ms, 5000) << Logs();
  ::kill(cn_->pid(), SIGCONT);
  // The peer answers again.
  EXPECT_OK(AwaitEvidence(*Pk(kFia), envelope_id).status()) << Logs();
}

TEST_F(EvidenceTest, AnOfficeCannotWriteItselfIntoAnotherOfficesEvidence) {
  const std::string envelope_id = SendAndDeliver();
  ASSERT_FALSE(envelope_id.empty());
  auto fia = Pk(kFia);
  ASSERT_OK(AwaitEvidence(*fia, envelope_id).status()) << Logs();

  // The embassy sends a message of its own...
  auto embassy = Pk(kEmbassy);
  ASSERT_OK_AND_ASSIGN(const std::string its_case, OpenSharedCase(*embassy));
  v1::SendMessageRequest request;
  v1::CaseMessage* m = request.mutable_message();
  m->set_exchange_id(its_case);
  m->set_kind(v1::MESSAGE_KIND_NOTE);
  m->set_priority(v1::PRIORITY_ROUTINE);
  m->set_body("Consular visit arranged.");
  ASSERT_OK_AND_ASSIGN(const v1::SendMessageResponse its_message,
                       embassy->SendMessage(request));

  // ...then makes the gateway audit a refused call whose subjects, taken
  // from its request, pair FIA's envelope with that message: as the
  // gateway's own entries pair an envelope with the message it carries.
  v1::ForwardCaseRequest forward;
  forward.set_exchange_id(envelope_id);
  forward.set_office(its_message.message_id());
  EXPECT_FALSE(embassy->ForwardCase(forward).ok());
  forward.set_exchange_id(its_message.message_id());
  forward.set_office(envelope_id);
  EXPECT_FALSE(embassy->ForwardCase(forward).ok());

  // FIA's message is still not the embassy's to see, by either id.
  EXPECT_THAT(embassy->GetEvidence(envelope_id),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("envelope " + envelope_id +
                                 " was not exchanged here")));
  EXPECT_THAT(embassy->GetEvidence(message_id_),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("was not exchanged here")));
  // Its own message's evidence it gets, once delivered.
  ASSERT_TRUE(WaitUntil([&] {
    auto s = embassy->GetDeliveryStatus(its_message.message_id());
    return s.ok() && s->state() == v1::DELIVERY_STATE_DELIVERED;
  })) << Logs();
  EXPECT_OK(AwaitEvidence(*embassy, its_message.message_id()).status())
      << Logs();
}

TEST_F(EvidenceTest, H1MarkingOfTheSignedEnvelopeIsShownFirstAndKeptInFile) {
  const std::string envelope_id = SendAndDeliver(v1::HANDLING_CODE_H1);
  ASSERT_FALSE(envelope_id.empty());
  auto fia_client = Pk(kFia);
  ASSERT_OK(AwaitEvidence(*fia_client, envelope_id).status()) << Logs();
  const std::string fia_config = WriteFile(
      dir_ + "/fia.toml", ClientConfigToml(pk_->office_endpoint(), kFia));
  const std::string h1 =
      "*** Handling H1: not for use as evidence in judicial proceedings "
      "without the originator's permission ***\n";

  // Fetched: the marking is the first line.
  const std::string file = dir_ + "/h1.evidence";
  CommandResult got = Cli({"--config", fia_config, "audit", "evidence", "get",
                           message_id_, "--out", file});
  ASSERT_EQ(got.exit_code, 0) << got.out << got.err << Logs();
  EXPECT_EQ(got.out.rfind(h1, 0), 0u) << got.out;
  CommandResult got_json =
      Cli({"--config", fia_config, "--json", "audit", "evidence", "get",
           message_id_, "--out", dir_ + "/h1-again.evidence"});
  ASSERT_EQ(got_json.exit_code, 0) << got_json.out << got_json.err;
  const nlohmann::json fetched = nlohmann::json::parse(got_json.out);
  EXPECT_EQ(fetched.at("handling_code").get<std::string>(), "HANDLING_CODE_H1");
  EXPECT_THAT(fetched.at("handling_notice").get<std::string>(),
              HasSubstr("H1: not for use as evidence"));

  // The file keeps it: offline verification shows it first, from the signed
  // envelope bytes.
  const std::string keys_file = Pki("public-keys.toml");
  CommandResult verified =
      Cli({"audit", "evidence", "verify", file, "--keys", keys_file});
  ASSERT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_EQ(verified.out.rfind(h1, 0), 0u) << verified.out;
  EXPECT_THAT(verified.out, HasSubstr(": OK: envelope " + envelope_id));
  CommandResult verified_json =
      Cli({"audit", "evidence", "verify", file, "--keys", keys_file, "--json"});
  ASSERT_EQ(verified_json.exit_code, 0) << verified_json.out;
  const nlohmann::json checked = nlohmann::json::parse(verified_json.out);
  EXPECT_TRUE(checked.at("ok").get<bool>());
  EXPECT_EQ(checked.at("handling_code").get<std::string>(), "HANDLING_CODE_H1");

  // The marking cannot be stripped: an envelope rewritten to H0 no longer
  // carries the origin's signature, and the verdict says so.
  ASSERT_OK_AND_ASSIGN(const std::string bytes, crypto::ReadFile(file));
  v1::EvidenceBundle bundle;
  ASSERT_TRUE(bundle.ParseFromString(bytes));
  v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(bundle.envelope().envelope()));
  EXPECT_EQ(envelope.message().handling_code(), v1::HANDLING_CODE_H1);
  envelope.mutable_message()->set_handling_code(v1::HANDLING_CODE_H0);
  bundle.mutable_envelope()->set_envelope(envelope.SerializeAsString());
  const std::string stripped =
      WriteFile(dir_ + "/stripped.evidence", bundle.SerializeAsString());
  CommandResult refused =
      Cli({"audit", "evidence", "verify", stripped, "--keys", keys_file});
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
  EXPECT_THAT(refused.out, HasSubstr("(as the unverified envelope states)"));
  EXPECT_THAT(refused.out, HasSubstr(": INVALID: envelope"));
}

}  // namespace
}  // namespace casebridge::testing
