#include "tests/testing/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string TempPath(const std::string& stem) {
  static std::atomic<int> n{0};
  return absl::StrCat(::testing::TempDir(), "proc-", ::getpid(), "-", n++, "-",
                      stem);
}

// The child is killed when the thread that spawned it ends
// (PR_SET_PDEATHSIG): a test process killed at ctest's timeout takes its
// gateways with it, instead of leaving them to hold ports and CPU for the
// tests after it. Everything that allocates is done before the fork: the
// child of a threaded process may only make async-signal-safe calls.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv,
                            const std::string& out_path,
                            const std::string& err_path) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  const int null_in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int out =
      ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int err =
      ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  auto close_all = [&] {
    for (const int fd : {null_in, out, err}) {
      if (fd >= 0) ::close(fd);
    }
  };
  if (null_in < 0 || out < 0 || err < 0) {
    close_all();
    return absl::InternalError(absl::StrCat("cannot open the output files ",
                                            out_path, " and ", err_path));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    close_all();
    return absl::InternalError(absl::StrCat("fork failed for ", argv[0]));
  }
  if (pid == 0) {
    // Child: tie to the parent (checked again for a parent gone before the
    // prctl took hold), redirect, exec.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) {
      ::_exit(127);
    }
    ::dup2(null_in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  close_all();
  return pid;
}

// Waits for `pid` until `deadline`; the exit code, or -1 (signal / timeout).
int WaitFor(pid_t pid, absl::Time deadline, bool* exited) {
  *exited = false;
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      *exited = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (r < 0) {
      *exited = true;
      return -1;
    }
    if (absl::Now() >= deadline) return -1;
    absl::SleepFor(absl::Milliseconds(10));  // polling the condition
  }
}

// The logs of the gateways this process started. A gateway replaced
// half-way through a test may explain a failure that comes later, so they
// stay until the process exits: removed if every test passed, kept and
// named if one failed.
class GatewayLogs {
 public:
  static GatewayLogs& Get() {
    static GatewayLogs logs;
    return logs;
  }
  void Add(std::string path) {
    absl::MutexLock lock(&mu_);
    paths_.push_back(std::move(path));
  }
  ~GatewayLogs() {
    const bool failed = ::testing::UnitTest::GetInstance()->Failed();
    absl::MutexLock lock(&mu_);
    for (const std::string& path : paths_) {
      if (failed) {
        std::cerr << "gateway log kept: " << path << "\n";
      } else {
        std::error_code ec;
        std::filesystem::remove(path, ec);
      }
    }
  }

 private:
  GatewayLogs() = default;
  absl::Mutex mu_;
  std::vector<std::string> paths_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::string GatewayBinary() {
  return BinaryDir() + "/server/casebridge-gateway";
}
std::string CliBinary() { return BinaryDir() + "/client/casebridge"; }

CommandResult RunCommand(const std::vector<std::string>& argv,
                         absl::Duration timeout) {
  const std::string out = TempPath("out");
  const std::string err = TempPath("err");
  CommandResult result;
  const absl::StatusOr<pid_t> spawned = Spawn(argv, out, err);
  if (!spawned.ok()) {
    result.err = spawned.status().ToString();
    return result;
  }
  const pid_t pid = *spawned;
  bool exited = false;
  result.exit_code = WaitFor(pid, absl::Now() + timeout, &exited);
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  result.out = ReadAll(out);
  result.err = ReadAll(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return result;
}

absl::StatusOr<std::unique_ptr<GatewayProcess>> GatewayProcess::Start(
    const std::string& config_path, absl::Duration timeout) {
  // The gateway dies with the thread that starts it (Spawn): only the
  // process's main thread lives as long as the test.
  if (::syscall(SYS_gettid) != ::getpid()) {
    return absl::FailedPreconditionError(
        "GatewayProcess::Start: call it from the test's main thread (the "
        "gateway is killed when the thread that started it ends)");
  }
  std::unique_ptr<GatewayProcess> p(new GatewayProcess());
  p->ready_path_ = TempPath("ready.json");
  p->out_path_ = TempPath("gateway.out");
  p->log_path_ = TempPath("gateway.log");
  const std::string& ready = p->ready_path_;
  std::filesystem::remove(ready);  // never trust a file left by someone else
  absl::StatusOr<pid_t> pid =
      Spawn({GatewayBinary(), "--config", config_path, "--ready-file", ready},
            p->out_path_, p->log_path_);
  if (!pid.ok()) return pid.status();
  p->pid_ = *pid;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    std::error_code ec;
    if (std::filesystem::exists(ready, ec)) break;
    int status = 0;
    if (::waitpid(p->pid_, &status, WNOHANG) == p->pid_) {
      p->pid_ = -1;
      return absl::FailedPreconditionError(absl::StrCat(
          "gateway exited with ", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
          " before it was ready: ", p->Log()));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("gateway not ready in time: ", p->Log()));
    }
    absl::SleepFor(absl::Milliseconds(10));  // polling the condition
  }
  const auto json = nlohmann::json::parse(ReadAll(ready));
  p->office_port_ = json.at("office_port").get<int>();
  p->peer_port_ = json.at("peer_port").get<int>();
  return p;
}

GatewayProcess::~GatewayProcess() {
  Kill();
  std::error_code ec;  // a file never made is fine
  std::filesystem::remove(ready_path_, ec);
  std::filesystem::remove(out_path_, ec);
  if (!log_path_.empty()) GatewayLogs::Get().Add(log_path_);
}

std::string GatewayProcess::office_endpoint() const {
  return absl::StrCat("127.0.0.1:", office_port_);
}
std::string GatewayProcess::peer_endpoint() const {
  return absl::StrCat("127.0.0.1:", peer_port_);
}

int GatewayProcess::Stop(absl::Duration timeout) {
  if (pid_ < 0) return -1;
  ::kill(pid_, SIGTERM);
  bool exited = false;
  const int code = WaitFor(pid_, absl::Now() + timeout, &exited);
  if (exited) pid_ = -1;
  return code;
}

void GatewayProcess::Kill() {
  if (pid_ < 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string GatewayProcess::Log() const { return ReadAll(log_path_); }

}  // namespace casebridge::testing
