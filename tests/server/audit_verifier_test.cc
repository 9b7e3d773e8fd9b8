// The offline verifier against a real PK gateway log (SQLite store,
// checkpoints signed by a real Checkpointer, each cosigned by a real CN
// Witness over a CN gateway store, fresh keys), then against the same log
// after each attack an insider with write access to the database could make.
#include "server/audit_verifier.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "casebridge/v1/exchange.pb.h"
#include "core/audit_entry.h"
#include "core/crypto.h"
#include "core/identity.h"
#include "core/merkle.h"
#include "core/note.h"
#include "core/public_keys.h"
#include "core/status_macros.h"
#include "server/checkpointer.h"
#include "server/schema.h"
#include "server/sqlite_case_store.h"
#include "server/witness.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

constexpr uint64_t kEntries = 300;
constexpr uint64_t kCheckpointEvery = 50;
constexpr char kFia[] = "spiffe://pk.casebridge/office/fia-liaison-desk";

class AuditVerifierTest : public ::testing::Test {
 protected:
  AuditVerifierTest() : pk_dir_(NewTempDir("pk-data")) {
    pk_ = Open(pk_dir_, v1::COUNTRY_PK);
    cn_ = Open(NewTempDir("cn-data"), v1::COUNTRY_CN);
    Checkpointer::Options options;
    options.origin = audit::LogOrigin("PK");
    options.signer = pk_checkpoint_.get();
    options.peer_witness_key = CnWitnessKey();
    checkpointer_ = std::make_unique<Checkpointer>(
        options, &pk_->database(), &pk_->audit_log(), nullptr, &clock_);
    Witness::Options witness;
    witness.peer_origin = audit::LogOrigin("PK");
    witness.peer_checkpoint_key = PkCheckpointKey();
    witness.witness_name = audit::WitnessName("CN");
    witness.signer = cn_witness_.get();
    witness_ = std::make_unique<Witness>(witness, &cn_->database(),
                                         &cn_->audit_log(), &clock_);
  }

