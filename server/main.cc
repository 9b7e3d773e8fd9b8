// casebridge-gateway --config FILE [--ready-file FILE]
// casebridge-gateway rotate-data-key --config FILE
//
// Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 if the gateway
// cannot start (bad config, unreadable key, missing CRL, port taken), 1 on
// any other failure.
//
// rotate-data-key replaces the data key while the gateway is stopped
// (docs/operations.md#the-data-key) and prints what it did. Exit codes: 0
// rotated (or an interrupted rotation finished), 2 bad config, 1 refused or
// failed (a gateway holds the data directory, the key is not the database's,
// a record key does not open): the old key then stays in force.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/grpc_lifetime.h"
#include "core/log.h"
#include "server/data_key_rotation.h"
#include "server/gateway.h"
#include "server/sqlite_case_store.h"

namespace {

namespace cb = casebridge;

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "casebridge-gateway: %s\n", message.c_str());
  return code;
}

// Written once both listeners are up:
// {"office_port":..,"peer_port":..,"pid":..} Renamed into place, so a reader
// never sees half a file.
bool WriteReadyFile(const std::string& path, int office_port, int peer_port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "{\"office_port\":" << office_port << ",\"peer_port\":" << peer_port
        << ",\"pid\":" << ::getpid() << "}\n";
    if (!out) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

cb::log::Level ParseLevel(const std::string& name) {
  if (name == "debug") return cb::log::Level::kDebug;
  if (name == "warning") return cb::log::Level::kWarning;
  if (name == "error") return cb::log::Level::kError;
  return cb::log::Level::kInfo;
}

int RotateDataKey(const std::string& config_path) {
  auto config = cb::config::LoadGateway(config_path);
  if (!config.ok()) return Fail(2, std::string(config.status().message()));
  cb::log::SetMinLevel(ParseLevel(config->log_level));
  cb::server::StoreOptions options;
  options.data_dir = config->data_dir;
  options.country = config->country;
  options.data_key_file = config->data_protection.key_file;
  auto rotated = cb::server::RotateDataKey(options, config->identity,
                                           &cb::RealClock::Get());
  if (!rotated.ok()) {
    return Fail(1, absl::StrCat(config_path, ": data key not rotated: ",
                                rotated.status().message()));
  }
  if (rotated->finished_interrupted) {
    std::printf(
        "finished an interrupted rotation: %s now holds the data key, check "
        "id %s; no new key was made (run again to rotate once more)\n",
        options.data_key_file.c_str(), rotated->new_check_id.c_str());
  } else {
    std::printf(
        "data key rotated: %s; %d record %s re-wrapped; check id %s -> %s\n",
        options.data_key_file.c_str(), rotated->record_keys,
        rotated->record_keys == 1 ? "key" : "keys",
        rotated->old_check_id.c_str(), rotated->new_check_id.c_str());
  }
  return 0;
}

}  // namespace

namespace {

// SIGTERM and SIGINT stop the gateway; SIGHUP reloads its access policy.
sigset_t WaitedSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  return signals;
}

// The process, run by main with the gRPC library held (RunWithGrpc).
int Main(int argc, char** argv) {
  CLI::App app{"CaseBridge gateway: one country's end of the exchange"};
  std::string config_path;
  std::string ready_file;
  app.add_option("--config", config_path, "gateway configuration (TOML)")
      ->required();
  app.add_option("--ready-file", ready_file,
                 "write the bound ports here as JSON once serving");
  auto* rotate = app.add_subcommand(
      "rotate-data-key",
      "replace the data key (the gateway must be stopped) and exit");
  // `rotate-data-key --config FILE` as well as `--config FILE rotate-...`.
  rotate->fallthrough();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  // Files we create (database, WAL, keys) are for this user only.
  ::umask(077);
  const sigset_t signals = WaitedSignals();
  if (rotate->parsed()) {
    // A one-off command: the signals end it as they would any program.
    pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
    return RotateDataKey(config_path);
  }

  auto config = cb::config::LoadGateway(config_path);
  if (!config.ok()) return Fail(2, std::string(config.status().message()));
  cb::log::SetMinLevel(ParseLevel(config->log_level));
  const absl::Duration drain = absl::Seconds(config->limits.drain_seconds);

  auto gateway =
      cb::server::Gateway::Start(*std::move(config), &cb::RealClock::Get());
  if (!gateway.ok()) {
    // What may pass by itself (a port still held, an address not up yet,
    // the data dir locked by a gateway still stopping) exits 1, which the
    // service manager restarts; the rest needs the operator (2).
    return Fail(absl::IsUnavailable(gateway.status()) ? 1 : 2,
                absl::StrCat(config_path, ": ", gateway.status().message()));
  }
  if (!ready_file.empty() &&
      !WriteReadyFile(ready_file, (*gateway)->office_port(),
                      (*gateway)->peer_port())) {
    (*gateway)->Shutdown(absl::ZeroDuration());
    return Fail(1, absl::StrCat("cannot write ready file ", ready_file));
  }

  while (true) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      // Only the access policy is reloaded; the outcome is logged and
      // audited by the reloader.
      (void)(*gateway)->ReloadPolicy("SIGHUP");
      continue;
    }
    cb::log::Info("gateway.stopping",
                  {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"},
                   {"drain_seconds", absl::ToInt64Seconds(drain)}});
    (*gateway)->Shutdown(drain);
    if (!ready_file.empty()) {
      // A file that cannot be removed is said, not thrown: the stop is
      // clean all the same.
      std::error_code ec;
      std::filesystem::remove(ready_file, ec);
      if (ec) {
        cb::log::Warning("gateway.ready_file_kept",
                         {{"file", ready_file}, {"error", ec.message()}});
      }
    }
    return 0;
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are taken by Main's sigwait, never by another thread: blocked
  // before any thread starts, gRPC's own (grpc_init starts some) included.
  // A thread that left SIGHUP unblocked would take one arriving while the
  // waiting thread is busy, and its default action ends the process.
  const sigset_t signals = WaitedSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return casebridge::RunWithGrpc([&] { return Main(argc, argv); });
}
