#include "core/loopback_port.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace casebridge {
namespace {

// Lowest port handed out: clear of the well-known and common service ports.
constexpr int kLowestPort = 10000;

struct PortRange {
  int first = 0;
  int last = 0;
};

// Ports outside the kernel's ephemeral range: below it if there is room
// for a few thousand, else above it.
PortRange CandidatePorts() {
  int ephemeral_low = 32768;
  int ephemeral_high = 60999;
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0;
  int high = 0;
  if (in >> low >> high && low > 0 && high >= low) {
    ephemeral_low = low;
    ephemeral_high = high;
  }
  if (ephemeral_low - kLowestPort >= 2000) {
    return {kLowestPort, ephemeral_low - 1};
  }
  if (65535 - ephemeral_high >= 2000) return {ephemeral_high + 1, 65535};
  return {};  // no room outside the range
}

bool Bindable(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  // As the gateway binds (gRPC sets SO_REUSEADDR): a port whose old
  // connections linger in TIME_WAIT is usable.
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok =
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// Claims `port` for this process's lifetime: an exclusive flock on a file
// named after it, left open on purpose (the kernel drops the lock at exit).
// False if another live process (or an earlier call here) holds it.
bool Claim(const std::string& dir, int port) {
  const std::string path = absl::StrCat(dir, "/", port, ".lock");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return false;
  }
  return true;  // fd stays open: the claim
}

}  // namespace

absl::StatusOr<int> ReserveLoopbackPort() {
  static absl::Mutex mu(absl::kConstInit);
  absl::MutexLock lock(&mu);

  const PortRange range = CandidatePorts();
  if (range.first == 0) {
    return absl::FailedPreconditionError(
        "no room for test ports outside the ephemeral port range "
        "(/proc/sys/net/ipv4/ip_local_port_range)");
  }
  const std::string dir = absl::StrCat("/tmp/casebridge-ports-", ::getuid());
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("cannot create ", dir));
  }
  // A folder someone else made (or a link to one) could hold or steal the
  // claims: it must be a real folder of ours that only we can write.
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) ||
      st.st_uid != ::getuid() || (st.st_mode & 0077) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " is not a folder owned by this user with mode 0700"));
  }
  static std::mt19937 random{std::random_device{}()};
  const int span = range.last - range.first + 1;
  const int start = std::uniform_int_distribution<int>(0, span - 1)(random);
  for (int i = 0; i < span; ++i) {
    const int port = range.first + (start + i) % span;
    if (Claim(dir, port)) {
      if (Bindable(port)) return port;
      // In use by something else: keep the claim (so it is not retried)
      // and move on.
    }
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("no free loopback port in ", range.first, "-", range.last));
}

}  // namespace casebridge
