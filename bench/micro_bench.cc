// Micro-benchmarks of the parts of one message's way across the border
// (docs/performance.md#cross-border-exchange), each alone:
//
//   BM_EnvelopeSign, BM_EnvelopeVerify   Ed25519 over a typical envelope
//   BM_ReceiptSign, BM_ReceiptVerify     the same for its receipt
//   BM_QueueOutgoing                     SendMessage's store write at the
//                                        origin (message, signed envelope,
//                                        audit entry; one durable commit)
//   BM_SenderWrites                      the origin's writes per envelope
//                                        after that, in the sender's order:
//                                        envelope.sent entry, attempt,
//                                        receipt with its audit entry
//   BM_ReadyToSend/pending:N             the sender's outbox query with N
//                                        envelopes waiting (after an outage)
//   BM_AcceptInbound                     the receiver's store write (envelope,
//                                        receipt, message, inbox row, audit)
//   BM_InboxFanOut/offices:N             AcceptInbound routed to N inboxes
//   BM_InboxWake/streams:N               from AcceptInbound to N watching
//                                        streams woken and each having read
//                                        its inbox, as WatchInbox does
//
// Store benchmarks run on fresh gateway databases in a temporary directory
// (WAL, synchronous=FULL, as the gateway runs), removed at exit; the
// `threads:8` variants call from eight threads at once, as the gateway's
// eight workers do, so group commit shares commits.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/ids.h"
#include "core/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "server/inbox_watchers.h"
#include "server/sqlite_case_store.h"
#include "server/work_queue.h"

namespace casebridge::bench {
namespace {

// Set when a benchmark could not do its work: the program then exits 1, so
// the quick run in the test suite fails instead of passing over an error.
std::atomic<bool> failed{false};

void Fail(benchmark::State& state, const char* why) {
  failed = true;
  state.SkipWithError(why);
}

using google::protobuf::util::TimeUtil;
using server::AuditEvent;
using server::GatewayStore;

constexpr char kPkGateway[] = "spiffe://pk.casebridge/gateway";
constexpr char kCnGateway[] = "spiffe://cn.casebridge/gateway";
constexpr char kFia[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kMps[] = "spiffe://cn.casebridge/office/mps-liaison";
// Envelope size limit as the gateway's default.
constexpr size_t kMaxEnvelopeBytes = 1 << 20;

[[noreturn]] void Die(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "casebridge-micro-bench: %s: %s\n", what.c_str(),
               status.ToString().c_str());
  std::exit(1);
}

template <typename T>
T ValueOrDie(const std::string& what, absl::StatusOr<T> value) {
  if (!value.ok()) Die(what, value.status());
  return *std::move(value);
}

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

// --- Keys, messages, envelopes -----------------------------------------------

struct Keys {
  std::unique_ptr<crypto::Ed25519Signer> pk = crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> cn = crypto::Ed25519Signer::Generate();
  exchange::KeyRing pk_ring;  // what CN trusts
  exchange::KeyRing cn_ring;  // what PK trusts

  Keys() {
    auto add = [](exchange::KeyRing& ring, const crypto::Ed25519Signer& s) {
      auto verifier =
          ValueOrDie("public key",
                     crypto::Ed25519Verifier::FromRawPublicKey(s.public_key()));
      const absl::Status added = ring.Add(std::move(verifier));
      if (!added.ok()) Die("key ring", added);
    };
    add(pk_ring, *pk);
    add(cn_ring, *cn);
  }

