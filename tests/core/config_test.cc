#include "core/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "core/crypto.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::config {
namespace {

namespace fs = std::filesystem;
using ::casebridge::testing::ClientConfigToml;
using ::casebridge::testing::GatewayConfigOptions;
using ::casebridge::testing::GatewayConfigToml;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::Pki;
using ::casebridge::testing::StatusIs;
using ::casebridge::testing::TestPkiDir;
using ::casebridge::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Replaces exactly one occurrence of `from`; fails the test otherwise.
std::string ReplaceOnce(const std::string& text, const std::string& from,
                        const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "\"" << from << "\" not in config";
  EXPECT_EQ(text.find(from, at + 1), std::string::npos)
      << "\"" << from << "\" is in the config more than once";
  if (at == std::string::npos) return text;
  std::string out = text;
  out.replace(at, from.size(), to);
  return out;
}

class GatewayConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("gateway-config");
    path_ = dir_ + "/gateway.toml";
  }

  std::string Toml(GatewayConfigOptions options = {}) const {
    options.data_dir = dir_ + "/data";
    return GatewayConfigToml(options);
  }

  absl::StatusOr<Gateway> Parse(const std::string& text) const {
    return ParseGateway(text, path_);
  }

  std::string dir_;
  std::string path_;
};

TEST_F(GatewayConfigTest, ParsesValidPakistanConfig) {
  ASSERT_OK_AND_ASSIGN(const Gateway config, Parse(Toml()));
  EXPECT_EQ(config.source_path, path_);
  EXPECT_EQ(config.country, v1::COUNTRY_PK);
  EXPECT_EQ(config.identity, "spiffe://pk.casebridge/gateway");
  EXPECT_EQ(config.data_dir, dir_ + "/data");
  EXPECT_EQ(config.office_address, "127.0.0.1:0");
  EXPECT_EQ(config.peer_address, "127.0.0.1:0");
  EXPECT_EQ(config.tls_cert, Pki("pk/gateway-chain.crt"));
  EXPECT_EQ(config.tls_key, Pki("pk/gateway.key"));
  EXPECT_EQ(config.own_ca, Pki("pk/ca.crt"));
  EXPECT_EQ(config.peer_ca, Pki("cn/ca.crt"));
  EXPECT_EQ(config.crl_dir, Pki("crl"));
  EXPECT_EQ(config.cert_refresh_seconds, 1);
  EXPECT_EQ(config.envelope_signing_key, Pki("pk/signing/envelope.key"));
  EXPECT_EQ(config.checkpoint_signing_key, Pki("pk/signing/checkpoint.key"));
  EXPECT_EQ(config.witness_signing_key, Pki("pk/signing/witness.key"));
  EXPECT_EQ(config.peer_identity, "spiffe://cn.casebridge/gateway");
  EXPECT_EQ(config.peer_endpoint, "127.0.0.1:1");
  EXPECT_EQ(config.peer_envelope_public_key, Pki("cn/signing/envelope.pub"));
  EXPECT_EQ(config.log_level, "warning");
  EXPECT_EQ(config.limits.drain_seconds, 5);
  // Limits not in the file keep their defaults.
  EXPECT_EQ(config.limits.max_message_bytes, 4 << 20);

  ASSERT_EQ(config.offices.size(), 3u);
  EXPECT_EQ(config.offices[0].identity,
            "spiffe://pk.casebridge/office/fia-liaison-desk");
  EXPECT_EQ(config.offices[0].display_name, "FIA liaison desk");
  EXPECT_EQ(config.offices[0].role, v1::ROLE_LIAISON_OFFICER);
  EXPECT_EQ(config.offices[1].role, v1::ROLE_EMBASSY_OFFICER);
  EXPECT_EQ(config.offices[2].identity,
            "spiffe://pk.casebridge/auditor/pk-auditor");
  EXPECT_EQ(config.offices[2].role, v1::ROLE_AUDITOR);
}

TEST_F(GatewayConfigTest, ToolsLoadItWithoutReadingThePrivateKeys) {
  // Private keys the user cannot read (here: not there at all).
  std::string text = Toml();
  for (const char* key :
       {"gateway.key\"", "signing/envelope.key\"", "signing/checkpoint.key\"",
        "signing/witness.key\""}) {
    text = ReplaceOnce(text, key, absl::StrCat("missing-", key));
  }
  // The gateway needs them, and says which.
  EXPECT_THAT(Parse(text), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("tls.key: ")));
  // certs status and policy check do not open them.
  ASSERT_OK_AND_ASSIGN(const Gateway config,
                       ParseGateway(text, path_, PrivateKeys::kNotRead));
  EXPECT_THAT(config.tls_key, HasSubstr("missing-gateway.key"));
  EXPECT_THAT(config.witness_signing_key,
              HasSubstr("missing-signing/witness.key"));
  // Every other file is still checked.
  EXPECT_THAT(
      ParseGateway(ReplaceOnce(text, "gateway-chain.crt\"", "missing.crt\""),
                   path_, PrivateKeys::kNotRead),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tls.cert: ")));
}

TEST_F(GatewayConfigTest, ParsesValidChinaConfig) {
  GatewayConfigOptions options;
  options.country = "CN";
  ASSERT_OK_AND_ASSIGN(const Gateway config, Parse(Toml(options)));
  EXPECT_EQ(config.country, v1::COUNTRY_CN);
  EXPECT_EQ(config.identity, "spiffe://cn.casebridge/gateway");
  EXPECT_EQ(config.peer_identity, "spiffe://pk.casebridge/gateway");
  EXPECT_EQ(config.tls_key, Pki("cn/gateway.key"));
  ASSERT_EQ(config.offices.size(), 2u);
  EXPECT_EQ(config.offices[0].identity,
            "spiffe://cn.casebridge/office/mps-liaison");
}

