// The witness: what it cosigns, what it refuses and with which status, and
// that refusals change nothing. The peer's log is a real CN gateway store
// whose checkpoints are made by a real Checkpointer with a real key.
#include "server/witness.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/audit_entry.h"
#include "core/merkle.h"
#include "core/note.h"
#include "core/status_macros.h"
#include "server/checkpointer.h"
#include "server/sqlite_case_store.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::IsOk;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kCnGateway[] = "spiffe://cn.casebridge/gateway";

// A CN log: a gateway store and a checkpointer signing with `key`.
struct PeerLog {
  PeerLog(const crypto::Ed25519Signer* key, const Clock* clock) {
    auto opened =
        GatewayStore::Open(NewTempDir("cn-log"), v1::COUNTRY_CN, clock);
    EXPECT_TRUE(opened.ok()) << opened.status();
    store = *std::move(opened);
    Checkpointer::Options options;
    options.origin = audit::LogOrigin("CN");
    options.signer = key;
    checkpointer = std::make_unique<Checkpointer>(
        options, &store->database(), &store->audit_log(), nullptr, clock);
  }

  void Append(int n, const std::string& tag = "x") {
    for (int i = 0; i < n; ++i) {
      AuditEvent event;
      event.actor = "spiffe://cn.casebridge/office/mps-liaison";
      event.action = "case.open";
      event.subjects = {absl::StrCat("CN-2026-", tag, i)};
      ASSERT_OK(store->audit_log().Append(event).status());
    }
  }

  // Signs a checkpoint of the whole log.
  StoredCheckpoint Checkpoint() {
    auto made = checkpointer->MakeCheckpoint();
    EXPECT_TRUE(made.ok()) << made.status();
    EXPECT_TRUE(made.ok() && made->has_value());
    return made.ok() && made->has_value() ? **made : StoredCheckpoint{};
  }

  v1::AddCheckpointRequest Offer(const StoredCheckpoint& checkpoint,
                                 uint64_t old_size) {
    v1::AddCheckpointRequest request;
    request.set_checkpoint(checkpoint.note);
    request.set_old_size(old_size);
    if (old_size > 0 && old_size < checkpoint.size) {
      auto proof =
          store->audit_log().ConsistencyProof(old_size, checkpoint.size);
      EXPECT_TRUE(proof.ok()) << proof.status();
      for (const std::string& hash : *proof)
        request.add_consistency_proof(hash);
    }
    return request;
  }

  std::unique_ptr<GatewayStore> store;
  std::unique_ptr<Checkpointer> checkpointer;
};

class WitnessTest : public ::testing::Test {
 protected:
  WitnessTest()
      : cn_key_(crypto::Ed25519Signer::Generate()),
        pk_witness_key_(crypto::Ed25519Signer::Generate()),
        cn_(cn_key_.get(), &clock_) {
    auto opened =
        GatewayStore::Open(NewTempDir("pk-witness"), v1::COUNTRY_PK, &clock_);
    EXPECT_TRUE(opened.ok()) << opened.status();
    pk_ = *std::move(opened);
    witness_ = MakeWitness();
  }

  std::unique_ptr<Witness> MakeWitness() {
    Witness::Options options;
    options.peer_origin = audit::LogOrigin("CN");
    options.peer_checkpoint_key = note::MakeVerifierKey(
        options.peer_origin, note::kTypeEd25519, cn_key_->public_key());
    options.witness_name = audit::WitnessName("PK");
    options.signer = pk_witness_key_.get();
    return std::make_unique<Witness>(options, &pk_->database(),
                                     &pk_->audit_log(), &clock_);
  }

  note::VerifierKey WitnessKey() const {
    return note::MakeVerifierKey(audit::WitnessName("PK"),
                                 note::kTypeCosignatureV1,
                                 pk_witness_key_->public_key());
  }

  absl::StatusOr<std::string> Offer(const v1::AddCheckpointRequest& request) {
    return witness_->AddCheckpoint(kCnGateway, request);
  }