  std::unique_ptr<GatewayStore> Open(const std::string& dir, v1::Country c) {
    auto store = GatewayStore::Open(dir, c, &clock_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  note::VerifierKey PkCheckpointKey() const {
    return note::MakeVerifierKey(audit::LogOrigin("PK"), note::kTypeEd25519,
                                 pk_checkpoint_->public_key());
  }
  note::VerifierKey CnWitnessKey() const {
    return note::MakeVerifierKey(audit::WitnessName("CN"),
                                 note::kTypeCosignatureV1,
                                 cn_witness_->public_key());
  }

  keys::PublicKeys Keys() const {
    keys::PublicKeys keys;
    auto pk = keys::MakeGatewayKeys(v1::COUNTRY_PK, pk_envelope_->public_key(),
                                    pk_checkpoint_->public_key(),
                                    pk_witness_->public_key());
    auto cn = keys::MakeGatewayKeys(v1::COUNTRY_CN, cn_envelope_->public_key(),
                                    cn_checkpoint_->public_key(),
                                    cn_witness_->public_key());
    EXPECT_OK(pk);
    EXPECT_OK(cn);
    keys.pk = *std::move(pk);
    keys.cn = *std::move(cn);
    return keys;
  }

  // A row of `cases` as far as the verifier reads it: id and version.
  static absl::Status InsertCase(sqlite::Connection& c, const std::string& id,
                                 int64_t version) {
    CB_ASSIGN_OR_RETURN(
        auto insert,
        c.Prepare("INSERT INTO cases(exchange_id, local_reference, category, "
                  "status, owner_office, summary, version, created_us, "
                  "updated_us, body, sealed) "
                  "VALUES(?, 'FIR-1/2026', 1, 1, ?, '', ?, 0, 0, X'', 0)"));
    insert.Bind(1, id).Bind(2, kFia).Bind(3, version);
    return insert.Run();
  }

  // Runs `sql` with `id` as its one parameter on PK's store.
  void ChangeCase(const std::string& sql, const std::string& id) {
    ASSERT_OK(pk_->database().Write([&](sqlite::Connection& c) {
      CB_ASSIGN_OR_RETURN(auto stmt, c.Prepare(sql));
      stmt.Bind(1, id);
      return stmt.Run();
    }));
  }

  // Appends `n` entries in one transaction. Every tenth is the receipt of
  // an envelope from CN, stored in `inbound` like the gateway does.
  void Append(uint64_t n) {
    ASSERT_OK(pk_->database().Write([&](sqlite::Connection& c) -> absl::Status {
      for (uint64_t i = 0; i < n; ++i, ++appended_) {
        AuditEvent event;
        if (appended_ % 10 == 3) {
          v1::SignedEnvelope envelope;
          envelope.set_envelope(absl::StrCat("envelope ", appended_));
          envelope.set_signature(crypto::RandomBytes(64));
          envelope.set_key_id("0123456789abcdef");
          const std::string id = absl::StrCat("CN-E-", appended_);
          event.actor = "spiffe://cn.casebridge/gateway";
          event.action = "envelope.received";
          event.subjects = {"CN-2026-000001", id};
          event.payload = envelope.signature();
          auto index = pk_->audit_log().AppendInTransaction(c, event);
          if (!index.ok()) return index.status();
          auto insert = c.Prepare(
              "INSERT INTO inbound(envelope_id, envelope_sha256, "
              "signed_envelope, receipt, received_us, audit_index) "
              "VALUES(?, ?, ?, X'00', 0, ?)");
          if (!insert.ok()) return insert.status();
          insert->Bind(1, id)
              .BindBlob(2, crypto::Sha256(envelope.envelope()))
              .BindBlob(3, envelope.SerializeAsString())
              .Bind(4, static_cast<int64_t>(*index));
          if (absl::Status s = insert->Run(); !s.ok()) return s;
          received_.push_back(*index);
        } else {
          event.actor = kFia;
          event.action = "case.open";
          event.subjects = {absl::StrCat("PK-2026-", appended_)};
          event.payload = "an OpenCase request";
          auto index = pk_->audit_log().AppendInTransaction(c, event);
          if (!index.ok()) return index.status();
          if (absl::Status s = InsertCase(c, event.subjects[0], 1); !s.ok()) {
            return s;
          }
        }
      }
      return absl::OkStatus();
    }));
  }

  // Signs a checkpoint of the whole log and has CN cosign it, as the
  // gateway's checkpointer does.
  void CheckpointAndWitness() {
    ASSERT_OK_AND_ASSIGN(auto made, checkpointer_->MakeCheckpoint());
    ASSERT_TRUE(made.has_value());
    v1::AddCheckpointRequest request;
    request.set_checkpoint(made->note);
    request.set_old_size(witnessed_);
    if (witnessed_ > 0) {
      ASSERT_OK_AND_ASSIGN(auto proof, pk_->audit_log().ConsistencyProof(
                                           witnessed_, made->size));
      for (const std::string& hash : proof) request.add_consistency_proof(hash);
    }
    ASSERT_OK_AND_ASSIGN(
        std::string line,
        witness_->AddCheckpoint(GatewayIdentity(v1::COUNTRY_PK), request));
    ASSERT_OK(pk_->audit_log().StoreCosigned(made->size, made->note + line));
    witnessed_ = made->size;
    clock_.Advance(absl::Seconds(1));
  }

  // The whole log: kEntries entries, a cosigned checkpoint every
  // kCheckpointEvery; then the PK store is closed, as for an offline audit.
  void BuildLog(bool close = true) {
    for (uint64_t done = 0; done < kEntries; done += kCheckpointEvery) {
      Append(kCheckpointEvery);
      CheckpointAndWitness();
    }
    if (close) pk_.reset();
  }

  // Runs SQL on the PK database behind the gateway's back.
  void Tamper(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(GatewayStore::DatabasePath(pk_dir_).c_str(), &db),
              SQLITE_OK);
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    EXPECT_EQ(rc, SQLITE_OK) << (error != nullptr ? error : "") << "\n" << sql;
    sqlite3_free(error);
    sqlite3_close(db);
  }

  // Replaces checkpoint `size`'s note (and root) as a forger would.
  void SetCheckpoint(uint64_t size, const std::string& root,
                     const std::string& note, bool cosigned) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(GatewayStore::DatabasePath(pk_dir_).c_str(), &db),
              SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(
        sqlite3_prepare_v2(db,
                           cosigned ? "UPDATE checkpoints SET root = ?, note = "
                                      "? WHERE size = ?"
                                    : "UPDATE checkpoints SET root = ?, note = "
                                      "?, cosigned_us = NULL WHERE size = ?",
                           -1, &stmt, nullptr),
        SQLITE_OK);
    sqlite3_bind_blob(stmt, 1, root.data(), static_cast<int>(root.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, note.data(), static_cast<int>(note.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 3, static_cast<int64_t>(size));
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_DONE);
    EXPECT_EQ(sqlite3_changes(db), 1);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
  }

  struct StoredNote {
    std::string root;
    std::string note;
  };
  std::vector<std::pair<uint64_t, StoredNote>> Checkpoints() {
    std::vector<std::pair<uint64_t, StoredNote>> out;
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(GatewayStore::DatabasePath(pk_dir_).c_str(), &db),
              SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db,
                                 "SELECT size, root, note FROM checkpoints "
                                 "ORDER BY size",
                                 -1, &stmt, nullptr),
              SQLITE_OK);
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      StoredNote n;
      n.root.assign(static_cast<const char*>(sqlite3_column_blob(stmt, 1)),
                    static_cast<size_t>(sqlite3_column_bytes(stmt, 1)));
      n.note = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 2));
      out.emplace_back(sqlite3_column_int64(stmt, 0), std::move(n));
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
  }

  AuditVerifyReport Verify(bool allow_unwitnessed = false) {
    AuditVerifyOptions options;
    options.allow_unwitnessed = allow_unwitnessed;
    auto report = VerifyDataDir(pk_dir_, Keys(), options);
    EXPECT_OK(report);
    return report.ok() ? *std::move(report) : AuditVerifyReport{};
  }

  FakeClock clock_;
  std::unique_ptr<crypto::Ed25519Signer> pk_envelope_ =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> pk_checkpoint_ =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> pk_witness_ =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> cn_envelope_ =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> cn_checkpoint_ =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> cn_witness_ =
      crypto::Ed25519Signer::Generate();
  const std::string pk_dir_;
  std::unique_ptr<GatewayStore> pk_;
  std::unique_ptr<GatewayStore> cn_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<Witness> witness_;
  uint64_t appended_ = 0;
  uint64_t witnessed_ = 0;
  std::vector<uint64_t> received_;  // indexes of envelope.received entries
};