TEST_F(GatewayConfigTest, LoadGatewayReadsFile) {
  WriteFile(path_, Toml());
  ASSERT_OK_AND_ASSIGN(const Gateway config, LoadGateway(path_));
  EXPECT_EQ(config.source_path, path_);
  EXPECT_EQ(config.country, v1::COUNTRY_PK);
}

TEST_F(GatewayConfigTest, ResolvesRelativePathsAgainstConfigFolder) {
  // The PKI is reachable as ./pki next to the config; the process's working
  // directory is elsewhere.
  const std::string config_dir = dir_ + "/etc";
  fs::create_directories(config_dir);
  fs::create_directory_symlink(TestPkiDir(), config_dir + "/pki");
  std::string text = absl::StrReplaceAll(Toml(), {{TestPkiDir(), "pki"}});
  text = ReplaceOnce(text, absl::StrCat("data_dir = \"", dir_, "/data\""),
                     "data_dir = \"../var/data\"");
  ASSERT_THAT(text, Not(HasSubstr(TestPkiDir())));
  const std::string path = WriteFile(config_dir + "/gateway.toml", text);

  ASSERT_OK_AND_ASSIGN(const Gateway config, LoadGateway(path));
  const fs::path base(config_dir);
  auto resolved = [&](const std::string& relative) {
    return (base / relative).lexically_normal().string();
  };
  EXPECT_EQ(config.data_dir,
            (fs::path(dir_) / "var/data").lexically_normal().string());
  EXPECT_EQ(config.tls_cert, resolved("pki/pk/gateway-chain.crt"));
  EXPECT_EQ(config.tls_key, resolved("pki/pk/gateway.key"));
  EXPECT_EQ(config.own_ca, resolved("pki/pk/ca.crt"));
  EXPECT_EQ(config.peer_ca, resolved("pki/cn/ca.crt"));
  EXPECT_EQ(config.crl_dir, resolved("pki/crl"));
  EXPECT_EQ(config.envelope_signing_key,
            resolved("pki/pk/signing/envelope.key"));
  EXPECT_EQ(config.peer_witness_public_key,
            resolved("pki/cn/signing/witness.pub"));
}

TEST_F(GatewayConfigTest, MissingConfigFileIsNotFoundNamingPath) {
  EXPECT_THAT(LoadGateway(path_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path_)));
}

TEST_F(GatewayConfigTest, ErrorsStartWithTheFileName) {
  EXPECT_THAT(Parse(ReplaceOnce(Toml(), "country = \"PK\"", "")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(absl::StrCat(path_, ": country: "))));
}

// One broken config and the text its error must contain.
struct BadConfig {
  std::string name;
  std::vector<std::pair<std::string, std::string>> edits;  // replace once
  std::string extra_offices;
  std::vector<std::string> message_parts;
};

class GatewayConfigRejectTest
    : public GatewayConfigTest,
      public ::testing::WithParamInterface<BadConfig> {};