  // The size the witness holds for CN's log (0 if none).
  uint64_t HeldSize() {
    uint64_t size = 0;
    EXPECT_OK(pk_->database().Read([&](sqlite::Connection& c) -> absl::Status {
      CB_ASSIGN_OR_RETURN(
          auto stmt,
          c.Prepare("SELECT size FROM witness_state WHERE origin = ?"));
      stmt.Bind(1, audit::LogOrigin("CN"));
      CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
      if (row) size = static_cast<uint64_t>(stmt.ColumnInt(0));
      return absl::OkStatus();
    }));
    return size;
  }

  // Witness records in PK's own log.
  std::vector<StoredEntry> WitnessEntries() {
    std::vector<StoredEntry> out;
    auto all = pk_->audit_log().Read(0, 10000);
    EXPECT_TRUE(all.ok()) << all.status();
    for (StoredEntry& e : *all) {
      if (e.entry.action == audit::kWitnessAction) out.push_back(std::move(e));
    }
    return out;
  }

  int64_t ForkCount() {
    int64_t n = 0;
    EXPECT_OK(pk_->database().Read([&](sqlite::Connection& c) -> absl::Status {
      CB_ASSIGN_OR_RETURN(auto stmt,
                          c.Prepare("SELECT COUNT(*) FROM checkpoint_forks"));
      CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
      if (row) n = stmt.ColumnInt(0);
      return absl::OkStatus();
    }));
    return n;
  }

  // CN's log cosigned up to `n` entries (first checkpoint, no proof).
  StoredCheckpoint CosignFirst(int n) {
    cn_.Append(n);
    StoredCheckpoint checkpoint = cn_.Checkpoint();
    EXPECT_OK(Offer(cn_.Offer(checkpoint, 0)).status());
    EXPECT_EQ(HeldSize(), static_cast<uint64_t>(n));
    return checkpoint;
  }

  FakeClock clock_;
  std::unique_ptr<crypto::Ed25519Signer> cn_key_;
  std::unique_ptr<crypto::Ed25519Signer> pk_witness_key_;
  PeerLog cn_;
  std::unique_ptr<GatewayStore> pk_;
  std::unique_ptr<Witness> witness_;
};

TEST_F(WitnessTest, FirstCheckpointIsCosignedAndRecordedInOurLog) {
  cn_.Append(5);
  const StoredCheckpoint checkpoint = cn_.Checkpoint();
  ASSERT_OK_AND_ASSIGN(const std::string line, Offer(cn_.Offer(checkpoint, 0)));

  // The line is a cosignature/v1 by our witness key over CN's checkpoint.
  ASSERT_OK_AND_ASSIGN(note::Note cosigned,
                       note::Parse(checkpoint.note + line));
  ASSERT_OK_AND_ASSIGN(const uint64_t timestamp,
                       note::VerifyCosignature(cosigned, WitnessKey()));
  EXPECT_EQ(timestamp,
            static_cast<uint64_t>(absl::ToUnixSeconds(clock_.Now())));
  EXPECT_EQ(HeldSize(), 5u);

  const std::vector<StoredEntry> records = WitnessEntries();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].entry.actor, kCnGateway);
  EXPECT_THAT(records[0].entry.subjects,
              ::testing::ElementsAre("cn.casebridge/audit", "5"));
  EXPECT_EQ(records[0].entry.status_code, 0);
}

TEST_F(WitnessTest, LaterCheckpointIsCosignedWithAConsistencyProof) {
  CosignFirst(5);
  cn_.Append(6);
  const StoredCheckpoint second = cn_.Checkpoint();
  ASSERT_OK_AND_ASSIGN(const std::string line, Offer(cn_.Offer(second, 5)));
  ASSERT_OK_AND_ASSIGN(note::Note cosigned, note::Parse(second.note + line));
  EXPECT_OK(note::VerifyCosignature(cosigned, WitnessKey()).status());
  EXPECT_EQ(HeldSize(), 11u);
  EXPECT_EQ(WitnessEntries().size(), 2u);
}

