// casebridge-bench: the cross-border exchange under load, end to end, with
// real gateway processes over mutual TLS on loopback
// (docs/performance.md#cross-border-exchange).
//
// It makes a dev PKI (certs/make-dev-pki) and two gateway configs in a work
// directory, starts a PK and a CN gateway with fresh data directories (or
// connects to running ones), and runs, in order:
//
//   echo (before)  a minimal gRPC mTLS unary echo with the same certificates,
//                  channels and concurrency: the baseline;
//   setup          cases opened on PK and shared with CN (untimed);
//   throughput     N office clients on PK, each with one message on its way
//                  at a time (sent, not yet in the CN office's inbox);
//   saturated      the same clients with many messages each on their way, so
//                  ROUTINE traffic always waits in the outbox, while one
//                  office sends an URGENT message every few milliseconds;
//   echo (after)   the baseline again;
//   backlog        CN stopped, a backlog queued on PK, CN started: the drain.
//
// Every message is checked at the receiver (the CN office's WatchInbox
// stream): arrived exactly once, with the body sent. Afterwards every
// message's delivery status is read from PK (state, receipt, the gateway's
// queued_at and delivered_at), a sample of receipts is verified with CN's
// public key, both gateways are stopped and both audit logs verified
// offline. Exit code 0 when everything arrived exactly once and checked out
// (speed targets do not affect it), 1 otherwise, 2 if it could not run.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/exchange_bench_echo.h"
#include "bench/exchange_bench_load.h"
#include "bench/exchange_bench_process.h"
#include "bench/exchange_bench_stats.h"
#include "client/office_client.h"
#include "core/config.h"
#include "core/envelope.h"
#include "core/grpc_lifetime.h"
#include "core/loopback_port.h"
#include "core/public_keys.h"
#include "core/status_macros.h"
#include "server/audit_verifier.h"

namespace casebridge::bench {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kPkGateway[] = "spiffe://pk.casebridge/gateway";
constexpr char kCnGateway[] = "spiffe://cn.casebridge/gateway";
constexpr char kMps[] = "spiffe://cn.casebridge/office/mps-liaison";
// The PK offices that send, by stub index: certificate stem and identity.
constexpr const char* kSenderStems[] = {"pk/offices/fia-liaison-desk",
                                        "pk/offices/embassy-beijing"};
constexpr int kFia = 0;
constexpr int kEmbassy = 1;

// Phases, as recorded in the ledger.
constexpr int kThroughput = 1;
constexpr int kSaturated = 2;
constexpr int kUrgent = 3;
constexpr int kBacklog = 4;

// The targets of docs/performance.md#cross-border-exchange.
constexpr double kTargetDelivered = 3000;
constexpr double kTargetRatio = 0.08;
constexpr double kTargetP99Ms = 25;
constexpr double kTargetUrgentP99Ms = 10;
constexpr double kTargetIdleRssMb = 40;
constexpr double kTargetLoadRssMb = 150;

struct Options {
  bool quick = false;
  bool json = false;
  int clients = 64;
  double seconds = 20;
  double warmup = 3;
  double echo_seconds = 10;
  int cases = 1024;
  int window = 1;
  int saturate_window = 16;
  int urgent_cases = 8;
  double urgent_interval_ms = 20;
  int64_t backlog = 100000;
  int body_bytes = 256;
  int verify_every = 100;
  int work_threads = 0;  // limits.work_threads of both gateways; 0: default
  std::string work_dir;
  bool keep = false;
  std::string pki;
  std::string gateway_binary = CASEBRIDGE_GATEWAY_BINARY;
  // Running gateways instead of our own.
  std::string pk_office;
  std::string cn_office;
  int pk_pid = 0;
  int cn_pid = 0;
  std::string pk_data_dir;
  std::string cn_data_dir;
  std::string echo_server_ready;  // internal: run as the echo server
};

bool Managed(const Options& o) { return o.pk_office.empty(); }

std::string SelfBinary() {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/self/exe", ec).string();
}

// Progress, with the seconds since the start (to stderr with --json).
void Say(const Options& o, const std::string& line) {
  static const absl::Time start = absl::Now();
  std::FILE* out = o.json ? stderr : stdout;
  std::fprintf(out, "[%6.1f s] %s\n",
               absl::ToDoubleSeconds(absl::Now() - start), line.c_str());
  std::fflush(out);
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }
double Millis(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// The 1-minute load average: other work on the machine skews the figures.
double LoadAverage() {
  double load = -1;
  std::ifstream in("/proc/loadavg");
  in >> load;
  return load;
}

// --- The two gateways --------------------------------------------------------

// TOML of one gateway of the pair, over the dev PKI in `pki`.
std::string GatewayToml(bool pk, const std::string& pki,
                        const std::string& data_dir, int office_port,
                        int peer_port, int peer_endpoint_port,
                        int work_threads) {
  const std::string offices = pk ? R"([[offices]]
identity = "spiffe://pk.casebridge/office/fia-liaison-desk"
name = "FIA liaison desk, Islamabad"
role = "liaison_officer"

[[offices]]
identity = "spiffe://pk.casebridge/office/embassy-beijing"
name = "Embassy of Pakistan, Beijing"
role = "embassy_officer"

[[offices]]
identity = "spiffe://pk.casebridge/auditor/pk-auditor"
name = "PK audit office"
role = "auditor"
)"
                                 : R"([[offices]]
identity = "spiffe://cn.casebridge/office/mps-liaison"
name = "MPS liaison office"
role = "liaison_officer"

[[offices]]
identity = "spiffe://cn.casebridge/auditor/cn-auditor"
name = "CN audit office"
role = "auditor"
)";
  return absl::StrReplaceAll(
      R"(country = "$COUNTRY"
identity = "spiffe://$US.casebridge/gateway"
data_dir = "$DATA"
log_level = "warning"

[listen]
office = "127.0.0.1:$OFFICE"
peer = "127.0.0.1:$PEER"

[tls]
cert = "$PKI/$US/gateway-chain.crt"
key = "$PKI/$US/gateway.key"
own_ca = "$PKI/$US/ca.crt"
peer_ca = "$PKI/$THEM/ca.crt"
crl_dir = "$PKI/crl"

[signing]
envelope_key = "$PKI/$US/signing/envelope.key"
checkpoint_key = "$PKI/$US/signing/checkpoint.key"
witness_key = "$PKI/$US/signing/witness.key"

[peer]
identity = "spiffe://$THEM.casebridge/gateway"
endpoint = "127.0.0.1:$PEER_ENDPOINT"
envelope_public_key = "$PKI/$THEM/signing/envelope.pub"
checkpoint_public_key = "$PKI/$THEM/signing/checkpoint.pub"
witness_public_key = "$PKI/$THEM/signing/witness.pub"
offices = $PEER_OFFICES

[limits]
drain_seconds = 1
retry_max_seconds = 2
# 64 clients share two office identities and send as fast as accepted.
office_calls_per_second = 1000000
office_burst = 10000000
$WORK_THREADS

)" + offices,
      {{"$COUNTRY", pk ? "PK" : "CN"},
       {"$US", pk ? "pk" : "cn"},
       {"$THEM", pk ? "cn" : "pk"},
       {"$DATA", data_dir},
       {"$OFFICE", absl::StrCat(office_port)},
       {"$PEER_ENDPOINT", absl::StrCat(peer_endpoint_port)},
       {"$PEER", absl::StrCat(peer_port)},
       {"$PKI", pki},
       {"$WORK_THREADS",
        work_threads > 0 ? absl::StrCat("work_threads = ", work_threads) : ""},
       {"$PEER_OFFICES",
        pk ? "[\"spiffe://cn.casebridge/office/mps-liaison\"]"
           : "[\"spiffe://pk.casebridge/office/fia-liaison-desk\", "
             "\"spiffe://pk.casebridge/office/embassy-beijing\"]"}});
}