TEST_P(GatewayConfigRejectTest, FailsWithInvalidArgumentNamingTheField) {
  const BadConfig& bad = GetParam();
  GatewayConfigOptions options;
  options.extra_offices = bad.extra_offices;
  std::string text = Toml(options);
  auto expand = [&](const std::string& s) {
    return absl::StrReplaceAll(s, {{"$PKI", TestPkiDir()}, {"$DIR", dir_}});
  };
  for (const auto& [from, to] : bad.edits) {
    text = ReplaceOnce(text, expand(from), expand(to));
  }
  const absl::StatusOr<Gateway> config = Parse(text);
  ASSERT_THAT(config, StatusIs(absl::StatusCode::kInvalidArgument,
                               StartsWith(absl::StrCat(path_, ": "))));
  for (const std::string& part : bad.message_parts) {
    EXPECT_THAT(std::string(config.status().message()),
                HasSubstr(expand(part)));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GatewayConfigRejectTest,
    ::testing::Values(
        BadConfig{"MissingCountry",
                  {{"country = \"PK\"\n", ""}},
                  "",
                  {": country: is required"}},
        BadConfig{"CountryIndia",
                  {{"country = \"PK\"", "country = \"IN\""}},
                  "",
                  {": country: must be \"PK\" or \"CN\""}},
        BadConfig{"CountryLowerCase",
                  {{"country = \"PK\"", "country = \"pk\""}},
                  "",
                  {": country: "}},
        BadConfig{"CountryNotAString",
                  {{"country = \"PK\"", "country = 1"}},
                  "",
                  {": country: must be a string"}},
        BadConfig{"IdentityOfOtherCountry",
                  {{"identity = \"spiffe://pk.casebridge/gateway\"",
                    "identity = \"spiffe://cn.casebridge/gateway\""}},
                  "",
                  {": identity: must be spiffe://pk.casebridge/gateway"}},
        BadConfig{"IdentityNotAGateway",
                  {{"identity = \"spiffe://pk.casebridge/gateway\"",
                    "identity = "
                    "\"spiffe://pk.casebridge/office/fia-liaison-desk\""}},
                  "",
                  {": identity: "}},
        BadConfig{"UnknownTopLevelKey",
                  {{"log_level = \"warning\"\n",
                    "log_level = \"warning\"\ncolour = \"green\"\n"}},
                  "",
                  {": colour: unknown key"}},
        BadConfig{"UnknownKeyInTls",
                  {{"refresh_seconds = 1\n",
                    "refresh_seconds = 1\nverify_peer = false\n"}},
                  "",
                  {": tls.verify_peer: unknown key"}},
        BadConfig{"UnknownKeyInListen",
                  {{"[listen]\n", "[listen]\nadmin = \"127.0.0.1:9\"\n"}},
                  "",
                  {": listen.admin: unknown key"}},
        BadConfig{"UnknownKeyInOffice",
                  {},
                  "\n[[offices]]\nidentity = "
                  "\"spiffe://pk.casebridge/office/karachi\"\nname = "
                  "\"Karachi\"\nrole = \"liaison_officer\"\nclearance = 3\n",
                  {": offices[3].clearance: unknown key"}},
        BadConfig{"MisspelledLimit",
                  {{"drain_seconds = 5", "drain_secs = 5"}},
                  "",
                  {": limits.drain_secs: unknown key"}},
        BadConfig{"TlsKeyMissing",
                  {{"$PKI/pk/gateway.key", "$PKI/pk/no-such.key"}},
                  "",
                  {": tls.key: ", "$PKI/pk/no-such.key"}},
        BadConfig{"TlsSectionMissing",
                  {{"[tls]\n", "[tls_settings]\n"}},
                  "",
                  {": tls: section is required"}},
        BadConfig{"CrlDirNotADirectory",
                  {{"crl_dir = \"$PKI/crl\"", "crl_dir = \"$PKI/pk/ca.crt\""}},
                  "",
                  {": tls.crl_dir: ", "is not a directory"}},
        BadConfig{"SigningKeyMissing",
                  {{"$PKI/pk/signing/witness.key", "$DIR/witness.key"}},
                  "",
                  {": signing.witness_key: ", "$DIR/witness.key"}},
        BadConfig{"PeerIdentityOfOwnCountry",
                  {{"identity = \"spiffe://cn.casebridge/gateway\"",
                    "identity = \"spiffe://pk.casebridge/gateway\""}},
                  "",
                  {": peer.identity: must be spiffe://cn.casebridge/gateway"}},
        BadConfig{"PeerEndpointWithoutPort",
                  {{"endpoint = \"127.0.0.1:1\"", "endpoint = \"127.0.0.1\""}},
                  "",
                  {": peer.endpoint: ", "is not host:port"}},
        BadConfig{"OfficeOfOtherCountry",
                  {},
                  "\n[[offices]]\nidentity = "
                  "\"spiffe://cn.casebridge/office/mps-liaison\"\nname = "
                  "\"MPS\"\nrole = \"liaison_officer\"\n",
                  {": offices[3].identity: ", "this gateway's country"}},
        BadConfig{"OfficeIsAGateway",
                  {},
                  "\n[[offices]]\nidentity = "
                  "\"spiffe://pk.casebridge/gateway\"\nname = "
                  "\"Us\"\nrole = \"liaison_officer\"\n",
                  {": offices[3].identity: "}},
        BadConfig{"OfficeIdentityMalformed",
                  {},
                  "\n[[offices]]\nidentity = "
                  "\"spiffe://pk.casebridge/office/Karachi\"\nname = "
                  "\"Karachi\"\nrole = \"liaison_officer\"\n",
                  {": offices[3].identity: "}},
        BadConfig{"DuplicateOffice",
                  {},
                  "\n[[offices]]\nidentity = "
                  "\"spiffe://pk.casebridge/office/fia-liaison-desk\"\nname = "
                  "\"FIA again\"\nrole = \"supervisor\"\n",
                  {": offices[3].identity: is listed twice"}},
        BadConfig{"BadRole",
                  {},
                  "\n[[offices]]\nidentity = "
                  "\"spiffe://pk.casebridge/office/karachi\"\nname = "
                  "\"Karachi\"\nrole = \"administrator\"\n",
                  {": offices[3].role: must be liaison_officer"}},
        BadConfig{"AuditorRoleWithOfficeIdentity",
                  {},
                  "\n[[offices]]\nidentity = "
                  "\"spiffe://pk.casebridge/office/karachi\"\nname = "
                  "\"Karachi\"\nrole = \"auditor\"\n",
                  {": offices[3].role: ", "auditor"}},
        BadConfig{"OfficeRoleWithAuditorIdentity",
                  {},
                  "\n[[offices]]\nidentity = "
                  "\"spiffe://pk.casebridge/auditor/second\"\nname = "
                  "\"Second auditor\"\nrole = \"supervisor\"\n",
                  {": offices[3].role: "}},
        BadConfig{"OfficeWithoutName",
                  {},
                  "\n[[offices]]\nidentity = "
                  "\"spiffe://pk.casebridge/office/karachi\"\n"
                  "role = \"liaison_officer\"\n",
                  {": offices[3].name: is required"}},
        BadConfig{"ListenOfficeWithoutPort",
                  {{"office = \"127.0.0.1:0\"", "office = \"127.0.0.1\""}},
                  "",
                  {": listen.office: \"127.0.0.1\" is not host:port"}},
        BadConfig{"ListenPeerPortTooLarge",
                  {{"peer = \"127.0.0.1:0\"", "peer = \"127.0.0.1:65536\""}},
                  "",
                  {": listen.peer: "}},
        BadConfig{
            "LimitAboveRange",
            {{"drain_seconds = 5", "drain_seconds = 601"}},
            "",
            {": limits.drain_seconds: must be between 0 and 600, is 601"}},
        BadConfig{"LimitBelowRange",
                  {{"drain_seconds = 5", "max_concurrent_streams = 0"}},
                  "",
                  {": limits.max_concurrent_streams: must be between 1 and "
                   "10000, is 0"}},
        BadConfig{"LimitNotAnInteger",
                  {{"drain_seconds = 5", "drain_seconds = \"5\""}},
                  "",
                  {": limits.drain_seconds: must be an integer"}},
        BadConfig{"RefreshOutOfRange",
                  {{"refresh_seconds = 1", "refresh_seconds = 0"}},
                  "",
                  {": tls.refresh_seconds: must be between 1 and 86400"}},
        BadConfig{"BadLogLevel",
                  {{"log_level = \"warning\"", "log_level = \"verbose\""}},
                  "",
                  {": log_level: "}},
        BadConfig{"PreviousCheckpointKeysNotTables",
                  {{"witness_public_key = ",
                    "previous_checkpoint_keys = \"old.pub\"\n"
                    "witness_public_key = "}},
                  "",
                  {": peer.previous_checkpoint_keys: must be a list of "
                   "tables: [[peer.previous_checkpoint_keys]] with file and "
                   "trusted_until"}},
        BadConfig{
            "PreviousCheckpointKeyFileMissing",
            {},
            "\n[[peer.previous_checkpoint_keys]]\nfile = "
            "\"nowhere.pub\"\ntrusted_until = "
            "\"2027-01-31T00:00:00Z\"\n",
            {": peer.previous_checkpoint_keys[0].file: ", "$DIR/nowhere.pub"}},
        BadConfig{"PreviousWitnessKeyWithoutTime",
                  {},
                  "\n[[peer.previous_witness_keys]]\nfile = "
                  "\"$PKI/cn/signing/envelope.pub\"\n",
                  {": peer.previous_witness_keys[0].trusted_until: is "
                   "required"}},
        BadConfig{"PreviousWitnessKeyBadTime",
                  {},
                  "\n[[peer.previous_witness_keys]]\nfile = "
                  "\"$PKI/cn/signing/envelope.pub\"\ntrusted_until = "
                  "\"2027-01-31T00:00:00Z\"\n"
                  "[[peer.previous_witness_keys]]\nfile = "
                  "\"$PKI/cn/signing/checkpoint.pub\"\ntrusted_until = "
                  "\"next week\"\n",
                  {": peer.previous_witness_keys[1].trusted_until: \"next "
                   "week\" is not a time like 2027-01-31T00:00:00Z"}},
        BadConfig{"PreviousWitnessKeyUnknownKey",
                  {},
                  "\n[[peer.previous_witness_keys]]\nfile = "
                  "\"$PKI/cn/signing/envelope.pub\"\ntrusted_until = "
                  "\"2027-01-31T00:00:00Z\"\nuntil = "
                  "\"2027-01-31T00:00:00Z\"\n",
                  {": peer.previous_witness_keys[0].until: unknown key"}}),
    [](const ::testing::TestParamInfo<BadConfig>& param) {
      return param.param.name;
    });

TEST_F(GatewayConfigTest, APrivateKeyOthersMayReadIsRefusedNamingItsMode) {
  // A copy of the witness key, as an operator might leave it.
  ASSERT_OK_AND_ASSIGN(const std::string pem,
                       crypto::ReadFile(Pki("pk/signing/witness.key")));
  const std::string copy = WriteFile(dir_ + "/witness.key", pem);
  const std::string text =
      ReplaceOnce(Toml(), Pki("pk/signing/witness.key"), copy);
  for (const mode_t mode : {0644, 0640, 0604, 0620}) {
    ASSERT_EQ(::chmod(copy.c_str(), mode), 0);
    EXPECT_THAT(
        Parse(text),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 AllOf(HasSubstr(": signing.witness_key: private key " + copy),
                       HasSubstr(absl::StrFormat("has mode %04o", mode)),
                       HasSubstr("readable by its owner only (chmod 0600)"))))
        << std::oct << mode;
  }
  ASSERT_EQ(::chmod(copy.c_str(), 0600), 0);
  ASSERT_OK_AND_ASSIGN(const Gateway config, Parse(text));
  EXPECT_EQ(config.witness_signing_key, copy);
  // The offline tools open no private key, so they do not look at it.
  ASSERT_EQ(::chmod(copy.c_str(), 0644), 0);
  EXPECT_OK(ParseGateway(text, path_, PrivateKeys::kNotRead).status());
}