TEST_F(AuditVerifierTest, IntactLogPassesWithCounts) {
  BuildLog(/*close=*/false);  // and verified beside the open store
  const AuditVerifyReport report = Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.entries, kEntries);
  EXPECT_EQ(report.checkpoints, kEntries / kCheckpointEvery);
  EXPECT_EQ(report.cosigned, kEntries / kCheckpointEvery);
  EXPECT_EQ(report.witnessed_size, kEntries);
  EXPECT_EQ(report.consistency_proofs, kEntries / kCheckpointEvery - 1);
  EXPECT_EQ(report.purged_payloads, 0u);
  EXPECT_EQ(report.payloads_checked, received_.size());
  EXPECT_EQ(report.cases_checked, kEntries - received_.size());
  EXPECT_EQ(report.origin, "pk.casebridge/audit");
  EXPECT_FALSE(report.first_bad_entry.has_value());
  EXPECT_FALSE(report.first_bad_checkpoint.has_value());
  EXPECT_THAT(report.notes, IsEmpty());
}

TEST_F(AuditVerifierTest, EntriesAfterTheNewestCosignatureAreNoted) {
  BuildLog(/*close=*/false);
  Append(7);
  pk_.reset();
  const AuditVerifyReport report = Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.entries, kEntries + 7);
  // Not yet in the stored tree either: the gateway adds entries to it in
  // batches, before each checkpoint.
  EXPECT_THAT(
      report.notes,
      ElementsAre(
          StartsWith("the newest 7 entries are not in the stored tree"),
          StartsWith("7 entries after the newest cosigned checkpoint")));
}

TEST_F(AuditVerifierTest, TailAlreadyInTheStoredTreeIsComparedToo) {
  BuildLog(/*close=*/false);
  Append(7);
  ASSERT_OK(pk_->audit_log().CatchUpTree());
  pk_.reset();
  AuditVerifyReport report = Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_THAT(report.notes,
              ElementsAre(StartsWith("7 entries after the newest cosigned")));
  // Its leaves are checked like any other: an edit is named.
  Tamper(
      absl::StrCat("UPDATE audit_log SET entry = entry || X'00' "
                   "WHERE idx = ",
                   kEntries + 2));
  report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, kEntries + 2);
}

TEST_F(AuditVerifierTest, MissingLeafOfTheLastCheckpointedEntryIsNamed) {
  // The tail may lack leaves; entries under a checkpoint may not.
  BuildLog();
  Tamper(absl::StrCat("DELETE FROM audit_nodes WHERE level = 0 AND idx = ",
                      kEntries - 1));
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, kEntries - 1);
  EXPECT_THAT(report.problem, HasSubstr("no leaf hash"));
}

TEST_F(AuditVerifierTest, EditedEntryIsNamed) {
  BuildLog();
  // An insider changes the actor of entry 124 in place; the stored tree is
  // left as it was.
  Tamper(
      "UPDATE audit_log SET entry = replace(entry, "
      "CAST('fia-liaison-desk' AS BLOB), CAST('embassy-beijing!' AS BLOB)) "
      "WHERE idx = 124");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, 124u);
  EXPECT_THAT(report.problem, HasSubstr("does not match its stored leaf hash"));
  EXPECT_EQ(report.entries, 124u);
}

TEST_F(AuditVerifierTest, EditedEntryWithItsLeafRewrittenIsNamed) {
  // As above, and the insider writes the edited entry's leaf hash too: the
  // entry and its leaf agree, the node above them does not. The entry is
  // named by the node's first entry (124, whose node covers 124-125).
  BuildLog();
  Tamper(
      "UPDATE audit_log SET entry = replace(entry, "
      "CAST('fia-liaison-desk' AS BLOB), CAST('embassy-beijing!' AS BLOB)) "
      "WHERE idx = 124");
  std::string entry;
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(GatewayStore::DatabasePath(pk_dir_).c_str(), &db),
              SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(
        sqlite3_prepare_v2(db, "SELECT entry FROM audit_log WHERE idx = 124",
                           -1, &stmt, nullptr),
        SQLITE_OK);
    ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
    entry.assign(static_cast<const char*>(sqlite3_column_blob(stmt, 0)),
                 static_cast<size_t>(sqlite3_column_bytes(stmt, 0)));
    sqlite3_finalize(stmt);
    sqlite3_close(db);
  }
  Tamper(absl::StrCat("UPDATE audit_nodes SET hash = X'",
                      crypto::HexEncode(merkle::LeafHash(entry)),
                      "' WHERE level = 0 AND idx = 124"));
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, 124u);
  EXPECT_THAT(report.problem,
              HasSubstr("node (level 1, index 62) over entries 124-125 does "
                        "not match the entries: the node was changed, or one "
                        "of those entries together with its stored leaf hash"));
}

TEST_F(AuditVerifierTest, EntryThatNoLongerDecodesIsNamed) {
  BuildLog();
  Tamper("UPDATE audit_log SET entry = entry || X'00' WHERE idx = 42");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, 42u);
  EXPECT_THAT(report.problem, StartsWith("malformed audit entry: trailing"));
}