TEST_F(WitnessTest, SameCheckpointAgainIsCosignedAgainWithoutANewRecord) {
  const StoredCheckpoint first = CosignFirst(4);
  // A sender that lost our answer offers the same checkpoint again.
  EXPECT_OK(Offer(cn_.Offer(first, 0)).status());
  EXPECT_EQ(HeldSize(), 4u);
  EXPECT_EQ(WitnessEntries().size(), 1u);
}

TEST_F(WitnessTest, SameTreeUnderOtherExtensionLinesIsRefused) {
  const StoredCheckpoint first = CosignFirst(4);
  ASSERT_OK_AND_ASSIGN(const note::Note held, note::Parse(first.note));
  ASSERT_OK_AND_ASSIGN(note::Checkpoint body, note::ParseCheckpoint(held.text));
  body.extensions.push_back("extra statement");
  note::Note other;
  other.text = note::FormatCheckpoint(body);
  ASSERT_OK_AND_ASSIGN(note::Signature signature,
                       note::Sign(other.text, "cn.casebridge/audit", *cn_key_));
  other.signatures.push_back(signature);
  v1::AddCheckpointRequest request;
  request.set_checkpoint(note::Format(other));
  request.set_old_size(4);
  EXPECT_THAT(Offer(request), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("differs")));
  EXPECT_EQ(WitnessEntries().size(), 1u);
}

TEST_F(WitnessTest, RollbackIsOutOfRangeAndChangesNothing) {
  cn_.Append(3);
  const StoredCheckpoint old = cn_.Checkpoint();
  ASSERT_OK(Offer(cn_.Offer(old, 0)).status());
  cn_.Append(4);
  const StoredCheckpoint newer = cn_.Checkpoint();
  ASSERT_OK(Offer(cn_.Offer(newer, 3)).status());
  const size_t pk_size = *pk_->audit_log().Size();

  EXPECT_THAT(Offer(cn_.Offer(old, 7)),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("rollback")));
  EXPECT_THAT(Offer(cn_.Offer(old, 0)),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("rollback")));
  EXPECT_EQ(HeldSize(), 7u);
  EXPECT_EQ(*pk_->audit_log().Size(), pk_size);
}

TEST_F(WitnessTest, ForkIsAlreadyExistsKeptAsEvidenceAndRaised) {
  int raised = 0;
  witness_->set_on_fork([&] { ++raised; });
  CosignFirst(6);
  // Another log under the same key and origin: same size, other entries.
  PeerLog forked(cn_key_.get(), &clock_);
  forked.Append(6, "forked");
  const StoredCheckpoint other = forked.Checkpoint();
  EXPECT_THAT(Offer(forked.Offer(other, 6)),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("fork")));
  EXPECT_EQ(ForkCount(), 1);
  EXPECT_TRUE(witness_->fork_on_record());
  EXPECT_EQ(raised, 1);
  EXPECT_EQ(HeldSize(), 6u);

  // The evidence holds both signed checkpoints.
  EXPECT_OK(pk_->database().Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare("SELECT held_note, offered_note FROM checkpoint_forks"));
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    EXPECT_TRUE(row);
    EXPECT_THAT(stmt.ColumnText(0), HasSubstr("\n6\n"));
    EXPECT_EQ(stmt.ColumnText(1), other.note);
    return absl::OkStatus();
  }));

  // The same fork again, under a signature line by a key nobody trusts
  // here added: refused as a fork, nothing more kept or logged.
  const uint64_t pk_size = *pk_->audit_log().Size();
  ASSERT_OK_AND_ASSIGN(note::Note padded, note::Parse(other.note));
  const auto stranger = crypto::Ed25519Signer::Generate();
  ASSERT_OK_AND_ASSIGN(note::Signature extra,
                       note::Sign(padded.text, "someone.else/key", *stranger));
  padded.signatures.push_back(extra);
  v1::AddCheckpointRequest again = forked.Offer(other, 6);
  again.set_checkpoint(note::Format(padded));
  ASSERT_NE(again.checkpoint(), other.note);
  EXPECT_THAT(Offer(again),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("fork")));
  EXPECT_EQ(ForkCount(), 1);
  EXPECT_EQ(*pk_->audit_log().Size(), pk_size);

  // Raised again after a restart.
  std::unique_ptr<Witness> restarted = MakeWitness();
  ASSERT_OK(restarted->Load());
  EXPECT_TRUE(restarted->fork_on_record());
}