TEST_F(GatewayConfigTest, PreviousPeerKeysOfEachPurposeAreRead) {
  GatewayConfigOptions options;
  // Relative paths resolve against the config's folder, as every path does.
  ASSERT_OK_AND_ASSIGN(const std::string pem,
                       crypto::ReadFile(Pki("cn/signing/envelope.pub")));
  WriteFile(dir_ + "/keys/cn-checkpoint-2026.pub", pem);
  options.extra_offices =
      "\n[[peer.previous_checkpoint_keys]]\n"
      "file = \"keys/cn-checkpoint-2026.pub\"\n"
      "trusted_until = \"2027-01-31T00:00:00Z\"\n"
      "[[peer.previous_witness_keys]]\n"
      "file = \"" +
      Pki("cn/signing/checkpoint.pub") +
      "\"\n"
      "trusted_until = \"2027-02-01T12:30:00Z\"\n"
      "[[peer.previous_witness_keys]]\n"
      "file = \"" +
      Pki("cn/signing/envelope.pub") +
      "\"\n"
      "trusted_until = \"2027-01-01T00:00:00+08:00\"\n";
  ASSERT_OK_AND_ASSIGN(const Gateway config, Parse(Toml(options)));
  EXPECT_TRUE(config.peer_previous_envelope_keys.empty());
  ASSERT_EQ(config.peer_previous_checkpoint_keys.size(), 1u);
  EXPECT_EQ(config.peer_previous_checkpoint_keys[0].file,
            dir_ + "/keys/cn-checkpoint-2026.pub");
  EXPECT_EQ(config.peer_previous_checkpoint_keys[0].trusted_until,
            absl::FromCivil(absl::CivilSecond(2027, 1, 31, 0, 0, 0),
                            absl::UTCTimeZone()));
  ASSERT_EQ(config.peer_previous_witness_keys.size(), 2u);
  EXPECT_EQ(config.peer_previous_witness_keys[0].file,
            Pki("cn/signing/checkpoint.pub"));
  EXPECT_EQ(config.peer_previous_witness_keys[0].trusted_until,
            absl::FromCivil(absl::CivilSecond(2027, 2, 1, 12, 30, 0),
                            absl::UTCTimeZone()));
  EXPECT_EQ(config.peer_previous_witness_keys[1].trusted_until,
            absl::FromCivil(absl::CivilSecond(2026, 12, 31, 16, 0, 0),
                            absl::UTCTimeZone()));

  // None configured: none trusted.
  ASSERT_OK_AND_ASSIGN(const Gateway plain, Parse(Toml()));
  EXPECT_TRUE(plain.peer_previous_checkpoint_keys.empty());
  EXPECT_TRUE(plain.peer_previous_witness_keys.empty());
}