TEST_F(AuditVerifierTest, DeletedEntryIsNamed) {
  BuildLog();
  Tamper("DELETE FROM audit_log WHERE idx = 77");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, 77u);
  EXPECT_EQ(report.problem, "entry 77 is missing (the next stored is 78)");
}

TEST_F(AuditVerifierTest, SwappedEntriesAreNamed) {
  BuildLog();
  Tamper(
      "UPDATE audit_log SET entry = CASE idx "
      "WHEN 10 THEN (SELECT entry FROM audit_log WHERE idx = 11) "
      "ELSE (SELECT entry FROM audit_log WHERE idx = 10) END "
      "WHERE idx IN (10, 11)");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, 10u);
  EXPECT_EQ(report.problem, "the entry stored at 10 says it is entry 11");
}

TEST_F(AuditVerifierTest, TruncatedLogIsCaughtByItsCheckpoint) {
  BuildLog();
  Tamper("DELETE FROM audit_log WHERE idx >= 280");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_checkpoint, kEntries);
  EXPECT_EQ(report.problem,
            "log truncated: checkpoint 300 covers entries beyond the last "
            "(279)");
}

TEST_F(AuditVerifierTest, TruncatedLogWithItsCheckpointGoneLeavesLeaves) {
  BuildLog();
  Tamper(
      "DELETE FROM audit_log WHERE idx >= 280; "
      "DELETE FROM checkpoints WHERE size > 280");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, 280u);
  EXPECT_THAT(report.problem, HasSubstr("entries were removed from the end"));
}

TEST_F(AuditVerifierTest, AnEmptiedLogBesideRecordsIsNamed) {
  {
    // A gateway that never served: nothing in the log, nothing else.
    const AuditVerifyReport fresh = Verify();
    EXPECT_TRUE(fresh.ok) << fresh.problem;
    EXPECT_EQ(fresh.entries, 0u);
  }
  BuildLog();
  // The log emptied, and the envelopes whose entries would be missed with
  // it: only the cases are left.
  Tamper(
      "DELETE FROM audit_subjects; DELETE FROM audit_log; "
      "DELETE FROM audit_nodes; DELETE FROM checkpoints; "
      "DELETE FROM inbound; DELETE FROM messages");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.entries, 0u);
  EXPECT_THAT(
      report.problem,
      AllOf(StartsWith("the audit log is empty, but the database "
                       "holds "),
            HasSubstr(" cases"), HasSubstr("the entries were removed")));
}

TEST_F(AuditVerifierTest, ADroppedTableIsDamageNotAMisuse) {
  // The schema version says the table is there: its absence is the file's
  // fault (exit 3 from the CLI), not a verifier used wrongly (exit 2).
  BuildLog();
  Tamper("DROP TABLE checkpoints");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_THAT(report.problem,
              AllOf(HasSubstr("schema version promises is missing"),
                    HasSubstr("checkpoints")));
}

TEST_F(AuditVerifierTest, AFileThatIsNoDatabaseIsDamage) {
  BuildLog();
  checkpointer_.reset();
  witness_.reset();
  pk_.reset();
  {
    std::fstream file(GatewayStore::DatabasePath(pk_dir_),
                      std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(file.is_open());
    file.write("this is no database", 19);
  }
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_THAT(report.problem, StartsWith("the database file is corrupt"));
}

TEST_F(AuditVerifierTest, MissingLeafHashIsNamed) {
  BuildLog();
  Tamper("DELETE FROM audit_nodes WHERE level = 0 AND idx = 5");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, 5u);
  EXPECT_THAT(report.problem, HasSubstr("no leaf hash"));
}

TEST_F(AuditVerifierTest, ChangedInnerNodeOfTheStoredTreeIsNamed) {
  // Proofs and the next checkpoint are made from the stored inner nodes:
  // one changed would break them while every entry and leaf still agree.
  BuildLog();
  Tamper(
      "UPDATE audit_nodes SET hash = zeroblob(32) WHERE level = 2 AND "
      "idx = 1");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, 4u);  // the first of its leaves 4-7
  EXPECT_THAT(report.problem,
              HasSubstr("node (level 2, index 1) over entries 4-7 does not "
                        "match the entries: the node was changed, or one of "
                        "those entries together with its stored leaf hash"));
}

TEST_F(AuditVerifierTest, MissingInnerNodeOfTheStoredTreeIsNamed) {
  BuildLog();
  Tamper("DELETE FROM audit_nodes WHERE level = 1 AND idx = 0");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, 0u);
  EXPECT_THAT(report.problem,
              HasSubstr("has no node (level 1, index 0) over entries 0-1"));
}

TEST_F(AuditVerifierTest, MessagesTheLogDoesNotRecordAreNamed) {
  // Every message is stored in the transaction of the entry that records
  // it; cutting off the end of the log with the checkpoints over it leaves
  // the messages those entries recorded. Here: two such messages.
  BuildLog();
  Tamper(
      "INSERT INTO messages(message_id, exchange_id, direction, body, "
      "created_us) VALUES ('PK-M-01M8SENT0000000000000000', 'PK-2026-000001', "
      "1, X'', 1), ('CN-M-01M8RECEIVED00000000000000', 'PK-2026-000001', 2, "
      "X'', 2)");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_THAT(report.problem,
              HasSubstr("2 stored messages are not in the log; the first: "
                        "message \"CN-M-01M8RECEIVED00000000000000\" is "
                        "stored as received here, but no entry of the log "
                        "records it"));
}