TEST_F(WitnessTest, BadConsistencyProofIsRefusedKeptAsEvidenceAndRaised) {
  CosignFirst(5);
  cn_.Append(9);
  const StoredCheckpoint next = cn_.Checkpoint();
  const v1::AddCheckpointRequest good = cn_.Offer(next, 5);
  ASSERT_GT(good.consistency_proof_size(), 1);

  std::vector<v1::AddCheckpointRequest> bad;
  {
    v1::AddCheckpointRequest r = good;
    std::string* hash = r.mutable_consistency_proof(0);
    (*hash)[0] = static_cast<char>((*hash)[0] ^ 0x01);
    bad.push_back(r);
  }
  {
    v1::AddCheckpointRequest r = good;
    r.mutable_consistency_proof()->RemoveLast();
    bad.push_back(r);
  }
  {
    v1::AddCheckpointRequest r = good;
    r.add_consistency_proof(std::string(32, 'x'));
    bad.push_back(r);
  }
  {
    v1::AddCheckpointRequest r = good;
    r.mutable_consistency_proof()->SwapElements(0, 1);
    bad.push_back(r);
  }
  int raised = 0;
  witness_->set_on_fork([&] { ++raised; });
  {
    // Not a proof at all: refused before it is tried.
    v1::AddCheckpointRequest r = good;
    r.set_consistency_proof(0, "short");
    EXPECT_THAT(Offer(r), StatusIs(absl::StatusCode::kInvalidArgument,
                                   HasSubstr("a hash is 32")));
    EXPECT_EQ(ForkCount(), 0);
  }
  for (const v1::AddCheckpointRequest& request : bad) {
    EXPECT_THAT(Offer(request), StatusIs(absl::StatusCode::kInvalidArgument,
                                         AllOf(HasSubstr("consistency_proof"),
                                               HasSubstr("kept as evidence"))));
  }
  EXPECT_EQ(HeldSize(), 5u);
  EXPECT_EQ(WitnessEntries().size(), 1u);
  // The peer's own gateway proves from the tree it signed: a proof that
  // fails is raised as a fork, the checkpoint kept once (one signed text).
  EXPECT_EQ(ForkCount(), 1);
  EXPECT_TRUE(witness_->fork_on_record());
  EXPECT_EQ(raised, 1);
  // A proof that holds is still cosigned; the fork stays on record.
  EXPECT_OK(Offer(good).status());
  EXPECT_EQ(HeldSize(), 14u);
  EXPECT_TRUE(witness_->fork_on_record());
}

TEST_F(WitnessTest, ALogRewrittenAndWrittenOnIsRaisedAsAFork) {
  int raised = 0;
  witness_->set_on_fork([&] { ++raised; });
  CosignFirst(5);
  const uint64_t pk_size = *pk_->audit_log().Size();
  // The peer restored an older copy, or rewrote its log, and wrote on: a
  // larger checkpoint under the same key, with the proof its tree gives.
  PeerLog rewritten(cn_key_.get(), &clock_);
  rewritten.Append(3);
  rewritten.Append(6, "after the restore");
  const StoredCheckpoint larger = rewritten.Checkpoint();
  EXPECT_THAT(Offer(rewritten.Offer(larger, 5)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not prove size 9 consistent with "
                                 "cosigned size 5")));
  EXPECT_EQ(HeldSize(), 5u);
  EXPECT_EQ(ForkCount(), 1);
  EXPECT_EQ(raised, 1);
  EXPECT_TRUE(witness_->fork_on_record());
  // On record in our log, with the offered checkpoint as its payload.
  ASSERT_EQ(*pk_->audit_log().Size(), pk_size + 1);
  ASSERT_OK_AND_ASSIGN(auto last, pk_->audit_log().Read(pk_size, 1));
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].entry.action, "witness.fork");
  EXPECT_EQ(last[0].entry.status_code,
            static_cast<int>(absl::StatusCode::kInvalidArgument));

  // Checkpoint after checkpoint of that log: a bounded evidence.
  for (int i = 0; i < 12; ++i) {
    rewritten.Append(1, absl::StrCat("more ", i));
    const StoredCheckpoint next = rewritten.Checkpoint();
    EXPECT_FALSE(Offer(rewritten.Offer(next, 5)).ok());
  }
  EXPECT_EQ(ForkCount(), 8);
  EXPECT_EQ(*pk_->audit_log().Size(), pk_size + 8);
  EXPECT_EQ(HeldSize(), 5u);
}