TEST_F(GatewayConfigTest, AuditSettingsHaveDefaultsAndAreRead) {
  ASSERT_OK_AND_ASSIGN(const Gateway defaults, Parse(Toml()));
  EXPECT_EQ(defaults.audit.checkpoint_interval_ms, 1000);
  EXPECT_EQ(defaults.audit.payload_retention_days, 0);
  ASSERT_OK_AND_ASSIGN(
      const Gateway set,
      Parse(Toml() + "\n[audit]\ncheckpoint_interval_ms = 250\n"
                     "payload_retention_days = 365\n"));
  EXPECT_EQ(set.audit.checkpoint_interval_ms, 250);
  EXPECT_EQ(set.audit.payload_retention_days, 365);
}

TEST_F(GatewayConfigTest, BadAuditSettingsAreRefusedNamingTheKey) {
  for (const auto& [table, named] :
       std::vector<std::pair<std::string, std::string>>{
           {"checkpoint_interval_ms = 10", "audit.checkpoint_interval_ms"},
           {"checkpoint_interval_ms = 60001", "audit.checkpoint_interval_ms"},
           {"payload_retention_days = -1", "audit.payload_retention_days"},
           {"payload_retention_days = \"forever\"",
            "audit.payload_retention_days"},
           {"checkpoint_every = 5", "audit.checkpoint_every"}}) {
    EXPECT_THAT(Parse(Toml() + "\n[audit]\n" + table + "\n"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(named)))
        << table;
  }
}

