// The data key and retention on real gateway processes
// (docs/operations.md#the-data-key, docs/storage.md#crypto-shredding):
// `casebridge-gateway rotate-data-key` on a stopped gateway, the recovery of
// a rotation interrupted between its commit and its rename, and a retention
// purge whose log the real `casebridge audit verify` checks afterwards.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/office_client.h"
#include "core/crypto.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

constexpr char kFia[] = "pk/offices/fia-liaison-desk";
constexpr char kPkAuditor[] = "pk/auditors/pk-auditor";
constexpr char kMpsId[] = "spiffe://cn.casebridge/office/mps-liaison";
constexpr char kRemarks[] = "age 19";  // ValidDraft's victim remarks
constexpr char kBody[] = "URGENT: victim V1 seen at Handan station";

std::string ReadRaw(const std::string& path) {
  auto bytes = crypto::ReadFile(path);
  return bytes.ok() ? *bytes : "";
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// Runs `sql` on a stopped gateway's database, calling `row` for each row
// with its columns as bytes.
void RunSql(
    const std::string& db_path, const std::string& sql,
    const std::function<void(const std::vector<std::string>&)>& row = nullptr) {
  sqlite3* db = nullptr;
  ASSERT_EQ(
      sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr),
      SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    std::vector<std::string> columns;
    for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
      const void* bytes = sqlite3_column_blob(stmt, i);
      columns.emplace_back(
          bytes == nullptr ? "" : static_cast<const char*>(bytes),
          static_cast<size_t>(sqlite3_column_bytes(stmt, i)));
    }
    if (row) row(columns);
  }
  EXPECT_EQ(rc, SQLITE_DONE) << sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

class DataKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("data-key");
    key_file_ = dir_ + "/pk-data.key";
    pk_peer_ = ReserveFreePort();
    cn_peer_ = ReserveFreePort();
    pk_config_ = WriteConfig("PK", key_file_);
    cn_config_ = WriteConfig("CN", dir_ + "/cn-data.key");
  }

  // A config whose data key is `key_file`, kept outside the data directory
  // as in production; checkpoints every 200 ms. `extra` is appended TOML.
  std::string WriteConfig(const std::string& country,
                          const std::string& key_file,
                          const std::string& name = "",
                          const std::string& extra = "") {
    GatewayConfigOptions o;
    o.country = country;
    o.data_dir = DataDir(country);
    const bool pk = country == "PK";
    o.peer_address = absl::StrCat("127.0.0.1:", pk ? pk_peer_ : cn_peer_);
    o.peer_endpoint = absl::StrCat("127.0.0.1:", pk ? cn_peer_ : pk_peer_);
    o.retry_max_seconds = 1;
    o.extra_offices = absl::StrCat(
        "\n[audit]\ncheckpoint_interval_ms = 200\n\n[data_protection]\n"
        "key_file = \"",
        key_file, "\"\n", extra);
    return WriteFile(
        absl::StrCat(dir_, "/", name.empty() ? country : name, ".toml"),
        GatewayConfigToml(o));
  }

  std::string DataDir(const std::string& country) const {
    return dir_ + "/" + country + "-data";
  }
  std::string PkDatabase() const { return DataDir("PK") + "/gateway.db"; }

  std::unique_ptr<client::OfficeClient> Pk(const std::string& stem) {
    return OfficeClientFor(stem, pk_->office_endpoint(), "PK");
  }

  std::string Logs() const {
    return absl::StrCat("\nPK log:\n", pk_ ? pk_->Log() : "", "\nCN log:\n",
                        cn_ ? cn_->Log() : "");
  }

  void StartPk() {
    ASSERT_OK_AND_ASSIGN(pk_, GatewayProcess::Start(pk_config_));
  }
  void StartCn() {
    ASSERT_OK_AND_ASSIGN(cn_, GatewayProcess::Start(cn_config_));
  }
  void StopPk() {
    ASSERT_EQ(pk_->Stop(), 0) << Logs();
    pk_.reset();
  }

  // FIA's case, shared with MPS's liaison desk; its exchange id.
  std::string OpenCase() {
    auto opened = OpenSharedCase(*Pk(kFia));
    EXPECT_OK(opened);
    return opened.ok() ? *opened : "";
  }

  // FIA sends a rescue request on `exchange_id` to MPS and waits for the CN
  // gateway's receipt; the message id.
  std::string SendAndDeliver(const std::string& exchange_id) {
    v1::SendMessageRequest request;
    v1::CaseMessage* m = request.mutable_message();
    m->set_exchange_id(exchange_id);
    m->set_kind(v1::MESSAGE_KIND_RESCUE_REQUEST);
    m->set_priority(v1::PRIORITY_URGENT);
    m->set_recipient_office(kMpsId);
    m->set_body(kBody);
    auto sent = Pk(kFia)->SendMessage(request);
    EXPECT_OK(sent);
    if (!sent.ok()) return "";
    EXPECT_TRUE(WaitUntil([&] {
      auto s = Pk(kFia)->GetDeliveryStatus(sent->message_id());
      return s.ok() && s->state() == v1::DELIVERY_STATE_DELIVERED;
    })) << Logs();
    return sent->message_id();
  }

  // The evidence of `message_id`, once both logs' entries are under
  // cosigned checkpoints.
  absl::StatusOr<v1::EvidenceBundle> AwaitEvidence(
      const std::string& message_id) {
    absl::StatusOr<v1::EvidenceBundle> bundle =
        absl::DeadlineExceededError("not asked yet");
    WaitUntil([&] {
      bundle = Pk(kFia)->GetEvidence(message_id);
      return bundle.status().code() != absl::StatusCode::kFailedPrecondition;
    });
    return bundle;
  }

  std::vector<v1::AuditEntry> PkAuditEntries() {
    return ReadAuditEntries(*Pk(kPkAuditor));
  }

  CommandResult Gateway(std::vector<std::string> args) {
    args.insert(args.begin(), GatewayBinary());
    return RunCommand(args);
  }
  CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), CliBinary());
    return RunCommand(args);
  }

  // Writes raw key bytes as a data key file (mode 0600).
  void WriteKey(const std::string& path, const std::string& raw) {
    WriteFile(path, raw);
    ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  }

  std::string dir_;
  std::string key_file_;
  int pk_peer_ = 0;
  int cn_peer_ = 0;
  std::string pk_config_;
  std::string cn_config_;
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<GatewayProcess> cn_;
};

