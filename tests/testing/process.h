// Real processes for end-to-end tests: the gateway binary and the CLI.
#ifndef CASEBRIDGE_TESTS_TESTING_PROCESS_H_
#define CASEBRIDGE_TESTS_TESTING_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace casebridge::testing {

// Paths of the built binaries.
std::string GatewayBinary();
std::string CliBinary();

struct CommandResult {
  int exit_code = -1;  // -1: killed at the timeout or by a signal
  std::string out;
  std::string err;
};

// Processes started here get SIGKILL when the thread that started them
// ends, so none outlives a test process killed at its timeout.

// Runs argv[0] with its arguments; waits up to `timeout`.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         absl::Duration timeout = absl::Seconds(60));

// A casebridge-gateway process. Killed (SIGKILL) on destruction if still
// running; its files under TempDir() go with it, except its log, which
// stays until the test process exits: removed then if every test passed,
// kept (the path printed) if one failed.
class GatewayProcess {
 public:
  // Starts the gateway with `config_path` and waits until it has written its
  // ready file (or exited, or `timeout` passed: then an error with its log).
  // Only from the process's main thread (FAILED_PRECONDITION otherwise).
  static absl::StatusOr<std::unique_ptr<GatewayProcess>> Start(
      const std::string& config_path,
      absl::Duration timeout = absl::Seconds(30));
  ~GatewayProcess();

  int office_port() const { return office_port_; }
  int peer_port() const { return peer_port_; }
  std::string office_endpoint() const;
  std::string peer_endpoint() const;
  pid_t pid() const { return pid_; }
  // The --ready-file the gateway was started with.
  const std::string& ready_path() const { return ready_path_; }

  // SIGTERM, then waits up to `timeout`; returns the exit code (-1 if it did
  // not exit or died of a signal).
  int Stop(absl::Duration timeout = absl::Seconds(30));
  // SIGKILL and reap.
  void Kill();
  // What the gateway wrote to stderr so far.
  std::string Log() const;

 private:
  GatewayProcess() = default;
  pid_t pid_ = -1;
  int office_port_ = 0;
  int peer_port_ = 0;
  std::string ready_path_;
  std::string out_path_;
  std::string log_path_;
};

}  // namespace casebridge::testing

#endif  // CASEBRIDGE_TESTS_TESTING_PROCESS_H_