TEST_F(GatewayConfigTest, DataKeyFileDefaultsToTheDataDirAndResolves) {
  ASSERT_OK_AND_ASSIGN(const Gateway defaults, Parse(Toml()));
  EXPECT_EQ(defaults.data_protection.key_file, defaults.data_dir + "/data.key");
  ASSERT_OK_AND_ASSIGN(
      const Gateway set,
      Parse(Toml() + "\n[data_protection]\nkey_file = \"/etc/cb/pk.key\"\n"));
  EXPECT_EQ(set.data_protection.key_file, "/etc/cb/pk.key");
  EXPECT_THAT(Parse(Toml() + "\n[data_protection]\nkey = \"k\"\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("data_protection.key: unknown key")));
}

TEST(RetentionSettingsTest, ShortestDaysIgnoresWhatIsKeptForEver) {
  RetentionSettings r;
  r.message_kind_days[v1::MESSAGE_KIND_RESCUE_REQUEST] = 0;
  EXPECT_EQ(r.ShortestDays(), 0);
  EXPECT_FALSE(r.enabled());
  r.message_days = 90;
  r.case_status_days[v1::CASE_STATUS_REPATRIATED] = 0;
  EXPECT_EQ(r.ShortestDays(), 90);
  r.case_status_days[v1::CASE_STATUS_CLOSED] = 14;
  r.message_kind_days[v1::MESSAGE_KIND_NOTE] = 21;
  EXPECT_EQ(r.ShortestDays(), 14);
  EXPECT_TRUE(r.enabled());
}

TEST_F(GatewayConfigTest, RetentionIsReadPerMessageKindAndFinalCaseStatus) {
  ASSERT_OK_AND_ASSIGN(const Gateway defaults, Parse(Toml()));
  EXPECT_FALSE(defaults.retention.enabled());
  ASSERT_OK_AND_ASSIGN(
      const Gateway set,
      Parse(Toml() +
            "\n[retention]\nmessage_days = 365\n"
            "[retention.message_kinds]\nnote = 30\nrescue_request = 0\n"
            "[retention.case_status]\nclosed = 180\n"));
  const RetentionSettings& r = set.retention;
  EXPECT_TRUE(r.enabled());
  EXPECT_EQ(r.message_days, 365);
  EXPECT_EQ(r.DaysFor(v1::MESSAGE_KIND_NOTE), 30);
  EXPECT_EQ(r.DaysFor(v1::MESSAGE_KIND_RESCUE_REQUEST), 0);
  EXPECT_EQ(r.DaysFor(v1::MESSAGE_KIND_RESCUE_UPDATE), 365);
  EXPECT_EQ(r.case_status_days.at(v1::CASE_STATUS_CLOSED), 180);
  EXPECT_EQ(r.case_status_days.count(v1::CASE_STATUS_REPATRIATED), 0u);
  // Refusals' salts follow the shortest retention set (0: kept, ignored).
  EXPECT_EQ(r.ShortestDays(), 30);
  EXPECT_EQ(defaults.retention.ShortestDays(), 0);
  EXPECT_EQ(set.audit.payload_retention_days, 0);
}

TEST_F(GatewayConfigTest, PayloadRetentionDaysStillSetsTheMessageDefault) {
  ASSERT_OK_AND_ASSIGN(
      const Gateway old,
      Parse(Toml() + "\n[audit]\npayload_retention_days = 90\n"));
  EXPECT_EQ(old.retention.message_days, 90);
  EXPECT_EQ(old.retention.DaysFor(v1::MESSAGE_KIND_CASE_SHARE), 90);
  EXPECT_TRUE(old.retention.enabled());
}

TEST_F(GatewayConfigTest, BadRetentionIsRefusedNamingTheKey) {
  for (const auto& [table, named] :
       std::vector<std::pair<std::string, std::string>>{
           {"[audit]\npayload_retention_days = 90\n[retention]\n"
            "message_days = 30",
            "retention.message_days: replaces audit.payload_retention_days"},
           {"[retention]\nmessage_days = -1",
            "retention.message_days: must be between 0 and 36500, is -1"},
           {"[retention]\nmessages_days = 1",
            "retention.messages_days: unknown key"},
           {"[retention.message_kinds]\nnotes = 1",
            "retention.message_kinds.notes: unknown key: must be a message "
            "kind"},
           {"[retention.message_kinds]\nnote = \"30\"",
            "retention.message_kinds.note: must be an integer"},
           {"[retention.message_kinds]\nnote = 36501",
            "retention.message_kinds.note: must be between 0 and 36500"},
           {"[retention.case_status]\nopen = 30",
            "retention.case_status.open: unknown key: must be a final case "
            "status"},
           {"[retention]\ncase_status = 30",
            "retention.case_status: must be a table"}}) {
    EXPECT_THAT(Parse(Toml() + "\n" + table + "\n"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(named)))
        << table;
  }
}

TEST_F(GatewayConfigTest, CertificateLifecycleAndAbuseLimitsHaveDefaults) {
  ASSERT_OK_AND_ASSIGN(const Gateway defaults, Parse(Toml()));
  EXPECT_EQ(defaults.crl_refresh_seconds, 10);
  EXPECT_EQ(defaults.expiry_warning_days, 30);
  EXPECT_EQ(defaults.crl_expiry_warning_days, 7);
  EXPECT_EQ(defaults.limits.office_calls_per_second, 200);
  EXPECT_EQ(defaults.limits.office_burst, 2000);
  EXPECT_EQ(defaults.limits.office_streams_per_identity, 16);
  EXPECT_EQ(defaults.limits.peer_streams, 4);
  EXPECT_EQ(defaults.limits.peer_calls_per_second, 200);
  EXPECT_EQ(defaults.limits.peer_burst, 2000);
  EXPECT_EQ(defaults.limits.stranger_audits_per_second, 1);
  EXPECT_EQ(defaults.limits.stranger_audit_burst, 20);
  EXPECT_EQ(defaults.limits.peer_refusal_audits_per_second, 50);
  EXPECT_EQ(defaults.limits.peer_refusal_audit_burst, 1000);
  EXPECT_EQ(defaults.limits.refusal_summary_seconds, 60);
  EXPECT_EQ(defaults.limits.work_threads, 8);

  GatewayConfigOptions options;
  options.extra_tls =
      "crl_refresh_seconds = 2\nexpiry_warning_days = 60\n"
      "crl_expiry_warning_days = 3\n";
  options.extra_limits =
      "office_calls_per_second = 50\noffice_burst = 200\n"
      "office_streams_per_identity = 2\nwork_threads = 24\n"
      "peer_calls_per_second = 7\npeer_burst = 70\n"
      "stranger_audits_per_second = 3\nstranger_audit_burst = 9\n"
      "peer_refusal_audits_per_second = 4\npeer_refusal_audit_burst = 40\n"
      "refusal_summary_seconds = 5\npeer_streams = 9\n";
  ASSERT_OK_AND_ASSIGN(const Gateway set, Parse(Toml(options)));
  EXPECT_EQ(set.limits.peer_refusal_audits_per_second, 4);
  EXPECT_EQ(set.limits.peer_refusal_audit_burst, 40);
  EXPECT_EQ(set.limits.refusal_summary_seconds, 5);
  EXPECT_EQ(set.limits.peer_calls_per_second, 7);
  EXPECT_EQ(set.limits.peer_burst, 70);
  EXPECT_EQ(set.limits.stranger_audits_per_second, 3);
  EXPECT_EQ(set.limits.stranger_audit_burst, 9);
  EXPECT_EQ(set.crl_refresh_seconds, 2);
  EXPECT_EQ(set.expiry_warning_days, 60);
  EXPECT_EQ(set.crl_expiry_warning_days, 3);
  EXPECT_EQ(set.limits.office_calls_per_second, 50);
  EXPECT_EQ(set.limits.office_burst, 200);
  EXPECT_EQ(set.limits.office_streams_per_identity, 2);
  EXPECT_EQ(set.limits.peer_streams, 9);
  EXPECT_EQ(set.limits.work_threads, 24);

  for (const int edge : {4, 256}) {
    GatewayConfigOptions at_edge;
    at_edge.extra_limits = absl::StrCat("work_threads = ", edge, "\n");
    ASSERT_OK_AND_ASSIGN(const Gateway parsed, Parse(Toml(at_edge)));
    EXPECT_EQ(parsed.limits.work_threads, edge);
  }
}

TEST_F(GatewayConfigTest, BadLifecycleAndLimitSettingsAreRefusedNamingTheKey) {
  for (const auto& [tls, limits, named] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"crl_refresh_seconds = 0", "", "tls.crl_refresh_seconds"},
           {"crl_refresh_seconds = 3601", "", "tls.crl_refresh_seconds"},
           {"expiry_warning_days = -1", "", "tls.expiry_warning_days"},
           {"crl_expiry_warning_days = 366", "", "tls.crl_expiry_warning_days"},
           {"", "office_calls_per_second = 0",
            "limits.office_calls_per_second"},
           {"", "office_burst = 0", "limits.office_burst"},
           {"", "peer_calls_per_second = 0", "limits.peer_calls_per_second"},
           {"", "peer_burst = 0", "limits.peer_burst"},
           {"", "stranger_audits_per_second = 0",
            "limits.stranger_audits_per_second"},
           {"", "stranger_audit_burst = 100001", "limits.stranger_audit_burst"},
           {"", "peer_refusal_audits_per_second = 0",
            "limits.peer_refusal_audits_per_second"},
           {"", "peer_refusal_audit_burst = 1000001",
            "limits.peer_refusal_audit_burst"},
           {"", "refusal_summary_seconds = 0",
            "limits.refusal_summary_seconds"},
           {"", "refusal_summary_seconds = 86401",
            "limits.refusal_summary_seconds"},
           {"", "office_streams_per_identity = 0",
            "limits.office_streams_per_identity"},
           {"", "peer_streams = 0", "limits.peer_streams"},
           {"", "peer_streams = 65", "limits.peer_streams"},
           {"", "work_threads = 3",
            "limits.work_threads: must be between 4 and 256"},
           {"", "work_threads = 257",
            "limits.work_threads: must be between 4 and 256"},
           {"", "work_threads = \"many\"", "limits.work_threads"}}) {
    GatewayConfigOptions options;
    options.extra_tls = tls;
    options.extra_limits = limits;
    EXPECT_THAT(Parse(Toml(options)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(named)))
        << tls << limits;
  }
}

