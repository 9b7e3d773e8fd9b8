#include "tests/testing/test_pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "core/loopback_port.h"

namespace casebridge::testing {
namespace {
namespace fs = std::filesystem;
}  // namespace

std::string SourceDir() { return CASEBRIDGE_SOURCE_DIR; }
std::string BinaryDir() { return CASEBRIDGE_BINARY_DIR; }

const std::string& TestPkiDir() {
  // One PKI per build tree, shared by every test process (ctest runs each
  // test in a process of its own), made once under a lock and renewed when a
  // week old (well before its CRLs expire) or when the script changed.
  static const std::string* dir = [] {
    auto* path = new std::string(BinaryDir() + "/test-pki");
    const std::string lock_path = BinaryDir() + "/test-pki.lock";
    const int lock = ::open(lock_path.c_str(), O_CREAT | O_RDWR, 0600);
    if (lock < 0 || ::flock(lock, LOCK_EX) != 0) {
      std::fprintf(stderr, "fatal: cannot lock %s\n", lock_path.c_str());
      std::abort();
    }
    const fs::path marker = fs::path(*path) / ".casebridge-dev-pki";
    std::error_code ec;
    const auto made = fs::last_write_time(marker, ec);
    // A PKI older than the script that makes it is remade too.
    std::error_code script_ec;
    const auto script = fs::last_write_time(
        fs::path(SourceDir()) / "certs" / "make-dev-pki", script_ec);
    const bool fresh =
        !ec &&
        fs::file_time_type::clock::now() - made < std::chrono::hours(24 * 7) &&
        (script_ec || script <= made);
    if (!fresh) {
      const std::string command = absl::StrCat(
          "'", SourceDir(), "/certs/make-dev-pki' '", *path, "' >/dev/null");
      if (std::system(command.c_str()) != 0) {
        std::fprintf(stderr, "fatal: %s failed\n", command.c_str());
        std::abort();
      }
    }
    ::flock(lock, LOCK_UN);
    ::close(lock);
    return path;
  }();
  return *dir;
}

std::string Pki(const std::string& relative) {
  return (fs::path(TestPkiDir()) / relative).string();
}

std::string WriteFile(const std::string& path, const std::string& contents) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  out << contents;
  out.close();
  if (!out) {
    ADD_FAILURE() << "cannot write " << path;
  }
  return path;
}

namespace {

// Folders made by NewTempDir in this process, removed when it exits (set
// CASEBRIDGE_KEEP_TEST_DIRS=1 to keep them for a post-mortem).
class TempDirRegistry {
 public:
  ~TempDirRegistry() {
    if (std::getenv("CASEBRIDGE_KEEP_TEST_DIRS") != nullptr) return;
    std::error_code ec;
    for (const auto& dir : dirs_) fs::remove_all(dir, ec);
  }
  void Add(const std::string& dir) {
    absl::MutexLock lock(&mu_);
    dirs_.push_back(dir);
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> dirs_;
};

TempDirRegistry& Registry() {
  static TempDirRegistry registry;  // destroyed at exit, on purpose
  return registry;
}

}  // namespace

int ReserveFreePort() {
  absl::StatusOr<int> port = ReserveLoopbackPort();
  if (!port.ok()) {
    ADD_FAILURE() << "cannot reserve a port: " << port.status();
    return 0;
  }
  return *port;
}

std::string NewTempDir(const std::string& name) {
  static std::atomic<int> counter{0};
  const std::string path = absl::StrCat(::testing::TempDir(), "cb-", ::getpid(),
                                        "-", counter++, "-", name);
  fs::remove_all(path);
  fs::create_directories(path);
  Registry().Add(path);
  return path;
}

std::string DefaultOfficesToml(const std::string& country) {
  const bool pk = country == "PK";
  return pk ? R"([[offices]]
identity = "spiffe://pk.casebridge/office/fia-liaison-desk"
name = "FIA liaison desk"
role = "liaison_officer"

[[offices]]
identity = "spiffe://pk.casebridge/office/embassy-beijing"
name = "Embassy of Pakistan, Beijing"
role = "embassy_officer"

[[offices]]
identity = "spiffe://pk.casebridge/auditor/pk-auditor"
name = "PK auditor"
role = "auditor"
)"
            : R"([[offices]]
identity = "spiffe://cn.casebridge/office/mps-liaison"
name = "MPS liaison"
role = "liaison_officer"

[[offices]]
identity = "spiffe://cn.casebridge/auditor/cn-auditor"
name = "CN auditor"
role = "auditor"
)";
}

