// Mutual witnessing end to end: a real PK gateway witnesses checkpoints
// offered on its peer port by the CN gateway's identity (the test holds CN's
// checkpoint key from the test PKI), refuses rollback, forks, bad proofs,
// bad signatures and unknown origins with distinct statuses, audits every
// refusal, and raises a fork in its health status across restarts. Then a
// real gateway pair cosign each other's checkpoints.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "casebridge/v1/audit.grpc.pb.h"
#include "casebridge/v1/peer.grpc.pb.h"
#include "core/audit_entry.h"
#include "core/crypto.h"
#include "core/grpc_status.h"
#include "core/merkle.h"
#include "core/note.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kAuditor[] = "pk/auditors/pk-auditor";
constexpr char kFia[] = "pk/offices/fia-liaison-desk";

// An in-memory log standing in for CN's: leaves and their stored nodes.
class FakeLog : public merkle::NodeSource {
 public:
  explicit FakeLog(std::string tag) : tag_(std::move(tag)) {}

  void Grow(uint64_t size) {
    while (range_.size() < size) {
      range_.Append(merkle::LeafHash(absl::StrCat(tag_, range_.size())),
                    [&](int level, uint64_t index, absl::string_view hash) {
                      nodes_[{level, index}] = std::string(hash);
                    });
    }
  }
  absl::StatusOr<std::string> Node(int level, uint64_t index) override {
    auto it = nodes_.find({level, index});
    if (it == nodes_.end()) return absl::NotFoundError("no such node");
    return it->second;
  }
  uint64_t size() const { return range_.size(); }
  std::string Root() const { return range_.Root(); }

 private:
  std::string tag_;
  merkle::CompactRange range_;
  std::map<std::pair<int, uint64_t>, std::string> nodes_;
};