TEST_F(GatewayConfigTest, NoOfficesIsRefused) {
  std::string text = Toml();
  text = text.substr(0, text.find("[[offices]]"));
  EXPECT_THAT(Parse(text), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr(": offices: at least one")));
}

TEST_F(GatewayConfigTest, TomlSyntaxErrorNamesTheLine) {
  const std::string text = Toml();
  const std::vector<std::string> lines = absl::StrSplit(text, '\n');
  ASSERT_EQ(lines[3], "log_level = \"warning\"");
  const std::string broken =
      ReplaceOnce(text, "log_level = \"warning\"\n", "log_level = \"warning\n");
  EXPECT_THAT(Parse(broken),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(StartsWith(path_ + ": "), HasSubstr("line 4"))));
}

TEST_F(GatewayConfigTest, TomlSyntaxErrorFromFileNamesTheLine) {
  const std::string text = Toml() + "\n[limits\n";
  const size_t line =
      static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
  WriteFile(path_, text);
  EXPECT_THAT(LoadGateway(path_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path_),
                             HasSubstr(absl::StrCat("line ", line, ",")))));
}

TEST_F(GatewayConfigTest, AnOfficesClientFileIsNamedAsSuch) {
  // As when CASEBRIDGE_CONFIG, set for the office commands, reaches
  // `casebridge certs status`.
  WriteFile(path_,
            ClientConfigToml("127.0.0.1:7443", "pk/offices/fia-liaison-desk"));
  EXPECT_THAT(LoadGateway(path_, PrivateKeys::kNotRead),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(StartsWith(path_ + ": this is an office's client "
                                                "configuration"),
                             HasSubstr("not a gateway's"))));
}

class ClientConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("client-config");
    path_ = dir_ + "/client.toml";
  }
  std::string dir_;
  std::string path_;
};

TEST_F(ClientConfigTest, LoadsValidConfig) {
  WriteFile(path_,
            ClientConfigToml("127.0.0.1:7443", "pk/offices/fia-liaison-desk"));
  ASSERT_OK_AND_ASSIGN(const Client client, LoadClient(path_));
  EXPECT_EQ(client.source_path, path_);
  EXPECT_EQ(client.endpoint, "127.0.0.1:7443");
  EXPECT_EQ(client.gateway_identity, "spiffe://pk.casebridge/gateway");
  EXPECT_EQ(client.cert, Pki("pk/offices/fia-liaison-desk.crt"));
  EXPECT_EQ(client.key, Pki("pk/offices/fia-liaison-desk.key"));
  EXPECT_EQ(client.ca, Pki("pk/ca.crt"));
  EXPECT_EQ(client.timeout_seconds, 10);
}

TEST_F(ClientConfigTest, LoadsConfigForChineseGateway) {
  WriteFile(path_,
            ClientConfigToml("127.0.0.1:8443", "cn/offices/mps-liaison", "CN"));
  ASSERT_OK_AND_ASSIGN(const Client client, LoadClient(path_));
  EXPECT_EQ(client.gateway_identity, "spiffe://cn.casebridge/gateway");
  EXPECT_EQ(client.ca, Pki("cn/ca.crt"));
}