// The strongest insider: edits an entry, recomputes the whole tree and
// re-signs every checkpoint with the gateway's own checkpoint key. Only the
// peer's cosignatures, which it cannot make, give it away.
class RebuiltLogTest : public AuditVerifierTest {
 protected:
  void Rebuild(bool keep_cosignatures) {
    BuildLog();
    Tamper(
        "UPDATE audit_log SET entry = replace(entry, "
        "CAST('fia-liaison-desk' AS BLOB), CAST('embassy-beijing!' AS BLOB)) "
        "WHERE idx = 124; DELETE FROM audit_nodes;");
    pk_ = Open(pk_dir_, v1::COUNTRY_PK);
    ASSERT_OK(pk_->audit_log().CatchUpTree());
    struct Forged {
      uint64_t size;
      std::string root;
      std::string note;
    };
    std::vector<Forged> forgeries;
    for (const auto& [size, stored] : Checkpoints()) {
      ASSERT_OK_AND_ASSIGN(const std::string root,
                           pk_->audit_log().RootAt(size));
      ASSERT_OK_AND_ASSIGN(note::Note old, note::Parse(stored.note));
      note::Note forged;
      forged.text =
          note::FormatCheckpoint({audit::LogOrigin("PK"), size, root, {}});
      ASSERT_OK_AND_ASSIGN(
          note::Signature signature,
          note::Sign(forged.text, audit::LogOrigin("PK"), *pk_checkpoint_));
      forged.signatures.push_back(signature);
      if (keep_cosignatures) {
        for (const note::Signature& s : old.signatures) {
          if (s.name == audit::WitnessName("CN")) {
            forged.signatures.push_back(s);
          }
        }
      }
      forgeries.push_back({size, root, note::Format(forged)});
    }
    pk_.reset();
    for (const Forged& f : forgeries) {
      SetCheckpoint(f.size, f.root, f.note, keep_cosignatures);
    }
  }
};

TEST_F(RebuiltLogTest, KeptCosignaturesNoLongerVerify) {
  Rebuild(/*keep_cosignatures=*/true);
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  // Checkpoints 50 and 100 do not cover entry 124: unchanged, still valid.
  EXPECT_EQ(report.first_bad_checkpoint, 150u);
  EXPECT_THAT(report.problem,
              StartsWith("the cosignature by cn.casebridge/witness does not "
                         "verify"));
}

TEST_F(RebuiltLogTest, DroppedCosignaturesLeaveTheLogUnwitnessed) {
  Rebuild(/*keep_cosignatures=*/false);
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_FALSE(report.first_bad_entry.has_value());
  EXPECT_FALSE(report.first_bad_checkpoint.has_value());
  EXPECT_EQ(report.problem,
            "log not witnessed: no checkpoint carries the peer's cosignature");
  EXPECT_EQ(report.cosigned, 0u);
  // Allowed, it passes: the signatures are the gateway's own and valid.
  const AuditVerifyReport allowed = Verify(/*allow_unwitnessed=*/true);
  EXPECT_TRUE(allowed.ok) << allowed.problem;
  EXPECT_EQ(allowed.checkpoints, kEntries / kCheckpointEvery);
}

TEST_F(AuditVerifierTest, LogSignedAcrossKeyRotationsNeedsThePreviousKeys) {
  // Half the log under the first keys.
  for (uint64_t done = 0; done < kEntries / 2; done += kCheckpointEvery) {
    Append(kCheckpointEvery);
    CheckpointAndWitness();
  }
  // PK rotates its checkpoint key and CN its witness key; CN trusts PK's
  // old key for the overlap, and keeps witnessing from the size it holds.
  const note::VerifierKey old_pk_checkpoint = PkCheckpointKey();
  const note::VerifierKey old_cn_witness = CnWitnessKey();
  pk_checkpoint_ = crypto::Ed25519Signer::Generate();
  cn_witness_ = crypto::Ed25519Signer::Generate();
  Checkpointer::Options options;
  options.origin = audit::LogOrigin("PK");
  options.signer = pk_checkpoint_.get();
  options.peer_witness_key = CnWitnessKey();
  checkpointer_ = std::make_unique<Checkpointer>(
      options, &pk_->database(), &pk_->audit_log(), nullptr, &clock_);
  Witness::Options witness;
  witness.peer_origin = audit::LogOrigin("PK");
  witness.peer_checkpoint_key = PkCheckpointKey();
  witness.previous_peer_checkpoint_keys = {
      {old_pk_checkpoint, clock_.Now() + absl::Hours(24)}};
  witness.witness_name = audit::WitnessName("CN");
  witness.signer = cn_witness_.get();
  witness_ = std::make_unique<Witness>(witness, &cn_->database(),
                                       &cn_->audit_log(), &clock_);
  for (uint64_t done = kEntries / 2; done < kEntries;
       done += kCheckpointEvery) {
    Append(kCheckpointEvery);
    CheckpointAndWitness();
  }
  pk_.reset();

  // With the retired keys listed, the whole log verifies.
  keys::PublicKeys keys = Keys();
  keys.pk.previous_checkpoint.push_back(old_pk_checkpoint);
  keys.cn.previous_witness.push_back(old_cn_witness);
  ASSERT_OK_AND_ASSIGN(AuditVerifyReport report,
                       VerifyDataDir(pk_dir_, keys, {}));
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.checkpoints, kEntries / kCheckpointEvery);
  EXPECT_EQ(report.cosigned, kEntries / kCheckpointEvery);
  EXPECT_EQ(report.witnessed_size, kEntries);
  EXPECT_EQ(report.consistency_proofs, kEntries / kCheckpointEvery - 1);

  // Without PK's old checkpoint key, the first checkpoint it signed is
  // named.
  keys = Keys();
  keys.cn.previous_witness.push_back(old_cn_witness);
  ASSERT_OK_AND_ASSIGN(report, VerifyDataDir(pk_dir_, keys, {}));
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_checkpoint, kCheckpointEvery);
  EXPECT_THAT(report.problem,
              HasSubstr("no valid signature by pk.casebridge/audit's "
                        "checkpoint key"));
  // Without CN's old witness key, the first checkpoint it cosigned is.
  keys = Keys();
  keys.pk.previous_checkpoint.push_back(old_pk_checkpoint);
  ASSERT_OK_AND_ASSIGN(report, VerifyDataDir(pk_dir_, keys, {}));
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_checkpoint, kCheckpointEvery);
  EXPECT_THAT(report.problem,
              HasSubstr("marked cosigned, but carries no cosignature by "
                        "cn.casebridge/witness"));
}