class WitnessE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("witness");
    GatewayConfigOptions options;
    options.data_dir = dir_ + "/data";
    config_ = WriteFile(dir_ + "/pk.toml", GatewayConfigToml(options));
    Start();
    ASSERT_OK_AND_ASSIGN(cn_key_, crypto::Ed25519Signer::FromPemFile(
                                      Pki("cn/signing/checkpoint.key")));
    ASSERT_OK_AND_ASSIGN(auto witness, crypto::Ed25519Verifier::FromPemFile(
                                           Pki("pk/signing/witness.pub")));
    pk_witness_ =
        note::MakeVerifierKey("pk.casebridge/witness", note::kTypeCosignatureV1,
                              witness->public_key());
  }

  void Start() {
    ASSERT_OK_AND_ASSIGN(gateway_, GatewayProcess::Start(config_));
    peer_ = v1::PeerService::NewStub(
        ChannelFor("cn/gateway", gateway_->peer_endpoint(), "PK"));
  }

  // CN's checkpoint of `log`, signed with `key` under `origin`.
  std::string Checkpoint(const FakeLog& log,
                         const crypto::Ed25519Signer* key = nullptr,
                         const std::string& origin = "cn.casebridge/audit") {
    note::Note signed_note;
    signed_note.text =
        note::FormatCheckpoint({origin, log.size(), log.Root(), {}});
    auto signature =
        note::Sign(signed_note.text, origin, key != nullptr ? *key : *cn_key_);
    EXPECT_TRUE(signature.ok()) << signature.status();
    signed_note.signatures.push_back(*signature);
    return note::Format(signed_note);
  }

  absl::StatusOr<std::string> Offer(const std::string& checkpoint,
                                    uint64_t old_size,
                                    const std::vector<std::string>& proof) {
    v1::AddCheckpointRequest request;
    request.set_checkpoint(checkpoint);
    request.set_old_size(old_size);
    for (const std::string& hash : proof) request.add_consistency_proof(hash);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::AddCheckpointResponse response;
    const grpc::Status status =
        peer_->AddCheckpoint(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response.cosignature();
  }

  std::vector<std::string> Proof(FakeLog& log, uint64_t from) {
    auto proof = merkle::ConsistencyProof(from, log.size(), log);
    EXPECT_TRUE(proof.ok()) << proof.status();
    return proof.ok() ? *proof : std::vector<std::string>{};
  }

  grpc::health::v1::HealthCheckResponse::ServingStatus WitnessHealth() {
    auto health = grpc::health::v1::Health::NewStub(
        ChannelFor(kFia, gateway_->office_endpoint(), "PK"));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service("casebridge.audit.witness");
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  // PK's audit entries of `action`, read by the auditor.
  std::vector<v1::AuditEntry> Entries(const std::string& action) {
    return ReadAuditEntries(
        *OfficeClientFor(kAuditor, gateway_->office_endpoint()), action);
  }

  std::string dir_;
  std::string config_;
  std::unique_ptr<GatewayProcess> gateway_;
  std::unique_ptr<v1::PeerService::Stub> peer_;
  std::unique_ptr<crypto::Ed25519Signer> cn_key_;
  note::VerifierKey pk_witness_;
};

TEST_F(WitnessE2eTest, CosignsConsistentCheckpointsAndRefusesEveryAttack) {
  FakeLog cn("cn entry ");
  cn.Grow(5);
  const std::string first = Checkpoint(cn);
  ASSERT_OK_AND_ASSIGN(const std::string line, Offer(first, 0, {}));
  ASSERT_OK_AND_ASSIGN(const note::Note cosigned, note::Parse(first + line));
  EXPECT_OK(note::VerifyCosignature(cosigned, pk_witness_).status());

  cn.Grow(9);
  const std::string second = Checkpoint(cn);
  const std::vector<std::string> proof = Proof(cn, 5);
  ASSERT_OK(Offer(second, 5, proof).status());
  EXPECT_EQ(Entries(audit::kWitnessAction).size(), 2u);

  // Rollback: the older checkpoint again.
  EXPECT_THAT(Offer(first, 9, {}),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("rollback")));
  cn.Grow(12);
  const std::string third = Checkpoint(cn);
  // Wrong old size.
  EXPECT_THAT(Offer(third, 5, Proof(cn, 5)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("(cosigned size: 9)")));
  // Bad signature: CN's name, another key.
  auto impostor = crypto::Ed25519Signer::Generate();
  EXPECT_THAT(
      Offer(Checkpoint(cn, impostor.get()), 9, Proof(cn, 9)),
      StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("signature")));
  // Unknown origin.
  EXPECT_THAT(
      Offer(Checkpoint(cn, nullptr, "example.com/log"), 9, Proof(cn, 9)),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("origin")));
  EXPECT_EQ(WitnessHealth(), grpc::health::v1::HealthCheckResponse::SERVING);

  // Bad proof: a larger tree with one proof hash flipped. The peer's
  // gateway proves from the tree it signed, so a proof that fails is what
  // a rewritten log looks like: raised as a fork.
  std::vector<std::string> bad = Proof(cn, 9);
  ASSERT_FALSE(bad.empty());
  bad[0][3] = static_cast<char>(bad[0][3] ^ 0x10);
  EXPECT_THAT(Offer(third, 9, bad),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("consistency_proof"),
                             HasSubstr("kept as evidence"))));
  EXPECT_EQ(WitnessHealth(),
            grpc::health::v1::HealthCheckResponse::NOT_SERVING);

  // Fork: another tree of the size already cosigned, validly signed.
  FakeLog forked("rewritten entry ");
  forked.Grow(9);
  EXPECT_THAT(Offer(Checkpoint(forked), 9, {}),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("fork")));
  EXPECT_EQ(Entries("witness.fork").size(), 2u);

  // Nothing refused was witnessed; every refusal was audited with its code.
  EXPECT_EQ(Entries(audit::kWitnessAction).size(), 2u);
  std::multiset<int> refused;
  for (const auto& e : Entries("peer.add_checkpoint")) {
    EXPECT_EQ(e.actor(), "spiffe://cn.casebridge/gateway");
    refused.insert(e.status_code());
  }
  EXPECT_EQ(refused, (std::multiset<int>{
                         grpc::OUT_OF_RANGE, grpc::INVALID_ARGUMENT,
                         grpc::FAILED_PRECONDITION, grpc::UNAUTHENTICATED,
                         grpc::NOT_FOUND, grpc::ALREADY_EXISTS}));

  // The consistent extension is still taken; the fork stays raised across
  // a restart.
  ASSERT_OK(Offer(third, 9, Proof(cn, 9)).status());
  ASSERT_EQ(gateway_->Stop(), 0);
  Start();
  EXPECT_EQ(WitnessHealth(),
            grpc::health::v1::HealthCheckResponse::NOT_SERVING);
}