TEST_F(ClientConfigTest, MissingFileIsNotFound) {
  EXPECT_THAT(LoadClient(path_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path_)));
}

TEST_F(ClientConfigTest, MissingFieldsAreNamed) {
  const std::string valid =
      ClientConfigToml("127.0.0.1:7443", "pk/offices/fia-liaison-desk");
  for (const char* key :
       {"endpoint", "gateway_identity", "cert", "key", "ca"}) {
    SCOPED_TRACE(key);
    std::string text;
    for (absl::string_view line : absl::StrSplit(valid, '\n')) {
      if (absl::StartsWith(line, absl::StrCat(key, " = "))) continue;
      absl::StrAppend(&text, line, "\n");
    }
    ASSERT_NE(text, valid + "\n");
    WriteFile(path_, text);
    EXPECT_THAT(
        LoadClient(path_),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 StartsWith(absl::StrCat(path_, ": ", key, ": is required"))));
  }
}

TEST_F(ClientConfigTest, AGatewaysFileIsNamedAsSuch) {
  GatewayConfigOptions options;
  options.data_dir = dir_ + "/data";
  WriteFile(path_, GatewayConfigToml(options));
  EXPECT_THAT(LoadClient(path_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(StartsWith(path_ + ": this is a gateway's "
                                                "configuration"),
                             HasSubstr("give the office's client "
                                       "configuration"))));
}

TEST_F(ClientConfigTest, RejectsOfficeAsGatewayIdentity) {
  WriteFile(path_,
            ReplaceOnce(ClientConfigToml("127.0.0.1:7443",
                                         "pk/offices/fia-liaison-desk"),
                        "spiffe://pk.casebridge/gateway",
                        "spiffe://pk.casebridge/office/fia-liaison-desk"));
  EXPECT_THAT(LoadClient(path_), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr(": gateway_identity: ")));
}

TEST_F(ClientConfigTest, RejectsEndpointWithoutPort) {
  WriteFile(path_,
            ClientConfigToml("localhost", "pk/offices/fia-liaison-desk"));
  EXPECT_THAT(LoadClient(path_), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr(": endpoint: ")));
}

TEST_F(ClientConfigTest, RejectsMissingKeyFileNamingIt) {
  WriteFile(path_, ClientConfigToml("127.0.0.1:7443", "pk/offices/nobody"));
  EXPECT_THAT(LoadClient(path_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(": cert: "),
                             HasSubstr(Pki("pk/offices/nobody.crt")))));
}

TEST_F(ClientConfigTest, RejectsAKeyOthersMayRead) {
  ASSERT_OK_AND_ASSIGN(
      const std::string pem,
      crypto::ReadFile(Pki("pk/offices/fia-liaison-desk.key")));
  const std::string copy = WriteFile(dir_ + "/fia.key", pem);
  ASSERT_EQ(::chmod(copy.c_str(), 0644), 0);
  WriteFile(path_, ReplaceOnce(ClientConfigToml("127.0.0.1:7443",
                                                "pk/offices/fia-liaison-desk"),
                               Pki("pk/offices/fia-liaison-desk.key"), copy));
  EXPECT_THAT(LoadClient(path_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(": key: private key " + copy),
                             HasSubstr("has mode 0644"))));
  ASSERT_EQ(::chmod(copy.c_str(), 0600), 0);
  EXPECT_OK(LoadClient(path_).status());
}

TEST_F(ClientConfigTest, RejectsUnknownKey) {
  WriteFile(path_,
            ClientConfigToml("127.0.0.1:7443", "pk/offices/fia-liaison-desk") +
                "insecure = true\n");
  EXPECT_THAT(LoadClient(path_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(": insecure: unknown key")));
}

TEST_F(ClientConfigTest, RejectsTimeoutOutOfRange) {
  WriteFile(path_, ReplaceOnce(ClientConfigToml("127.0.0.1:7443",
                                                "pk/offices/fia-liaison-desk"),
                               "timeout_seconds = 10", "timeout_seconds = 0"));
  EXPECT_THAT(LoadClient(path_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(": timeout_seconds: must be between 1")));
}

TEST(RoleTest, NamesRoundTrip) {
  for (const v1::Role role :
       {v1::ROLE_LIAISON_OFFICER, v1::ROLE_EMBASSY_OFFICER, v1::ROLE_SUPERVISOR,
        v1::ROLE_AUDITOR, v1::ROLE_READ_ONLY}) {
    EXPECT_EQ(RoleFromName(RoleName(role)), role) << RoleName(role);
  }
  EXPECT_EQ(RoleName(v1::ROLE_LIAISON_OFFICER), "liaison_officer");
  EXPECT_EQ(RoleName(v1::ROLE_EMBASSY_OFFICER), "embassy_officer");
  EXPECT_EQ(RoleName(v1::ROLE_SUPERVISOR), "supervisor");
  EXPECT_EQ(RoleName(v1::ROLE_AUDITOR), "auditor");
  EXPECT_EQ(RoleName(v1::ROLE_READ_ONLY), "read_only");
}

TEST(RoleTest, UnknownNamesAreUnspecified) {
  for (const char* name :
       {"", "Auditor", "admin", "unspecified", "liaison officer"}) {
    EXPECT_EQ(RoleFromName(name), v1::ROLE_UNSPECIFIED) << name;
  }
  EXPECT_EQ(RoleName(v1::ROLE_UNSPECIFIED), "unspecified");
}

}  // namespace
}  // namespace casebridge::config