TEST_F(WitnessTest, BadSignatureIsUnauthenticated) {
  cn_.Append(3);
  const StoredCheckpoint checkpoint = cn_.Checkpoint();
  // Signed under CN's name by another key.
  auto impostor = crypto::Ed25519Signer::Generate();
  PeerLog fake(impostor.get(), &clock_);
  fake.Append(3);
  EXPECT_THAT(
      Offer(fake.Offer(fake.Checkpoint(), 0)),
      StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("signature")));
  // CN's own note with one signature byte changed.
  ASSERT_OK_AND_ASSIGN(note::Note parsed, note::Parse(checkpoint.note));
  parsed.signatures[0].bytes[5] =
      static_cast<char>(parsed.signatures[0].bytes[5] ^ 0x20);
  v1::AddCheckpointRequest request;
  request.set_checkpoint(note::Format(parsed));
  EXPECT_THAT(Offer(request), StatusIs(absl::StatusCode::kUnauthenticated,
                                       HasSubstr("signature")));
  EXPECT_EQ(HeldSize(), 0u);
  EXPECT_TRUE(WitnessEntries().empty());
}

TEST_F(WitnessTest, PreviousCheckpointKeyIsTrustedUntilItsTimeAcrossTheChange) {
  // CN rotates its checkpoint key: PK trusts the new one, and the old one
  // (cn_key_, which CN's log still signs with) for an hour.
  auto new_key = crypto::Ed25519Signer::Generate();
  const absl::Time until = clock_.Now() + absl::Hours(1);
  Witness::Options options;
  options.peer_origin = audit::LogOrigin("CN");
  options.peer_checkpoint_key = note::MakeVerifierKey(
      options.peer_origin, note::kTypeEd25519, new_key->public_key());
  options.previous_peer_checkpoint_keys = {
      {note::MakeVerifierKey(options.peer_origin, note::kTypeEd25519,
                             cn_key_->public_key()),
       until}};
  options.witness_name = audit::WitnessName("PK");
  options.signer = pk_witness_key_.get();
  witness_ = std::make_unique<Witness>(options, &pk_->database(),
                                       &pk_->audit_log(), &clock_);

  // Before CN switches: its checkpoint under the old key is cosigned.
  CosignFirst(4);
  // CN switches: its next checkpoint, under the new key, must still extend
  // the one cosigned under the old key.
  Checkpointer::Options rotated_options;
  rotated_options.origin = audit::LogOrigin("CN");
  rotated_options.signer = new_key.get();
  Checkpointer rotated(rotated_options, &cn_.store->database(),
                       &cn_.store->audit_log(), nullptr, &clock_);
  cn_.Append(3, "y");
  ASSERT_OK_AND_ASSIGN(const auto under_new, rotated.MakeCheckpoint());
  ASSERT_TRUE(under_new.has_value());
  EXPECT_THAT(Offer(cn_.Offer(*under_new, 0)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("(cosigned size: 4)")));
  ASSERT_OK(Offer(cn_.Offer(*under_new, 4)).status());
  EXPECT_EQ(HeldSize(), 7u);

  // Past the overlap a checkpoint under the old key is a bad signature, and
  // nothing changes.
  cn_.Append(2, "z");
  const StoredCheckpoint under_old = cn_.Checkpoint();
  clock_.Set(until + absl::Seconds(1));
  EXPECT_THAT(Offer(cn_.Offer(under_old, 7)),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       AllOf(HasSubstr("cn.casebridge/audit's checkpoint key"),
                             HasSubstr("was trusted until"))));
  EXPECT_EQ(HeldSize(), 7u);
  EXPECT_EQ(WitnessEntries().size(), 2u);
  // The same tree signed with the new key is cosigned.
  ASSERT_OK_AND_ASSIGN(note::Note resigned, note::Parse(under_old.note));
  ASSERT_OK_AND_ASSIGN(
      note::Signature signature,
      note::Sign(resigned.text, audit::LogOrigin("CN"), *new_key));
  resigned.signatures = {signature};
  StoredCheckpoint under_new_again = under_old;
  under_new_again.note = note::Format(resigned);
  ASSERT_OK(Offer(cn_.Offer(under_new_again, 7)).status());
  EXPECT_EQ(HeldSize(), 9u);
}