TEST_F(DataKeyTest, RotatedKeyServesSealedDataAndTheOldKeyIsRefused) {
  StartPk();
  StartCn();
  const std::string exchange_id = OpenCase();
  ASSERT_FALSE(exchange_id.empty());
  const std::string message_id = SendAndDeliver(exchange_id);
  ASSERT_FALSE(message_id.empty());
  // The sealed outbox envelope, opened for the evidence bundle.
  ASSERT_OK_AND_ASSIGN(const v1::EvidenceBundle before,
                       AwaitEvidence(message_id));
  StopPk();
  const std::string old_key = ReadRaw(key_file_);
  ASSERT_EQ(old_key.size(), 32u);

  const CommandResult rotated =
      Gateway({"rotate-data-key", "--config", pk_config_});
  ASSERT_EQ(rotated.exit_code, 0) << rotated.out << rotated.err;
  // The keys of the case, of its share and of the message.
  EXPECT_THAT(rotated.out,
              MatchesRegex(absl::StrCat("data key rotated: ", key_file_,
                                        "; 3 record keys re-wrapped; check id "
                                        "[0-9a-f]{16} -> [0-9a-f]{16}\n")));
  const std::string new_check_id =
      rotated.out.substr(rotated.out.size() - 17, 16);
  const std::string old_check_id =
      rotated.out.substr(rotated.out.size() - 37, 16);

  // The new key is in place, for its owner only, and nothing is pending.
  const std::string new_key = ReadRaw(key_file_);
  EXPECT_EQ(new_key.size(), 32u);
  EXPECT_NE(new_key, old_key);
  struct stat st;
  ASSERT_EQ(::stat(key_file_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600);
  EXPECT_FALSE(Exists(key_file_ + ".new"));

  // The old key no longer opens the database: the gateway refuses to start,
  // naming the check value it does not open.
  const std::string old_key_file = dir_ + "/pk-old-data.key";
  WriteKey(old_key_file, old_key);
  const std::string old_config = WriteConfig("PK", old_key_file, "PK-old");
  auto refused = GatewayProcess::Start(old_config);
  ASSERT_FALSE(refused.ok()) << "started with the old data key";
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr(absl::StrCat("is not the key of the database")));
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr(absl::StrCat("check value, check id ", new_check_id)));

  // Restarted with the rotated key, it serves the sealed case and envelope.
  StartPk();
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       Pk(kFia)->GetCase(exchange_id));
  ASSERT_EQ(got.victims_size(), 1);
  EXPECT_EQ(got.victims(0).remarks(), kRemarks);
  ASSERT_OK_AND_ASSIGN(const v1::EvidenceBundle after,
                       AwaitEvidence(message_id));
  EXPECT_EQ(after.envelope().SerializeAsString(),
            before.envelope().SerializeAsString());

  // The rotation is on record, by the gateway, naming the check ids.
  bool audited = false;
  for (const v1::AuditEntry& e : PkAuditEntries()) {
    if (e.action() != "data_key.rotate") continue;
    audited = true;
    EXPECT_EQ(e.actor(), "spiffe://pk.casebridge/gateway");
    EXPECT_THAT(e.subjects(),
                ::testing::ElementsAre(old_check_id, new_check_id));
  }
  EXPECT_TRUE(audited) << Logs();

  // The log still verifies offline.
  StopPk();
  ASSERT_EQ(cn_->Stop(), 0) << Logs();
  const CommandResult verified =
      Cli({"audit", "verify", "--data-dir", DataDir("PK"), "--keys",
           Pki("public-keys.toml")});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_THAT(verified.out, HasSubstr(": OK, "));
}

TEST_F(DataKeyTest, RotationIsRefusedWhileTheGatewayRuns) {
  StartPk();
  ASSERT_FALSE(OpenCase().empty());
  const std::string key = ReadRaw(key_file_);

  const CommandResult refused =
      Gateway({"rotate-data-key", "--config", pk_config_});
  EXPECT_EQ(refused.exit_code, 1) << refused.out << refused.err;
  EXPECT_THAT(refused.err, HasSubstr("data key not rotated"));
  EXPECT_THAT(refused.err, HasSubstr("in use by another running gateway"));
  EXPECT_EQ(ReadRaw(key_file_), key);
  EXPECT_FALSE(Exists(key_file_ + ".new"));
  // The gateway serves on, with the same key.
  ASSERT_OK(Pk(kFia)->WhoAmI().status());
  StopPk();
  StartPk();
  ASSERT_OK(Pk(kFia)->GetCase(PkExchangeId(1)).status());
}