config::Client ClientConfig(const std::string& pki, const std::string& stem,
                            const std::string& endpoint, bool pk_gateway) {
  config::Client c;
  c.endpoint = endpoint;
  c.gateway_identity = pk_gateway ? kPkGateway : kCnGateway;
  c.cert = absl::StrCat(pki, "/", stem, ".crt");
  c.key = absl::StrCat(pki, "/", stem, ".key");
  c.ca = absl::StrCat(pki, pk_gateway ? "/pk/ca.crt" : "/cn/ca.crt");
  c.timeout_seconds = 30;
  return c;
}

// The work directory, the PKI, the gateways (ours or running ones) and the
// channels to them.
class Environment {
 public:
  explicit Environment(const Options& options) : o_(options) {}
  ~Environment() {
    pk_.reset();
    cn_.reset();
    if (remove_work_dir_) {
      std::error_code ec;
      std::filesystem::remove_all(work_, ec);
    }
  }

  absl::Status Prepare() {
    if (!o_.work_dir.empty()) {
      work_ = o_.work_dir;
      std::error_code ec;
      std::filesystem::create_directories(work_, ec);
      if (ec) return absl::InternalError(absl::StrCat("cannot make ", work_));
    } else {
      CB_ASSIGN_OR_RETURN(work_, MakeTempDir("casebridge-bench"));
      remove_work_dir_ = !o_.keep;
    }
    if (!o_.pki.empty()) {
      pki_ = o_.pki;
    } else {
      pki_ = work_ + "/pki";
      CB_ASSIGN_OR_RETURN(
          auto script, ChildProcess::Spawn({std::string(CASEBRIDGE_SOURCE_DIR) +
                                                "/certs/make-dev-pki",
                                            pki_},
                                           work_ + "/make-dev-pki.log"));
      if (script->Wait(absl::Seconds(120)) != 0) {
        return absl::InternalError(
            absl::StrCat("certs/make-dev-pki failed:\n", script->LogTail()));
      }
    }
    if (Managed(o_)) {
      CB_ASSIGN_OR_RETURN(pk_office_port_, ReserveLoopbackPort());
      CB_ASSIGN_OR_RETURN(const int pk_peer, ReserveLoopbackPort());
      CB_ASSIGN_OR_RETURN(cn_office_port_, ReserveLoopbackPort());
      CB_ASSIGN_OR_RETURN(const int cn_peer, ReserveLoopbackPort());
      pk_data_ = work_ + "/pk-data";
      cn_data_ = work_ + "/cn-data";
      pk_config_ = work_ + "/pk-gateway.toml";
      cn_config_ = work_ + "/cn-gateway.toml";
      CB_RETURN_IF_ERROR(WriteFile(
          pk_config_, GatewayToml(true, pki_, pk_data_, pk_office_port_,
                                  pk_peer, cn_peer, o_.work_threads)));
      CB_RETURN_IF_ERROR(WriteFile(
          cn_config_, GatewayToml(false, pki_, cn_data_, cn_office_port_,
                                  cn_peer, pk_peer, o_.work_threads)));
      pk_endpoint_ = absl::StrCat("127.0.0.1:", pk_office_port_);
      cn_endpoint_ = absl::StrCat("127.0.0.1:", cn_office_port_);
    } else {
      pk_endpoint_ = o_.pk_office;
      cn_endpoint_ = o_.cn_office;
      pk_data_ = o_.pk_data_dir;
      cn_data_ = o_.cn_data_dir;
    }
    return absl::OkStatus();
  }

  absl::Status StartPk() {
    CB_ASSIGN_OR_RETURN(
        pk_, GatewayProcess::Start(o_.gateway_binary, pk_config_, work_, "pk"));
    return absl::OkStatus();
  }
  absl::Status StartCn() {
    CB_ASSIGN_OR_RETURN(
        cn_, GatewayProcess::Start(o_.gateway_binary, cn_config_, work_, "cn"));
    return absl::OkStatus();
  }
  // SIGTERM; the exit code (0 for a clean stop).
  int StopPk() {
    return pk_ == nullptr ? 0 : pk_->process().Stop(absl::Seconds(30));
  }
  int StopCn() {
    return cn_ == nullptr ? 0 : cn_->process().Stop(absl::Seconds(30));
  }

  absl::Status Connect() {
    for (const char* stem : kSenderStems) {
      CB_ASSIGN_OR_RETURN(auto channel, client::Connect(ClientConfig(
                                            pki_, stem, pk_endpoint_, true)));
      pk_channels_.push_back(channel);
      pk_stubs_.push_back(v1::OfficeService::NewStub(channel));
    }
    CB_ASSIGN_OR_RETURN(
        cn_channel_, client::Connect(ClientConfig(
                         pki_, "cn/offices/mps-liaison", cn_endpoint_, false)));
    return absl::OkStatus();
  }

  // An office client of PK over the channel of sender `identity`.
  std::unique_ptr<client::OfficeClient> PkClient(int identity) const {
    const auto& channel = pk_channels_[static_cast<size_t>(identity)];
    return std::make_unique<client::OfficeClient>(
        v1::OfficeService::NewStub(channel), v1::AuditService::NewStub(channel),
        grpc::health::v1::Health::NewStub(channel), absl::Seconds(30));
  }

  std::vector<v1::OfficeService::Stub*> pk_stubs() const {
    std::vector<v1::OfficeService::Stub*> out;
    for (const auto& stub : pk_stubs_) out.push_back(stub.get());
    return out;
  }

  pid_t pk_pid() const { return pk_ != nullptr ? pk_->pid() : o_.pk_pid; }
  pid_t cn_pid() const { return cn_ != nullptr ? cn_->pid() : o_.cn_pid; }
  const std::string& pki() const { return pki_; }
  const std::string& work() const { return work_; }
  const std::string& pk_data() const { return pk_data_; }
  const std::string& cn_data() const { return cn_data_; }
  const std::shared_ptr<grpc::Channel>& cn_channel() const {
    return cn_channel_;
  }
  std::string Logs() const {
    std::string out;
    if (pk_ != nullptr) {
      out += "--- PK gateway log (tail) ---\n" + pk_->process().LogTail();
    }
    if (cn_ != nullptr) {
      out += "--- CN gateway log (tail) ---\n" + cn_->process().LogTail();
    }
    return out;
  }

 private:
  const Options& o_;
  std::string work_;
  bool remove_work_dir_ = false;
  std::string pki_;
  std::string pk_config_;
  std::string cn_config_;
  std::string pk_data_;
  std::string cn_data_;
  int pk_office_port_ = 0;
  int cn_office_port_ = 0;
  std::string pk_endpoint_;
  std::string cn_endpoint_;
  std::unique_ptr<GatewayProcess> pk_;
  std::unique_ptr<GatewayProcess> cn_;
  std::vector<std::shared_ptr<grpc::Channel>> pk_channels_;
  std::vector<std::unique_ptr<v1::OfficeService::Stub>> pk_stubs_;
  std::shared_ptr<grpc::Channel> cn_channel_;
};

// --- Resources ---------------------------------------------------------------

struct Resources {
  std::optional<ProcSample> pk;
  std::optional<ProcSample> cn;
  std::optional<ProcSample> bench;
};

std::optional<ProcSample> Sample(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  auto sample = SampleProc(pid);
  if (!sample.ok()) return std::nullopt;
  return *sample;
}

Resources SampleAll(const Environment& env) {
  return {Sample(env.pk_pid()), Sample(env.cn_pid()), Sample(::getpid())};
}

