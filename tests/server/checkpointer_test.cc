// Checkpoint making: what is signed, when, and the refusal to sign a tree
// that contradicts an earlier checkpoint.
#include "server/checkpointer.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "casebridge/v1/peer.grpc.pb.h"
#include "core/audit_entry.h"
#include "core/merkle.h"
#include "core/note.h"
#include "core/public_keys.h"
#include "core/status_macros.h"
#include "server/evidence.h"
#include "server/sqlite_case_store.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

class CheckpointerTest : public ::testing::Test {
 protected:
  CheckpointerTest()
      : dir_(NewTempDir("checkpointer")),
        key_(crypto::Ed25519Signer::Generate()) {
    Open();
  }

  void Open() {
    checkpointer_.reset();
    store_.reset();
    auto opened = GatewayStore::Open(dir_, v1::COUNTRY_PK, &clock_);
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = *std::move(opened);
    Checkpointer::Options options;
    options.origin = audit::LogOrigin("PK");
    options.signer = key_.get();
    options.refusal = &refusal_;
    options.actor = "spiffe://pk.casebridge/gateway";
    checkpointer_ = std::make_unique<Checkpointer>(options, &store_->database(),
                                                   &log(), nullptr, &clock_);
  }

  SqliteAuditLog& log() { return store_->audit_log(); }

  void Append(int n, const std::string& action = "case.open") {
    for (int i = 0; i < n; ++i) {
      AuditEvent event;
      event.actor = "spiffe://pk.casebridge/office/fia-liaison-desk";
      event.action = action;
      ASSERT_OK(log().Append(event).status());
    }
  }

  // Changes the database behind the gateway's back with `sql` (its one
  // parameter, if `text` is given, bound to `text`), then opens it again.
  void Tamper(const std::string& sql, const std::string* text = nullptr) {
    checkpointer_.reset();
    store_.reset();
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(GatewayStore::DatabasePath(dir_).c_str(), &db),
              SQLITE_OK);
    if (text == nullptr) {
      EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr),
                SQLITE_OK);
    } else {
      sqlite3_stmt* stmt = nullptr;
      EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr),
                SQLITE_OK);
      sqlite3_bind_text(stmt, 1, text->c_str(), -1, SQLITE_TRANSIENT);
      EXPECT_EQ(sqlite3_step(stmt), SQLITE_DONE);
      sqlite3_finalize(stmt);
    }
    sqlite3_close(db);
    Open();
  }

  note::VerifierKey Key() const {
    return note::MakeVerifierKey(audit::LogOrigin("PK"), note::kTypeEd25519,
                                 key_->public_key());
  }

  FakeClock clock_;
  WitnessRefusal refusal_;
  std::string dir_;
  std::unique_ptr<crypto::Ed25519Signer> key_;
  std::unique_ptr<GatewayStore> store_;
  std::unique_ptr<Checkpointer> checkpointer_;
};

TEST_F(CheckpointerTest, EmptyLogGetsNoCheckpoint) {
  ASSERT_OK_AND_ASSIGN(const auto made, checkpointer_->MakeCheckpoint());
  EXPECT_FALSE(made.has_value());
  ASSERT_OK_AND_ASSIGN(const auto latest, log().LatestCheckpoint());
  EXPECT_FALSE(latest.has_value());
}

TEST_F(CheckpointerTest, SignsTheWholeLogAsAC2spCheckpoint) {
  Append(7);
  ASSERT_OK_AND_ASSIGN(const auto made, checkpointer_->MakeCheckpoint());
  ASSERT_TRUE(made.has_value());
  EXPECT_EQ(made->size, 7u);
  ASSERT_OK_AND_ASSIGN(const std::string root, log().RootAt(7));
  EXPECT_EQ(made->root, root);
  EXPECT_FALSE(made->cosigned);

  ASSERT_OK_AND_ASSIGN(const note::Note parsed, note::Parse(made->note));
  EXPECT_OK(note::Verify(parsed, Key()));
  ASSERT_OK_AND_ASSIGN(const note::Checkpoint body,
                       note::ParseCheckpoint(parsed.text));
  EXPECT_EQ(body.origin, "pk.casebridge/audit");
  EXPECT_EQ(body.size, 7u);
  EXPECT_EQ(body.root, root);

  ASSERT_OK_AND_ASSIGN(const auto latest, log().LatestCheckpoint());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->note, made->note);
}

