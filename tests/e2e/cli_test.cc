// The casebridge CLI against a real gateway: output, --json, exit codes and
// the one-line error format.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/crypto.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("cli");
    GatewayConfigOptions options;
    options.data_dir = dir_ + "/data";
    ASSERT_OK_AND_ASSIGN(
        gateway_, GatewayProcess::Start(WriteFile(dir_ + "/pk.toml",
                                                  GatewayConfigToml(options))));
    fia_ = WriteFile(dir_ + "/fia.toml",
                     ClientConfigToml(gateway_->office_endpoint(),
                                      "pk/offices/fia-liaison-desk"));
  }

  CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {CliBinary(), "--config", fia_});
    return RunCommand(args);
  }

  std::string OpenCase(const std::string& summary) {
    CommandResult r =
        Cli({"--json", "case", "open", "--local-ref", "FIR-7", "--category",
             "forced-labour", "--summary", summary, "--handling", "H3",
             "--restriction", "not to be shared with the recruiting agency",
             "--evaluation", "C3", "--victim", "V1:age 22", "--location",
             "Yiwu, Zhejiang@CN"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out).at("exchange_id").get<std::string>();
  }

  std::string dir_;
  std::string fia_;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(CliTest, WhoAmIPrintsIdentityAndRole) {
  CommandResult r = Cli({"whoami"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out,
              HasSubstr("spiffe://pk.casebridge/office/fia-liaison-desk"));
  EXPECT_THAT(r.out, HasSubstr("liaison-officer"));
}

TEST_F(CliTest, OpenGetListUpdateRoundTrip) {
  const std::string id = OpenCase("两名男子护照被没收 / passports taken");
  EXPECT_EQ(id, PkExchangeId(1));

  CommandResult get = Cli({"case", "get", id});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("forced-labour"));
  EXPECT_THAT(get.out,
              HasSubstr("H3 (not to be shared with the recruiting agency)"));
  EXPECT_THAT(get.out, HasSubstr("两名男子护照被没收"));

  CommandResult list = Cli({"case", "list", "--status", "open"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr(id));
  EXPECT_THAT(list.out, HasSubstr("1 case"));

  CommandResult update =
      Cli({"--json", "case", "update", id, "--expected-version", "1",
           "--status", "under-investigation"});
  EXPECT_EQ(update.exit_code, 0) << update.err;
  const auto json = nlohmann::json::parse(update.out);
  EXPECT_EQ(json.at("status"), "CASE_STATUS_UNDER_INVESTIGATION");
  EXPECT_EQ(json.at("version"), "2");
}

TEST_F(CliTest, PersonalDataWithheldFromTheCallersRoleIsSaid) {
  const std::string id = OpenCase("remarks kept from auditors");
  const std::string auditor = WriteFile(
      dir_ + "/auditor.toml",
      ClientConfigToml(gateway_->office_endpoint(), "pk/auditors/pk-auditor"));
  auto as_auditor = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {CliBinary(), "--config", auditor});
    return RunCommand(args);
  };
  constexpr char kNote[] =
      "Personal data withheld: victims' remarks and last "
      "known locations are not shown to your role";

  const CommandResult get = as_auditor({"case", "get", id});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr(kNote));
  EXPECT_THAT(get.out, Not(HasSubstr("age 22")));
  const CommandResult get_json = as_auditor({"--json", "case", "get", id});
  ASSERT_EQ(get_json.exit_code, 0) << get_json.err;
  const auto got = nlohmann::json::parse(get_json.out);
  EXPECT_EQ(got.at("exchange_id"), id);
  EXPECT_EQ(got.at("personal_data_withheld"), true);

  const CommandResult list = as_auditor({"case", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr(kNote));
  const CommandResult list_json = as_auditor({"--json", "case", "list"});
  ASSERT_EQ(list_json.exit_code, 0) << list_json.err;
  EXPECT_EQ(nlohmann::json::parse(list_json.out).at("personal_data_withheld"),
            true);

  // The owner sees everything, and no note.
  const CommandResult own = Cli({"case", "get", id});
  ASSERT_EQ(own.exit_code, 0) << own.err;
  EXPECT_THAT(own.out, HasSubstr("age 22"));
  EXPECT_THAT(own.out, Not(HasSubstr("Personal data withheld")));
  EXPECT_FALSE(nlohmann::json::parse(Cli({"--json", "case", "get", id}).out)
                   .contains("personal_data_withheld"));
}

