// Processes and resources for casebridge-bench: child processes (the two
// gateways, the echo server), what /proc says about them, loopback ports,
// and the size of a gateway's database.
#ifndef CASEBRIDGE_BENCH_EXCHANGE_BENCH_PROCESS_H_
#define CASEBRIDGE_BENCH_EXCHANGE_BENCH_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace casebridge::bench {

// A child process: argv[0] run with stdin from /dev/null and stdout and
// stderr appended to `log_path`. Killed (SIGKILL) and reaped on destruction
// if still running; sent SIGTERM by the kernel if the thread that spawned it
// ends first (a benchmark killed without unwinding).
class ChildProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(
      const std::vector<std::string>& argv, const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // Whether it has not exited yet (reaps it if it has).
  bool Running();
  // Waits up to `timeout` for it to exit: the exit code, -1 if it died of a
  // signal, -2 if it is still running.
  int Wait(absl::Duration timeout);
  // SIGTERM, then waits up to `timeout`: the exit code, or -1 if it died of
  // a signal or is still running (then it is killed).
  int Stop(absl::Duration timeout);
  void Kill();
  // The last `max_bytes` of its log.
  std::string LogTail(size_t max_bytes = 4000) const;

 private:
  ChildProcess(pid_t pid, std::string log_path)
      : pid_(pid), log_path_(std::move(log_path)) {}
  // Waits until `deadline`: the exit code, -1 if it died of a signal, -2 if
  // it is still running.
  int WaitUntil(absl::Time deadline);

  pid_t pid_;
  std::string log_path_;
  int exit_code_ = -2;
};

// A casebridge-gateway process started with a ready file.
class GatewayProcess {
 public:
  // Starts `binary --config config --ready-file <dir>/<name>.ready` and waits
  // until the ready file appears (or the process exits, or `timeout`).
  static absl::StatusOr<std::unique_ptr<GatewayProcess>> Start(
      const std::string& binary, const std::string& config_path,
      const std::string& work_dir, const std::string& name,
      absl::Duration timeout = absl::Seconds(30));

  ChildProcess& process() { return *process_; }
  pid_t pid() const { return process_->pid(); }
  int office_port() const { return office_port_; }

 private:
  GatewayProcess() = default;
  std::unique_ptr<ChildProcess> process_;
  int office_port_ = 0;
};

// CPU time, memory, writes and context switches of a process, from
// /proc/<pid>/stat, status and io. Counters run from the process's start.
struct ProcSample {
  double cpu_seconds = 0;  // user + system
  double rss_mb = 0;       // VmRSS: resident now
  double hwm_mb = 0;       // VmHWM: the peak resident size so far
  double write_bytes = 0;  // io write_bytes: bytes sent to the storage layer
  double write_calls = 0;  // io syscw: write system calls (pwrite included)
  double context_switches = 0;  // voluntary + involuntary, live threads
};
absl::StatusOr<ProcSample> SampleProc(pid_t pid);

// Bytes of the regular files under `dir`, recursively.
uint64_t DirectoryBytes(const std::string& dir);

// Bytes of live pages of the SQLite database at `path`: (page_count -
// freelist_count) * page_size, read on a connection of our own in a read
// transaction, so committed data still in the WAL counts and the WAL
// file's own size does not.
absl::StatusOr<uint64_t> DatabaseBytes(const std::string& path);

// Makes a fresh directory under $TMPDIR (or /tmp) named after `stem`.
absl::StatusOr<std::string> MakeTempDir(const std::string& stem);

std::string ReadFileOrEmpty(const std::string& path);
absl::Status WriteFile(const std::string& path, const std::string& contents);

}  // namespace casebridge::bench

#endif  // CASEBRIDGE_BENCH_EXCHANGE_BENCH_PROCESS_H_