TEST_F(CheckpointerTest, AddsTheNewEntriesToTheStoredTreeBeforeSigning) {
  Append(7);  // appends store entries alone
  ASSERT_OK(store_->database().Read([](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(const uint64_t indexed,
                        SqliteAuditLog::IndexedSizeOn(c));
    EXPECT_EQ(indexed, 0u);
    return absl::OkStatus();
  }));
  ASSERT_OK_AND_ASSIGN(const auto made, checkpointer_->MakeCheckpoint());
  ASSERT_TRUE(made.has_value());
  EXPECT_EQ(made->size, 7u);
  ASSERT_OK(store_->database().Read([](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(const uint64_t indexed,
                        SqliteAuditLog::IndexedSizeOn(c));
    EXPECT_EQ(indexed, 7u);
    return absl::OkStatus();
  }));
}

TEST_F(CheckpointerTest, StoppingSignsTheLastEntries) {
  Checkpointer::Options options;
  options.origin = audit::LogOrigin("PK");
  options.signer = key_.get();
  options.interval = absl::Hours(1);  // only the stop can sign
  checkpointer_ = std::make_unique<Checkpointer>(options, &store_->database(),
                                                 &log(), nullptr, &clock_);
  checkpointer_->Start();
  Append(5);
  checkpointer_->Stop();
  ASSERT_OK_AND_ASSIGN(const auto latest, log().LatestCheckpoint());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->size, 5u);
}

TEST_F(CheckpointerTest, NothingNewMeansNoNewCheckpoint) {
  Append(3);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  ASSERT_OK_AND_ASSIGN(const auto again, checkpointer_->MakeCheckpoint());
  EXPECT_FALSE(again.has_value());
  // Witness records alone do not call for one either: two witnesses would
  // otherwise keep each other busy for ever.
  Append(2, audit::kWitnessAction);
  ASSERT_OK_AND_ASSIGN(const auto witness_only,
                       checkpointer_->MakeCheckpoint());
  EXPECT_FALSE(witness_only.has_value());
  Append(1, audit::kWitnessRefusalAction);
  ASSERT_OK_AND_ASSIGN(const auto refusal_only,
                       checkpointer_->MakeCheckpoint());
  EXPECT_FALSE(refusal_only.has_value());
  // The next real entry brings them all under a checkpoint.
  Append(1);
  ASSERT_OK_AND_ASSIGN(const auto next, checkpointer_->MakeCheckpoint());
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->size, 7u);
}

TEST_F(CheckpointerTest, WitnessRecordsAloneAreCoveredOnceTheCheckpointIsOld) {
  Append(3);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  Append(2, audit::kWitnessAction);
  clock_.Advance(absl::Minutes(9));
  ASSERT_OK_AND_ASSIGN(const auto early, checkpointer_->MakeCheckpoint());
  EXPECT_FALSE(early.has_value());
  clock_.Advance(absl::Minutes(1));
  ASSERT_OK_AND_ASSIGN(const auto due, checkpointer_->MakeCheckpoint());
  ASSERT_TRUE(due.has_value());
  EXPECT_EQ(due->size, 5u);
}

TEST_F(CheckpointerTest, ConsecutiveCheckpointsAreConsistent) {
  Append(5);
  ASSERT_OK_AND_ASSIGN(const auto first, checkpointer_->MakeCheckpoint());
  Append(6);
  ASSERT_OK_AND_ASSIGN(const auto second, checkpointer_->MakeCheckpoint());
  ASSERT_TRUE(first.has_value() && second.has_value());
  ASSERT_OK_AND_ASSIGN(const auto proof, log().ConsistencyProof(5, 11));
  EXPECT_OK(merkle::VerifyConsistency(5, 11, first->root, second->root, proof));
}

TEST_F(CheckpointerTest, RefusesToSignWhenTheStoredTreeContradictsTheLast) {
  Append(4);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  Append(3);
  // An entry and its leaf rewritten behind the gateway's back.
  Tamper(
      "UPDATE audit_nodes SET hash = zeroblob(32) WHERE level = 2 AND idx = 0");
  const uint64_t size = *log().Size();
  EXPECT_THAT(checkpointer_->MakeCheckpoint(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not signing")));
  ASSERT_OK_AND_ASSIGN(const auto latest, log().LatestCheckpoint());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->size, 4u);
  // On record in the log itself, once per reason (it is tried every
  // second), and told to whoever asks for evidence.
  ASSERT_EQ(*log().Size(), size + 1);
  ASSERT_OK_AND_ASSIGN(const auto entries, log().Read(size, 1));
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].entry.action, "checkpoint.refused");
  EXPECT_EQ(entries[0].entry.actor, "spiffe://pk.casebridge/gateway");
  EXPECT_EQ(entries[0].entry.status_code,
            static_cast<int>(absl::StatusCode::kDataLoss));
  EXPECT_THAT(refusal_.Get(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("this gateway refuses to sign a checkpoint "
                                 "of its own log: ")));
  EXPECT_FALSE(checkpointer_->MakeCheckpoint().ok());
  EXPECT_EQ(*log().Size(), size + 1);
}