TEST_F(CliTest, NothingAnOfficeWroteCanSteerTheAuditorsTerminal) {
  // A refused call's subject is logged as the caller gave it; listed raw,
  // it could erase its own row, print a forged one and hide the rest.
  const std::string forged =
      "PK-X\x1b[2K\rFORGED-ROW\x1b[8m\xc2\x9b"
      "2J";
  const CommandResult refused = Cli({"case", "get", forged});
  EXPECT_EQ(refused.exit_code, 1) << refused.err;
  const std::string auditor = WriteFile(
      dir_ + "/auditor.toml",
      ClientConfigToml(gateway_->office_endpoint(), "pk/auditors/pk-auditor"));
  const CommandResult listing =
      RunCommand({CliBinary(), "--config", auditor, "audit", "entries"});
  ASSERT_EQ(listing.exit_code, 0) << listing.err;
  EXPECT_THAT(listing.out, HasSubstr("PK-X?[2K?FORGED-ROW?[8m?2J"));
  for (const std::string* text : {&refused.err, &listing.out, &listing.err}) {
    EXPECT_EQ(text->find('\x1b'), std::string::npos) << *text;
    EXPECT_EQ(text->find('\r'), std::string::npos) << *text;
    EXPECT_EQ(text->find("\xc2\x9b"), std::string::npos) << *text;
  }
}

