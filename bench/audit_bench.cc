// Benchmarks of the audit log against the speed targets of
// docs/performance.md, over a fixture log of 1,000,000 entries (20,000 with
// --quick):
//
//   BM_AppendInOfficeTransaction  what an audit append adds to an office call
//                                 (target: under 50 µs);
//   BM_InclusionProof             an inclusion proof served through
//                                 SqliteAuditLog (target: under 1 ms);
//   BM_OfflineVerify              offline verification of the whole log with
//                                 its signed, cosigned checkpoints (target:
//                                 500,000 entries/s or more);
//   BM_AppendCommitBreakdown      where the append's cost goes (statements
//                                 vs COMMIT, with and without fsync);
//   BM_AppendConcurrent           the append's cost under group commit.
//
// The fixture is built once and cached under $CASEBRIDGE_BENCH_DIR (default:
// <build dir>/bench-data), one directory per size, reused while its marker
// file matches. Flags of our own, removed before Google Benchmark sees the
// rest:
//   --quick            20,000 entries and few iterations (also
//                      CASEBRIDGE_BENCH_QUICK=1); for CI, asserts no timings
//   --entries=N        another fixture size
//   --rebuild-fixture  build the fixture afresh even if one is cached
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "casebridge/v1/common.pb.h"
#include "core/audit_entry.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/merkle.h"
#include "core/note.h"
#include "core/public_keys.h"
#include "core/status_macros.h"
#include "server/audit_verifier.h"
#include "server/checkpointer.h"
#include "server/sqlite.h"
#include "server/sqlite_audit_log.h"
#include "server/sqlite_case_store.h"
#include "server/witness.h"