TEST_F(CheckpointerTest, RefusesWhenTheStoredRootIsNotTheOneItsNoteSigns) {
  // The tree and the checkpoint's root column rewritten together: the
  // stored tree gives the stored root again, but not the root signed.
  Append(4);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  Append(3);
  Tamper(
      "UPDATE audit_nodes SET hash = zeroblob(32) WHERE level = 2 AND idx = 0;"
      "UPDATE checkpoints SET root = zeroblob(32) WHERE size = 4;");
  EXPECT_THAT(
      checkpointer_->MakeCheckpoint(),
      StatusIs(absl::StatusCode::kDataLoss,
               AllOf(HasSubstr("checkpoint 4 as stored: its size or root is "
                               "not the one its note signs"),
                     HasSubstr("not signing"))));
  ASSERT_OK_AND_ASSIGN(const auto latest, log().LatestCheckpoint());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->size, 4u);
}

TEST_F(CheckpointerTest, RefusesWhenTheStoredNoteIsNotSignedByOurKey) {
  Append(4);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  Append(3);
  ASSERT_OK_AND_ASSIGN(const auto signed_before, log().LatestCheckpoint());
  ASSERT_TRUE(signed_before.has_value());
  // The note's signature replaced by one over other text.
  ASSERT_OK_AND_ASSIGN(note::Note note, note::Parse(signed_before->note));
  ASSERT_OK_AND_ASSIGN(
      note::Signature other,
      note::Sign("other text\n", audit::LogOrigin("PK"), *key_));
  note.signatures = {other};
  const std::string forged = note::Format(note);
  Tamper("UPDATE checkpoints SET note = ?1 WHERE size = 4", &forged);
  EXPECT_THAT(checkpointer_->MakeCheckpoint(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("its signature by our checkpoint key does "
                                 "not verify")));
}

TEST_F(CheckpointerTest, RefusesWhenEntriesBehindACheckpointWereRemoved) {
  Append(4);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  Tamper(
      "DELETE FROM audit_subjects WHERE idx = 3;"
      "DELETE FROM audit_log WHERE idx = 3;");
  EXPECT_THAT(checkpointer_->MakeCheckpoint(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("removed")));
}

TEST_F(CheckpointerTest, StoredCheckpointsOnlyGrow) {
  Append(3);
  ASSERT_OK_AND_ASSIGN(const auto made, checkpointer_->MakeCheckpoint());
  ASSERT_TRUE(made.has_value());
  StoredCheckpoint stale = *made;
  EXPECT_THAT(
      log().StoreCheckpoint(stale),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("newer")));
  stale.size = 2;
  EXPECT_THAT(
      log().StoreCheckpoint(stale),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("newer")));
}

// A peer whose witness answers what the test says, over a real (local,
// plaintext) gRPC channel.
class ScriptedWitness final : public v1::PeerService::Service {
 public:
  explicit ScriptedWitness(
      std::function<std::string(const v1::AddCheckpointRequest&)> answer)
      : answer_(std::move(answer)) {}
  grpc::Status AddCheckpoint(grpc::ServerContext*,
                             const v1::AddCheckpointRequest* request,
                             v1::AddCheckpointResponse* response) override {
    {
      absl::MutexLock lock(&mu_);
      if (!refusal_.ok()) return refusal_;
    }
    response->set_cosignature(answer_(*request));
    return grpc::Status::OK;
  }
  // Answers every offer with `refusal` instead (OK: cosigns again).
  void Refuse(grpc::Status refusal) {
    absl::MutexLock lock(&mu_);
    refusal_ = std::move(refusal);
  }

 private:
  std::function<std::string(const v1::AddCheckpointRequest&)> answer_;
  absl::Mutex mu_;
  grpc::Status refusal_ ABSL_GUARDED_BY(mu_);
};