TEST_F(AuditVerifierTest, CheckpointWithABadSignatureIsNamed) {
  BuildLog();
  const auto checkpoints = Checkpoints();
  const auto& [size, stored] = checkpoints[3];
  ASSERT_OK_AND_ASSIGN(note::Note note, note::Parse(stored.note));
  ASSERT_EQ(note.signatures[0].name, audit::LogOrigin("PK"));
  note.signatures[0].bytes[10] ^= 0x01;
  SetCheckpoint(size, stored.root, note::Format(note), /*cosigned=*/true);
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_checkpoint, 200u);
  EXPECT_THAT(report.problem,
              StartsWith("no valid signature by pk.casebridge/audit's "
                         "checkpoint key"));
  EXPECT_EQ(report.checkpoints, 3u);
}

TEST_F(AuditVerifierTest, CheckpointMarkedCosignedWithoutACosignatureIsNamed) {
  BuildLog();
  const auto checkpoints = Checkpoints();
  const auto& [size, stored] = checkpoints[1];
  ASSERT_OK_AND_ASSIGN(note::Note note, note::Parse(stored.note));
  ASSERT_EQ(note.signatures.size(), 2u);
  note.signatures.pop_back();
  SetCheckpoint(size, stored.root, note::Format(note), /*cosigned=*/true);
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_checkpoint, 100u);
  EXPECT_EQ(report.problem,
            "marked cosigned, but carries no cosignature by "
            "cn.casebridge/witness");
}

TEST_F(AuditVerifierTest, CheckpointWithAChangedStoredRootIsNamed) {
  BuildLog();
  const auto checkpoints = Checkpoints();
  const auto& [size, stored] = checkpoints[2];
  SetCheckpoint(size, std::string(32, '\x07'), stored.note, true);
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_checkpoint, 150u);
  EXPECT_THAT(report.problem, StartsWith("its stored root does not match"));
}

TEST_F(AuditVerifierTest, CheckpointOfAnUnknownOriginIsNamed) {
  BuildLog();
  const auto checkpoints = Checkpoints();
  const auto& [size, stored] = checkpoints[0];
  note::Note forged;
  forged.text =
      note::FormatCheckpoint({"in.casebridge/audit", size, stored.root, {}});
  ASSERT_OK_AND_ASSIGN(
      auto signature,
      note::Sign(forged.text, "in.casebridge/audit", *pk_checkpoint_));
  forged.signatures.push_back(signature);
  SetCheckpoint(size, stored.root, note::Format(forged), true);
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_checkpoint, 50u);
  EXPECT_THAT(report.problem, StartsWith("origin \"in.casebridge/audit\" is "
                                         "neither"));
}

TEST_F(AuditVerifierTest, PurgedPayloadsAreCountedNotFailed) {
  BuildLog(/*close=*/false);
  ASSERT_GE(received_.size(), 3u);
  // Retention as the gateway does it: the salts of the entries that held a
  // purged record's payload deleted, and a retention.purge entry naming
  // it: two of our cases (marked purged in the store) and the peer's case
  // the envelope of entry received_[0] belongs to. One inbound envelope is
  // blanked (its salt kept).
  for (const char* id : {"PK-2026-1", "PK-2026-2"}) {
    ChangeCase("UPDATE cases SET purged_us = 1 WHERE exchange_id = ?", id);
  }
  ASSERT_OK(pk_->database().Write([&](sqlite::Connection& c) -> absl::Status {
    for (const char* id : {"PK-2026-1", "PK-2026-2", "CN-2026-000001"}) {
      AuditEvent purge;
      purge.actor = "spiffe://pk.casebridge/gateway";
      purge.action = kRetentionPurgeAction;
      purge.subjects = {id};
      CB_RETURN_IF_ERROR(
          pk_->audit_log().AppendInTransaction(c, purge).status());
    }
    return absl::OkStatus();
  }));
  pk_.reset();
  Tamper(absl::StrCat(
      "UPDATE audit_log SET salt = NULL WHERE idx IN (1, 2, ", received_[0],
      "); UPDATE inbound SET signed_envelope = X'' WHERE audit_index = ",
      received_[1]));
  const AuditVerifyReport report = Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.purged_payloads, 3u);
  EXPECT_EQ(report.payloads_checked, received_.size() - 2);

  // A salt deleted with no purge that covers it: the payload's proof was
  // destroyed outside the gateway.
  Tamper(absl::StrCat("UPDATE audit_log SET salt = NULL WHERE idx = 4"));
  const AuditVerifyReport destroyed = Verify();
  EXPECT_FALSE(destroyed.ok);
  EXPECT_EQ(destroyed.first_bad_entry, 4u);
  EXPECT_THAT(destroyed.problem,
              AllOf(StartsWith("entry 4 has lost its payload salt"),
                    HasSubstr("no retention purge in the log covers it")));
}