std::optional<double> CpuDelta(const std::optional<ProcSample>& from,
                               const std::optional<ProcSample>& to) {
  if (!from.has_value() || !to.has_value()) return std::nullopt;
  return to->cpu_seconds - from->cpu_seconds;
}

// Growth of one counter of ProcSample per message.
std::optional<double> PerMessage(const std::optional<ProcSample>& from,
                                 const std::optional<ProcSample>& to,
                                 double ProcSample::*counter,
                                 uint64_t messages) {
  if (!from.has_value() || !to.has_value() || messages == 0) {
    return std::nullopt;
  }
  return ((*to).*counter - (*from).*counter) / static_cast<double>(messages);
}

Json OrNull(const std::optional<double>& v) {
  return v.has_value() ? Json(*v) : Json(nullptr);
}

std::optional<uint64_t> DbBytes(const std::string& data_dir) {
  if (data_dir.empty()) return std::nullopt;
  auto bytes = DatabaseBytes(data_dir + "/gateway.db");
  if (!bytes.ok()) return std::nullopt;
  return *bytes;
}

// --- Cases -------------------------------------------------------------------

v1::CaseReference Draft(int n) {
  v1::CaseReference c;
  c.set_local_reference(absl::StrCat("FIR ", 100 + n, "/2026 PS Gujranwala"));
  c.set_category(v1::CASE_CATEGORY_FORCED_MARRIAGE_FRAUD);
  c.set_summary(
      "Woman from Gujranwala taken to China after a brokered marriage; family "
      "reports she is held and cannot leave.");
  c.set_handling_code(v1::HANDLING_CODE_H2);
  c.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
  c.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_2);
  v1::VictimReference* v = c.add_victims();
  v->set_pseudonym("V1");
  v->set_remarks("age 19");
  v1::Location* l = c.add_last_known_locations();
  l->set_description("Handan, Hebei");
  l->set_country(v1::COUNTRY_CN);
  return c;
}