TEST_F(CliTest, ListFollowsEveryPageWithAll) {
  for (int i = 0; i < 5; ++i) OpenCase("case " + std::to_string(i));
  CommandResult one_page = Cli({"--json", "case", "list", "--page-size", "2"});
  ASSERT_EQ(one_page.exit_code, 0) << one_page.err;
  const auto first = nlohmann::json::parse(one_page.out);
  EXPECT_EQ(first.at("cases").size(), 2u);
  EXPECT_FALSE(first.at("next_page_token").get<std::string>().empty());

  CommandResult all =
      Cli({"--json", "case", "list", "--page-size", "2", "--all"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(nlohmann::json::parse(all.out).at("cases").size(), 5u);
}

TEST_F(CliTest, ListFillsThePageAskedForFromTheGatewaysShortPages) {
  // A gateway whose responses hold 64 KiB at most ends pages of large cases
  // short; `case list` follows them up to the page size it was asked for.
  gateway_.reset();
  GatewayConfigOptions options;
  options.data_dir = dir_ + "/small";
  options.max_message_bytes = 64 << 10;
  ASSERT_OK_AND_ASSIGN(
      gateway_, GatewayProcess::Start(WriteFile(dir_ + "/small.toml",
                                                GatewayConfigToml(options))));
  fia_ = WriteFile(dir_ + "/fia-small.toml",
                   ClientConfigToml(gateway_->office_endpoint(),
                                    "pk/offices/fia-liaison-desk"));
  std::string summary;
  for (int k = 0; k < 3999; ++k) summary += "字";  // 11,997 bytes
  for (int i = 0; i < 9; ++i) OpenCase(summary + std::to_string(i));

  CommandResult eight = Cli({"--json", "case", "list", "--page-size", "8"});
  ASSERT_EQ(eight.exit_code, 0) << eight.err;
  const auto page = nlohmann::json::parse(eight.out);
  EXPECT_EQ(page.at("cases").size(), 8u);
  const std::string token = page.at("next_page_token").get<std::string>();
  ASSERT_FALSE(token.empty());
  CommandResult rest = Cli(
      {"--json", "case", "list", "--page-size", "8", "--page-token", token});
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  const auto last = nlohmann::json::parse(rest.out);
  ASSERT_EQ(last.at("cases").size(), 1u);
  EXPECT_EQ(last.at("cases")[0].at("summary").get<std::string>(),
            summary + "8");
  EXPECT_EQ(last.value("next_page_token", ""), "");
}

TEST_F(CliTest, OutputThatCannotBeWrittenExits5AndSaysTheCallWasMade) {
  // A full disk under the file the output goes to.
  const auto to_full = [&](const std::string& args) {
    return RunCommand({"/bin/sh", "-c",
                       absl::StrCat("exec '", CliBinary(), "' --config '", fia_,
                                    "' ", args, " > /dev/full")});
  };
  CommandResult opened = to_full(
      "--json case open --local-ref FIR-9 --category forced-labour "
      "--summary 'Output lost' --handling H0 --evaluation C3");
  EXPECT_EQ(opened.exit_code, 5);
  EXPECT_EQ(opened.err,
            "casebridge: the output could not be written (a full disk, or a "
            "closed file?); the gateway did what was asked\n");
  // Done all the same.
  CommandResult listed = Cli({"--json", "case", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(nlohmann::json::parse(listed.out).at("cases").size(), 1u);

  CommandResult listing = to_full("case list");
  EXPECT_EQ(listing.exit_code, 5);
  EXPECT_THAT(listing.err, HasSubstr("the output could not be written"));
}

TEST_F(CliTest, GatewayRefusalIsOneLineNamingTheStatusAndExits1) {
  CommandResult r = Cli({"case", "get", PkExchangeId(42)});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(r.err,
            "casebridge: NOT_FOUND: case " + PkExchangeId(42) + " not found\n");

  CommandResult bad =
      Cli({"case", "open", "--local-ref", "FIR-8", "--category", "other",
           "--summary", "x", "--handling", "H3", "--evaluation", "B2"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err,
              MatchesRegex("casebridge: INVALID_ARGUMENT: "
                           "case_reference.handling_restriction: .*\n"));
}

TEST_F(CliTest, UsageErrorsExit2) {
  EXPECT_EQ(Cli({"case", "frobnicate"}).exit_code, 2);
  CommandResult bad_enum = Cli({"case", "list", "--status", "lost"});
  EXPECT_EQ(bad_enum.exit_code, 2);
  EXPECT_THAT(bad_enum.err, HasSubstr("victim-located"));
  // Zero or less is refused, not taken for "no limit".
  for (const char* flag : {"--seconds", "--count"}) {
    CommandResult zero = Cli({"inbox", "watch", flag, "0"});
    EXPECT_EQ(zero.exit_code, 2) << flag;
    EXPECT_THAT(zero.err, HasSubstr("must be more than 0")) << flag;
  }
  CommandResult no_config = RunCommand({CliBinary(), "whoami"});
  EXPECT_EQ(no_config.exit_code, 2);
  EXPECT_THAT(no_config.err, HasSubstr("--config"));
}

TEST_F(CliTest, ARepeatableFlagTakesOneValueAndUsageErrorsSayWhat) {
  const std::string id = OpenCase("Flags before the case id");
  // The case id after a repeatable flag is the case id, not a victim.
  CommandResult update = Cli({"--json", "case", "update", "--victim",
                              "V1:age 23", id, "--expected-version", "1"});
  ASSERT_EQ(update.exit_code, 0) << update.err;
  const nlohmann::json updated = nlohmann::json::parse(update.out);
  EXPECT_EQ(updated.at("version").get<std::string>(), "2");
  ASSERT_EQ(updated.at("victims").size(), 1u);
  EXPECT_EQ(updated.at("victims")[0].at("remarks").get<std::string>(),
            "age 23");

  CommandResult missing = Cli({"case", "update", "--expected-version", "2"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_EQ(missing.err,
            "casebridge: exchange_id is required (--help lists the "
            "options)\n");
}

TEST_F(CliTest, AMisspeltCommandIsNamedWithTheCommandsThereAre) {
  CommandResult top = Cli({"whoam"});
  EXPECT_EQ(top.exit_code, 2);
  EXPECT_THAT(top.err, HasSubstr("unknown command \"whoam\" after "
                                 "\"casebridge\"; the commands there: "
                                 "whoami, health, case"));
  CommandResult nested = Cli({"case", "opne"});
  EXPECT_EQ(nested.exit_code, 2);
  EXPECT_THAT(nested.err,
              HasSubstr("unknown command \"opne\" after \"casebridge case\"; "
                        "the commands there: open, get, list"));
}

TEST_F(CliTest, GlobalFlagsMayFollowTheCommand) {
  CommandResult r =
      RunCommand({CliBinary(), "whoami", "--config", fia_, "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).at("identity").get<std::string>(),
            "spiffe://pk.casebridge/office/fia-liaison-desk");
}

TEST_F(CliTest, AuditEntriesSayWhereTheNextPageStarts) {
  OpenCase("first");
  OpenCase("second");
  OpenCase("third");
  const std::string auditor = WriteFile(
      dir_ + "/auditor.toml",
      ClientConfigToml(gateway_->office_endpoint(), "pk/auditors/pk-auditor"));
  auto page = [&](const std::string& start) {
    return RunCommand({CliBinary(), "--config", auditor, "audit", "entries",
                       "--start", start, "--page-size", "2"});
  };
  CommandResult first = page("0");
  EXPECT_EQ(first.exit_code, 0) << first.err;
  EXPECT_THAT(first.out, HasSubstr("Next page: --start 2\n"));
  // Following the pointers walks to the end of the log.
  std::string start = "2";
  bool at_end = false;
  for (int pages = 0; pages < 10 && !at_end; ++pages) {
    CommandResult next = page(start);
    ASSERT_EQ(next.exit_code, 0) << next.err;
    at_end = absl::StrContains(next.out, "No entries from index " + start);
    if (at_end) break;
    const size_t at = next.out.rfind("Next page: --start ");
    ASSERT_NE(at, std::string::npos) << next.out;
    const std::string after = next.out.substr(at + 19);
    const std::string number = after.substr(0, after.find('\n'));
    int64_t from = 0;
    int64_t to = 0;
    ASSERT_TRUE(absl::SimpleAtoi(start, &from));
    ASSERT_TRUE(absl::SimpleAtoi(number, &to)) << next.out;
    EXPECT_GT(to, from) << next.out;
    start = number;
  }
  EXPECT_TRUE(at_end) << start;
  EXPECT_GE(std::stoll(start), 3) << "three cases opened, each an entry";
  CommandResult beyond = page("1000");
  EXPECT_EQ(beyond.exit_code, 0) << beyond.err;
  EXPECT_THAT(beyond.out, HasSubstr("No entries from index 1000 on."));
}

// Every line of `err` is the CLI's own: gRPC's diagnostics of a refused
// handshake, printed after it, say the same less plainly.
void ExpectOnlyOwnLines(const std::string& err) {
  for (absl::string_view line : absl::StrSplit(err, '\n', absl::SkipEmpty())) {
    EXPECT_THAT(std::string(line), StartsWith("casebridge: "));
  }
}

TEST_F(CliTest, UnreachableGatewayIsUnavailable) {
  const std::string dead =
      WriteFile(dir_ + "/dead.toml",
                ClientConfigToml("127.0.0.1:1", "pk/offices/fia-liaison-desk"));
  CommandResult r = RunCommand({CliBinary(), "--config", dead, "whoami"});
  EXPECT_EQ(r.exit_code, 4) << "no answer: worth trying again";
  EXPECT_THAT(r.err, HasSubstr("casebridge: UNAVAILABLE: "));
}

TEST_F(CliTest, AnEvidenceFileThatCannotBeMadeIsSaidBeforeAnyCall) {
  // No gateway there at all: the --out check comes first, so nothing is
  // asked of the gateway for a bundle that could not be kept.
  const std::string dead =
      WriteFile(dir_ + "/dead.toml",
                ClientConfigToml("127.0.0.1:1", "pk/offices/fia-liaison-desk"));
  const std::string taken = WriteFile(dir_ + "/taken.pb", "kept");
  const std::string nowhere = dir_ + "/no-such-folder/evidence.pb";
  const auto get = [&](const std::string& out) {
    return RunCommand({CliBinary(), "--config", dead, "audit", "evidence",
                       "get", "PK-E-01M8XGVS56FBCQJ7AW5JSZMXQ8", "--out", out});
  };
  for (const std::string& out : {taken, nowhere}) {
    CommandResult r = get(out);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr(out));
    EXPECT_THAT(r.err, Not(HasSubstr("UNAVAILABLE")));
  }
  ASSERT_OK_AND_ASSIGN(const std::string kept, crypto::ReadFile(taken));
  EXPECT_EQ(kept, "kept");
  // A file made for a call that then fails is not left behind, empty.
  const std::string fresh = dir_ + "/fresh.pb";
  CommandResult r = get(fresh);
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
  EXPECT_FALSE(std::filesystem::exists(fresh));
}

TEST_F(CliTest, AGatewayTheClientFileDoesNotAcceptPointsAtTheFile) {
  std::string toml = ClientConfigToml(gateway_->office_endpoint(),
                                      "pk/offices/fia-liaison-desk");
  const std::string ours = "spiffe://pk.casebridge/gateway";
  ASSERT_NE(toml.find(ours), std::string::npos);
  toml.replace(toml.find(ours), ours.size(), "spiffe://cn.casebridge/gateway");
  const std::string wrong = WriteFile(dir_ + "/wrong-gateway.toml", toml);
  CommandResult r = RunCommand({CliBinary(), "--config", wrong, "whoami"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("casebridge: UNAVAILABLE: "));
  EXPECT_THAT(r.err, HasSubstr("casebridge: this office's client file does "
                               "not accept the gateway it reached"));
  EXPECT_THAT(r.err, Not(HasSubstr("ask its operator")));
  ExpectOnlyOwnLines(r.err);

  // The other way round: the gateway's certificate does not verify under
  // the client file's CA.
  toml = ClientConfigToml(gateway_->office_endpoint(),
                          "pk/offices/fia-liaison-desk");
  const std::string pk_ca = Pki("pk/ca.crt");
  ASSERT_NE(toml.find(pk_ca), std::string::npos);
  toml.replace(toml.find(pk_ca), pk_ca.size(), Pki("cn/ca.crt"));
  const std::string other_ca = WriteFile(dir_ + "/other-ca.toml", toml);
  r = RunCommand({CliBinary(), "--config", other_ca, "whoami"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("casebridge: UNAVAILABLE: "));
  ExpectOnlyOwnLines(r.err);
}

TEST_F(CliTest, AWatchThatNeverReachesTheGatewayIsNoSuccess) {
  // Messages may be waiting that the watch never saw: no success (exit 4, no
  // answer), once its time is up, with what to look at.
  const std::string dead =
      WriteFile(dir_ + "/dead.toml",
                ClientConfigToml("127.0.0.1:1", "pk/offices/fia-liaison-desk"));
  CommandResult r = RunCommand(
      {CliBinary(), "--config", dead, "inbox", "watch", "--seconds", "1"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_THAT(r.err, HasSubstr("casebridge: inbox watch: the stream ended "
                               "(UNAVAILABLE: "));
  EXPECT_THAT(r.err,
              HasSubstr("casebridge: UNAVAILABLE: the watch ended while the "
                        "gateway could not be reached: "));
  EXPECT_THAT(r.err, HasSubstr("or it refused this office's certificate"));
}

TEST_F(CliTest, AMessageMayCarryItsOwnHandlingAndEvaluation) {
  // On an H0 case a message may be marked more strictly than its case.
  CommandResult opened = Cli({"--json", "case", "open", "--local-ref", "FIR-9",
                              "--category", "other", "--summary", "Open case",
                              "--handling", "H0", "--evaluation", "C3"});
  ASSERT_EQ(opened.exit_code, 0) << opened.err;
  const std::string h0 =
      nlohmann::json::parse(opened.out).at("exchange_id").get<std::string>();
  ASSERT_EQ(Cli({"case", "share", h0}).exit_code, 0);
  CommandResult marked =
      Cli({"message", "send", h0, "--kind", "note", "--body", "the address",
           "--handling", "H3", "--restriction", "not for the family",
           "--evaluation", "A1"});
  EXPECT_EQ(marked.exit_code, 0) << marked.err;
  EXPECT_THAT(marked.out, HasSubstr("Queued message PK-M-"));

  // On the H3 case another code would drop its restriction: the gateway
  // refuses it, which shows the flag reached it.
  const std::string h3 = OpenCase("Restricted case");
  ASSERT_EQ(Cli({"case", "share", h3}).exit_code, 0);
  CommandResult weaker = Cli({"message", "send", h3, "--kind", "note", "--body",
                              "x", "--handling", "H1"});
  EXPECT_EQ(weaker.exit_code, 1);
  EXPECT_THAT(weaker.err, HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(weaker.err, HasSubstr("H3"));
  CommandResult bad = Cli({"message", "send", h3, "--kind", "note", "--body",
                           "x", "--evaluation", "Z9"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("casebridge: "));
}

TEST_F(CliTest, PersonalDataMayComeFromFilesInsteadOfTheCommandLine) {
  // Files keep victims' details out of `ps` and the shell's history.
  const std::string summary = WriteFile(
      dir_ + "/summary.txt", "دو خواتین کو گوانگژو منتقل کیا گیا / 两名女子\n");
  const std::string victims = WriteFile(
      dir_ + "/victims.txt", "V1:age 19, from Gujranwala\n\n:age 23\n");
  const std::string locations =
      WriteFile(dir_ + "/locations.txt", "Baiyun district, Guangzhou@CN\n");
  CommandResult opened =
      Cli({"--json", "case", "open", "--local-ref", "FIR-11", "--category",
           "forced-marriage-fraud", "--summary-file", summary, "--victims-file",
           victims, "--locations-file", locations, "--handling", "H2",
           "--evaluation", "B2"});
  ASSERT_EQ(opened.exit_code, 0) << opened.err;
  const auto json = nlohmann::json::parse(opened.out);
  EXPECT_EQ(json.at("summary"),
            "دو خواتین کو گوانگژو منتقل کیا گیا / 两名女子");
  ASSERT_EQ(json.at("victims").size(), 2u);
  EXPECT_EQ(json.at("victims")[0].at("remarks"), "age 19, from Gujranwala");
  EXPECT_EQ(json.at("last_known_locations")[0].at("description"),
            "Baiyun district, Guangzhou");
  const std::string id = json.at("exchange_id").get<std::string>();
  ASSERT_EQ(Cli({"case", "share", id}).exit_code, 0);

  // A body from a file is the same request as the same text on the command
  // line: the retry with its request id is answered with the message sent.
  const std::string body = WriteFile(dir_ + "/body.txt", "Move her tonight\n");
  CommandResult sent =
      Cli({"--json", "message", "send", id, "--kind", "note", "--body",
           "Move her tonight", "--request-id", "req-body-1"});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  CommandResult again =
      Cli({"--json", "message", "send", id, "--kind", "note", "--body-file",
           body, "--request-id", "req-body-1"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(nlohmann::json::parse(again.out).at("message_id"),
            nlohmann::json::parse(sent.out).at("message_id"));

  // Refused before any call: both forms, neither, a directory, not UTF-8.
  CommandResult both = Cli({"message", "send", id, "--kind", "note", "--body",
                            "x", "--body-file", body});
  EXPECT_EQ(both.exit_code, 2);
  CommandResult neither = Cli({"message", "send", id, "--kind", "note"});
  EXPECT_EQ(neither.exit_code, 2);
  EXPECT_THAT(neither.err, HasSubstr("--body or --body-file"));
  CommandResult directory =
      Cli({"message", "send", id, "--kind", "note", "--body-file", dir_});
  EXPECT_EQ(directory.exit_code, 2);
  EXPECT_THAT(directory.err, HasSubstr("is not a regular file"));
  const std::string latin1 = WriteFile(dir_ + "/latin1.txt", "caf\xe9");
  CommandResult not_utf8 =
      Cli({"case", "open", "--category", "other", "--summary-file", latin1});
  EXPECT_EQ(not_utf8.exit_code, 2);
  EXPECT_THAT(not_utf8.err, HasSubstr("is not UTF-8 text"));
}

TEST_F(CliTest, AChangeWithoutAnAnswerSaysHowToRepeatItSafely) {
  // A gateway that does not answer in time: whether the call was done is
  // not known in general (the deadline may pass after the gateway acted),
  // so the CLI names the request id that repeats it at most once, minted
  // when the officer gave none.
  const std::string slow = WriteFile(
      dir_ + "/slow.toml",
      absl::StrReplaceAll(ClientConfigToml(gateway_->office_endpoint(),
                                           "pk/offices/fia-liaison-desk"),
                          {{"timeout_seconds = 10", "timeout_seconds = 1"}}));
  const std::vector<std::string> send = {
      CliBinary(),  "--config",      slow,     "message",
      "send",       PkExchangeId(1), "--kind", "rescue-request",
      "--priority", "urgent",        "--body", "Move her"};
  ASSERT_EQ(::kill(gateway_->pid(), SIGSTOP), 0);
  CommandResult minted = RunCommand(send);
  std::vector<std::string> with_id = send;
  with_id.insert(with_id.end(), {"--request-id", "urgent-7"});
  CommandResult given = RunCommand(with_id);
  ASSERT_EQ(::kill(gateway_->pid(), SIGCONT), 0);
  EXPECT_EQ(minted.exit_code, 4);
  EXPECT_THAT(minted.err, HasSubstr("DEADLINE_EXCEEDED"));
  EXPECT_THAT(minted.err,
              MatchesRegex("(.|\n)*casebridge: it may have been done all the "
                           "same; to repeat it without doing it twice, run the "
                           "same command with --request-id "
                           "cli-[0-9a-f]{24}\n(.|\n)*"));
  EXPECT_EQ(given.exit_code, 4);
  EXPECT_THAT(given.err, HasSubstr("run the same command with --request-id "
                                   "urgent-7\n"));
  // No gateway there: nothing was sent, so nothing to repeat; the hint
  // says what UNAVAILABLE may mean.
  const std::string dead =
      WriteFile(dir_ + "/dead.toml",
                ClientConfigToml("127.0.0.1:1", "pk/offices/fia-liaison-desk"));
  std::vector<std::string> unsent = send;
  unsent[2] = dead;
  CommandResult never = RunCommand(unsent);
  EXPECT_EQ(never.exit_code, 4);
  EXPECT_THAT(never.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(never.err, HasSubstr("the gateway is not running or not "
                                   "reachable"));
  EXPECT_THAT(never.err, Not(HasSubstr("--request-id")));
  // A refusal is no unknown outcome: nothing to repeat.
  CommandResult refused = Cli(
      {"message", "send", PkExchangeId(42), "--kind", "note", "--body", "x"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(refused.err, Not(HasSubstr("--request-id")));
}

TEST_F(CliTest, ARetriedSendSaysWhatBecameOfTheMessage) {
  const std::string id = OpenCase("Retry after a timeout");
  ASSERT_EQ(Cli({"case", "share", id}).exit_code, 0);
  const std::vector<std::string> send = {
      "message",      "send",           id,
      "--kind",       "rescue-request", "--priority",
      "urgent",       "--body",         "Move her to the shelter tonight",
      "--request-id", "retry-1"};
  CommandResult first = Cli(send);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_THAT(first.out, MatchesRegex("Queued message PK-M-[0-9A-Z]+\n"));
  const std::string message_id = first.out.substr(
      std::string("Queued message ").size(),
      first.out.size() - 1 - std::string("Queued message ").size());
  ASSERT_EQ(Cli({"message", "cancel", message_id, "--reason", "sent twice"})
                .exit_code,
            0);

  // The same request again (the officer's first call timed out): the
  // message is not queued any more, and the officer is told so.
  CommandResult again = Cli(send);
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.out,
              HasSubstr(absl::StrCat("Message ", message_id,
                                     " was already accepted for this "
                                     "request id:\n")));
  EXPECT_THAT(again.out, MatchesRegex("(.|\n)*State: +cancelled\n(.|\n)*"));
  EXPECT_THAT(again.out, Not(HasSubstr("Queued message")));
}

TEST_F(CliTest, ACertificateOutOfItsValidityIsSaidBeforeConnecting) {
  for (const std::string& stem :
       {std::string("bad/expired"), std::string("bad/not-yet-valid")}) {
    SCOPED_TRACE(stem);
    const std::string config =
        WriteFile(dir_ + "/bad.toml",
                  ClientConfigToml(gateway_->office_endpoint(), stem));
    CommandResult r = RunCommand({CliBinary(), "--config", config, "whoami"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_THAT(r.err, HasSubstr(stem == "bad/expired"
                                     ? "this office's certificate expired at "
                                     : "this office's certificate is not "
                                       "valid before "));
  }
  // A refusal at the handshake (another CA) says what it may be. To the
  // client it looks like a gateway that went away: no answer (4).
  const std::string other_ca = WriteFile(
      dir_ + "/other-ca.toml",
      ClientConfigToml(gateway_->office_endpoint(), "bad/unknown-ca"));
  CommandResult r = RunCommand({CliBinary(), "--config", other_ca, "whoami"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("casebridge: UNAVAILABLE: "));
  EXPECT_THAT(r.err, HasSubstr("refused this office's certificate"));
  ExpectOnlyOwnLines(r.err);
}

TEST_F(CliTest, HealthReportsServing) {
  CommandResult r = Cli({"--json", "health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).at("status"), "SERVING");
}

}  // namespace
}  // namespace casebridge::testing