TEST_F(AuditVerifierTest, EverySaltGoneWithoutItsPurgeIsNamed) {
  // The insider's short cut: every salt deleted, every case marked purged,
  // no retention.purge anywhere.
  BuildLog();
  Tamper("UPDATE audit_log SET salt = NULL; UPDATE cases SET purged_us = 1");
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, 0u);
  EXPECT_THAT(report.problem, StartsWith("entry 0 has lost its payload salt"));
}

TEST_F(AuditVerifierTest, EditedInboundEnvelopeIsNamed) {
  BuildLog();
  const uint64_t victim = received_[4];
  // The stored envelope's signature is replaced (the salt is still there).
  v1::SignedEnvelope forged;
  forged.set_envelope("envelope forged");
  forged.set_signature(std::string(64, 'f'));
  forged.set_key_id("0123456789abcdef");
  Tamper(absl::StrCat("UPDATE inbound SET signed_envelope = X'",
                      crypto::HexEncode(forged.SerializeAsString()),
                      "' WHERE audit_index = ", victim));
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_entry, victim);
  EXPECT_THAT(report.problem,
              StartsWith("payload does not match the stored envelope"));
}

TEST_F(AuditVerifierTest, UnwitnessedLogFailsUnlessAllowed) {
  Append(20);
  ASSERT_OK_AND_ASSIGN(auto made, checkpointer_->MakeCheckpoint());
  ASSERT_TRUE(made.has_value());
  pk_.reset();
  EXPECT_EQ(Verify().problem,
            "log not witnessed: no checkpoint carries the peer's cosignature");
  const AuditVerifyReport allowed = Verify(/*allow_unwitnessed=*/true);
  EXPECT_TRUE(allowed.ok) << allowed.problem;
  EXPECT_EQ(allowed.checkpoints, 1u);
  EXPECT_EQ(allowed.cosigned, 0u);
}

TEST_F(AuditVerifierTest, LogWithoutCheckpointsIsUnwitnessed) {
  // As an insider would leave it after editing entries and deleting every
  // checkpoint and stored node.
  Append(12);
  pk_.reset();
  const AuditVerifyReport refused = Verify();
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.problem,
            "log not witnessed: it has entries but no signed checkpoint");

  const AuditVerifyReport report = Verify(/*allow_unwitnessed=*/true);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.entries, 12u);
  EXPECT_THAT(report.notes,
              ElementsAre(StartsWith("the newest 12 entries are not in the "
                                     "stored tree yet"),
                          StartsWith("no checkpoint has been signed")));
}

// The gateway's own cases against the log.

TEST_F(AuditVerifierTest, OwnCasesAreCheckedAgainstTheVersionsTheLogGives) {
  BuildLog(/*close=*/false);
  // A successful update is one version more; a refused one changes nothing.
  const std::string id = "PK-2026-0";
  AuditEvent update;
  update.actor = kFia;
  update.action = "case.update";
  update.subjects = {id};
  update.payload = "an UpdateCase request";
  ASSERT_OK(pk_->database().Write([&](sqlite::Connection& c) -> absl::Status {
    CB_RETURN_IF_ERROR(
        pk_->audit_log().AppendInTransaction(c, update).status());
    CB_ASSIGN_OR_RETURN(
        auto bump,
        c.Prepare("UPDATE cases SET version = 2 WHERE exchange_id = ?"));
    bump.Bind(1, id);
    return bump.Run();
  }));
  AuditEvent refused = update;
  refused.outcome = absl::AbortedError("expected_version: stale");
  ASSERT_OK(pk_->audit_log().Append(refused).status());
  // A case shared by the peer has no case.open here, and is not checked.
  ASSERT_OK(pk_->database().Write([&](sqlite::Connection& c) {
    return InsertCase(c, "CN-2026-000007", 5);
  }));
  CheckpointAndWitness();
  const uint64_t own_cases = kEntries - received_.size();
  {
    const AuditVerifyReport report = Verify();
    EXPECT_TRUE(report.ok) << report.problem;
    EXPECT_EQ(report.cases_checked, own_cases);
  }

  // Put back at version 1, with its row's version column.
  ChangeCase("UPDATE cases SET version = 1 WHERE exchange_id = ?", id);
  const AuditVerifyReport rolled_back = Verify();
  EXPECT_FALSE(rolled_back.ok);
  EXPECT_FALSE(rolled_back.first_bad_entry.has_value());
  EXPECT_THAT(rolled_back.problem,
              AllOf(HasSubstr("\"PK-2026-0\" is at version 1 in the store, "
                              "but the log records 2 versions"),
                    HasSubstr(absl::StrCat("the newest in entry ", kEntries)),
                    HasSubstr("put back from an earlier copy")));
  EXPECT_EQ(rolled_back.cases_checked, own_cases - 1);

  // Raised past what the log recorded.
  ChangeCase("UPDATE cases SET version = 3 WHERE exchange_id = ?", id);
  EXPECT_THAT(Verify().problem,
              AllOf(HasSubstr("is at version 3 in the store, but the log "
                              "records 2 versions"),
                    HasSubstr("changed outside the gateway")));
}