// Opens `n` cases on PK as the FIA desk and shares each with the MPS
// liaison, with a few threads; the exchange ids.
absl::StatusOr<std::vector<std::string>> OpenAndShareCases(
    const Environment& env, Ledger& ledger, int n, const std::string& tag) {
  std::vector<std::string> ids(static_cast<size_t>(n));
  std::atomic<int> next{0};
  absl::Mutex mu;
  absl::Status first_error;
  std::vector<std::thread> threads;
  threads.reserve(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      auto office = env.PkClient(kFia);
      for (int i = next++; i < n; i = next++) {
        auto opened =
            office->OpenCase(Draft(i), absl::StrCat(tag, "-open-", i));
        absl::Status status = opened.status();
        if (opened.ok()) {
          ids[static_cast<size_t>(i)] = opened->exchange_id();
          v1::ShareCaseRequest share;
          share.set_request_id(absl::StrCat(tag, "-share-", i));
          share.set_exchange_id(opened->exchange_id());
          share.add_recipient_offices(kMps);
          status = office->ShareCase(share).status();
        }
        if (!status.ok()) {
          absl::MutexLock lock(&mu);
          if (first_error.ok()) first_error = status;
          return;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  if (!first_error.ok()) return first_error;
  const std::set<std::string> expected(ids.begin(), ids.end());
  if (!ledger.WaitShares(expected, absl::Seconds(60 + n / 20))) {
    return absl::DeadlineExceededError(
        "the shared cases did not all reach the CN office's inbox");
  }
  return ids;
}

// --- Load phases -------------------------------------------------------------

struct Window {
  absl::Time start;
  absl::Time end;
  Resources before;
  Resources after;
  double seconds() const { return Seconds(end - start); }
};

// Senders of one phase: `clients` ROUTINE offices spread over the two
// sending identities and over `cases`.
std::vector<std::shared_ptr<Sender>> MakeSenders(
    const Environment& env, Ledger& ledger, int phase, int clients,
    const std::vector<std::string>& cases, int window,
    std::atomic<int64_t>* quota) {
  std::vector<std::shared_ptr<Sender>> senders;
  const auto stubs = env.pk_stubs();
  const int n = static_cast<int>(cases.size());
  for (int i = 0; i < clients; ++i) {
    SenderOptions s;
    s.phase = phase;
    s.id = i;
    s.identity = i % 2;
    s.stub = stubs[static_cast<size_t>(s.identity)];
    for (int c = i % n; c < n; c += clients) {
      s.cases.push_back(cases[static_cast<size_t>(c)]);
    }
    s.recipient_office = kMps;
    s.priority = v1::PRIORITY_ROUTINE;
    s.kind = v1::MESSAGE_KIND_NOTE;
    s.window = window;
    s.quota = quota;
    auto sender = std::make_shared<Sender>(&ledger, std::move(s));
    sender->set_slot(ledger.AddSender(sender));
    senders.push_back(std::move(sender));
  }
  return senders;
}

void StopAndWait(const std::vector<std::shared_ptr<Sender>>& senders) {
  for (const auto& s : senders) s->Stop();
  for (const auto& s : senders) s->WaitIdle();
}

absl::Duration DrainTimeout(uint64_t messages) {
  return absl::Seconds(120) + absl::Milliseconds(5 * messages);
}

// A thread that gives a paced sender a token every `interval`.
class Pacer {
 public:
  Pacer(const std::shared_ptr<Sender>& sender, absl::Duration interval)
      : thread_([this, sender, interval] {
          absl::MutexLock lock(&mu_);
          while (!stop_) {
            mu_.Unlock();
            sender->AddToken();
            mu_.Lock();
            mu_.AwaitWithTimeout(absl::Condition(&stop_), interval);
          }
        }) {}
  ~Pacer() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

 private:
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// --- Results -----------------------------------------------------------------

struct LatencySet {
  Percentiles from_accept;  // queued_at -> delivered_at, gateway's clock
  Percentiles from_call;    // office call start -> delivered_at
  Percentiles to_inbox;     // office call start -> seen on the CN inbox
  // The two halves of from_accept: queued_at -> the receiver stored the
  // envelope (its receipt's received_at), and from there -> delivered_at.
  Percentiles to_receiver;
  Percentiles receipt_back;
  uint64_t delivered_in_window = 0;
  uint64_t accepted_in_window = 0;
};

LatencySet Latencies(const std::vector<SentMessage*>& messages, int phase,
                     const Window& w) {
  std::vector<double> accept;
  std::vector<double> call;
  std::vector<double> inbox;
  std::vector<double> there;
  std::vector<double> back;
  LatencySet set;
  for (const SentMessage* m : messages) {
    if (m->phase != phase || !m->delivered()) continue;
    if (m->delivered_at >= w.start && m->delivered_at < w.end) {
      ++set.delivered_in_window;
    }
    if (m->call_end >= w.start && m->call_end < w.end) {
      ++set.accepted_in_window;
    }
    if (m->queued_at < w.start || m->queued_at >= w.end) continue;
    accept.push_back(Millis(m->delivered_at - m->queued_at));
    call.push_back(Millis(m->delivered_at - m->call_start));
    if (m->arrived.has_value()) {
      inbox.push_back(Millis(*m->arrived - m->call_start));
    }
    if (m->received_at.has_value()) {
      there.push_back(Millis(*m->received_at - m->queued_at));
      back.push_back(Millis(m->delivered_at - *m->received_at));
    }
  }
  set.from_accept = PercentilesOf(std::move(accept));
  set.from_call = PercentilesOf(std::move(call));
  set.to_inbox = PercentilesOf(std::move(inbox));
  set.to_receiver = PercentilesOf(std::move(there));
  set.receipt_back = PercentilesOf(std::move(back));
  return set;
}

Json PercentilesJson(const Percentiles& p) {
  return Json{{"count", p.count},
              {"p50_ms", p.p50},
              {"p99_ms", p.p99},
              {"p999_ms", p.p999},
              {"max_ms", p.max}};
}

Json ResourcesJson(const Window& w, uint64_t delivered) {
  Json out;
  const double seconds = w.seconds();
  for (const auto& [name, from, to] :
       {std::tuple{"pk", w.before.pk, w.after.pk},
        std::tuple{"cn", w.before.cn, w.after.cn},
        std::tuple{"bench", w.before.bench, w.after.bench}}) {
    const std::optional<double> cpu = CpuDelta(from, to);
    Json side;
    side["cpu_seconds"] = OrNull(cpu);
    side["cpu_cores"] =
        cpu.has_value() && seconds > 0 ? Json(*cpu / seconds) : Json(nullptr);
    side["cpu_ms_per_message"] =
        cpu.has_value() && delivered > 0
            ? Json(*cpu * 1000 / static_cast<double>(delivered))
            : Json(nullptr);
    side["peak_rss_mb"] = to.has_value() ? Json(to->hwm_mb) : Json(nullptr);
    std::optional<double> written =
        PerMessage(from, to, &ProcSample::write_bytes, delivered);
    if (written.has_value()) *written /= 1024;
    side["write_kb_per_message"] = OrNull(written);
    side["write_calls_per_message"] =
        OrNull(PerMessage(from, to, &ProcSample::write_calls, delivered));
    side["context_switches_per_message"] =
        OrNull(PerMessage(from, to, &ProcSample::context_switches, delivered));
    out[name] = side;
  }
  return out;
}

std::string Fmt(double v, int decimals = 1) {
  return absl::StrFormat("%.*f", decimals, v);
}

std::string Thousands(double v) {
  std::string digits = absl::StrFormat("%.0f", v);
  std::string out;
  const size_t n = digits.size();
  for (size_t i = 0; i < n; ++i) {
    out += digits[i];
    if (digits[0] != '-' && (n - i - 1) % 3 == 0 && i + 1 < n) out += ',';
  }
  return out;
}

std::string Verdict(bool met) { return met ? "met" : "MISSED"; }

double NumberOr(const Json& j, double fallback) {
  return j.is_number() ? j.get<double>() : fallback;
}

// The readable table of a report (`r`, as printed with --json).
void PrintTable(const Json& r) {
  const Json& c = r["config"];
  std::printf(
      "\nCaseBridge cross-border exchange: %d office clients, %d CPUs, %s s "
      "per phase%s\n\n",
      c["clients"].get<int>(), c["cpus"].get<int>(),
      Fmt(c["seconds"].get<double>(), 1).c_str(),
      c["quick"].get<bool>() ? " (quick: figures not meaningful)" : "");
  auto row = [](const std::string& what, const std::string& value,
                const std::string& target, const std::string& verdict) {
    std::printf("  %-44s %-26s %-12s %s\n", what.c_str(), value.c_str(),
                target.c_str(), verdict.c_str());
  };
  row("", "measured", "target", "");
  const double delivered = r["delivered_per_second"].get<double>();
  row(absl::StrCat("delivered messages/s (", c["clients"].get<int>(),
                   " clients)"),
      Thousands(delivered), ">= 3,000", Verdict(delivered >= kTargetDelivered));
  const double echo = NumberOr(r["baseline_echo_per_second"], 0);
  row("  baseline mTLS echo calls/s",
      echo > 0 ? absl::StrCat(Thousands(NumberOr(r["echo"]["before"], 0)),
                              " / ", Thousands(NumberOr(r["echo"]["after"], 0)),
                              " (before/after)")
               : "not measured",
      "", "");
  if (echo > 0) {
    const double ratio = r["ratio"].get<double>();
    row("  ratio exchange / echo", Fmt(ratio, 3), ">= 0.08",
        Verdict(ratio >= kTargetRatio));
  }
  row("  accepted office calls/s", Thousands(r["accepted_per_second"]), "", "");
  row("end-to-end p50 / p99 / p99.9 (ms)",
      absl::StrCat(Fmt(r["p50_ms"].get<double>()), " / ",
                   Fmt(r["p99_ms"].get<double>()), " / ",
                   Fmt(r["p999_ms"].get<double>())),
      "p99 <= 25", Verdict(r["p99_ms"].get<double>() <= kTargetP99Ms));
  row("  same, from the office's call (ms)",
      absl::StrCat(Fmt(r["latency_from_call"]["p50_ms"].get<double>()), " / ",
                   Fmt(r["latency_from_call"]["p99_ms"].get<double>()), " / ",
                   Fmt(r["latency_from_call"]["p999_ms"].get<double>())),
      "", "");
  const Json& sat = r["saturated"];
  row("URGENT p99 under saturating ROUTINE (ms)",
      Fmt(r["urgent_p99_ms"].get<double>()), "<= 10",
      Verdict(r["urgent_p99_ms"].get<double>() <= kTargetUrgentP99Ms));
  row("  URGENT p50 / max (ms), messages",
      absl::StrCat(Fmt(sat["urgent"]["p50_ms"].get<double>()), " / ",
                   Fmt(sat["urgent"]["max_ms"].get<double>()), ", ",
                   sat["urgent"]["count"].get<uint64_t>()),
      "", "");
  row("  ROUTINE delivered/s, p99 (ms), saturated",
      absl::StrCat(Thousands(sat["delivered_per_second"]), ", ",
                   Fmt(sat["routine"]["p99_ms"].get<double>())),
      "", "");
  if (r["idle_rss_mb"].is_number()) {
    row("idle RSS PK / CN (MB)",
        absl::StrCat(Fmt(r["idle"]["pk_rss_mb"].get<double>()), " / ",
                     Fmt(r["idle"]["cn_rss_mb"].get<double>())),
        "<= 40", Verdict(r["idle_rss_mb"].get<double>() <= kTargetIdleRssMb));
    row("peak RSS under load PK / CN (MB)",
        absl::StrCat(Fmt(r["load"]["pk_peak_rss_mb"].get<double>()), " / ",
                     Fmt(r["load"]["cn_peak_rss_mb"].get<double>())),
        "<= 150", Verdict(r["load_rss_mb"].get<double>() <= kTargetLoadRssMb));
  }
  const Json& tp = r["throughput"]["resources"];
  if (tp["pk"]["cpu_cores"].is_number() && tp["cn"]["cpu_cores"].is_number()) {
    row("CPU cores used PK / CN / clients",
        absl::StrCat(Fmt(tp["pk"]["cpu_cores"].get<double>(), 2), " / ",
                     Fmt(tp["cn"]["cpu_cores"].get<double>(), 2), " / ",
                     Fmt(NumberOr(tp["bench"]["cpu_cores"], 0), 2)),
        "", "");
    row("CPU ms per message PK / CN",
        absl::StrCat(Fmt(tp["pk"]["cpu_ms_per_message"].get<double>(), 3),
                     " / ",
                     Fmt(tp["cn"]["cpu_ms_per_message"].get<double>(), 3)),
        "", "");
    if (tp["pk"]["write_kb_per_message"].is_number() &&
        tp["cn"]["write_kb_per_message"].is_number()) {
      row("storage writes per message PK / CN (KB)",
          absl::StrCat(Fmt(tp["pk"]["write_kb_per_message"].get<double>()),
                       " / ",
                       Fmt(tp["cn"]["write_kb_per_message"].get<double>())),
          "", "");
    }
  }
  const Json& disk = r["disk"];
  if (disk["total_bytes_per_message"].is_number()) {
    row("bytes on disk per message PK + CN",
        absl::StrCat(Thousands(disk["pk_bytes_per_message"]), " + ",
                     Thousands(disk["cn_bytes_per_message"]), " = ",
                     Thousands(disk["total_bytes_per_message"])),
        "", "");
  }
  const Json& b = r["backlog"];
  if (b["messages"].get<int64_t>() > 0) {
    const double drain = NumberOr(b["drain_per_second"], 0);
    row("backlog drain messages/s",
        absl::StrCat(Thousands(drain), " (", Thousands(b["messages"]),
                     " msgs)"),
        absl::StrCat(">= ", Thousands(delivered)),
        Verdict(drain >= delivered && drain > 0));
    row("  first receipt after CN ready (s)",
        Fmt(NumberOr(b["first_receipt_after_s"], 0), 2), "", "");
  }
  const Json& x = r["check"];
  row("lost / duplicated (every message checked)",
      absl::StrCat(r["lost"].get<uint64_t>(), " / ",
                   r["duplicated"].get<uint64_t>()),
      "0 / 0",
      Verdict(r["lost"].get<uint64_t>() == 0 &&
              r["duplicated"].get<uint64_t>() == 0));
  row("  delivered with a receipt / accepted",
      absl::StrCat(x["receipted"].get<uint64_t>(), " / ",
                   x["accepted"].get<uint64_t>()),
      "", "");
  row("  receipts verified with CN's key",
      absl::StrCat(x["receipts_verified"].get<uint64_t>(), " (",
                   x["receipts_bad"].get<uint64_t>(), " bad)"),
      "", "");
  if (r["audit"]["pk"].is_object()) {
    auto audit = [](const Json& a) {
      return absl::StrCat(a["ok"].get<bool>() ? "ok, " : "FAILED, ",
                          Thousands(a["entries"]), " entries");
    };
    row("  audit logs verified offline PK / CN",
        absl::StrCat(audit(r["audit"]["pk"]), " / ", audit(r["audit"]["cn"])),
        "", "");
  }
  std::printf(
      "\n  %s\n",
      r["ok"].get<bool>()
          ? "every message arrived exactly once; all checks passed"
          : absl::StrCat("FAILED: ", r["problem"].get<std::string>()).c_str());
  std::printf("\n");
}

// --- The run -----------------------------------------------------------------

std::string RandomPrefix() {
  std::random_device device;
  return absl::StrFormat("r%06x-", device() & 0xffffff);
}

class Run {
 public:
  explicit Run(const Options& options)
      : o_(options),
        env_(options),
        ledger_(RandomPrefix(), static_cast<size_t>(options.body_bytes)) {}

  // 0, 1 or 2 as main returns.
  int Go() {
    const absl::Status status = Steps();
    if (!status.ok()) {
      std::fprintf(stderr, "casebridge-bench: %s\n%s",
                   status.ToString().c_str(), env_.Logs().c_str());
      return 2;
    }
    if (o_.json) {
      std::printf("%s\n", report_.dump(2).c_str());
    } else {
      PrintTable(report_);
      if (o_.keep || !o_.work_dir.empty()) {
        std::printf("  work directory: %s\n\n", env_.work().c_str());
      }
    }
    if (!report_["ok"].get<bool>()) {
      std::fprintf(stderr, "casebridge-bench: %s\n%s",
                   report_["problem"].get<std::string>().c_str(),
                   env_.Logs().c_str());
      return 1;
    }
    return 0;
  }

 private:
  absl::Status Steps() {
    report_["config"] =
        Json{{"quick", o_.quick},
             {"clients", o_.clients},
             {"seconds", o_.seconds},
             {"warmup_seconds", o_.warmup},
             {"cases", o_.cases},
             {"window", o_.window},
             {"saturate_window", o_.saturate_window},
             {"urgent_interval_ms", o_.urgent_interval_ms},
             {"backlog", Managed(o_) ? o_.backlog : 0},
             {"body_bytes", o_.body_bytes},
             {"work_threads", Managed(o_) ? o_.work_threads : 0},
             {"cpus", std::thread::hardware_concurrency()},
             {"load_average_at_start", LoadAverage()},
             {"gateways", Managed(o_) ? "started" : "running"}};
    Say(o_, "Preparing the PKI and the gateways' configs...");
    CB_RETURN_IF_ERROR(env_.Prepare());
    if (Managed(o_)) {
      CB_RETURN_IF_ERROR(env_.StartPk());
      CB_RETURN_IF_ERROR(env_.StartCn());
    }
    CB_RETURN_IF_ERROR(env_.Connect());
    watcher_ = std::make_unique<InboxWatcher>(env_.cn_channel(), &ledger_);
    watcher_->Start();

    // Idle: started and linked, nothing sent yet.
    absl::SleepFor(absl::Seconds(o_.quick ? 0.5 : 2));
    const Resources idle = SampleAll(env_);
    if (idle.pk.has_value() && idle.cn.has_value()) {
      report_["idle"] =
          Json{{"pk_rss_mb", idle.pk->rss_mb}, {"cn_rss_mb", idle.cn->rss_mb}};
    }

    const std::optional<double> echo_before = MeasureBaseline("before");

    Say(o_, absl::StrCat("Opening and sharing ", o_.cases + o_.urgent_cases,
                         " cases..."));
    CB_ASSIGN_OR_RETURN(
        const std::vector<std::string> cases,
        OpenAndShareCases(env_, ledger_, o_.cases + o_.urgent_cases,
                          ledger_.run_prefix() + "case"));
    const std::vector<std::string> routine(cases.begin(),
                                           cases.begin() + o_.cases);
    const std::vector<std::string> urgent(cases.begin() + o_.cases,
                                          cases.end());
    absl::SleepFor(absl::Seconds(o_.quick ? 0.2 : 1));  // receipts, records
    const std::optional<uint64_t> pk_db0 = DbBytes(env_.pk_data());
    const std::optional<uint64_t> cn_db0 = DbBytes(env_.cn_data());

    CB_ASSIGN_OR_RETURN(const Window throughput, ThroughputPhase(routine));
    CB_ASSIGN_OR_RETURN(const Window saturated,
                        SaturatedPhase(routine, urgent));
    absl::SleepFor(absl::Seconds(o_.quick ? 0.3 : 1.5));  // receipts, records
    const Resources loaded = SampleAll(env_);
    const std::optional<uint64_t> pk_db1 = DbBytes(env_.pk_data());
    const std::optional<uint64_t> cn_db1 = DbBytes(env_.cn_data());

    const std::optional<double> echo_after = MeasureBaseline("after");

    std::optional<Window> backlog;
    absl::Time cn_ready;
    if (Managed(o_) && o_.backlog > 0) {
      CB_ASSIGN_OR_RETURN(backlog, BacklogPhase(routine, &cn_ready));
    }

    // Every message's delivery status at the origin; receipts still on
    // their way are waited for.
    Say(o_, "Reading every message's delivery status...");
    std::vector<SentMessage*> messages = ledger_.AcceptedMessages();
    const auto keys = exchange::KeyRing::FromPemFiles(
        {env_.pki() + "/cn/signing/envelope.pub"});
    if (!keys.ok()) return keys.status();
    StatusSummary statuses;
    std::vector<SentMessage*> pending = messages;
    for (int round = 0; round < 30 && !pending.empty(); ++round) {
      if (round > 0) absl::SleepFor(absl::Seconds(1));
      const StatusSummary s =
          CollectDeliveryStatus(pending, env_.pk_stubs(), 64, *keys, kCnGateway,
                                static_cast<size_t>(o_.verify_every));
      statuses.asked += s.asked;
      statuses.errors = s.errors;  // of the last round
      statuses.receipts_verified += s.receipts_verified;
      statuses.receipts_bad += s.receipts_bad;
      if (statuses.first_problem.empty()) {
        statuses.first_problem = s.first_problem;
      }
      std::vector<SentMessage*> still;
      for (SentMessage* m : pending) {
        if (!m->delivered()) still.push_back(m);
      }
      pending.swap(still);
    }

    watcher_->Stop();
    const ExactlyOnce check = ledger_.Check();

    // Stop the gateways and verify both audit logs offline.
    Json audit;
    std::string problem;
    if (Managed(o_)) {
      Say(o_, "Stopping both gateways...");
      const int pk_exit = env_.StopPk();
      const int cn_exit = env_.StopCn();
      if (pk_exit != 0 || cn_exit != 0) {
        problem =
            absl::StrCat("gateway exit codes: PK ", pk_exit, ", CN ", cn_exit);
      }
    }
    if (!env_.pk_data().empty() && !env_.cn_data().empty()) {
      Say(o_, "Verifying both audit logs offline...");
      auto public_keys = keys::LoadPublicKeys(env_.pki() + "/public-keys.toml");
      if (!public_keys.ok()) return public_keys.status();
      for (const auto& [name, dir] :
           {std::pair{"pk", env_.pk_data()}, std::pair{"cn", env_.cn_data()}}) {
        auto verified = server::VerifyDataDir(dir, *public_keys, {});
        if (!verified.ok()) {
          audit[name] = Json{{"ok", false},
                             {"entries", 0},
                             {"problem", verified.status().ToString()}};
        } else {
          audit[name] = Json{{"ok", verified->ok},
                             {"entries", verified->entries},
                             {"checkpoints", verified->checkpoints},
                             {"cosigned", verified->cosigned},
                             {"problem", verified->problem}};
        }
        if (!audit[name]["ok"].get<bool>() && problem.empty()) {
          problem = absl::StrCat(
              name, " audit log: ", audit[name]["problem"].get<std::string>());
        }
      }
    }
    report_["audit"] = audit;

    // --- The report.
    const LatencySet tp = Latencies(messages, kThroughput, throughput);
    const double delivered_per_second =
        static_cast<double>(tp.delivered_in_window) / throughput.seconds();
    report_["delivered_per_second"] = delivered_per_second;
    report_["accepted_per_second"] =
        static_cast<double>(tp.accepted_in_window) / throughput.seconds();
    std::optional<double> baseline;
    if (echo_before.has_value() && echo_after.has_value()) {
      baseline = (*echo_before + *echo_after) / 2;
    }
    report_["baseline_echo_per_second"] = OrNull(baseline);
    report_["ratio"] = baseline.has_value() && *baseline > 0
                           ? Json(delivered_per_second / *baseline)
                           : Json(nullptr);
    report_["echo"] = Json{{"before", OrNull(echo_before)},
                           {"after", OrNull(echo_after)},
                           {"details", echo_details_}};
    report_["p50_ms"] = tp.from_accept.p50;
    report_["p99_ms"] = tp.from_accept.p99;
    report_["p999_ms"] = tp.from_accept.p999;
    report_["latency_from_accept"] = PercentilesJson(tp.from_accept);
    report_["latency_from_call"] = PercentilesJson(tp.from_call);
    report_["latency_call_to_inbox"] = PercentilesJson(tp.to_inbox);
    report_["latency_accept_to_receiver"] = PercentilesJson(tp.to_receiver);
    report_["latency_receipt_back"] = PercentilesJson(tp.receipt_back);

    const LatencySet sat = Latencies(messages, kSaturated, saturated);
    const LatencySet urg = Latencies(messages, kUrgent, saturated);
    report_["urgent_p99_ms"] = urg.from_accept.p99;
    report_["saturated"] = Json{
        {"delivered_per_second",
         static_cast<double>(sat.delivered_in_window) / saturated.seconds()},
        {"routine", PercentilesJson(sat.from_accept)},
        {"urgent", PercentilesJson(urg.from_accept)},
        {"urgent_from_call", PercentilesJson(urg.from_call)},
        {"urgent_to_receiver", PercentilesJson(urg.to_receiver)},
        {"urgent_receipt_back", PercentilesJson(urg.receipt_back)},
        {"routine_to_receiver", PercentilesJson(sat.to_receiver)},
        {"routine_receipt_back", PercentilesJson(sat.receipt_back)},
        {"resources", ResourcesJson(saturated, sat.delivered_in_window +
                                                   urg.delivered_in_window)}};
    report_["throughput"] =
        Json{{"seconds", throughput.seconds()},
             {"delivered", tp.delivered_in_window},
             {"resources", ResourcesJson(throughput, tp.delivered_in_window)}};

    if (idle.pk.has_value() && idle.cn.has_value()) {
      report_["idle_rss_mb"] = std::max(idle.pk->rss_mb, idle.cn->rss_mb);
    } else {
      report_["idle_rss_mb"] = nullptr;
    }
    if (loaded.pk.has_value() && loaded.cn.has_value()) {
      report_["load_rss_mb"] = std::max(loaded.pk->hwm_mb, loaded.cn->hwm_mb);
      report_["load"] = Json{{"pk_peak_rss_mb", loaded.pk->hwm_mb},
                             {"cn_peak_rss_mb", loaded.cn->hwm_mb},
                             {"pk_rss_after_mb", loaded.pk->rss_mb},
                             {"cn_rss_after_mb", loaded.cn->rss_mb}};
    } else {
      report_["load_rss_mb"] = nullptr;
    }

    // Bytes on disk: growth of each database's live pages over the
    // throughput and saturated phases, per message accepted in them.
    Json disk;
    const uint64_t loaded_messages = ledger_.accepted(kThroughput) +
                                     ledger_.accepted(kSaturated) +
                                     ledger_.accepted(kUrgent);
    disk["messages"] = loaded_messages;
    if (pk_db0 && cn_db0 && pk_db1 && cn_db1 && loaded_messages > 0) {
      const double pk =
          (static_cast<double>(*pk_db1) - static_cast<double>(*pk_db0)) /
          static_cast<double>(loaded_messages);
      const double cn =
          (static_cast<double>(*cn_db1) - static_cast<double>(*cn_db0)) /
          static_cast<double>(loaded_messages);
      disk["pk_bytes_per_message"] = pk;
      disk["cn_bytes_per_message"] = cn;
      disk["total_bytes_per_message"] = pk + cn;
      disk["pk_database_bytes"] = *pk_db1;
      disk["cn_database_bytes"] = *cn_db1;
    } else {
      disk["total_bytes_per_message"] = nullptr;
    }
    if (!env_.pk_data().empty()) {
      disk["pk_data_dir_bytes_at_end"] = DirectoryBytes(env_.pk_data());
      disk["cn_data_dir_bytes_at_end"] = DirectoryBytes(env_.cn_data());
    }
    report_["disk"] = disk;

    Json b;
    b["messages"] = backlog.has_value() ? o_.backlog : 0;
    if (backlog.has_value()) {
      std::optional<absl::Time> first;
      std::optional<absl::Time> last;
      for (const SentMessage* m : messages) {
        if (m->phase != kBacklog || !m->delivered()) continue;
        if (!first || m->delivered_at < *first) first = m->delivered_at;
        if (!last || m->delivered_at > *last) last = m->delivered_at;
      }
      const uint64_t n = ledger_.accepted(kBacklog);
      b["accepted"] = n;
      b["queue_per_second"] = static_cast<double>(n) / backlog->seconds();
      b["pk_peak_rss_mb_with_backlog"] =
          backlog_pk_ ? Json(backlog_pk_->hwm_mb) : Json(nullptr);
      b["cn_peak_rss_mb_draining"] =
          backlog_cn_ ? Json(backlog_cn_->hwm_mb) : Json(nullptr);
      if (first && last) {
        b["first_receipt_after_s"] = Seconds(*first - cn_ready);
        b["drain_seconds"] = Seconds(*last - cn_ready);
        b["drain_per_second"] =
            static_cast<double>(n) / Seconds(*last - cn_ready);
        b["drain_per_second_from_first_receipt"] =
            *last > *first
                ? Json(static_cast<double>(n) / Seconds(*last - *first))
                : Json(nullptr);
      } else {
        b["drain_per_second"] = nullptr;
      }
    }
    report_["backlog"] = b;

    uint64_t receipted = 0;
    for (const SentMessage* m : messages) {
      if (m->delivered()) ++receipted;
    }
    report_["lost"] = check.lost;
    report_["duplicated"] = check.duplicated;
    report_["check"] = Json{{"accepted", check.accepted},
                            {"arrived_once", check.delivered},
                            {"lost", check.lost},
                            {"duplicated", check.duplicated},
                            {"unexpected", check.unexpected},
                            {"foreign", check.foreign},
                            {"wrong_body", check.wrong_body},
                            {"cursor_regressions", check.cursor_regressions},
                            {"failed_sends", check.failed_sends},
                            {"send_errors", ledger_.errors()},
                            {"receipted", receipted},
                            {"status_errors", statuses.errors},
                            {"receipts_verified", statuses.receipts_verified},
                            {"receipts_bad", statuses.receipts_bad}};

    if (problem.empty()) {
      if (check.lost > 0 || check.duplicated > 0) {
        problem = absl::StrCat(check.lost, " messages lost and ",
                               check.duplicated, " duplicated at the receiver");
      } else if (check.unexpected > 0 || check.wrong_body > 0 ||
                 check.cursor_regressions > 0) {
        problem = absl::StrCat("the receiver saw ", check.unexpected,
                               " unexpected messages, ", check.wrong_body,
                               " wrong bodies, ", check.cursor_regressions,
                               " cursors out of order");
      } else if (check.failed_sends > 0) {
        problem = absl::StrCat(
            check.failed_sends,
            " office calls failed repeatedly: ", ledger_.first_error());
      } else if (receipted != messages.size() || statuses.errors > 0 ||
                 statuses.receipts_bad > 0) {
        problem = absl::StrCat(
            messages.size() - receipted, " messages without a stored receipt, ",
            statuses.receipts_bad, " bad receipts: ", statuses.first_problem);
      } else if (tp.delivered_in_window == 0) {
        problem = "nothing was delivered in the measured window";
      }
    }
    report_["config"]["load_average_at_end"] = LoadAverage();
    report_["ok"] = problem.empty();
    report_["problem"] = problem;
    Say(o_, "Done.");
    return absl::OkStatus();
  }

  // Echo calls/s with the same channels layout and concurrency; nullopt if
  // skipped.
  std::optional<double> MeasureBaseline(const std::string& when) {
    if (o_.echo_seconds <= 0) return std::nullopt;
    Say(o_, absl::StrCat("Baseline (", when, "): mTLS unary echo, ", o_.clients,
                         " in flight, ", o_.echo_seconds, " s..."));
    const std::string ready =
        absl::StrCat(env_.work(), "/echo-", when, ".ready");
    auto server = ChildProcess::Spawn(
        {SelfBinary(), "--echo-server", ready, "--pki", env_.pki()},
        absl::StrCat(env_.work(), "/echo-", when, ".log"));
    if (!server.ok()) return std::nullopt;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    std::error_code ec;
    while (!std::filesystem::exists(ready, ec) && (*server)->Running() &&
           absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(5));  // polling the ready file
    }
    int port = 0;
    try {
      port =
          nlohmann::json::parse(ReadFileOrEmpty(ready)).at("port").get<int>();
    } catch (const nlohmann::json::exception&) {
      Say(o_, "the echo server did not start:\n" + (*server)->LogTail());
      return std::nullopt;
    }
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    for (const char* stem : kSenderStems) {
      auto channel = client::Connect(ClientConfig(
          env_.pki(), stem, absl::StrCat("127.0.0.1:", port), true));
      if (!channel.ok()) return std::nullopt;
      channels.push_back(*channel);
    }
    // The payload of a typical SendMessage request.
    v1::SendMessageRequest typical;
    typical.set_request_id(ledger_.run_prefix() + "1-10-1000");
    typical.mutable_message()->set_exchange_id("PK-2026-000123");
    typical.mutable_message()->set_kind(v1::MESSAGE_KIND_NOTE);
    typical.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
    typical.mutable_message()->set_recipient_office(kMps);
    typical.mutable_message()->set_body(ledger_.BodyFor("x"));
    const Resources before = SampleAll(env_);
    const EchoResult result = MeasureEcho(
        channels, o_.clients, typical.ByteSizeLong(),
        absl::Seconds(o_.quick ? 0.3 : 1), absl::Seconds(o_.echo_seconds));
    const Resources after = SampleAll(env_);
    (*server)->Stop(absl::Seconds(10));
    echo_details_[when] = Json{
        {"calls_per_second", result.calls_per_second},
        {"p50_ms", result.p50_ms},
        {"p99_ms", result.p99_ms},
        {"calls", result.calls},
        {"errors", result.errors},
        {"payload_bytes", typical.ByteSizeLong()},
        {"client_cpu_seconds", OrNull(CpuDelta(before.bench, after.bench))},
        // The gateways are idle then; CPU they use anyway competes.
        {"pk_cpu_seconds", OrNull(CpuDelta(before.pk, after.pk))},
        {"cn_cpu_seconds", OrNull(CpuDelta(before.cn, after.cn))}};
    if (result.calls == 0) return std::nullopt;
    return result.calls_per_second;
  }

  absl::StatusOr<Window> ThroughputPhase(
      const std::vector<std::string>& cases) {
    Say(o_, absl::StrCat("Throughput: ", o_.clients, " office clients, ",
                         o_.window, " message(s) each on the way, ", o_.warmup,
                         " s warm-up + ", o_.seconds, " s..."));
    auto senders = MakeSenders(env_, ledger_, kThroughput, o_.clients, cases,
                               o_.window, nullptr);
    for (const auto& s : senders) s->Start();
    absl::SleepFor(absl::Seconds(o_.warmup));
    Window w;
    w.before = SampleAll(env_);
    w.start = absl::Now();
    absl::SleepFor(absl::Seconds(o_.seconds));
    w.end = absl::Now();
    w.after = SampleAll(env_);
    StopAndWait(senders);
    const bool drained = ledger_.WaitArrived(
        kThroughput, DrainTimeout(ledger_.accepted(kThroughput)));
    ledger_.DropSenders();
    if (!drained) {
      return absl::DeadlineExceededError(
          "throughput phase: messages did not reach the CN inbox in time");
    }
    return w;
  }

  absl::StatusOr<Window> SaturatedPhase(
      const std::vector<std::string>& routine,
      const std::vector<std::string>& urgent) {
    Say(o_, absl::StrCat("Saturated: ", o_.clients, " ROUTINE clients with ",
                         o_.saturate_window,
                         " messages each on the way, one URGENT every ",
                         o_.urgent_interval_ms, " ms, ", o_.warmup, " s + ",
                         o_.seconds, " s..."));
    auto senders = MakeSenders(env_, ledger_, kSaturated, o_.clients, routine,
                               o_.saturate_window, nullptr);
    SenderOptions u;
    u.phase = kUrgent;
    u.id = 0;
    u.identity = kEmbassy;
    u.stub = env_.pk_stubs()[kEmbassy];
    u.cases = urgent;
    u.recipient_office = kMps;
    u.priority = v1::PRIORITY_URGENT;
    u.kind = v1::MESSAGE_KIND_RESCUE_REQUEST;
    u.window = 1;
    u.paced = true;
    auto urgent_sender = std::make_shared<Sender>(&ledger_, std::move(u));
    urgent_sender->set_slot(ledger_.AddSender(urgent_sender));
    for (const auto& s : senders) s->Start();
    Window w;
    {
      Pacer pacer(urgent_sender,
                  absl::Microseconds(o_.urgent_interval_ms * 1000));
      absl::SleepFor(absl::Seconds(o_.warmup));
      w.before = SampleAll(env_);
      w.start = absl::Now();
      absl::SleepFor(absl::Seconds(o_.seconds));
      w.end = absl::Now();
      w.after = SampleAll(env_);
    }
    urgent_sender->Stop();
    urgent_sender->WaitIdle();
    StopAndWait(senders);
    const uint64_t n = ledger_.accepted(kSaturated) + ledger_.accepted(kUrgent);
    const bool drained = ledger_.WaitArrived(kSaturated, DrainTimeout(n)) &&
                         ledger_.WaitArrived(kUrgent, DrainTimeout(n));
    ledger_.DropSenders();
    if (!drained) {
      return absl::DeadlineExceededError(
          "saturated phase: messages did not reach the CN inbox in time");
    }
    return w;
  }

  // CN stopped; `o_.backlog` messages queued on PK; CN started. The window
  // runs from the first office call to the end of queueing.
  absl::StatusOr<Window> BacklogPhase(const std::vector<std::string>& cases,
                                      absl::Time* cn_ready) {
    Say(o_, absl::StrCat("Backlog: CN stopped, queueing ", o_.backlog,
                         " messages on PK..."));
    const int cn_exit = env_.StopCn();
    if (cn_exit != 0) {
      return absl::InternalError(
          absl::StrCat("the CN gateway exited with ", cn_exit, " on SIGTERM"));
    }
    std::atomic<int64_t> quota{o_.backlog};
    auto senders = MakeSenders(env_, ledger_, kBacklog, o_.clients, cases,
                               INT_MAX, &quota);
    Window w;
    w.before = SampleAll(env_);
    w.start = absl::Now();
    for (const auto& s : senders) s->Start();
    while (quota.load() > 0) absl::SleepFor(absl::Milliseconds(10));
    StopAndWait(senders);
    w.end = absl::Now();
    w.after = SampleAll(env_);
    backlog_pk_ = w.after.pk;
    Say(o_,
        absl::StrCat("Backlog: ", ledger_.accepted(kBacklog), " queued in ",
                     Fmt(w.seconds(), 1), " s; starting CN and draining..."));
    CB_RETURN_IF_ERROR(env_.StartCn());
    *cn_ready = absl::Now();
    const bool drained =
        ledger_.WaitArrived(kBacklog, DrainTimeout(ledger_.accepted(kBacklog)));
    backlog_cn_ = Sample(env_.cn_pid());
    ledger_.DropSenders();
    if (!drained) {
      return absl::DeadlineExceededError(
          "backlog phase: messages did not reach the CN inbox in time");
    }
    return w;
  }

  const Options& o_;
  Environment env_;
  Ledger ledger_;
  std::unique_ptr<InboxWatcher> watcher_;
  Json report_;
  Json echo_details_ = Json::object();
  std::optional<ProcSample> backlog_pk_;
  std::optional<ProcSample> backlog_cn_;
};

void ApplyQuick(CLI::App& app, Options& o) {
  auto unset = [&app](const char* name) {
    return app.get_option(name)->count() == 0;
  };
  if (unset("--clients")) o.clients = 16;
  if (unset("--seconds")) o.seconds = 1.5;
  if (unset("--warmup")) o.warmup = 0.3;
  if (unset("--echo-seconds")) o.echo_seconds = 0.5;
  if (unset("--cases")) o.cases = 64;
  if (unset("--saturate-window")) o.saturate_window = 8;
  if (unset("--backlog")) o.backlog = 500;
  if (unset("--verify-every")) o.verify_every = 1;
}

}  // namespace
}  // namespace casebridge::bench

// The benchmark, run by main with the gRPC library held (RunWithGrpc).
static int Main(int argc, char** argv) {
  using casebridge::bench::Options;
  CLI::App app{
      "casebridge-bench: the cross-border exchange under load, end to end "
      "(docs/performance.md#cross-border-exchange)"};
  Options o;
  app.add_flag("--quick", o.quick,
               "a few seconds with small numbers: proves the benchmark works; "
               "figures are not meaningful");
  app.add_flag("--json", o.json, "print one JSON object instead of a table");
  app.add_option("--clients", o.clients, "concurrent office clients")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--seconds", o.seconds, "measured seconds per load phase")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "warm-up seconds before each phase")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--echo-seconds", o.echo_seconds,
                 "seconds of each echo baseline (0: skip)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--cases", o.cases,
                 "cases the ROUTINE messages are spread over")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--window", o.window,
                 "throughput phase: messages each client has on the way")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--saturate-window", o.saturate_window,
                 "saturated phase: messages each client has on the way")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--urgent-interval-ms", o.urgent_interval_ms,
                 "saturated phase: at most one URGENT message per interval")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--urgent-cases", o.urgent_cases,
                 "cases of their own the URGENT messages use")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--backlog", o.backlog,
                 "messages queued while CN is down (0: skip the phase)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{100000000}));
  app.add_option("--body-bytes", o.body_bytes, "bytes of each message's body")
      ->capture_default_str()
      ->check(CLI::Range(40, 16000));
  app.add_option("--verify-every", o.verify_every,
                 "verify the receipt of every Nth message with CN's key")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000000));
  auto* work_threads =
      app.add_option("--work-threads", o.work_threads,
                     "limits.work_threads of both gateways started (0: the "
                     "gateway's default)")
          ->capture_default_str()
          ->check(CLI::Range(0, 0) |
                  CLI::Range(casebridge::config::Limits::kMinWorkThreads,
                             casebridge::config::Limits::kMaxWorkThreads));
  app.add_option("--work-dir", o.work_dir,
                 "where PKI, configs, data and logs go (kept); default: a "
                 "fresh temporary directory, removed afterwards");
  app.add_flag("--keep", o.keep, "keep the temporary work directory");
  app.add_option("--pki", o.pki,
                 "an existing dev PKI (certs/make-dev-pki layout) instead of "
                 "a fresh one");
  app.add_option("--gateway-binary", o.gateway_binary,
                 "casebridge-gateway to start")
      ->capture_default_str();
  auto* pk_office = app.add_option(
      "--pk-office", o.pk_office,
      "connect to a running PK gateway's office port (host:port) instead of "
      "starting gateways; needs --cn-office and --pki");
  auto* cn_office =
      app.add_option("--cn-office", o.cn_office,
                     "the running CN gateway's office port (host:port)");
  work_threads->excludes(pk_office);
  pk_office->needs(cn_office);
  cn_office->needs(pk_office);
  app.add_option("--pk-pid", o.pk_pid, "running PK gateway's pid (CPU, RSS)");
  app.add_option("--cn-pid", o.cn_pid, "running CN gateway's pid (CPU, RSS)");
  app.add_option(
      "--pk-data-dir", o.pk_data_dir,
      "running PK gateway's data_dir (disk; audit check at the end)");
  app.add_option(
      "--cn-data-dir", o.cn_data_dir,
      "running CN gateway's data_dir (disk; audit check at the end)");
  app.add_option("--echo-server", o.echo_server_ready,
                 "internal: serve the echo baseline, writing its port here")
      ->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!o.echo_server_ready.empty()) {
    return casebridge::bench::RunEchoServer(o.pki, o.echo_server_ready);
  }
  if (!o.pk_office.empty() && o.pki.empty()) {
    std::fprintf(stderr,
                 "casebridge-bench: --pk-office needs --pki (the PKI the "
                 "running gateways use)\n");
    return 2;
  }
  if (o.quick) casebridge::bench::ApplyQuick(app, o);
  casebridge::bench::Run run(o);
  return run.Go();
}

int main(int argc, char** argv) {
  return casebridge::RunWithGrpc([&] { return Main(argc, argv); });
}