TEST_F(DataKeyTest, AStartAfterACrashBetweenCommitAndRenameFinishesIt) {
  StartPk();
  const std::string exchange_id = OpenCase();
  ASSERT_FALSE(exchange_id.empty());
  StopPk();
  const std::string old_key = ReadRaw(key_file_);
  const CommandResult rotated =
      Gateway({"rotate-data-key", "--config", pk_config_});
  ASSERT_EQ(rotated.exit_code, 0) << rotated.out << rotated.err;
  const std::string new_key = ReadRaw(key_file_);
  // As a crash between the commit and the rename leaves it: the database
  // sealed under the pending key file, the old key still in key_file.
  ASSERT_EQ(::rename(key_file_.c_str(), (key_file_ + ".new").c_str()), 0);
  WriteKey(key_file_, old_key);

  StartPk();
  EXPECT_THAT(pk_->Log(), HasSubstr("data_key.rotation_finished"));
  EXPECT_EQ(ReadRaw(key_file_), new_key);
  EXPECT_FALSE(Exists(key_file_ + ".new"));
  struct stat st;
  ASSERT_EQ(::stat(key_file_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       Pk(kFia)->GetCase(exchange_id));
  ASSERT_EQ(got.victims_size(), 1);
  EXPECT_EQ(got.victims(0).remarks(), kRemarks);
}

TEST_F(DataKeyTest, AStartAfterACrashBeforeTheCommitKeepsTheOldKey) {
  StartPk();
  const std::string exchange_id = OpenCase();
  ASSERT_FALSE(exchange_id.empty());
  StopPk();
  const std::string key = ReadRaw(key_file_);
  // As a crash before the commit leaves it: a new key nothing is sealed
  // under.
  WriteKey(key_file_ + ".new", std::string(32, 'k'));

  StartPk();
  EXPECT_THAT(pk_->Log(), HasSubstr("data_key.rotation_discarded"));
  EXPECT_EQ(ReadRaw(key_file_), key);
  EXPECT_FALSE(Exists(key_file_ + ".new"));
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       Pk(kFia)->GetCase(exchange_id));
  EXPECT_EQ(got.victims(0).remarks(), kRemarks);
}