  static Keys& Get() {
    static Keys* keys = new Keys();
    return *keys;
  }
};

// A ROUTINE note of the size casebridge-bench sends (a 256-byte body).
v1::CaseMessage Message(const std::string& exchange_id, absl::Time now) {
  v1::CaseMessage m;
  m.set_message_id(MintId(v1::COUNTRY_PK, IdKind::kMessage, now));
  m.set_exchange_id(exchange_id);
  m.set_kind(v1::MESSAGE_KIND_NOTE);
  m.set_priority(v1::PRIORITY_ROUTINE);
  std::string body =
      "Victim V1 reported seen near the bus station; family asks for a "
      "welfare check and an update on the shelter placement. ";
  while (body.size() < 256) body += body.substr(0, 256 - body.size());
  m.set_body(body);
  m.set_sender_office(kFia);
  m.set_recipient_office(kMps);
  m.set_sender_country(v1::COUNTRY_PK);
  m.set_handling_code(v1::HANDLING_CODE_H0);
  m.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
  m.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_2);
  *m.mutable_sent_at() = ToProto(now);
  return m;
}

v1::Envelope EnvelopeOf(const v1::CaseMessage& m, const std::string& id,
                        absl::Time now, uint64_t audit_index) {
  v1::Envelope e;
  e.set_envelope_id(id);
  e.set_origin_gateway(kPkGateway);
  e.set_destination_gateway(kCnGateway);
  *e.mutable_created_at() = ToProto(now);
  *e.mutable_message() = m;
  e.set_origin_audit_index(audit_index);
  return e;
}

v1::SignedEnvelope SignedEnvelopeNow(const std::string& exchange_id) {
  const absl::Time now = absl::Now();
  const v1::CaseMessage m = Message(exchange_id, now);
  return ValueOrDie(
      "sign", exchange::SignEnvelope(
                  EnvelopeOf(m, MintId(v1::COUNTRY_PK, IdKind::kEnvelope, now),
                             now, 12345),
                  *Keys::Get().pk));
}

v1::Receipt ReceiptFor(const v1::SignedEnvelope& sent, absl::Time now) {
  v1::Envelope parsed;
  parsed.ParseFromString(sent.envelope());
  v1::Receipt r;
  r.set_envelope_id(parsed.envelope_id());
  r.set_envelope_sha256(exchange::EnvelopeDigest(sent));
  *r.mutable_received_at() = ToProto(now);
  r.set_receiver_audit_index(54321);
  r.set_receiver_gateway(kCnGateway);
  return r;
}

// --- Stores ------------------------------------------------------------------

// A gateway database of `country` named `name`, fresh in a temporary
// directory at first use, removed at exit.
GatewayStore& Store(v1::Country country, const std::string& name = "") {
  struct Stores {
    Stores() {
      const char* tmp = std::getenv("TMPDIR");
      dir = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp",
                         "/cb-micro-XXXXXX");
      if (::mkdtemp(dir.data()) == nullptr) {
        Die("temporary directory", absl::InternalError(dir));
      }
    }
    ~Stores() {
      open.clear();
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
    std::string dir;
    absl::Mutex mu;
    std::map<std::string, std::unique_ptr<GatewayStore>> open
        ABSL_GUARDED_BY(mu);
  };
  static Stores stores;  // destroyed at exit: the directory goes with it
  const std::string key =
      absl::StrCat(country == v1::COUNTRY_PK ? "pk" : "cn", name);
  absl::MutexLock lock(&stores.mu);
  std::unique_ptr<GatewayStore>& store = stores.open[key];
  if (store == nullptr) {
    store = ValueOrDie(key, GatewayStore::Open(stores.dir + "/" + key, country,
                                               &RealClock::Get()));
  }
  return *store;
}

AuditEvent Event(const std::string& actor, const std::string& action,
                 const std::string& payload) {
  AuditEvent event;
  event.actor = actor;
  event.action = action;
  event.payload = payload;
  return event;
}

// Queues one message on PK as SendMessage does (seal signs the envelope
// inside the transaction); its envelope id. The signed envelope goes to
// `sealed` if given.
std::string Queue(const std::string& exchange_id,
                  v1::SignedEnvelope* sealed = nullptr,
                  GatewayStore* store = nullptr) {
  const absl::Time now = absl::Now();
  server::OutgoingMessage out;
  out.message = Message(exchange_id, now);
  out.envelope_id = MintId(v1::COUNTRY_PK, IdKind::kEnvelope, now);
  out.seal = [&out, now,
              sealed](uint64_t index) -> absl::StatusOr<v1::SignedEnvelope> {
    CB_ASSIGN_OR_RETURN(
        v1::SignedEnvelope e,
        exchange::SignEnvelope(
            EnvelopeOf(out.message, out.envelope_id, now, index),
            *Keys::Get().pk));
    if (sealed != nullptr) *sealed = e;
    return e;
  };
  AuditEvent event = Event(kFia, "message.send", out.message.body());
  event.subjects = {exchange_id};
  if (store == nullptr) store = &Store(v1::COUNTRY_PK);
  auto queued = store->exchange().QueueOutgoing(out, {}, event);
  if (!queued.ok()) Die("QueueOutgoing", queued.status());
  return queued->envelope_id;
}

// Takes one envelope into CN's store as the receiver does, routed to
// `offices`.
void Accept(const v1::SignedEnvelope& signed_envelope,
            const std::vector<std::string>& offices) {
  const v1::Envelope parsed = ValueOrDie(
      "verify", exchange::VerifyEnvelope(signed_envelope, Keys::Get().pk_ring,
                                         kMaxEnvelopeBytes));
  AuditEvent event =
      Event(kPkGateway, "envelope.received", signed_envelope.signature());
  event.subjects = {parsed.message().exchange_id()};
  auto accepted =
      Store(v1::COUNTRY_CN)
          .exchange()
          .AcceptInbound(
              signed_envelope, parsed, offices,
              [&](uint64_t index,
                  absl::Time received_at) -> absl::StatusOr<v1::SignedReceipt> {
                v1::Receipt r = ReceiptFor(signed_envelope, received_at);
                r.set_receiver_audit_index(index);
                return exchange::SignReceipt(r, *Keys::Get().cn);
              },
              event);
  if (!accepted.ok()) Die("AcceptInbound", accepted.status());
}

std::string CaseOf(int64_t n) {
  return absl::StrFormat("PK-2026-%06d", 1 + n % 4096);
}

// --- Signatures --------------------------------------------------------------

void BM_EnvelopeSign(benchmark::State& state) {
  const absl::Time now = absl::Now();
  const v1::Envelope e =
      EnvelopeOf(Message("PK-2026-000123", now),
                 MintId(v1::COUNTRY_PK, IdKind::kEnvelope, now), now, 12345);
  size_t bytes = 0;
  for (auto _ : state) {
    auto signed_envelope = exchange::SignEnvelope(e, *Keys::Get().pk);
    if (!signed_envelope.ok()) {
      Fail(state, "sign failed");
      return;
    }
    bytes = signed_envelope->envelope().size();
    benchmark::DoNotOptimize(signed_envelope);
  }
  state.counters["envelope_bytes"] = static_cast<double>(bytes);
}

void BM_EnvelopeVerify(benchmark::State& state) {
  const v1::SignedEnvelope signed_envelope =
      SignedEnvelopeNow("PK-2026-000123");
  for (auto _ : state) {
    auto parsed = exchange::VerifyEnvelope(signed_envelope, Keys::Get().pk_ring,
                                           kMaxEnvelopeBytes);
    if (!parsed.ok()) {
      Fail(state, "verify failed");
      return;
    }
    benchmark::DoNotOptimize(parsed);
  }
}

void BM_ReceiptSign(benchmark::State& state) {
  const v1::Receipt r =
      ReceiptFor(SignedEnvelopeNow("PK-2026-000123"), absl::Now());
  for (auto _ : state) {
    auto signed_receipt = exchange::SignReceipt(r, *Keys::Get().cn);
    benchmark::DoNotOptimize(signed_receipt);
  }
}

void BM_ReceiptVerify(benchmark::State& state) {
  const v1::SignedEnvelope sent = SignedEnvelopeNow("PK-2026-000123");
  const v1::SignedReceipt signed_receipt = ValueOrDie(
      "sign",
      exchange::SignReceipt(ReceiptFor(sent, absl::Now()), *Keys::Get().cn));
  for (auto _ : state) {
    // What the origin does with each receipt before storing it.
    auto receipt = exchange::VerifyReceipt(signed_receipt, Keys::Get().cn_ring);
    if (!receipt.ok() ||
        !exchange::CheckReceiptMatches(*receipt, sent, kCnGateway).ok()) {
      Fail(state, "receipt does not verify");
      return;
    }
    benchmark::DoNotOptimize(receipt);
  }
}

// --- Store writes ------------------------------------------------------------

std::atomic<int64_t> next_case{0};

void BM_QueueOutgoing(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(Queue(CaseOf(next_case++)));
  state.SetItemsProcessed(state.iterations());
}

void BM_SenderWrites(benchmark::State& state) {
  server::GatewayStore& store = Store(v1::COUNTRY_PK);
  for (auto _ : state) {
    state.PauseTiming();
    const std::string exchange_id = CaseOf(next_case++);
    v1::SignedEnvelope sent;
    const std::string envelope_id = Queue(exchange_id, &sent);
    const v1::SignedReceipt receipt = ValueOrDie(
        "receipt",
        exchange::SignReceipt(ReceiptFor(sent, absl::Now()), *Keys::Get().cn));
    state.ResumeTiming();
    // As PeerLink records an envelope whose receipt came before its attempt
    // was recorded: the attempt with its envelope.sent entry and the receipt
    // with its receipt.stored entry, in one RecordSending.
    server::ExchangeStore::Sending sending;
    server::ExchangeStore::Attempt& attempt = sending.attempts.emplace_back();
    attempt.envelope_id = envelope_id;
    attempt.sent = Event(kPkGateway, "envelope.sent", sent.signature());
    attempt.sent->subjects = {exchange_id, envelope_id};
    sending.next_attempt = absl::Now();
    AuditEvent stored_event =
        Event(kPkGateway, "receipt.stored", receipt.receipt());
    stored_event.subjects = {exchange_id};
    sending.deliveries.push_back({envelope_id, receipt, stored_event});
    const auto recorded = store.exchange().RecordSending(sending);
    const bool ok = recorded.ok() && recorded->attempts[0].ok() &&
                    recorded->deliveries[0].ok();
    if (!ok) {
      Fail(state, "sender write failed");
      return;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

// The sender's outbox query (what may go now: the oldest pending envelope
// of each case, URGENT first) with `pending` envelopes waiting over 1,000
// cases, as after an outage; asks for a window's worth (64).
void BM_ReadyToSend(benchmark::State& state) {
  GatewayStore& store = Store(v1::COUNTRY_PK, "-outbox");
  static std::atomic<int64_t> filled{0};
  const int64_t pending = state.range(0);
  if (filled < pending) {
    // Fill from eight threads, so group commit keeps it quick.
    std::vector<std::thread> threads;
    std::atomic<int64_t> next{filled.load()};
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        for (int64_t i = next++; i < pending; i = next++) {
          Queue(absl::StrFormat("PK-2026-%06d", 1 + i % 1000), nullptr, &store);
        }
      });
    }
    for (auto& thread : threads) thread.join();
    filled = pending;
  }
  size_t returned = 0;
  for (auto _ : state) {
    auto items = store.exchange().ReadyToSend(absl::Now(), 64, {});
    if (!items.ok()) {
      Fail(state, "ReadyToSend failed");
      return;
    }
    returned = items->size();
  }
  state.counters["pending"] = static_cast<double>(pending);
  state.counters["returned"] = static_cast<double>(returned);
}

void BM_AcceptInbound(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    const v1::SignedEnvelope e = SignedEnvelopeNow(CaseOf(next_case++));
    state.ResumeTiming();
    Accept(e, {kMps});
  }
  state.SetItemsProcessed(state.iterations());
}