namespace casebridge::bench {
namespace {

using server::AuditEvent;
using server::GatewayStore;
using server::StoredCheckpoint;
using SteadyClock = std::chrono::steady_clock;

// Bumped whenever the fixture's content changes, so stale caches rebuild.
constexpr int kFixtureFormat = 3;
// The fixture's cases are of a year of their own, so that those the
// benchmarks open (this year's) never take their ids.
constexpr char kFixtureCasePrefix[] = "PK-2025-";
constexpr uint64_t kFullEntries = 1'000'000;
constexpr uint64_t kQuickEntries = 20'000;
// A checkpoint every 1/100th of the log: every 10,000 entries at full size.
constexpr uint64_t kCheckpoints = 100;
// Appends per write transaction while building.
constexpr uint64_t kBuildBatch = 10'000;
constexpr char kOurGateway[] = "spiffe://pk.casebridge/gateway";
// The office the office-call benchmark acts as. The fixture has no cases:
// every case row is the benchmark's own, removed afterwards.
constexpr char kBenchOffice[] =
    "spiffe://pk.casebridge/office/fia-liaison-desk";

struct Settings {
  bool quick = false;
  bool rebuild = false;
  uint64_t entries = kFullEntries;
  std::string root;  // fixture cache
};

Settings& GetSettings() {
  static Settings* settings = new Settings();
  return *settings;
}

// --- Failing loudly ----------------------------------------------------------

// The fixture is not something a benchmark can skip past: stop.
[[noreturn]] void Die(absl::string_view what, const absl::Status& status) {
  std::fprintf(stderr, "casebridge-audit-bench: %s: %s\n",
               std::string(what).c_str(), status.ToString().c_str());
  std::exit(1);
}

void CheckOk(absl::string_view what, const absl::Status& status) {
  if (!status.ok()) Die(what, status);
}

template <typename T>
T ValueOrDie(absl::string_view what, absl::StatusOr<T> value) {
  if (!value.ok()) Die(what, value.status());
  return *std::move(value);
}

// Set when a benchmark fails, so the process exits non-zero (the ctest of
// --quick relies on it); Google Benchmark itself only reports the error.
bool failed = false;

void Fail(benchmark::State& state, const std::string& why) {
  failed = true;
  state.SkipWithError(why.c_str());
}

double Micros(SteadyClock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

// `q`-quantile of `values` (sorted in place).
double Quantile(std::vector<double>& values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto at = static_cast<size_t>(q * static_cast<double>(values.size()));
  return values[std::min(at, values.size() - 1)];
}

double Mean(const std::vector<double>& values) {
  if (values.empty()) return 0;
  double sum = 0;
  for (const double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

// --- Realistic entries -------------------------------------------------------

constexpr const char* kOffices[] = {
    "spiffe://pk.casebridge/office/fia-liaison-desk",
    "spiffe://pk.casebridge/office/fia-lahore",
    "spiffe://pk.casebridge/office/fia-islamabad",
    "spiffe://pk.casebridge/office/fia-karachi",
    "spiffe://pk.casebridge/office/punjab-police-faisalabad",
    "spiffe://pk.casebridge/office/punjab-police-gujranwala",
    "spiffe://pk.casebridge/office/embassy-beijing",
    "spiffe://pk.casebridge/office/consulate-guangzhou",
};
constexpr size_t kOfficeCount = sizeof(kOffices) / sizeof(kOffices[0]);

// Audit events shaped like a gateway's traffic: offices opening and updating
// cases and sending messages, the gateway sending envelopes and storing
// receipts, incoming messages delivered to inboxes, a few refusals. Each
// names its case and, for message traffic, the message and envelope ids.
class EventMaker {
 public:
  explicit EventMaker(uint64_t seed) : rng_(seed) {}

  AuditEvent Next(uint64_t index) {
    AuditEvent event;
    const std::string office = kOffices[Uniform(kOfficeCount)];
    // A new case every ~20 entries; activity is on the ~2,000 newest.
    const uint64_t newest = 1 + index / 20;
    const uint64_t back = Uniform(2000);
    const uint64_t number = newest > back ? newest - back : 1;
    const std::string exchange_id = absl::StrFormat(
        "%s%06d", kFixtureCasePrefix, std::min<uint64_t>(number, 999999));
    const absl::Time now = absl::Now();
    const uint64_t kind = Uniform(100);
    if (kind < 10) {
      event.actor = office;
      event.action = "case.open";
      event.subjects = {exchange_id,
                        absl::StrCat("FIR-", Uniform(900) + 100, "/2026")};
    } else if (kind < 25) {
      event.actor = office;
      event.action = "case.update";
      event.subjects = {exchange_id, absl::StrCat("v", Uniform(12) + 2)};
    } else if (kind < 45) {
      event.actor = office;
      event.action = "message.send";
      event.subjects = {exchange_id,
                        MintId(v1::COUNTRY_PK, IdKind::kMessage, now)};
    } else if (kind < 65) {
      event.actor = kOurGateway;
      event.action = "envelope.sent";
      event.subjects = {exchange_id,
                        MintId(v1::COUNTRY_PK, IdKind::kMessage, now),
                        MintId(v1::COUNTRY_PK, IdKind::kEnvelope, now)};
    } else if (kind < 80) {
      event.actor = kOurGateway;
      event.action = "receipt.stored";
      event.subjects = {exchange_id,
                        MintId(v1::COUNTRY_PK, IdKind::kMessage, now),
                        MintId(v1::COUNTRY_PK, IdKind::kEnvelope, now)};
    } else if (kind < 92) {
      event.actor = office;
      event.action = "inbox.delivered";
      event.subjects = {exchange_id,
                        MintId(v1::COUNTRY_CN, IdKind::kMessage, now)};
    } else {
      event.actor = office;
      event.action = "message.acknowledge";
      event.subjects = {exchange_id,
                        MintId(v1::COUNTRY_CN, IdKind::kMessage, now)};
    }
    if (Uniform(100) < 3) {
      event.outcome = absl::PermissionDeniedError(
          absl::StrCat(office, " may not act on case ", exchange_id,
                       ": it is neither the owner nor an addressee"));
    }
    event.payload = Payload(200 + Uniform(301));
    if (event.outcome.ok() &&
        (event.action == "case.open" || event.action == "case.update")) {
      ++case_versions_[exchange_id];
    }
    return event;
  }

  // The version each case reached: one per successful case.open or
  // case.update, as the offline verifier counts them.
  const std::map<std::string, int64_t>& case_versions() const {
    return case_versions_;
  }

 private:
  uint64_t Uniform(uint64_t n) { return rng_() % n; }

  // `n` pseudo-random bytes: the log stores only their salted hash.
  std::string Payload(size_t n) {
    std::string out(n, '\0');
    for (size_t i = 0; i < n; i += 8) {
      const uint64_t word = rng_();
      for (size_t j = 0; j < 8 && i + j < n; ++j) {
        out[i + j] = static_cast<char>((word >> (8 * j)) & 0xff);
      }
    }
    return out;
  }

  std::mt19937_64 rng_;
  std::map<std::string, int64_t> case_versions_;
};

// --- The fixture -------------------------------------------------------------

// Public keys kept next to the fixture (the private ones are needed only
// while building it).
constexpr const char* kKeyNames[] = {"pk.envelope",   "pk.checkpoint",
                                     "pk.witness",    "cn.envelope",
                                     "cn.checkpoint", "cn.witness"};

// Runs `sql` on a connection of its own: WAL checkpoints cannot run inside
// the Database's transactions.
void ExecOnOwnConnection(const std::string& path, const std::string& sql) {
  auto connection = ValueOrDie(absl::StrCat("opening ", path),
                               sqlite::Connection::Open(path, false));
  CheckOk(sql, connection->Exec(sql));
}

// PK's gateway log of `entries` entries, with a signed checkpoint every
// entries/100 entries, each cosigned by CN's witness (a server::Witness over
// a second gateway store), as a live pair of gateways would leave it.
class Fixture {
 public:
  // Built (or loaded from the cache) on first use.
  static Fixture& Get() {
    static Fixture* fixture = new Fixture(GetSettings());
    return *fixture;
  }

  const std::string& pk_dir() const { return pk_dir_; }
  GatewayStore& store() { return *store_; }
  const keys::PublicKeys& keys() const { return keys_; }
  uint64_t size() const { return entries_; }

  // Puts the fixture back as built: removes entries appended after it and
  // the benchmark's case rows, so reruns start from the same log.
  void Restore() {
    const uint64_t n = entries_;
    std::vector<server::StoredEntry> extra;
    while (true) {
      auto page = ValueOrDie("reading appended entries",
                             store_->audit_log().Read(n + extra.size(), 1000));
      if (page.empty()) break;
      for (auto& e : page) extra.push_back(std::move(e));
    }
    // On a connection of our own with foreign keys off: deleting a log row
    // would otherwise scan audit_subjects (keyed by subject) for references.
    auto c = ValueOrDie(
        "opening the fixture",
        sqlite::Connection::Open(GatewayStore::DatabasePath(pk_dir_), false));
    CheckOk("restoring the fixture", [&]() -> absl::Status {
      CB_RETURN_IF_ERROR(c->Exec("PRAGMA foreign_keys=OFF; BEGIN IMMEDIATE"));
      for (const server::StoredEntry& e : extra) {
        for (const std::string& subject : e.entry.subjects) {
          CB_ASSIGN_OR_RETURN(auto del,
                              c->Prepare("DELETE FROM audit_subjects "
                                         "WHERE subject = ? AND idx = ?"));
          CB_RETURN_IF_ERROR(del.Bind(1, subject)
                                 .Bind(2, static_cast<int64_t>(e.index))
                                 .Run());
        }
      }
      const auto first = static_cast<int64_t>(n);
      // Node (level, idx) covers a leaf at or after n iff idx >= n >> level.
      for (int level = 0; level < 64; ++level) {
        CB_ASSIGN_OR_RETURN(
            auto nodes, c->Prepare("DELETE FROM audit_nodes WHERE level = ? "
                                   "AND idx >= ?"));
        CB_RETURN_IF_ERROR(nodes.Bind(1, level)
                               .Bind(2, static_cast<int64_t>(n >> level))
                               .Run());
      }
      CB_ASSIGN_OR_RETURN(auto log,
                          c->Prepare("DELETE FROM audit_log WHERE idx >= ?"));
      CB_RETURN_IF_ERROR(log.Bind(1, first).Run());
      CB_RETURN_IF_ERROR(c->Exec(absl::StrCat(
          "DELETE FROM cases WHERE substr(exchange_id, 1, ",
          std::strlen(kFixtureCasePrefix), ") != '", kFixtureCasePrefix, "'")));
      CB_RETURN_IF_ERROR(c->Exec("DELETE FROM exchange_id_counters"));
      return c->Exec("COMMIT; PRAGMA wal_checkpoint(TRUNCATE)");
    }());
  }

 private:
  explicit Fixture(const Settings& settings)
      : entries_(settings.entries),
        dir_((std::filesystem::path(settings.root) /
              absl::StrCat("audit-", settings.entries))
                 .string()),
        pk_dir_((std::filesystem::path(dir_) / "pk").string()),
        marker_((std::filesystem::path(dir_) / "READY").string()),
        keys_path_((std::filesystem::path(dir_) / "public-keys.txt").string()) {
    if (!settings.rebuild && ReadFileOrEmpty(marker_) == MarkerText()) {
      std::fprintf(stderr, "Using the cached fixture in %s\n", dir_.c_str());
      Load();
    } else {
      Build();
    }
  }

  std::string MarkerText() const {
    return absl::StrCat("casebridge audit bench fixture format ",
                        kFixtureFormat, "\nentries ", entries_,
                        "\ncheckpoints ", kCheckpoints, "\n");
  }

  static std::string ReadFileOrEmpty(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  static void WriteFileOrDie(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) Die(path, absl::InternalError("cannot write"));
  }

  void OpenStore() {
    store_ = ValueOrDie(
        absl::StrCat("opening ", pk_dir_),
        GatewayStore::Open(pk_dir_, v1::COUNTRY_PK, &RealClock::Get()));
  }

  void Load() {
    std::vector<std::string> raw(std::size(kKeyNames));
    for (absl::string_view line :
         absl::StrSplit(ReadFileOrEmpty(keys_path_), '\n', absl::SkipEmpty())) {
      const std::vector<std::string> fields = absl::StrSplit(line, ' ');
      for (size_t i = 0; i < raw.size(); ++i) {
        if (fields.size() == 2 && fields[0] == kKeyNames[i]) {
          raw[i] = absl::HexStringToBytes(fields[1]);
        }
      }
    }
    SetKeys(raw);
    OpenStore();
    const uint64_t size =
        ValueOrDie("reading the log size", store_->audit_log().Size());
    if (size < entries_) {
      Die(dir_, absl::DataLossError(
                    absl::StrCat("the cached log has ", size, " entries, not ",
                                 entries_, "; rerun with --rebuild-fixture")));
    }
    Restore();  // a run that stopped half-way may have left some behind
  }

  void SetKeys(const std::vector<std::string>& raw) {
    keys_.pk = ValueOrDie(
        "pk keys",
        keys::MakeGatewayKeys(v1::COUNTRY_PK, raw[0], raw[1], raw[2]));
    keys_.cn = ValueOrDie(
        "cn keys",
        keys::MakeGatewayKeys(v1::COUNTRY_CN, raw[3], raw[4], raw[5]));
  }

  void Build() {
    std::fprintf(stderr, "Building a fixture log of %llu entries in %s\n",
                 static_cast<unsigned long long>(entries_), dir_.c_str());
    const auto started = SteadyClock::now();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    std::filesystem::create_directories(dir_, ec);
    if (ec) Die(dir_, absl::InternalError(ec.message()));

    std::vector<std::unique_ptr<crypto::Ed25519Signer>> signers;
    std::vector<std::string> raw;
    std::string keys_text;
    for (const char* name : kKeyNames) {
      signers.push_back(crypto::Ed25519Signer::Generate());
      raw.push_back(signers.back()->public_key());
      absl::StrAppend(&keys_text, name, " ",
                      crypto::HexEncode(signers.back()->public_key()), "\n");
    }
    const crypto::Ed25519Signer& pk_checkpoint_key = *signers[1];
    const crypto::Ed25519Signer& cn_witness_key = *signers[5];
    WriteFileOrDie(keys_path_, keys_text);
    SetKeys(raw);

    const Clock& clock = RealClock::Get();
    OpenStore();
    const std::string cn_dir = (std::filesystem::path(dir_) / "cn").string();
    auto cn = ValueOrDie(absl::StrCat("opening ", cn_dir),
                         GatewayStore::Open(cn_dir, v1::COUNTRY_CN, &clock));

    server::Checkpointer::Options checkpointer_options;
    checkpointer_options.origin = audit::LogOrigin("PK");
    checkpointer_options.signer = &pk_checkpoint_key;
    server::Checkpointer checkpointer(checkpointer_options, &store_->database(),
                                      &store_->audit_log(), nullptr, &clock);

    server::Witness::Options witness_options;
    witness_options.peer_origin = audit::LogOrigin("PK");
    witness_options.peer_checkpoint_key =
        note::MakeVerifierKey(witness_options.peer_origin, note::kTypeEd25519,
                              pk_checkpoint_key.public_key());
    witness_options.witness_name = audit::WitnessName("CN");
    witness_options.signer = &cn_witness_key;
    server::Witness witness(witness_options, &cn->database(), &cn->audit_log(),
                            &clock);
    CheckOk("loading the witness", witness.Load());
    const note::VerifierKey cosignature_key = note::MakeVerifierKey(
        witness_options.witness_name, note::kTypeCosignatureV1,
        cn_witness_key.public_key());

    const uint64_t every = std::max<uint64_t>(1, entries_ / kCheckpoints);
    EventMaker maker(/*seed=*/20260101);
    uint64_t done = 0;
    uint64_t cosigned = 0;
    uint64_t next_report = 100'000;
    while (done < entries_) {
      const uint64_t until_checkpoint = every - done % every;
      const uint64_t batch =
          std::min({kBuildBatch, until_checkpoint, entries_ - done});
      std::vector<AuditEvent> events;
      events.reserve(batch);
      for (uint64_t i = 0; i < batch; ++i)
        events.push_back(maker.Next(done + i));
      CheckOk(
          "appending",
          store_->database().Write([&](sqlite::Connection& c) -> absl::Status {
            for (const AuditEvent& event : events) {
              CB_RETURN_IF_ERROR(
                  store_->audit_log().AppendInTransaction(c, event).status());
            }
            return absl::OkStatus();
          }));
      done += batch;
      if (done % every == 0 || done == entries_) {
        cosigned = Checkpoint(checkpointer, witness, cosignature_key, cosigned);
      }
      if (done >= next_report) {
        std::fprintf(stderr, "  %llu entries, %.0f s\n",
                     static_cast<unsigned long long>(done),
                     std::chrono::duration<double>(SteadyClock::now() - started)
                         .count());
        next_report += 100'000;
      }
    }
    // The cases the log opened, at the versions it gives them, so that the
    // log verifies against its store.
    CheckOk(
        "inserting the cases",
        store_->database().Write([&](sqlite::Connection& c) -> absl::Status {
          for (const auto& [id, version] : maker.case_versions()) {
            // Prepared once: the connection caches its statements.
            CB_ASSIGN_OR_RETURN(
                auto insert,
                c.Prepare("INSERT INTO cases(exchange_id, local_reference, "
                          "category, status, owner_office, summary, "
                          "version, created_us, updated_us, body, sealed) "
                          "VALUES(?, 'FIR-100/2026', 1, 1, ?, '', ?, 0, 0, "
                          "X'', 0)"));
            insert.Bind(1, id).Bind(2, kOffices[0]).Bind(3, version);
            CB_RETURN_IF_ERROR(insert.Run());
          }
          return absl::OkStatus();
        }));
    cn.reset();
    ExecOnOwnConnection(GatewayStore::DatabasePath(pk_dir_),
                        "PRAGMA wal_checkpoint(TRUNCATE)");
    WriteFileOrDie(marker_, MarkerText());
    std::fprintf(
        stderr, "Fixture built in %.0f s\n",
        std::chrono::duration<double>(SteadyClock::now() - started).count());
  }

  // Signs a checkpoint of the whole log and has CN's witness cosign it, as
  // Checkpointer::Witness does over the network. Returns the size cosigned.
  uint64_t Checkpoint(server::Checkpointer& checkpointer,
                      server::Witness& witness,
                      const note::VerifierKey& cosignature_key,
                      uint64_t old_size) {
    const std::optional<StoredCheckpoint> checkpoint =
        ValueOrDie("signing a checkpoint", checkpointer.MakeCheckpoint());
    if (!checkpoint.has_value()) return old_size;
    v1::AddCheckpointRequest request;
    request.set_checkpoint(checkpoint->note);
    request.set_old_size(old_size);
    if (old_size > 0) {
      for (const std::string& hash :
           ValueOrDie("consistency proof", store_->audit_log().ConsistencyProof(
                                               old_size, checkpoint->size))) {
        request.add_consistency_proof(hash);
      }
    }
    const std::string line =
        ValueOrDie("cosigning", witness.AddCheckpoint(kOurGateway, request));
    const std::string cosigned_note = checkpoint->note + line;
    const note::Note parsed =
        ValueOrDie("parsing the cosigned note", note::Parse(cosigned_note));
    CheckOk("verifying the cosignature",
            note::VerifyCosignature(parsed, cosignature_key).status());
    CheckOk("storing the cosignature",
            store_->audit_log().StoreCosigned(checkpoint->size, cosigned_note));
    return checkpoint->size;
  }

  const uint64_t entries_;
  const std::string dir_;
  const std::string pk_dir_;
  const std::string marker_;
  const std::string keys_path_;
  keys::PublicKeys keys_;
  std::unique_ptr<GatewayStore> store_;
};

// --- BM_AppendInOfficeTransaction --------------------------------------------

// A new case row, as CaseStore::OpenCase writes it (exchange id counter bump
// and the INSERT), without the audit append.
absl::StatusOr<std::string> InsertCase(sqlite::Connection& c,
                                       const v1::CaseReference& draft) {
  const absl::Time now = absl::Now();
  CB_ASSIGN_OR_RETURN(auto bump,
                      c.Prepare("INSERT INTO exchange_id_counters(year, last) "
                                "VALUES(?, 1) ON CONFLICT(year) DO UPDATE SET "
                                "last = last + 1 RETURNING last"));
  bump.Bind(1, absl::ToCivilYear(now, absl::UTCTimeZone()).year());
  CB_ASSIGN_OR_RETURN(const bool got, bump.Step());
  if (!got) return absl::InternalError("no counter row");
  const int64_t number = bump.ColumnInt(0);
  CB_ASSIGN_OR_RETURN(const bool extra, bump.Step());
  (void)extra;
  v1::CaseReference c_ref = draft;
  c_ref.set_exchange_id(absl::StrFormat(
      "PK-%04d-%06d", absl::ToCivilYear(now, absl::UTCTimeZone()).year(),
      number));
  c_ref.set_status(v1::CASE_STATUS_OPEN);
  c_ref.set_owner_office(kBenchOffice);
  c_ref.set_origin_country(v1::COUNTRY_PK);
  c_ref.set_version(1);
  c_ref.mutable_created_at()->set_seconds(absl::ToUnixSeconds(now));
  *c_ref.mutable_updated_at() = c_ref.created_at();
  c_ref.set_updated_by(kBenchOffice);
  CB_ASSIGN_OR_RETURN(
      auto insert,
      c.Prepare("INSERT INTO cases(exchange_id, local_reference, category, "
                "status, owner_office, summary, version, created_us, "
                "updated_us, body, request_id, request_hash) "
                "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)"));
  insert.Bind(1, c_ref.exchange_id())
      .Bind(2, c_ref.local_reference())
      .Bind(3, static_cast<int64_t>(c_ref.category()))
      .Bind(4, static_cast<int64_t>(c_ref.status()))
      .Bind(5, c_ref.owner_office())
      .Bind(6, c_ref.summary())
      .Bind(7, c_ref.version())
      .Bind(8, absl::ToUnixMicros(now))
      .Bind(9, absl::ToUnixMicros(now))
      .BindBlob(10, c_ref.SerializeAsString());
  CB_RETURN_IF_ERROR(insert.Run());
  return c_ref.exchange_id();
}

v1::CaseReference DraftCase(uint64_t i) {
  v1::CaseReference draft;
  draft.set_local_reference(absl::StrCat("FIR-", 100 + i % 900, "/2026"));
  draft.set_category(v1::CASE_CATEGORY_FORCED_MARRIAGE_FRAUD);
  draft.set_summary(
      "Woman, early twenties, from Gujranwala district; married through an "
      "agent in 2025 and taken to Shandong province. Family reports phone "
      "contact lost since March; last message mentioned a garment workshop.");
  auto* victim = draft.add_victims();
  victim->set_pseudonym("V1");
  victim->set_remarks("Age band 20-25; speaks Punjabi and Urdu.");
  auto* location = draft.add_last_known_locations();
  location->set_description("Linyi, Shandong");
  location->set_country(v1::COUNTRY_CN);
  draft.set_handling_code(v1::HANDLING_CODE_H2);
  return draft;
}

// Pages the writer wrote to the WAL and read from the file (cache misses),
// cumulative.
struct PageStats {
  double written = 0;
  double missed = 0;
  PageStats operator-(const PageStats& o) const {
    return {written - o.written, missed - o.missed};
  }
  PageStats operator+(const PageStats& o) const {
    return {written + o.written, missed + o.missed};
  }
};

PageStats ReadPageStats(sqlite3* db) {
  if (db == nullptr) return {};
  int written = 0;
  int missed = 0;
  int high = 0;
  sqlite3_db_status(db, SQLITE_DBSTATUS_CACHE_WRITE, &written, &high, 0);
  sqlite3_db_status(db, SQLITE_DBSTATUS_CACHE_MISS, &missed, &high, 0);
  return {static_cast<double>(written), static_cast<double>(missed)};
}

// The cost an audit append adds to an office call, at the fixture's size.
// Each iteration runs the same office write (a new case row) in a write
// transaction of its own twice, back to back: without the audit append and
// with it (the entry OpenCase would record); then a real CaseStore::OpenCase
// for comparison. Every transaction commits with synchronous=FULL, so an
// fsync dominates each; the added cost is the paired difference, not the
// commit:
//   added_us, added_ci95_us  mean of (with - without) and its 95% interval
//   added_p50_us             median of the paired differences
//   append_in_txn_*_us       AppendInTransaction alone, inside the transaction
//   pages_written*           pages the commit wrote to the WAL, per call
//   tree_catch_up_us_per_entry  adding the appended entries' tree nodes and
//                            subject rows afterwards, as the checkpointer does
// The timing column is the call with the append.
void BM_AppendInOfficeTransaction(benchmark::State& state) {
  Fixture& fixture = Fixture::Get();
  sqlite::Database& db = fixture.store().database();
  server::SqliteAuditLog& log = fixture.store().audit_log();
  EventMaker maker(/*seed=*/7);
  sqlite3* writer = nullptr;  // the Database's writer, seen from inside
  uint64_t i = 0;

  struct Sample {
    double total_us = 0;   // the whole Write(), commit included
    double append_us = 0;  // AppendInTransaction alone
    PageStats pages;       // of the writer, over the Write()
  };
  auto office_write = [&](bool audited) -> Sample {
    const v1::CaseReference draft = DraftCase(i);
    AuditEvent event;
    event.actor = kBenchOffice;
    event.action = "case.open";
    event.payload = draft.SerializeAsString();
    Sample sample;
    const PageStats before = ReadPageStats(writer);
    const auto start = SteadyClock::now();
    CheckOk("office write",
            db.Write([&](sqlite::Connection& c) -> absl::Status {
              writer = c.raw();
              CB_ASSIGN_OR_RETURN(const std::string id, InsertCase(c, draft));
              if (!audited) return absl::OkStatus();
              event.subjects = {id};
              const auto append_start = SteadyClock::now();
              CB_RETURN_IF_ERROR(log.AppendInTransaction(c, event).status());
              sample.append_us = Micros(SteadyClock::now() - append_start);
              return absl::OkStatus();
            }));
    sample.total_us = Micros(SteadyClock::now() - start);
    sample.pages = ReadPageStats(writer) - before;
    return sample;
  };
  auto open_case = [&]() -> double {
    AuditEvent event = maker.Next(fixture.size() + i);
    event.actor = kBenchOffice;
    event.action = "case.open";
    event.subjects.clear();
    const auto start = SteadyClock::now();
    CheckOk("OpenCase", fixture.store()
                            .cases()
                            .OpenCase(DraftCase(i), kBenchOffice, {}, event)
                            .status());
    return Micros(SteadyClock::now() - start);
  };

  for (int warm = 0; warm < 20; ++warm, ++i) {
    office_write(false);
    office_write(true);
    open_case();
  }
  std::vector<double> without_us;
  std::vector<double> with_us;
  std::vector<double> added_us;  // paired: with - without, back to back
  std::vector<double> append_us;
  std::vector<double> open_case_us;
  PageStats pages_without;
  PageStats pages_with;
  for (auto _ : state) {
    // Back to back, alternating the order, so drift in commit latency
    // cancels out of each pair's difference.
    Sample without;
    Sample with;
    if (i % 2 == 0) {
      without = office_write(false);
      with = office_write(true);
    } else {
      with = office_write(true);
      without = office_write(false);
    }
    without_us.push_back(without.total_us);
    with_us.push_back(with.total_us);
    added_us.push_back(with.total_us - without.total_us);
    append_us.push_back(with.append_us);
    pages_without = pages_without + without.pages;
    pages_with = pages_with + with.pages;
    open_case_us.push_back(open_case());
    state.SetIterationTime(with.total_us / 1e6);
    ++i;
  }

  const auto n = static_cast<double>(added_us.size());
  const double mean_added = Mean(added_us);
  double variance = 0;
  for (const double d : added_us) {
    variance += (d - mean_added) * (d - mean_added);
  }
  variance /= std::max(1.0, n - 1);
  state.counters["log_entries"] = static_cast<double>(fixture.size());
  state.counters["office_us"] = Mean(without_us);
  state.counters["office_audited_us"] = Mean(with_us);
  state.counters["office_p50_us"] = Quantile(without_us, 0.5);
  state.counters["office_audited_p50_us"] = Quantile(with_us, 0.5);
  state.counters["added_us"] = mean_added;
  state.counters["added_ci95_us"] = 1.96 * std::sqrt(variance / n);
  state.counters["added_p50_us"] = Quantile(added_us, 0.5);
  state.counters["append_in_txn_us"] = Mean(append_us);
  state.counters["append_in_txn_p50_us"] = Quantile(append_us, 0.5);
  state.counters["append_in_txn_p99_us"] = Quantile(append_us, 0.99);
  state.counters["pages_written"] = pages_without.written / n;
  state.counters["pages_written_audited"] = pages_with.written / n;
  state.counters["page_misses"] = pages_without.missed / n;
  state.counters["page_misses_audited"] = pages_with.missed / n;
  state.counters["open_case_us"] = Mean(open_case_us);

  // The entries' tree nodes and subject rows, left to the checkpointer:
  // what adding them costs per entry, in its batches.
  uint64_t indexed = 0;
  CheckOk("reading the tree size",
          db.Read([&](sqlite::Connection& c) -> absl::Status {
            CB_ASSIGN_OR_RETURN(indexed,
                                server::SqliteAuditLog::IndexedSizeOn(c));
            return absl::OkStatus();
          }));
  const uint64_t size = ValueOrDie("log size", log.Size());
  const auto catch_up_start = SteadyClock::now();
  CheckOk("catching up the tree", log.CatchUpTree());
  if (size > indexed) {
    state.counters["tree_catch_up_us_per_entry"] =
        Micros(SteadyClock::now() - catch_up_start) /
        static_cast<double>(size - indexed);
  }
  fixture.Restore();
}

// Where the added cost goes: the same pairs of office writes, on a
// connection of our own (same pragmas) so the append and the COMMIT can be
// timed apart. Arg 0: synchronous=FULL, as the gateway runs; arg 1:
// synchronous=OFF, so the COMMIT writes the WAL but never fsyncs.
//   commit_us, commit_audited_us  COMMIT alone, without and with the append
//   commit_added_us               mean of their paired difference
void BM_AppendCommitBreakdown(benchmark::State& state) {
  Fixture& fixture = Fixture::Get();
  server::SqliteAuditLog& log = fixture.store().audit_log();
  const bool no_fsync = state.range(0) == 1;
  auto connection =
      ValueOrDie("opening the fixture",
                 sqlite::Connection::Open(
                     GatewayStore::DatabasePath(fixture.pk_dir()), false));
  sqlite::Connection& c = *connection;
  if (no_fsync) CheckOk("pragma", c.Exec("PRAGMA synchronous=OFF"));
  uint64_t i = 0;

  struct Sample {
    double append_us = 0;
    double commit_us = 0;
  };
  auto office_write = [&](bool audited) -> Sample {
    const v1::CaseReference draft = DraftCase(i);
    AuditEvent event;
    event.actor = kBenchOffice;
    event.action = "case.open";
    event.payload = draft.SerializeAsString();
    Sample sample;
    CheckOk("begin", c.Exec("BEGIN IMMEDIATE"));
    const std::string id = ValueOrDie("office write", InsertCase(c, draft));
    if (audited) {
      event.subjects = {id};
      const auto start = SteadyClock::now();
      CheckOk("append", log.AppendInTransaction(c, event).status());
      sample.append_us = Micros(SteadyClock::now() - start);
    }
    const auto commit_start = SteadyClock::now();
    CheckOk("commit", c.Exec("COMMIT"));
    sample.commit_us = Micros(SteadyClock::now() - commit_start);
    return sample;
  };

  for (int warm = 0; warm < 20; ++warm, ++i) {
    office_write(false);
    office_write(true);
  }
  std::vector<double> commit_us;
  std::vector<double> commit_audited_us;
  std::vector<double> commit_added_us;
  std::vector<double> append_us;
  for (auto _ : state) {
    Sample without;
    Sample with;
    if (i % 2 == 0) {
      without = office_write(false);
      with = office_write(true);
    } else {
      with = office_write(true);
      without = office_write(false);
    }
    commit_us.push_back(without.commit_us);
    commit_audited_us.push_back(with.commit_us);
    commit_added_us.push_back(with.commit_us - without.commit_us);
    append_us.push_back(with.append_us);
    state.SetIterationTime((with.append_us + with.commit_us) / 1e6);
    ++i;
  }
  connection.reset();
  state.counters["log_entries"] = static_cast<double>(fixture.size());
  state.counters["append_in_txn_us"] = Mean(append_us);
  state.counters["commit_us"] = Mean(commit_us);
  state.counters["commit_audited_us"] = Mean(commit_audited_us);
  state.counters["commit_added_us"] = Mean(commit_added_us);
  state.counters["commit_added_p50_us"] = Quantile(commit_added_us, 0.5);
  fixture.Restore();
}

// The same office write with and without the append from many callers at
// once (arg: callers; the gateway runs calls on eight workers). Group commit
// then shares one COMMIT, and the right-edge pages the appends dirty, among
// the calls of a batch. Each iteration runs a phase of each kind, alternating
// which goes first:
//   call_us, call_audited_us    wall time of a phase per call (the inverse of
//                               throughput), without and with the append
//   added_per_call_us           their difference
//   latency_us, latency_audited_us  mean time a caller waits for its Write()
void BM_AppendConcurrent(benchmark::State& state) {
  Fixture& fixture = Fixture::Get();
  sqlite::Database& db = fixture.store().database();
  server::SqliteAuditLog& log = fixture.store().audit_log();
  const int callers = static_cast<int>(state.range(0));
  const int calls = GetSettings().quick ? 10 : 200;  // per caller per phase

  // Returns {wall per call, mean latency}, in µs.
  auto phase = [&](bool audited) -> std::pair<double, double> {
    std::vector<double> latency(static_cast<size_t>(callers), 0);
    std::vector<std::thread> threads;
    const auto start = SteadyClock::now();
    for (int t = 0; t < callers; ++t) {
      threads.emplace_back([&, t] {
        for (int k = 0; k < calls; ++k) {
          const v1::CaseReference draft =
              DraftCase(static_cast<uint64_t>(t * calls + k));
          AuditEvent event;
          event.actor = kBenchOffice;
          event.action = "case.open";
          event.payload = draft.SerializeAsString();
          const auto call_start = SteadyClock::now();
          CheckOk("office write",
                  db.Write([&](sqlite::Connection& c) -> absl::Status {
                    CB_ASSIGN_OR_RETURN(const std::string id,
                                        InsertCase(c, draft));
                    if (!audited) return absl::OkStatus();
                    event.subjects = {id};
                    return log.AppendInTransaction(c, event).status();
                  }));
          latency[static_cast<size_t>(t)] +=
              Micros(SteadyClock::now() - call_start);
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    const double total = static_cast<double>(callers) * calls;
    return {Micros(SteadyClock::now() - start) / total, Mean(latency) / calls};
  };

  phase(false);  // warm-up
  phase(true);
  std::vector<double> call_us;
  std::vector<double> call_audited_us;
  std::vector<double> latency_us;
  std::vector<double> latency_audited_us;
  int round = 0;
  for (auto _ : state) {
    std::pair<double, double> without;
    std::pair<double, double> with;
    if (round++ % 2 == 0) {
      without = phase(false);
      with = phase(true);
    } else {
      with = phase(true);
      without = phase(false);
    }
    call_us.push_back(without.first);
    call_audited_us.push_back(with.first);
    latency_us.push_back(without.second);
    latency_audited_us.push_back(with.second);
    state.SetIterationTime(with.first / 1e6);
  }
  state.counters["log_entries"] = static_cast<double>(fixture.size());
  state.counters["call_us"] = Mean(call_us);
  state.counters["call_audited_us"] = Mean(call_audited_us);
  state.counters["added_per_call_us"] = Mean(call_audited_us) - Mean(call_us);
  state.counters["latency_us"] = Mean(latency_us);
  state.counters["latency_audited_us"] = Mean(latency_audited_us);
  fixture.Restore();
}

// --- BM_InclusionProof -------------------------------------------------------

// SqliteAuditLog::InclusionProof of a random entry in the tree of the whole
// fixture: a read transaction and O(log n) node reads, as AuditService
// serves it. `over_1ms` counts the calls that took 1 ms or more.
void BM_InclusionProof(benchmark::State& state) {
  Fixture& fixture = Fixture::Get();
  server::SqliteAuditLog& log = fixture.store().audit_log();
  const uint64_t size = fixture.size();
  std::mt19937_64 rng(42);
  std::vector<double> latency_us;
  std::vector<uint64_t> asked;
  size_t hashes = 0;
  for (auto _ : state) {
    const uint64_t index = rng() % size;
    const auto start = SteadyClock::now();
    auto proof = log.InclusionProof(index, size);
    latency_us.push_back(Micros(SteadyClock::now() - start));
    if (!proof.ok()) {
      Fail(state, proof.status().ToString());
      return;
    }
    hashes += proof->size();
    benchmark::DoNotOptimize(proof);
    if (asked.size() < 50) asked.push_back(index);
  }

  // Outside the timing: the proofs served are right.
  const std::string root = ValueOrDie("root", log.RootAt(size));
  for (const uint64_t index : asked) {
    const auto proof = ValueOrDie("proof", log.InclusionProof(index, size));
    const auto entry = ValueOrDie("entry", log.Read(index, 1));
    const absl::Status verified = merkle::VerifyInclusion(
        index, size, merkle::LeafHash(entry.at(0).bytes), proof, root);
    if (!verified.ok()) {
      Fail(state, verified.ToString());
      return;
    }
  }
  state.counters["log_entries"] = static_cast<double>(size);
  state.counters["proof_hashes"] =
      static_cast<double>(hashes) / static_cast<double>(latency_us.size());
  state.counters["mean_us"] = Mean(latency_us);
  state.counters["p50_us"] = Quantile(latency_us, 0.5);
  state.counters["p99_us"] = Quantile(latency_us, 0.99);
  state.counters["max_us"] = Quantile(latency_us, 1.0);
  state.counters["over_1ms"] =
      static_cast<double>(std::count_if(latency_us.begin(), latency_us.end(),
                                        [](double us) { return us >= 1000; }));
}

// --- BM_OfflineVerify --------------------------------------------------------

// Evicts the database files from the OS page cache (no root needed), so
// verification reads them from the disk.
void DropFromPageCache(const std::string& data_dir) {
  const std::string db = GatewayStore::DatabasePath(data_dir);
  for (const std::string& path : {db, db + "-wal"}) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    (void)::fdatasync(fd);
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// server::VerifyDataDir over the whole fixture: every entry, leaf and
// checkpoint, the signatures and cosignatures, consistency between
// consecutive checkpoints. Arg 0: database in the page cache (warm); arg 1:
// evicted before each run (cold).
void BM_OfflineVerify(benchmark::State& state) {
  Fixture& fixture = Fixture::Get();
  const bool cold = state.range(0) == 1;
  server::AuditVerifyOptions options;  // cosignatures required
  server::AuditVerifyReport report;
  for (auto _ : state) {
    if (cold) {
      state.PauseTiming();
      DropFromPageCache(fixture.pk_dir());
      state.ResumeTiming();
    }
    auto verified =
        server::VerifyDataDir(fixture.pk_dir(), fixture.keys(), options);
    if (!verified.ok()) {
      Fail(state, verified.status().ToString());
      return;
    }
    report = *std::move(verified);
    if (!report.ok) {
      Fail(state,
           absl::StrCat("the fixture does not verify: ", report.problem));
      return;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(report.entries) *
                          static_cast<int64_t>(state.iterations()));
  state.counters["log_entries"] = static_cast<double>(report.entries);
  state.counters["checkpoints"] = static_cast<double>(report.checkpoints);
  state.counters["cosigned"] = static_cast<double>(report.cosigned);
  state.counters["consistency_proofs"] =
      static_cast<double>(report.consistency_proofs);
}

void RegisterBenchmarks(const Settings& settings) {
  benchmark::RegisterBenchmark("BM_AppendInOfficeTransaction",
                               BM_AppendInOfficeTransaction)
      ->Iterations(settings.quick ? 50 : 2000)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_AppendCommitBreakdown",
                               BM_AppendCommitBreakdown)
      ->ArgName("no_fsync")
      ->Arg(0)
      ->Arg(1)
      ->Iterations(settings.quick ? 50 : 2000)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_AppendConcurrent", BM_AppendConcurrent)
      ->ArgName("callers")
      ->Arg(8)
      ->Iterations(settings.quick ? 1 : 10)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_InclusionProof", BM_InclusionProof)
      ->Iterations(settings.quick ? 1000 : 10000)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_OfflineVerify", BM_OfflineVerify)
      ->ArgName("cold")
      ->Arg(0)
      ->Arg(1)
      ->Iterations(settings.quick ? 1 : 3)
      ->Unit(benchmark::kMillisecond);
}

bool EnvIsSet(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' && std::string(value) != "0";
}

}  // namespace
}  // namespace casebridge::bench

int main(int argc, char** argv) {
  using casebridge::bench::GetSettings;
  casebridge::bench::Settings& settings = GetSettings();
  std::vector<char*> rest;
  std::optional<uint64_t> entries;
  for (int i = 0; i < argc; ++i) {
    absl::string_view arg = argv[i];
    uint64_t n = 0;
    if (i > 0 && arg == "--quick") {
      settings.quick = true;
    } else if (i > 0 && arg == "--rebuild-fixture") {
      settings.rebuild = true;
    } else if (i > 0 && absl::ConsumePrefix(&arg, "--entries=")) {
      if (!absl::SimpleAtoi(arg, &n) || n == 0) {
        std::fprintf(stderr, "--entries: expected a positive number\n");
        return 2;
      }
      entries = n;
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (casebridge::bench::EnvIsSet("CASEBRIDGE_BENCH_QUICK")) {
    settings.quick = true;
  }
  settings.entries =
      entries.value_or(settings.quick ? casebridge::bench::kQuickEntries
                                      : casebridge::bench::kFullEntries);
  const char* dir = std::getenv("CASEBRIDGE_BENCH_DIR");
  settings.root =
      dir != nullptr && *dir != '\0' ? dir : CASEBRIDGE_BENCH_DEFAULT_DIR;

  casebridge::bench::RegisterBenchmarks(settings);
  int rest_count = static_cast<int>(rest.size());
  rest.push_back(nullptr);
  benchmark::Initialize(&rest_count, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_count, rest.data())) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return casebridge::bench::failed ? 1 : 0;
}