TEST(WitnessPairTest, GatewaysCosignEachOthersCheckpoints) {
  const std::string dir = NewTempDir("witness-pair");
  const GatewayPairConfigs configs = WriteGatewayPairConfigs(dir);
  ASSERT_OK_AND_ASSIGN(auto pk, GatewayProcess::Start(configs.pk));
  ASSERT_OK_AND_ASSIGN(auto cn, GatewayProcess::Start(configs.cn));
  // Entries on both sides, so both sign checkpoints.
  ASSERT_OK(OfficeClientFor(kFia, pk->office_endpoint())
                ->OpenCase(ValidDraft())
                .status());
  ASSERT_OK(
      OfficeClientFor("cn/offices/mps-liaison", cn->office_endpoint(), "CN")
          ->OpenCase(ValidDraft("Woman located in Hebei"))
          .status());

  struct Side {
    std::string auditor;
    GatewayProcess* gateway;
    std::string country;
    std::string origin;
    std::string peer_witness_pub;
    std::string peer_witness_name;
  };
  for (const Side& side :
       {Side{kAuditor, pk.get(), "PK", "pk.casebridge/audit",
             "cn/signing/witness.pub", "cn.casebridge/witness"},
        Side{"cn/auditors/cn-auditor", cn.get(), "CN", "cn.casebridge/audit",
             "pk/signing/witness.pub", "pk.casebridge/witness"}}) {
    SCOPED_TRACE(side.country);
    ASSERT_OK_AND_ASSIGN(auto pub, crypto::Ed25519Verifier::FromPemFile(
                                       Pki(side.peer_witness_pub)));
    const note::VerifierKey witness = note::MakeVerifierKey(
        side.peer_witness_name, note::kTypeCosignatureV1, pub->public_key());
    auto audit = v1::AuditService::NewStub(ChannelFor(
        side.auditor, side.gateway->office_endpoint(), side.country));
    std::string checkpoint;
    EXPECT_TRUE(WaitUntil([&] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(5));
      v1::GetCheckpointResponse response;
      if (!audit->GetCheckpoint(&context, {}, &response).ok()) return false;
      auto parsed = note::Parse(response.checkpoint());
      if (!parsed.ok()) return false;
      checkpoint = response.checkpoint();
      return note::VerifyCosignature(*parsed, witness).ok();
    })) << "last checkpoint: "
        << checkpoint;
    ASSERT_OK_AND_ASSIGN(const note::Note parsed, note::Parse(checkpoint));
    ASSERT_OK_AND_ASSIGN(const note::Checkpoint body,
                         note::ParseCheckpoint(parsed.text));
    EXPECT_EQ(body.origin, side.origin);
    EXPECT_GT(body.size, 0u);
    // The proofs it serves verify against that checkpoint.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::GetInclusionProofRequest request;
    request.set_index(0);
    request.set_tree_size(body.size);
    v1::GetInclusionProofResponse proof;
    ASSERT_TRUE(audit->GetInclusionProof(&context, request, &proof).ok());
    v1::GetEntriesResponse first;
    {
      grpc::ClientContext entries_context;
      entries_context.set_deadline(std::chrono::system_clock::now() +
                                   std::chrono::seconds(10));
      v1::GetEntriesRequest entries;
      entries.set_page_size(1);
      ASSERT_TRUE(audit->GetEntries(&entries_context, entries, &first).ok());
      ASSERT_EQ(first.entries_size(), 1);
    }
    EXPECT_OK(merkle::VerifyInclusion(
        0, body.size, merkle::LeafHash(first.entries(0).encoded()),
        {proof.hashes().begin(), proof.hashes().end()}, body.root));
  }
}

}  // namespace
}  // namespace casebridge::testing