TEST_F(WitnessTest, UnknownOriginIsNotFound) {
  note::Note other;
  other.text = note::FormatCheckpoint(
      {"xx.casebridge/audit", 3, merkle::EmptyRoot(), {}});
  ASSERT_OK_AND_ASSIGN(note::Signature signature,
                       note::Sign(other.text, "xx.casebridge/audit", *cn_key_));
  other.signatures.push_back(signature);
  v1::AddCheckpointRequest request;
  request.set_checkpoint(note::Format(other));
  EXPECT_THAT(Offer(request),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("origin")));
  EXPECT_EQ(HeldSize(), 0u);
}

TEST_F(WitnessTest, MalformedCheckpointIsInvalidArgument) {
  for (const std::string& text :
       {std::string(""), std::string("not a note"),
        std::string("cn.casebridge/audit\n3\nAAAA\n\n— x YWJjZGVm\n"),
        std::string(5000, 'a')}) {
    v1::AddCheckpointRequest request;
    request.set_checkpoint(text);
    EXPECT_THAT(Offer(request), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("checkpoint")));
  }
  EXPECT_EQ(HeldSize(), 0u);
}

TEST_F(WitnessTest, WrongOldSizeIsFailedPreconditionNamingTheHeldSize) {
  CosignFirst(5);
  cn_.Append(2);
  const StoredCheckpoint next = cn_.Checkpoint();
  v1::AddCheckpointRequest request = cn_.Offer(next, 5);
  request.set_old_size(4);
  EXPECT_THAT(Offer(request), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("(cosigned size: 5)")));
  EXPECT_EQ(HeldSize(), 5u);
}

TEST_F(WitnessTest, ConcurrentOffersLeaveOneConsistentState) {
  CosignFirst(4);
  cn_.Append(4);
  const StoredCheckpoint eight = cn_.Checkpoint();
  cn_.Append(4);
  const StoredCheckpoint twelve = cn_.Checkpoint();
  const v1::AddCheckpointRequest to_eight = cn_.Offer(eight, 4);
  const v1::AddCheckpointRequest to_twelve = cn_.Offer(twelve, 4);

  std::atomic<int> ok{0};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      const auto result = Offer(i % 2 == 0 ? to_eight : to_twelve);
      if (result.ok()) {
        ++ok;
      } else if (result.status().code() !=
                     absl::StatusCode::kFailedPrecondition &&
                 result.status().code() != absl::StatusCode::kOutOfRange) {
        ++unexpected;
        ADD_FAILURE() << result.status();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_GE(ok.load(), 1);
  // Every state change is one record; the state is the last one recorded.
  const std::vector<StoredEntry> records = WitnessEntries();
  ASSERT_GE(records.size(), 2u);
  ASSERT_LE(records.size(), 3u);
  const uint64_t held = HeldSize();
  EXPECT_TRUE(held == 8 || held == 12) << held;
  EXPECT_EQ(records.back().entry.subjects.at(1), absl::StrCat(held));
  EXPECT_EQ(ForkCount(), 0);
}

}  // namespace
}  // namespace casebridge::server