// --- Inboxes -----------------------------------------------------------------

void BM_InboxFanOut(benchmark::State& state) {
  std::vector<std::string> offices;
  for (int i = 0; i < state.range(0); ++i) {
    offices.push_back(
        absl::StrCat("spiffe://cn.casebridge/office/liaison-", i));
  }
  for (auto _ : state) {
    state.PauseTiming();
    const v1::SignedEnvelope e = SignedEnvelopeNow(CaseOf(next_case++));
    state.ResumeTiming();
    Accept(e, offices);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// N streams of N offices, each woken by InboxWatchers and reading its own
// inbox on the work queue, as WatchInbox's streams do; one message to all
// of them per iteration.
void BM_InboxWake(benchmark::State& state) {
  const int streams = static_cast<int>(state.range(0));
  server::ExchangeStore& exchange = Store(v1::COUNTRY_CN).exchange();
  std::vector<std::string> offices;
  for (int i = 0; i < streams; ++i) {
    offices.push_back(absl::StrCat("spiffe://cn.casebridge/office/watch-", i));
  }
  // One stream's reads run one at a time, as a WatchInbox stream's do.
  struct Stream {
    std::string office;
    absl::Mutex mu;
    int64_t cursor ABSL_GUARDED_BY(mu) = 0;
  };
  std::vector<std::unique_ptr<Stream>> open;
  for (int i = 0; i < streams; ++i) {
    auto s = std::make_unique<Stream>();
    s->office = offices[static_cast<size_t>(i)];
    absl::MutexLock lock(&s->mu);
    s->cursor = exchange.InboxHead();
    open.push_back(std::move(s));
  }
  absl::Mutex mu;
  int64_t read = 0;  // messages read by all streams together
  int64_t expected = 0;
  server::WorkQueue work(8);
  {
    server::InboxWatchers watchers(&exchange);
    std::vector<int> handles;
    for (const auto& stream : open) {
      Stream* s = stream.get();
      handles.push_back(watchers.Register([&, s] {
        work.Post([&, s] {
          absl::MutexLock stream_lock(&s->mu);
          auto items = exchange.ReadInbox(s->office, s->cursor, 100);
          if (!items.ok() || items->empty()) return;
          s->cursor = items->back().cursor;
          absl::MutexLock lock(&mu);
          read += static_cast<int64_t>(items->size());
        });
      }));
    }
    for (auto _ : state) {
      state.PauseTiming();
      const v1::SignedEnvelope e = SignedEnvelopeNow(CaseOf(next_case++));
      state.ResumeTiming();
      Accept(e, offices);
      absl::MutexLock lock(&mu);
      expected += streams;
      auto all_read = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return read >= expected;
      };
      if (!mu.AwaitWithTimeout(absl::Condition(&all_read), absl::Seconds(30))) {
        Fail(state, "a stream was not woken for a message in 30 s");
        break;
      }
    }
    for (const int handle : handles) watchers.Unregister(handle);
  }
  state.SetItemsProcessed(state.iterations() * streams);
}

void RegisterAll() {
  benchmark::RegisterBenchmark("BM_EnvelopeSign", BM_EnvelopeSign);
  benchmark::RegisterBenchmark("BM_EnvelopeVerify", BM_EnvelopeVerify);
  benchmark::RegisterBenchmark("BM_ReceiptSign", BM_ReceiptSign);
  benchmark::RegisterBenchmark("BM_ReceiptVerify", BM_ReceiptVerify);
  benchmark::RegisterBenchmark("BM_QueueOutgoing", BM_QueueOutgoing)
      ->Unit(benchmark::kMicrosecond)
      ->Threads(1)
      ->Threads(8)
      ->UseRealTime();
  benchmark::RegisterBenchmark("BM_SenderWrites", BM_SenderWrites)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_ReadyToSend", BM_ReadyToSend)
      ->ArgName("pending")
      ->Arg(1000)
      ->Arg(10000)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_AcceptInbound", BM_AcceptInbound)
      ->Unit(benchmark::kMicrosecond)
      ->Threads(1)
      ->Threads(8)
      ->UseRealTime();
  benchmark::RegisterBenchmark("BM_InboxFanOut", BM_InboxFanOut)
      ->ArgName("offices")
      ->Arg(1)
      ->Arg(4)
      ->Arg(16)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_InboxWake", BM_InboxWake)
      ->ArgName("streams")
      ->Arg(1)
      ->Arg(16)
      ->Arg(64)
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
}

}  // namespace

bool IsFailed() { return failed; }

}  // namespace casebridge::bench

int main(int argc, char** argv) {
  // The databases are created before anything is timed.
  casebridge::bench::Store(casebridge::v1::COUNTRY_PK);
  casebridge::bench::Store(casebridge::v1::COUNTRY_CN);
  casebridge::bench::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return casebridge::bench::IsFailed() ? 1 : 0;
}