// Retention purges on a real gateway, checked with the real CLI. Retention
// is counted in days; the test moves the rows' times two days back while the
// gateway is stopped, and the purge runs as the gateway starts.
TEST_F(DataKeyTest, PurgedPayloadsAreGoneAndTheCliReportsThemPurged) {
  pk_config_ = WriteConfig("PK", key_file_, "PK",
                           "\n[retention]\nmessage_days = 1\n\n"
                           "[retention.case_status]\nclosed = 1\n");
  StartPk();
  StartCn();
  const std::string exchange_id = OpenCase();
  ASSERT_FALSE(exchange_id.empty());
  const std::string message_id = SendAndDeliver(exchange_id);
  ASSERT_FALSE(message_id.empty());
  v1::UpdateCaseRequest close;
  close.mutable_case_reference()->set_exchange_id(exchange_id);
  close.mutable_case_reference()->set_status(v1::CASE_STATUS_CLOSED);
  close.mutable_update_mask()->add_paths("status");
  close.set_expected_version(1);
  ASSERT_OK(Pk(kFia)->UpdateCase(close).status());
  // A refused OpenCase naming a victim: audited, nothing stored.
  v1::CaseReference refused = ValidDraft();
  refused.clear_local_reference();
  EXPECT_THAT(Pk(kFia)->OpenCase(refused),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("local_reference")));
  // Both logs witnessed by the other side before the purge.
  ASSERT_OK(AwaitEvidence(message_id).status()) << Logs();
  StopPk();
  auto count = [&](const std::string& sql) {
    std::string n;
    RunSql(PkDatabase(), sql, [&](const auto& row) { n = row[0]; });
    return n;
  };
  constexpr char kRefusedOpens[] =
      "SELECT COUNT(*) FROM audit_log WHERE action = 'case.open' AND "
      "status_code = 3";
  ASSERT_EQ(count(kRefusedOpens), "1");

  // What the purge must take off the disk: the three records' wrapped keys
  // and the sealed bytes of the case, of its share and of the message.
  std::vector<std::string> sealed;
  RunSql(PkDatabase(),
         "SELECT wrapped FROM record_keys WHERE record != 'check/data-key'",
         [&](const auto& row) { sealed.push_back(row[0]); });
  RunSql(PkDatabase(), "SELECT body FROM cases WHERE sealed = 1",
         [&](const auto& row) { sealed.push_back(row[0]); });
  RunSql(PkDatabase(), "SELECT body FROM messages WHERE sealed = 1",
         [&](const auto& row) { sealed.push_back(row[0]); });
  ASSERT_EQ(sealed.size(), 6u);
  const std::string raw_before =
      ReadRaw(PkDatabase()) + ReadRaw(PkDatabase() + "-wal");
  for (const std::string& bytes : sealed) {
    ASSERT_NE(raw_before.find(bytes), std::string::npos)
        << "not where the test looks";
  }
  // Two days pass.
  constexpr int64_t kTwoDaysUs = int64_t{2} * 24 * 3600 * 1000000;
  RunSql(PkDatabase(), absl::StrCat("UPDATE cases SET updated_us = "
                                    "updated_us - ",
                                    kTwoDaysUs));
  RunSql(PkDatabase(), absl::StrCat("UPDATE messages SET created_us = "
                                    "created_us - ",
                                    kTwoDaysUs));
  RunSql(PkDatabase(), absl::StrCat("UPDATE audit_log SET time_us = "
                                    "time_us - ",
                                    kTwoDaysUs, " WHERE status_code != 0"));

  StartPk();
  EXPECT_TRUE(WaitUntil([&] {
    auto got = Pk(kFia)->GetCase(exchange_id);
    return got.ok() && got->has_personal_data_purged_at();
  })) << Logs();
  int purges = 0;
  EXPECT_TRUE(WaitUntil([&] {
    purges = 0;
    for (const v1::AuditEntry& e : PkAuditEntries()) {
      if (e.action() == "retention.purge") ++purges;
    }
    return purges == 3;  // the message, the case's share and the case
  })) << purges
      << Logs();
  // The refusal's salt too, in a purge of its own.
  EXPECT_TRUE(WaitUntil([&] {
    for (const v1::AuditEntry& e : PkAuditEntries()) {
      if (e.action() == "retention.purge_refusals") return true;
    }
    return false;
  })) << Logs();
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference purged,
                       Pk(kFia)->GetCase(exchange_id));
  EXPECT_EQ(purged.victims_size(), 0);
  StopPk();
  ASSERT_EQ(cn_->Stop(), 0) << Logs();
  EXPECT_EQ(count(absl::StrCat(kRefusedOpens, " AND salt IS NULL")), "1");

  // Gone from the database file and its WAL.
  const std::string raw_after =
      ReadRaw(PkDatabase()) + ReadRaw(PkDatabase() + "-wal");
  for (const std::string& bytes : sealed) {
    EXPECT_EQ(raw_after.find(bytes), std::string::npos)
        << "purged bytes are still in the file";
  }
  EXPECT_EQ(raw_after.find(kBody), std::string::npos);
  EXPECT_EQ(raw_after.find("Handan, Hebei"), std::string::npos);

  // The log verifies, the purged payloads counted as purged.
  const std::string keys_file = Pki("public-keys.toml");
  const CommandResult text = Cli(
      {"audit", "verify", "--data-dir", DataDir("PK"), "--keys", keys_file});
  EXPECT_EQ(text.exit_code, 0) << text.out << text.err;
  EXPECT_THAT(text.out,
              MatchesRegex("audit log .*: OK, [0-9]+ entries, [0-9]+ "
                           "checkpoints? \\([1-9][0-9]* cosigned by the "
                           "peer\\), [1-9][0-9]* payloads? purged under "
                           "retention; [1-9][0-9]* cases? of this gateway at "
                           "the version the log gives\n(.|\n)*"));
  const CommandResult json =
      Cli({"audit", "verify", "--data-dir", DataDir("PK"), "--keys", keys_file,
           "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.out << json.err;
  const nlohmann::json parsed = nlohmann::json::parse(json.out);
  EXPECT_TRUE(parsed.at("ok").get<bool>());
  // Every salt the purges cleared (the case's, the share's, the message's
  // and the refused case.open's), as the file has them.
  EXPECT_EQ(
      parsed.at("purged_payloads").get<int>(),
      std::stoi(count("SELECT COUNT(*) FROM audit_log WHERE salt IS NULL")))
      << json.out;
}

}  // namespace
}  // namespace casebridge::testing
