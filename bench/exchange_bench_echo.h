// The baseline of casebridge-bench: a minimal gRPC mutual-TLS unary echo,
// served by a process of its own with the PK gateway's certificate and
// trust (as its office port), called by closed-loop callers with an office
// certificate over the same channels and concurrency as the exchange.
#ifndef CASEBRIDGE_BENCH_EXCHANGE_BENCH_ECHO_H_
#define CASEBRIDGE_BENCH_EXCHANGE_BENCH_ECHO_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace casebridge::bench {

// Serves Echo on 127.0.0.1:0 with `pki_dir`'s pk/gateway-chain.crt, trusting
// pk/ca.crt with the CRLs of crl/, writes {"port":N} to `ready_file` and
// runs until SIGTERM or SIGINT. The process's exit code.
int RunEchoServer(const std::string& pki_dir, const std::string& ready_file);

struct EchoResult {
  double calls_per_second = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  uint64_t calls = 0;   // completed in the measured window
  uint64_t errors = 0;  // failed calls, warm-up included
};

// `concurrency` callers, caller i on channels[i % channels.size()], each
// calling Echo with `payload_bytes` bytes again as soon as its call
// returns; warm up for `warmup`, then count the calls that complete in the
// next `duration`.
EchoResult MeasureEcho(
    const std::vector<std::shared_ptr<grpc::Channel>>& channels,
    int concurrency, size_t payload_bytes, absl::Duration warmup,
    absl::Duration duration);

}  // namespace casebridge::bench

#endif  // CASEBRIDGE_BENCH_EXCHANGE_BENCH_ECHO_H_