TEST_F(AuditVerifierTest, OwnCasesDeletedOrAddedOutsideTheGatewayAreNamed) {
  BuildLog(/*close=*/false);
  ChangeCase("DELETE FROM cases WHERE exchange_id = ?", "PK-2026-1");
  EXPECT_THAT(Verify().problem,
              Eq("case \"PK-2026-1\", opened in entry 1, is not in the store: "
                 "it was deleted outside the gateway"));

  ASSERT_OK(pk_->database().Write([&](sqlite::Connection& c) {
    return InsertCase(c, "PK-2026-999999", 1);
  }));
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_THAT(report.problem,
              AllOf(StartsWith("2 records disagree with the log; the first: "),
                    HasSubstr("\"PK-2026-999999\" is in the store but the log "
                              "never recorded its opening")));
}

TEST_F(AuditVerifierTest, OlderSchemaIsNamedNotMisread) {
  const std::string dir = NewTempDir("schema-3");
  {
    const auto& all = GatewayMigrations();
    const std::vector<sqlite::Migration> v3(all.begin(), all.begin() + 3);
    ASSERT_OK(
        sqlite::Database::Open(GatewayStore::DatabasePath(dir), v3).status());
  }
  EXPECT_THAT(VerifyDataDir(dir, Keys(), {}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(absl::StrCat(
                           "has schema version 3; this verifier reads "
                           "versions 6 to ",
                           GatewayMigrations().back().version,
                           " (use the casebridge release of the gateway that "
                           "wrote it)"))));
}

TEST_F(AuditVerifierTest, ABackupTakenBeforeAnUpgradeVerifiesAsItIs) {
  // A copy of schema 12, as a gateway before migration 13 wrote it: what
  // the later migrations add is nothing the verifier reads. Opening it with
  // a gateway to upgrade it would sign checkpoints of its old history.
  BuildLog();
  Tamper(
      "ALTER TABLE inbox DROP COLUMN forwarded_by; PRAGMA user_version = 12");
  const AuditVerifyReport report = Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.entries, kEntries);
}

TEST_F(AuditVerifierTest, ACopyNoGatewayHasOpenIsReadWithoutFilesBesideIt) {
  // A stopped gateway's file, or a copy: nothing may appear in its
  // directory (a copy may sit on read-only media, or be evidence).
  BuildLog();
  const std::string path = GatewayStore::DatabasePath(pk_dir_);
  ASSERT_FALSE(std::filesystem::exists(path + "-wal"));
  std::filesystem::remove(path + "-shm");
  const AuditVerifyReport report = Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_FALSE(std::filesystem::exists(path + "-wal"));
  EXPECT_FALSE(std::filesystem::exists(path + "-shm"));
}

TEST_F(AuditVerifierTest, MissingDatabaseCannotBeExamined) {
  EXPECT_THAT(VerifyDataDir(NewTempDir("empty"), Keys(), {}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("gateway.db")));
}

// The verifier validates entries without decoding them into strings; it
// must accept exactly what audit::Decode accepts.
TEST(ScanEntryTest, AgreesWithDecodeOnDamagedEntries) {
  audit::Entry entry;
  entry.index = 77;
  entry.time = absl::FromUnixMicros(1700000000123456);
  entry.actor = kFia;
  entry.action = "message.send";
  entry.subjects = {"PK-2026-000001", "PK-M-1", "PK-E-1"};
  entry.payload_hash = std::string(32, 'h');
  entry.status_message = "";
  const std::string bytes = audit::Encode(entry);
  EntryView view;
  ASSERT_OK(ScanEntry(bytes, &view));
  EXPECT_EQ(view.index, 77u);
  EXPECT_EQ(view.action, "message.send");
  EXPECT_EQ(view.payload_hash, entry.payload_hash);

  std::mt19937 random(42);
  int accepted = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::string changed = bytes;
    switch (trial % 3) {
      case 0:  // one byte changed
        changed[random() % changed.size()] = static_cast<char>(random());
        break;
      case 1:  // cut short
        changed.resize(random() % changed.size());
        break;
      default:  // bytes added
        changed.append(random() % 3 + 1, static_cast<char>(random()));
        break;
    }
    const absl::Status scanned = ScanEntry(changed, &view);
    auto decoded = audit::Decode(changed);
    ASSERT_EQ(scanned.ok(), decoded.ok()) << "trial " << trial;
    if (decoded.ok()) {
      ++accepted;
      EXPECT_EQ(view.index, decoded->index);
      EXPECT_EQ(view.action, decoded->action);
      EXPECT_EQ(view.payload_hash, decoded->payload_hash);
    } else {
      EXPECT_EQ(scanned, decoded.status());
    }
  }
  EXPECT_GT(accepted, 100);  // both outcomes were exercised
}

}  // namespace
}  // namespace casebridge::server
