// A dev PKI made for the test run by certs/make-dev-pki (real OpenSSL
// certificates and keys), and gateway/client configs that point at it.
#ifndef CASEBRIDGE_TESTS_TESTING_TEST_PKI_H_
#define CASEBRIDGE_TESTS_TESTING_TEST_PKI_H_

#include <string>

#include "absl/status/statusor.h"

namespace casebridge::testing {

// Source tree root (for scripts) and built binaries, set by CMake.
std::string SourceDir();
std::string BinaryDir();

// The test PKI's folder (layout: certs/README.md): made once per build tree
// in <build>/test-pki and shared by all test processes, which only read it.
// Aborts the test binary if the script fails.
const std::string& TestPkiDir();

// Path of one PKI file, e.g. Pki("pk/offices/fia-liaison-desk.crt").
std::string Pki(const std::string& relative);

struct GatewayConfigOptions {
  std::string country = "PK";  // "PK" or "CN"
  std::string data_dir;        // required
  std::string office_address = "127.0.0.1:0";
  std::string peer_address = "127.0.0.1:0";
  std::string peer_endpoint = "127.0.0.1:1";
  std::string extra_offices;  // appended TOML, e.g. more [[offices]]
  // TOML replacing the default office table (then `extra_offices`).
  std::string offices;
  // TOML array replacing peer.offices, e.g. R"(["spiffe://..."])"; empty:
  // the peer's liaison offices of the test PKI.
  std::string peer_offices;
  std::string crl_dir;       // tls.crl_dir; empty: the test PKI's crl/
  std::string extra_tls;     // TOML lines added to [tls]
  std::string extra_limits;  // TOML lines added to [limits]
  int drain_seconds = 5;
  int max_message_bytes = 4 << 20;
  int retry_max_seconds = 60;
};

// A loopback port for configs that must name each other's ports before
// either gateway starts (ReserveLoopbackPort: outside the ephemeral range,
// claimed for this test process). Fails the test if there is none.
int ReserveFreePort();

// TOML text of a gateway config using the test PKI. PK's office table has
// fia-liaison-desk (liaison_officer), embassy-beijing (embassy_officer) and
// pk-auditor (auditor); CN's has mps-liaison and cn-auditor.
std::string GatewayConfigToml(const GatewayConfigOptions& options);

// The [[offices]] a gateway of `country` ("PK" or "CN") gets when
// GatewayConfigOptions::offices is empty: the dev PKI's offices and auditor.
std::string DefaultOfficesToml(const std::string& country);

// Writes `contents` to `path` (creating folders). Returns `path`.
std::string WriteFile(const std::string& path, const std::string& contents);

// TOML text of a client config for `cert_stem` (e.g.
// "pk/offices/fia-liaison-desk" or "bad/expired") talking to `endpoint`,
// expecting the gateway of `gateway_country`.
std::string ClientConfigToml(const std::string& endpoint,
                             const std::string& cert_stem,
                             const std::string& gateway_country = "PK");

// A fresh folder under TempDir() for one test, removed when the process
// exits.
std::string NewTempDir(const std::string& name);

}  // namespace casebridge::testing

#endif  // CASEBRIDGE_TESTS_TESTING_TEST_PKI_H_