class CheckpointerWitnessTest : public CheckpointerTest {
 protected:
  // Serves `answer` and points a checkpointer at it, which trusts the
  // peer's witness key `current` (default witness_key_) and `previous`.
  void Peer(std::function<std::string(const v1::AddCheckpointRequest&)> answer,
            const crypto::Ed25519Signer* current = nullptr,
            std::vector<keys::TrustedNoteKey> previous = {}) {
    if (current == nullptr) current = witness_key_.get();
    service_ = std::make_unique<ScriptedWitness>(std::move(answer));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    Checkpointer::Options options;
    options.origin = audit::LogOrigin("PK");
    options.signer = key_.get();
    options.peer_witness_key =
        note::MakeVerifierKey(audit::WitnessName("CN"),
                              note::kTypeCosignatureV1, current->public_key());
    options.previous_peer_witness_keys = std::move(previous);
    options.refusal = &refusal_;
    checkpointer_ = std::make_unique<Checkpointer>(
        options, &store_->database(), &log(),
        [channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                       grpc::InsecureChannelCredentials())] {
          return channel;
        },
        &clock_);
  }

  // A genuine cosignature line of `text` by the CN witness key (or `key`).
  std::string Line(const std::string& text,
                   const crypto::Ed25519Signer* key = nullptr) {
    auto signature = note::Cosign(text, audit::WitnessName("CN"), 1795953084,
                                  key != nullptr ? *key : *witness_key_);
    EXPECT_TRUE(signature.ok()) << signature.status();
    note::Note only;
    only.text = text;
    only.signatures.push_back(*signature);
    return note::Format(only).substr(text.size() + 1);
  }

  static std::string TextOf(const std::string& signed_note) {
    auto parsed = note::Parse(signed_note);
    return parsed.ok() ? parsed->text : "";
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  std::unique_ptr<crypto::Ed25519Signer> witness_key_ =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<ScriptedWitness> service_;
  std::unique_ptr<grpc::Server> server_;
  WitnessRefusal refusal_;
};

TEST_F(CheckpointerWitnessTest, StoresAGenuineCosignature) {
  Peer([&](const v1::AddCheckpointRequest& r) {
    return Line(TextOf(r.checkpoint()));
  });
  Append(3);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  ASSERT_OK(checkpointer_->Witness());
  ASSERT_OK_AND_ASSIGN(const auto latest, log().LatestCosignedCheckpoint());
  ASSERT_TRUE(latest.has_value());
  ASSERT_OK_AND_ASSIGN(const note::Note parsed, note::Parse(latest->note));
  EXPECT_OK(note::Verify(parsed, Key()));
  EXPECT_EQ(parsed.signatures.size(), 2u);
}

TEST_F(CheckpointerWitnessTest, StoppingCancelsAnOfferThePeerHoldsOnTo) {
  // The peer takes the offer and does not answer. Stopping does not wait
  // for the offer's deadline: it cancels the offer, and the entries since
  // are signed all the same.
  // Shared with the peer's handler, which may still be waking from its wait
  // when the test body ends: they live as long as the service.
  auto offered = std::make_shared<absl::Notification>();
  auto answer = std::make_shared<absl::Notification>();
  auto offers = std::make_shared<std::atomic<int>>(0);
  Peer([=, this](const v1::AddCheckpointRequest& r) {
    if (offers->fetch_add(1) == 0) offered->Notify();
    answer->WaitForNotification();
    return Line(TextOf(r.checkpoint()));
  });
  // However the test ends, the handler is let go before the server stops.
  const absl::Cleanup let_go = [answer] {
    if (!answer->HasBeenNotified()) answer->Notify();
  };
  Append(3);
  checkpointer_->Start();
  ASSERT_TRUE(offered->WaitForNotificationWithTimeout(absl::Seconds(30)));
  Append(2);
  auto stopped = std::async(std::launch::async, [&] { checkpointer_->Stop(); });
  // Well inside the offer's own deadline (10 s).
  const bool in_time =
      stopped.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  answer->Notify();
  ASSERT_TRUE(in_time);
  stopped.get();
  ASSERT_OK_AND_ASSIGN(const auto latest, log().LatestCheckpoint());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->size, 5u);
  ASSERT_OK_AND_ASSIGN(const auto cosigned, log().LatestCosignedCheckpoint());
  EXPECT_FALSE(cosigned.has_value());
}

