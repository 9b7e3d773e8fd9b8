#include "bench/exchange_bench_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace casebridge::bench {
namespace {

namespace fs = std::filesystem;

// The number after `key:` in /proc/<pid>/status or io (a "kB" unit is
// dropped: the value stays in kB).
bool StatusKb(const std::string& status, absl::string_view key, double* kb) {
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (!absl::ConsumePrefix(&line, key) || !absl::ConsumePrefix(&line, ":")) {
      continue;
    }
    line = absl::StripAsciiWhitespace(line);
    absl::ConsumeSuffix(&line, "kB");
    line = absl::StripAsciiWhitespace(line);
    int64_t value = 0;
    if (!absl::SimpleAtoi(line, &value)) return false;
    *kb = static_cast<double>(value);
    return true;
  }
  return false;
}

}  // namespace

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  const int log =
      ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log < 0) {
    return absl::InternalError(absl::StrCat("cannot open ", log_path));
  }
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec. A benchmark that dies
    // without stopping its gateways (killed, or a closed output pipe) takes
    // them with it: SIGTERM once the spawning thread is gone (the benchmark
    // spawns from its main thread), checked again for a parent gone already.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    const int null_in = ::open("/dev/null", O_RDONLY);
    ::dup2(null_in, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(log);
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, log_path));
}

ChildProcess::~ChildProcess() { Kill(); }

int ChildProcess::WaitUntil(absl::Time deadline) {
  while (exit_code_ == -2) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      break;
    }
    if (r < 0) {
      exit_code_ = -1;
      break;
    }
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(5));  // polling the child's exit
  }
  return exit_code_;
}

bool ChildProcess::Running() { return WaitUntil(absl::InfinitePast()) == -2; }

int ChildProcess::Wait(absl::Duration timeout) {
  return WaitUntil(absl::Now() + timeout);
}

int ChildProcess::Stop(absl::Duration timeout) {
  if (exit_code_ != -2) return exit_code_;
  ::kill(pid_, SIGTERM);
  const int code = WaitUntil(absl::Now() + timeout);
  if (code == -2) {
    Kill();
    return -1;
  }
  return code;
}

void ChildProcess::Kill() {
  if (exit_code_ != -2) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  exit_code_ = -1;
}

std::string ChildProcess::LogTail(size_t max_bytes) const {
  const std::string log = ReadFileOrEmpty(log_path_);
  return log.size() <= max_bytes ? log : log.substr(log.size() - max_bytes);
}

absl::StatusOr<std::unique_ptr<GatewayProcess>> GatewayProcess::Start(
    const std::string& binary, const std::string& config_path,
    const std::string& work_dir, const std::string& name,
    absl::Duration timeout) {
  const std::string ready = absl::StrCat(work_dir, "/", name, ".ready");
  std::error_code ec;
  fs::remove(ready, ec);
  std::unique_ptr<GatewayProcess> gateway(new GatewayProcess());
  auto process = ChildProcess::Spawn(
      {binary, "--config", config_path, "--ready-file", ready},
      absl::StrCat(work_dir, "/", name, "-gateway.log"));
  if (!process.ok()) return process.status();
  gateway->process_ = *std::move(process);
  const absl::Time deadline = absl::Now() + timeout;
  while (!fs::exists(ready, ec)) {
    if (!gateway->process_->Running()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the ", name, " gateway exited before it was ready:\n",
                       gateway->process_->LogTail()));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("the ", name, " gateway was not ready in time:\n",
                       gateway->process_->LogTail()));
    }
    absl::SleepFor(absl::Milliseconds(5));  // polling the ready file
  }
  try {
    const auto json = nlohmann::json::parse(ReadFileOrEmpty(ready));
    gateway->office_port_ = json.at("office_port").get<int>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InternalError(absl::StrCat(ready, ": ", e.what()));
  }
  return gateway;
}

absl::StatusOr<ProcSample> SampleProc(pid_t pid) {
  const std::string stat =
      ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/stat"));
  const std::string status =
      ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/status"));
  // The command name (field 2) may hold spaces: fields are counted after
  // its closing parenthesis. utime and stime are fields 14 and 15.
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || status.empty()) {
    return absl::NotFoundError(absl::StrCat("no process ", pid));
  }
  const std::vector<std::string> fields =
      absl::StrSplit(stat.substr(paren + 2), ' ', absl::SkipEmpty());
  int64_t utime = 0;
  int64_t stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return absl::InternalError(
        absl::StrCat("cannot parse /proc/", pid, "/stat"));
  }
  ProcSample sample;
  sample.cpu_seconds = static_cast<double>(utime + stime) /
                       static_cast<double>(::sysconf(_SC_CLK_TCK));
  double kb = 0;
  if (StatusKb(status, "VmRSS", &kb)) sample.rss_mb = kb / 1024;
  if (StatusKb(status, "VmHWM", &kb)) sample.hwm_mb = kb / 1024;
  // Context switches are counted per thread: those of the threads running
  // now (a thread that ended takes its count with it).
  std::error_code ec;
  for (fs::directory_iterator it(absl::StrCat("/proc/", pid, "/task"), ec), end;
       !ec && it != end; it.increment(ec)) {
    const std::string task = ReadFileOrEmpty(it->path().string() + "/status");
    double switches = 0;
    if (StatusKb(task, "voluntary_ctxt_switches", &switches)) {
      sample.context_switches += switches;
    }
    if (StatusKb(task, "nonvoluntary_ctxt_switches", &switches)) {
      sample.context_switches += switches;
    }
  }
  // Same "key: value" shape as status, without units.
  const std::string io = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/io"));
  StatusKb(io, "write_bytes", &sample.write_bytes);
  StatusKb(io, "syscw", &sample.write_calls);
  return sample;
}

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) {
      const uintmax_t size = it->file_size(size_ec);
      if (!size_ec) total += size;
    }
  }
  return total;
}

absl::StatusOr<uint64_t> DatabaseBytes(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
      SQLITE_OK) {
    const std::string error = db != nullptr ? sqlite3_errmsg(db) : "no memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat(path, ": ", error));
  }
  sqlite3_busy_timeout(db, 5000);
  int64_t values[3] = {0, 0, 0};
  const char* pragmas[3] = {"PRAGMA page_count", "PRAGMA freelist_count",
                            "PRAGMA page_size"};
  absl::Status status;
  // One read transaction, so the three figures describe one snapshot.
  sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  for (int i = 0; i < 3 && status.ok(); ++i) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, pragmas[i], -1, &stmt, nullptr) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW) {
      status = absl::UnavailableError(
          absl::StrCat(path, ": ", pragmas[i], ": ", sqlite3_errmsg(db)));
    } else {
      values[i] = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  if (!status.ok()) return status;
  return static_cast<uint64_t>((values[0] - values[1]) * values[2]);
}

absl::StatusOr<std::string> MakeTempDir(const std::string& stem) {
  // Read once, before the benchmark's own threads start.
  const char* tmp = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe)
  std::string pattern = absl::StrCat(
      tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/", stem, "-XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("cannot make ", pattern));
  }
  return pattern;
}

}  // namespace casebridge::bench
