#include "bench/exchange_bench_echo.h"

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bench/exchange_bench_process.h"
#include "bench/exchange_bench_stats.h"
#include "core/tls.h"
#include "exchange_bench_echo.grpc.pb.h"

namespace casebridge::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

class EchoService final : public Echo::CallbackService {
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const EchoMessage* request,
                                 EchoMessage* response) override {
    response->set_payload(request->payload());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

// Closed-loop callers of Echo: each starts its next call from the
// completion of the previous one, until told to stop.
// Shared with the calls in flight, so the last completion may outlive Finish.
class EchoLoad : public std::enable_shared_from_this<EchoLoad> {
 public:
  EchoLoad(const std::vector<std::shared_ptr<grpc::Channel>>& channels,
           int concurrency, size_t payload_bytes) {
    request_.set_payload(std::string(payload_bytes, 'x'));
    for (int i = 0; i < concurrency; ++i) {
      auto caller = std::make_unique<Caller>();
      caller->stub =
          Echo::NewStub(channels[static_cast<size_t>(i) % channels.size()]);
      callers_.push_back(std::move(caller));
    }
  }

  void Start() {
    for (auto& caller : callers_) Issue(caller.get());
  }

  // Counts calls completing from now on.
  void StartWindow() {
    absl::MutexLock lock(&mu_);
    window_start_ = SteadyClock::now();
    counting_ = true;
  }

  // Stops counting and issuing, and waits for the calls still out.
  EchoResult Finish() {
    absl::MutexLock lock(&mu_);
    const auto end = SteadyClock::now();
    counting_ = false;
    stopping_ = true;
    mu_.Await(absl::Condition(
        +[](int* outstanding) { return *outstanding == 0; }, &outstanding_));
    EchoResult result;
    result.calls = latencies_ms_.size();
    result.errors = errors_;
    const double seconds =
        std::chrono::duration<double>(end - window_start_).count();
    result.calls_per_second =
        seconds > 0 ? static_cast<double>(result.calls) / seconds : 0;
    const Percentiles p = PercentilesOf(latencies_ms_);
    result.p50_ms = p.p50;
    result.p99_ms = p.p99;
    return result;
  }

 private:
  struct Caller {
    std::unique_ptr<Echo::Stub> stub;
    std::unique_ptr<grpc::ClientContext> context;
    EchoMessage response;
    SteadyClock::time_point started;
  };

  void Issue(Caller* caller) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      ++outstanding_;
    }
    Call(caller);
  }

  // Starts one call; its completion starts the next unless stopping.
  void Call(Caller* caller) {
    caller->context = std::make_unique<grpc::ClientContext>();
    caller->context->set_deadline(std::chrono::system_clock::now() +
                                  std::chrono::seconds(30));
    caller->started = SteadyClock::now();
    caller->stub->async()->Echo(
        caller->context.get(), &request_, &caller->response,
        [self = shared_from_this(), caller](const grpc::Status& status) {
          const auto done = SteadyClock::now();
          {
            absl::MutexLock lock(&self->mu_);
            if (!status.ok()) {
              ++self->errors_;
            } else if (self->counting_ &&
                       caller->started >= self->window_start_) {
              self->latencies_ms_.push_back(
                  std::chrono::duration<double, std::milli>(done -
                                                            caller->started)
                      .count());
            }
            if (self->stopping_) {
              --self->outstanding_;
              return;
            }
          }
          self->Call(caller);
        });
  }

  EchoMessage request_;  // read by every call at once; never changed
  std::vector<std::unique_ptr<Caller>> callers_;

  absl::Mutex mu_;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool counting_ ABSL_GUARDED_BY(mu_) = false;
  SteadyClock::time_point window_start_ ABSL_GUARDED_BY(mu_);
  std::vector<double> latencies_ms_ ABSL_GUARDED_BY(mu_);
  uint64_t errors_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

int RunEchoServer(const std::string& pki_dir, const std::string& ready_file) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  tls::ServerOptions options;
  options.cert_file = pki_dir + "/pk/gateway-chain.crt";
  options.key_file = pki_dir + "/pk/gateway.key";
  options.trusted_ca_file = pki_dir + "/pk/ca.crt";
  options.crl_dir = pki_dir + "/crl";
  auto credentials = tls::MakeServerCredentials(options);
  if (!credentials.ok()) {
    std::fprintf(stderr, "echo server: %s\n",
                 credentials.status().ToString().c_str());
    return 2;
  }
  EchoService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", *credentials, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "echo server: cannot listen\n");
    return 2;
  }
  const std::string tmp = ready_file + ".tmp";
  if (!WriteFile(tmp, absl::StrCat("{\"port\":", port, "}\n")).ok()) return 1;
  std::error_code ec;
  std::filesystem::rename(tmp, ready_file, ec);
  if (ec) return 1;
  int signal = 0;
  while (sigwait(&signals, &signal) != 0) {
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

EchoResult MeasureEcho(
    const std::vector<std::shared_ptr<grpc::Channel>>& channels,
    int concurrency, size_t payload_bytes, absl::Duration warmup,
    absl::Duration duration) {
  auto load = std::make_shared<EchoLoad>(channels, concurrency, payload_bytes);
  load->Start();
  absl::SleepFor(warmup);
  load->StartWindow();
  absl::SleepFor(duration);
  return load->Finish();
}

}  // namespace casebridge::bench