TEST_F(CheckpointerWitnessTest, APeersRefusalStandsUntilItCosignsAgain) {
  // After a restore from backup the peer refuses every checkpoint: an
  // evidence request must say so, not "try again in a few seconds".
  Peer([&](const v1::AddCheckpointRequest& r) {
    return Line(TextOf(r.checkpoint()));
  });
  Append(3);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  service_->Refuse(grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                                "rollback: checkpoint of size 3 is smaller "
                                "than the size already cosigned (7)"));
  EXPECT_THAT(checkpointer_->Witness(),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("rollback")));
  EXPECT_THAT(refusal_.Get(),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("rollback")));
  EXPECT_THAT(
      Evidence::NotCoveredYet(2, refusal_.Get()),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("audit entry 2 is not covered"),
                     HasSubstr("the peer refuses this gateway's checkpoints "
                               "(OUT_OF_RANGE: rollback: checkpoint of size 3"),
                     HasSubstr("The peer refuses our checkpoints"))));

  // A peer that cannot be reached says nothing new about our log: the
  // refusal stands.
  service_->Refuse(grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting"));
  EXPECT_FALSE(checkpointer_->Witness().ok());
  EXPECT_THAT(refusal_.Get(),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("rollback")));

  // Settled: the peer cosigns, and evidence is only waited for.
  service_->Refuse(grpc::Status::OK);
  ASSERT_OK(checkpointer_->Witness());
  EXPECT_OK(refusal_.Get());
  EXPECT_THAT(Evidence::NotCoveredYet(5, refusal_.Get()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("try again in a few seconds")));
}

TEST_F(CheckpointerWitnessTest, RefusesCosignaturesOfAnythingButOurCheckpoint) {
  std::string answer;
  Peer([&](const v1::AddCheckpointRequest&) { return answer; });
  Append(3);
  ASSERT_OK_AND_ASSIGN(const auto made, checkpointer_->MakeCheckpoint());
  ASSERT_TRUE(made.has_value());
  const std::string text = TextOf(made->note);
  // A line starting with a newline would make our whole signed note the
  // "text" the witness cosigned.
  const std::string shifted = "\n" + Line(made->note);
  // Two lines: a genuine cosignature plus a forged line under our name.
  const std::string two =
      Line(text) + "— pk.casebridge/audit AAAAAAAAAAAAAAAAAAAAAAAA\n";
  // Signed by another key under the witness's name.
  auto stranger = crypto::Ed25519Signer::Generate();
  auto forged = note::Cosign(text, audit::WitnessName("CN"), 1, *stranger);
  ASSERT_TRUE(forged.ok());
  note::Note forged_note;
  forged_note.text = text;
  forged_note.signatures.push_back(*forged);
  const std::string wrong_key =
      note::Format(forged_note).substr(text.size() + 1);
  for (const std::string& bad :
       {shifted, two, wrong_key, std::string(""), std::string("garbage\n")}) {
    answer = bad;
    EXPECT_FALSE(checkpointer_->Witness().ok()) << bad;
    ASSERT_OK_AND_ASSIGN(const auto cosigned, log().LatestCosignedCheckpoint());
    EXPECT_FALSE(cosigned.has_value()) << bad;
  }
}

TEST_F(CheckpointerWitnessTest, TakesThePeersPreviousWitnessKeyUntilItsTime) {
  // CN rotates its witness key; PK trusts the new one, and the old one
  // (witness_key_) for an hour.
  auto new_key = crypto::Ed25519Signer::Generate();
  const crypto::Ed25519Signer* cosigning = witness_key_.get();
  const absl::Time until = clock_.Now() + absl::Hours(1);
  Peer(
      [&](const v1::AddCheckpointRequest& r) {
        return Line(TextOf(r.checkpoint()), cosigning);
      },
      new_key.get(),
      {{note::MakeVerifierKey(audit::WitnessName("CN"),
                              note::kTypeCosignatureV1,
                              witness_key_->public_key()),
        until}});
  auto cosigned_size = [&]() -> uint64_t {
    auto latest = log().LatestCosignedCheckpoint();
    EXPECT_TRUE(latest.ok()) << latest.status();
    return latest.ok() && latest->has_value() ? (*latest)->size : 0;
  };

  // CN still cosigns with its old key.
  Append(3);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  ASSERT_OK(checkpointer_->Witness());
  EXPECT_EQ(cosigned_size(), 3u);
  // CN switches.
  cosigning = new_key.get();
  Append(2);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  ASSERT_OK(checkpointer_->Witness());
  EXPECT_EQ(cosigned_size(), 5u);
  // Past the overlap the old key is refused, and nothing is stored.
  cosigning = witness_key_.get();
  clock_.Advance(absl::Hours(1) + absl::Seconds(1));
  Append(2);
  ASSERT_OK(checkpointer_->MakeCheckpoint().status());
  EXPECT_THAT(checkpointer_->Witness(),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("was trusted until")));
  EXPECT_EQ(cosigned_size(), 5u);
  // The same checkpoint cosigned by the new key is taken.
  cosigning = new_key.get();
  ASSERT_OK(checkpointer_->Witness());
  EXPECT_EQ(cosigned_size(), 7u);
}

}  // namespace
}  // namespace casebridge::server