std::string GatewayConfigToml(const GatewayConfigOptions& o) {
  const bool pk = o.country == "PK";
  const std::string us = pk ? "pk" : "cn";
  const std::string them = pk ? "cn" : "pk";
  std::string offices = DefaultOfficesToml(o.country);
  if (!o.offices.empty()) offices = o.offices;
  return absl::StrReplaceAll(
      R"(country = "$COUNTRY"
identity = "spiffe://$US.casebridge/gateway"
data_dir = "$DATA"
log_level = "warning"

[listen]
office = "$OFFICE"
peer = "$PEER"

[tls]
cert = "$PKI/$US/gateway-chain.crt"
key = "$PKI/$US/gateway.key"
own_ca = "$PKI/$US/ca.crt"
peer_ca = "$PKI/$THEM/ca.crt"
crl_dir = "$CRL_DIR"
refresh_seconds = 1
$EXTRA_TLS

[signing]
envelope_key = "$PKI/$US/signing/envelope.key"
checkpoint_key = "$PKI/$US/signing/checkpoint.key"
witness_key = "$PKI/$US/signing/witness.key"

[peer]
identity = "spiffe://$THEM.casebridge/gateway"
endpoint = "$PEER_ENDPOINT"
envelope_public_key = "$PKI/$THEM/signing/envelope.pub"
checkpoint_public_key = "$PKI/$THEM/signing/checkpoint.pub"
witness_public_key = "$PKI/$THEM/signing/witness.pub"
offices = $PEER_OFFICES

[limits]
drain_seconds = $DRAIN
max_message_bytes = $MAXMSG
retry_max_seconds = $RETRYMAX
$EXTRA_LIMITS

)" + offices +
          o.extra_offices,
      {{"$COUNTRY", o.country},
       {"$US", us},
       {"$THEM", them},
       {"$DATA", o.data_dir},
       {"$OFFICE", o.office_address},
       {"$PEER_ENDPOINT", o.peer_endpoint},
       {"$PEER", o.peer_address},
       {"$CRL_DIR", o.crl_dir.empty() ? TestPkiDir() + "/crl" : o.crl_dir},
       {"$EXTRA_TLS", o.extra_tls},
       {"$EXTRA_LIMITS", o.extra_limits},
       {"$PKI", TestPkiDir()},
       {"$DRAIN", absl::StrCat(o.drain_seconds)},
       {"$PEER_OFFICES",
        !o.peer_offices.empty() ? o.peer_offices
        : pk ? "[\"spiffe://cn.casebridge/office/mps-liaison\"]"
             : "[\"spiffe://pk.casebridge/office/fia-liaison-desk\", "
               "\"spiffe://pk.casebridge/office/embassy-beijing\"]"},
       {"$MAXMSG", absl::StrCat(o.max_message_bytes)},
       {"$RETRYMAX", absl::StrCat(o.retry_max_seconds)}});
}

std::string ClientConfigToml(const std::string& endpoint,
                             const std::string& cert_stem,
                             const std::string& gateway_country) {
  const std::string gw = gateway_country == "PK" ? "pk" : "cn";
  return absl::StrReplaceAll(R"(endpoint = "$EP"
gateway_identity = "spiffe://$GW.casebridge/gateway"
cert = "$PKI/$STEM.crt"
key = "$PKI/$STEM.key"
ca = "$PKI/$GW/ca.crt"
timeout_seconds = 10
)",
                             {{"$EP", endpoint},
                              {"$GW", gw},
                              {"$STEM", cert_stem},
                              {"$PKI", TestPkiDir()}});
}

}  // namespace casebridge::testing
