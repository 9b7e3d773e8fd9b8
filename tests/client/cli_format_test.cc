#include "client/cli_format.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::cli {
namespace {

using ::casebridge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(CliFormatTest, EnumSpellingDropsPrefixAndUsesDashes) {
  EXPECT_EQ(EnumSpelling(v1::CaseStatus_descriptor()->FindValueByNumber(
                v1::CASE_STATUS_VICTIM_LOCATED)),
            "victim-located");
  EXPECT_EQ(EnumSpelling(v1::CaseCategory_descriptor()->FindValueByNumber(
                v1::CASE_CATEGORY_FORCED_MARRIAGE_FRAUD)),
            "forced-marriage-fraud");
  EXPECT_EQ(EnumSpelling(v1::HandlingCode_descriptor()->FindValueByNumber(
                v1::HANDLING_CODE_H2)),
            "h2");
}

TEST(CliFormatTest, ParseEnumAcceptsSpellingsAndFullNames) {
  ASSERT_OK_AND_ASSIGN(int a, ParseEnum(v1::CaseStatus_descriptor(), "--status",
                                        "Victim_Located"));
  EXPECT_EQ(a, v1::CASE_STATUS_VICTIM_LOCATED);
  ASSERT_OK_AND_ASSIGN(int b, ParseEnum(v1::CaseStatus_descriptor(), "--status",
                                        "CASE_STATUS_CLOSED"));
  EXPECT_EQ(b, v1::CASE_STATUS_CLOSED);
  ASSERT_OK_AND_ASSIGN(
      int c, ParseEnum(v1::HandlingCode_descriptor(), "--handling", "H3"));
  EXPECT_EQ(c, v1::HANDLING_CODE_H3);
}

TEST(CliFormatTest, ParseEnumRefusesUnknownAndUnspecifiedListingChoices) {
  EXPECT_THAT(ParseEnum(v1::CaseStatus_descriptor(), "--status", "lost"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--status: \"lost\" is not one of open, "
                                 "under-investigation")));
  EXPECT_THAT(
      ParseEnum(v1::CaseStatus_descriptor(), "--status", "unspecified"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--status")));
}

TEST(CliFormatTest, EvaluationCodeRoundTrips) {
  for (const char* code : {"A1", "B2", "C3", "D4", "X4"}) {
    ASSERT_OK_AND_ASSIGN(v1::Evaluation e, ParseEvaluation(code));
    EXPECT_EQ(FormatEvaluation(e), code);
  }
  EXPECT_THAT(ParseEvaluation("E1"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("A, B, C, D or X")));
  EXPECT_THAT(
      ParseEvaluation("B5"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1, 2, 3 or 4")));
  EXPECT_THAT(ParseEvaluation("B"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("B2")));
}

TEST(CliFormatTest, VictimAndLocationFlags) {
  ASSERT_OK_AND_ASSIGN(auto v, ParseVictim("V1:age 19: speaks Punjabi"));
  EXPECT_EQ(v.pseudonym(), "V1");
  EXPECT_EQ(v.remarks(), "age 19: speaks Punjabi");
  // Without a pseudonym, the gateway mints one.
  ASSERT_OK_AND_ASSIGN(auto minted, ParseVictim(":age 19"));
  EXPECT_EQ(minted.pseudonym(), "");
  EXPECT_EQ(minted.remarks(), "age 19");
  ASSERT_OK_AND_ASSIGN(auto l, ParseLocation("near gate @3, Handan@cn"));
  EXPECT_EQ(l.description(), "near gate @3, Handan");
  EXPECT_EQ(l.country(), v1::COUNTRY_CN);
  EXPECT_THAT(ParseLocation("Handan"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("@")));
  EXPECT_THAT(
      ParseLocation("Handan@IN"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("PK or CN")));
}

TEST(CliFormatTest, TruncateCountsDisplayCellsAndNeverSplitsCharacters) {
  EXPECT_EQ(Truncate("short", 10), "short");
  EXPECT_EQ(Truncate("abcdefghij", 5), "abcd…");
  // CJK characters take two cells each.
  EXPECT_EQ(Truncate("护照被没收了", 7), "护照被…");
  // Urdu letters take one cell; the cut lands between code points.
  EXPECT_EQ(Truncate("پاسپورٹ ضبط", 4), "پاس…");
  EXPECT_EQ(Truncate("line one\nline two", 40), "line one line two");
}

TEST(CliFormatTest, TableColumnsAlignWithWideCharacters) {
  const std::string table =
      FormatTable({{"ID", "SUMMARY"}, {"护照", "x"}, {"ab", "y"}});
  EXPECT_EQ(table, "ID    SUMMARY\n护照  x\nab    y\n");
}

TEST(CliFormatTest, WhoAmIListsThePeerOfficesToAddress) {
  v1::WhoAmIResponse who;
  who.set_identity("spiffe://pk.casebridge/office/fia-liaison-desk");
  who.set_role(v1::ROLE_LIAISON_OFFICER);
  who.set_country(v1::COUNTRY_PK);
  who.add_peer_offices("spiffe://cn.casebridge/office/mps-liaison");
  who.add_peer_offices("spiffe://cn.casebridge/office/mps-hebei");
  EXPECT_THAT(
      FormatWhoAmI(who),
      HasSubstr("Peer offices:  spiffe://cn.casebridge/office/"
                "mps-liaison, spiffe://cn.casebridge/office/mps-hebei\n"));
  who.clear_peer_offices();
  EXPECT_THAT(FormatWhoAmI(who), HasSubstr("Peer offices:  (none)\n"));
}

TEST(CliFormatTest, CaseRenderingShowsHandlingRestrictionAndEvaluation) {
  v1::CaseReference c;
  c.set_exchange_id("PK-2026-000007");
  c.set_status(v1::CASE_STATUS_VICTIM_RESCUED);
  c.set_handling_code(v1::HANDLING_CODE_H3);
  c.set_handling_restriction("no contact with the broker");
  c.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
  c.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_2);
  c.set_summary("两名男子\nrescued");
  const std::string text = FormatCase(c);
  EXPECT_THAT(text, HasSubstr("PK-2026-000007"));
  EXPECT_THAT(text, HasSubstr("victim-rescued"));
  EXPECT_THAT(text, HasSubstr("H3 (no contact with the broker)"));
  EXPECT_THAT(text, HasSubstr("B2"));
  EXPECT_THAT(text, HasSubstr("  两名男子\n  rescued\n"));
}

TEST(CliFormatTest, HandlingNoticeLeadsTheCaseAndFollowsTheTable) {
  v1::CaseReference c;
  c.set_exchange_id("CN-2026-000002");
  c.set_handling_code(v1::HANDLING_CODE_H1);
  c.set_handling_notice(
      "H1: not for use as evidence in judicial proceedings without the "
      "originator's permission");
  const std::string text = FormatCase(c);
  EXPECT_EQ(text.rfind("*** Handling H1: not for use as evidence", 0), 0u)
      << text;
  EXPECT_THAT(FormatCaseTable({c}),
              HasSubstr("*** CN-2026-000002: H1: not for use as evidence"));

  v1::WatchInboxResponse item;
  item.mutable_message()->set_exchange_id("CN-2026-000002");
  item.mutable_message()->set_body("note");
  item.mutable_message()->set_handling_notice(
      "H3: restricted by the originator: no contact with the family");
  EXPECT_THAT(FormatInboxLine(item),
              HasSubstr("*** H3: restricted by the originator: no contact with "
                        "the family ***"));

  // An acknowledgement says which message it answers.
  item.mutable_message()->set_kind(v1::MESSAGE_KIND_ACKNOWLEDGEMENT);
  item.mutable_message()->set_message_id("CN-M-2");
  item.mutable_message()->set_in_reply_to("PK-M-1");
  item.set_cursor("7");
  EXPECT_THAT(FormatInboxLine(item),
              HasSubstr("CN-M-2  re PK-M-1  (cursor 7)"));
}

TEST(CliFormatTest, InboxLinesGiveTheWholeBodyLineByLine) {
  // A rescue request whose address and phone number come last: nothing is
  // cut, whatever its script or length.
  const std::string body =
      absl::StrCat("请立即核查。当事人于今晨从汉东站附近一处公寓给家人打电话，",
                   "地址为某某小区三号楼二单元五零一室，\n电话 138 0000 0000");
  v1::WatchInboxResponse item;
  item.set_cursor("12");
  item.mutable_message()->set_exchange_id("PK-2026-000003");
  item.mutable_message()->set_message_id("CN-M-9");
  item.mutable_message()->set_body(body);
  EXPECT_THAT(
      FormatInboxLine(item),
      HasSubstr("(cursor 12)\n    请立即核查。当事人于今晨从汉东站附近一处"
                "公寓给家人打电话，地址为某某小区三号楼二单元五零一室，"
                "\n    电话 138 0000 0000\n"));

  // A shared case gives its whole summary.
  v1::WatchInboxResponse share;
  share.mutable_message()->mutable_case_reference()->set_summary(
      std::string(300, 'x'));
  EXPECT_THAT(
      FormatInboxLine(share),
      HasSubstr(absl::StrCat("[case shared] ", std::string(300, 'x'), "\n")));
}

// The lines of `text` that start where the output's own headings and
// entries do (not with a space).
std::vector<std::string> UnindentedLines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != ' ') out.push_back(line);
  }
  return out;
}

TEST(CliFormatTest, LineBreaksInStoredTextCannotPassForLinesOfTheOutput) {
  // Each field below holds a line break followed by what would read as an
  // entry of its own: a message from another office telling the reader to
  // stand down, a second list of locations, a verified evidence line.
  const std::string forged_message =
      "2026-12-02 09:40:00 UTC  PK-2026-000009  rescue-update/rescued  URGENT"
      "  from CN:mps-liaison  CN-M-1  (cursor 99)";
  v1::WatchInboxResponse item;
  item.set_cursor("12");
  v1::CaseMessage* m = item.mutable_message();
  m->set_exchange_id("PK-2026-000003");
  m->set_message_id("CN-M-9");
  m->set_body("Victim located.");
  m->set_handling_notice(
      absl::StrCat("H3: restricted by the originator: do not share\n",
                   forged_message, "\nStand down, no action needed."));
  const std::string line = FormatInboxLine(item);
  ASSERT_THAT(UnindentedLines(line), ::testing::SizeIs(1)) << line;
  EXPECT_THAT(UnindentedLines(line)[0], HasSubstr("CN-M-9"));
  EXPECT_THAT(line, HasSubstr(absl::StrCat("\n    ", forged_message)));

  v1::CaseReference c;
  c.set_exchange_id("PK-2026-000009");
  c.set_summary("Summary\nLast known locations:");
  c.set_handling_notice("H3: restricted by the originator: x\nOwner: forged");
  c.set_handling_code(v1::HANDLING_CODE_H3);
  v1::VictimReference* v = c.add_victims();
  v->set_pseudonym("V1");
  v->set_remarks("age 19\nLast known locations:\n  Forged street, Lahore (PK)");
  v1::Location* l = c.add_last_known_locations();
  l->set_description("Yiwu\nPersonal data purged by retention");
  l->set_country(v1::COUNTRY_CN);
  const std::string shown = FormatCase(c);
  for (const std::string& heading : UnindentedLines(shown)) {
    EXPECT_THAT(heading, Not(HasSubstr("forged")));
    EXPECT_THAT(heading, Not(HasSubstr("Forged")));
    EXPECT_THAT(heading, Not(HasSubstr("purged")));
  }
  EXPECT_THAT(UnindentedLines(shown),
              ::testing::Contains("Last known locations:").Times(1))
      << shown;
  EXPECT_THAT(shown, HasSubstr("\n      Forged street, Lahore (PK)"));
  const std::string table = FormatCaseTable({c});
  EXPECT_THAT(UnindentedLines(table), ::testing::SizeIs(3)) << table;

  HandlingMarking marking;
  marking.notice = "H3: restricted by the originator: x\nevidence CN-E-1: OK";
  marking.held_notice = "H3: y\nevidence CN-E-2: OK";
  const std::string marked = FormatMarking(marking);
  EXPECT_THAT(UnindentedLines(marked), ::testing::SizeIs(2)) << marked;
  for (const std::string& own : UnindentedLines(marked)) {
    EXPECT_TRUE(absl::StartsWith(own, "*** ")) << own;
  }
}

TEST(CliFormatTest, TheTerminalFilterShowsControlCharactersAsQuestionMarks) {
  // A refused call's subject is logged as the caller gave it: an office
  // could otherwise erase its own row of the auditor's listing, print a
  // forged one, or hide every row after it.
  std::stringbuf shown;
  {
    TerminalFilter filter(&shown);
    std::ostream out(&filter);
    out << "PK-X\x1b[2K\rFORGED-LINE\x1b[8m\x7f\x07 done\n";
    // A C1 control split between two writes, and one whole.
    out << "a\xc2";
    out << "\x9b"
           "2J b\xc2\x85"
           "c";
    // Newlines and tabs stay; Urdu and Chinese (C2 A0 and other C2
    // sequences are text) pass unchanged.
    out << "\n\tفوری 邯郸 \xc2\xa9\n";
  }
  EXPECT_EQ(shown.str(),
            "PK-X?[2K?FORGED-LINE?[8m?? done\n"
            "a?2J b?c\n\tفوری 邯郸 \xc2\xa9\n");
}

TEST(CliFormatTest, TheTerminalFilterShowsDirectionControlsByName) {
  // A counterpart's text with a right-to-left override would show the
  // number after it reversed ("+92 300 1234567" as "7654321 003 29+").
  std::stringbuf shown;
  {
    TerminalFilter filter(&shown);
    std::ostream out(&filter);
    out << "call \u202e+92 300 1234567\u202c now";
    // Split between writes, an isolate: held until whole.
    out << " \xe2";
    out << "\x81\xa7x\xe2\x81";
    out << "\xa9";
    // Marks, which Urdu needs, and other U+20xx text stay.
    out << " \u200f\u061c \u2014 \u20ac";
    // A character cut short at the end is no text.
    out << " \xe2\x80";
  }
  EXPECT_EQ(shown.str(),
            "call <U+202E>+92 300 1234567<U+202C> now <U+2067>x<U+2069> "
            "\u200f\u061c \u2014 \u20ac ??");
}

// A file that takes `room` bytes, then refuses (a full disk); its flush
// fails once anything was refused.
class FullFile final : public std::streambuf {
 public:
  explicit FullFile(size_t room) : room_(room) {}

 protected:
  std::streamsize xsputn(const char*, std::streamsize n) override {
    const auto taken =
        std::min<std::streamsize>(n, static_cast<std::streamsize>(room_));
    room_ -= static_cast<size_t>(taken);
    refused_ |= taken < n;
    return taken;
  }
  int overflow(int c) override {
    char ch = traits_type::to_char_type(c);
    return xsputn(&ch, 1) == 1 ? c : traits_type::eof();
  }
  int sync() override { return refused_ ? -1 : 0; }

 private:
  size_t room_;
  bool refused_ = false;
};

TEST(CliFormatTest, AWriteTheFileRefusesFailsTheStreamThroughTheFilter) {
  // Else a watch would move on past messages nobody saw, and a command
  // whose output was lost would exit 0.
  FullFile full(8);
  TerminalFilter filter(&full);
  std::ostream out(&filter);
  out << "12345678";
  EXPECT_TRUE(out.good());
  out << "9";  // refused at once, before any flush
  EXPECT_TRUE(out.fail());
}

TEST(CliFormatTest, JsonLinesKeepControlCharactersExactAndPassTheFilter) {
  // Text an evidence file or a refused call's subject carries, with DEL
  // and a C1 control that plain dump() would write raw.
  nlohmann::ordered_json json;
  json["subject"] = "a\x7f\xc2\x9b\x1b[2J 邯郸";
  const std::string line = JsonLine(json);
  EXPECT_EQ(line,
            "{\"subject\":\"a\\u007f\\u009b\\u001b[2J \\u90af\\u90f8\"}\n");
  EXPECT_EQ(nlohmann::ordered_json::parse(line), json);
  std::stringbuf shown;
  {
    TerminalFilter filter(&shown);
    std::ostream(&filter) << line;
  }
  EXPECT_EQ(shown.str(), line);
}

TEST(CliFormatTest, EveryTableCellStaysOnItsLine) {
  v1::GetEntriesResponse entries;
  v1::AuditEntry* e = entries.add_entries();
  e->set_index(4);
  e->set_action("case.get");
  e->add_subjects("PK-X\nFORGED-ROW\tx");
  const std::string listing = FormatAuditEntries(entries);
  // The header, the entry, the next-page line.
  EXPECT_EQ(std::count(listing.begin(), listing.end(), '\n'), 3);
  EXPECT_THAT(listing, HasSubstr("PK-X FORGED-ROW x"));
}

TEST(CliFormatTest, UnavailableIsExplainedByWhatItSays) {
  // No gateway there, or a handshake it refused.
  for (const char* message :
       {"failed to connect to all addresses; last error: UNKNOWN: "
        "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection "
        "refused",
        "Socket closed"}) {
    EXPECT_THAT(UnavailableHint(message),
                HasSubstr("or it refused this office's certificate"))
        << message;
  }
  // The gateway's certificate, as this client checks it: the client file.
  EXPECT_THAT(
      UnavailableHint("failed to connect to all addresses; last error: "
                      "UNKNOWN: ipv4:127.0.0.1:7000: Ssl handshake failed: "
                      "SSL_ERROR_SSL: error:1000007d:SSL "
                      "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: "
                      "Custom verification check failed with error: "
                      "UNAUTHENTICATED: server certificate is not "
                      "spiffe://pk.casebridge/gateway"),
      HasSubstr("check `ca` (the CA that issued the gateway's certificate), "
                "`gateway_identity` and `endpoint`"));
  // A chain that does not verify: expired, not yet valid, or another CA.
  EXPECT_THAT(
      UnavailableHint("failed to connect to all addresses; last "
                      "error: UNKNOWN: ipv4:127.0.0.1:7000: Tls "
                      "handshake failed (TSI_PROTOCOL_FAILURE): "
                      "SSL_ERROR_SSL: error:0A000086:SSL "
                      "routines::certificate verify failed"),
      AllOf(HasSubstr("may have expired"), HasSubstr("casebridge certs status"),
            HasSubstr("check `ca` and `endpoint`")));
  // The gateway's own answers say why themselves.
  EXPECT_EQ(UnavailableHint("other evidence bundles are waiting for the peer "
                            "gateway; try again in a few seconds"),
            "");
  EXPECT_EQ(UnavailableHint("the peer gateway: failed to connect to all "
                            "addresses; last error: UNKNOWN: "
                            "ipv4:127.0.0.1:7001: Socket closed"),
            "");
}

TEST(CliFormatTest, ACallNeverSentIsNotSaidToHaveMaybeBeenDone) {
  // No connection: nothing was sent, so there is nothing to repeat safely.
  for (const char* message :
       {"failed to connect to all addresses; last error: UNKNOWN: "
        "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection "
        "refused",
        "failed to connect to all addresses; last error: UNKNOWN: "
        "ipv4:127.0.0.1:7000: Tls handshake failed (TSI_PROTOCOL_FAILURE): "
        "SSL_ERROR_SSL: error:0A000086:SSL routines::certificate verify "
        "failed"}) {
    EXPECT_FALSE(MayHaveReachedTheGateway(absl::UnavailableError(message)))
        << message;
  }
  // Sent, and then the answer was lost.
  EXPECT_TRUE(
      MayHaveReachedTheGateway(absl::UnavailableError("Socket closed")));
  EXPECT_TRUE(MayHaveReachedTheGateway(
      absl::DeadlineExceededError("Deadline Exceeded")));
  EXPECT_FALSE(MayHaveReachedTheGateway(
      absl::InvalidArgumentError("summary: is required")));
}

TEST(CliFormatTest, NoAnswerIsWorthTryingAgainARefusalIsNot) {
  // No answer: the gateway not there, gone mid-call, slow, or saying it
  // cannot serve now (a stop's drain).
  for (const absl::Status& status :
       {absl::UnavailableError(
            "failed to connect to all addresses; last error: UNKNOWN: "
            "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection "
            "refused"),
        absl::UnavailableError("Socket closed"),
        absl::UnavailableError("the gateway is stopping"),
        absl::DeadlineExceededError("Deadline Exceeded")}) {
    EXPECT_TRUE(NoAnswer(status)) << status;
  }
  // This client refused the gateway's certificate, or the gateway answered.
  for (const absl::Status& status :
       {absl::UnavailableError(
            "failed to connect to all addresses; last error: UNKNOWN: "
            "ipv4:127.0.0.1:7000: Tls handshake failed (TSI_PROTOCOL_FAILURE): "
            "SSL_ERROR_SSL: error:0A000086:SSL routines::certificate verify "
            "failed"),
        absl::UnavailableError("Custom verification check failed"),
        absl::PermissionDeniedError("not allowed"),
        absl::ResourceExhaustedError("rate limit"),
        absl::InvalidArgumentError("summary: is required")}) {
    EXPECT_FALSE(NoAnswer(status)) << status;
  }
}

TEST(CliFormatTest, APurgeOfPersonalDataIsSaidNotLeftBlank) {
  v1::CaseReference c;
  c.set_exchange_id("PK-2026-000004");
  EXPECT_THAT(FormatCase(c), Not(HasSubstr("purged")));
  c.mutable_personal_data_purged_at()->set_seconds(1798761600);  // 2027-01-01
  EXPECT_THAT(FormatCase(c),
              HasSubstr("Personal data purged by retention at 2027-01-01 "
                        "00:00:00 UTC: victims' remarks and last known "
                        "locations are no longer held\n"));
}

v1::EvidenceBundle BundleOf(v1::HandlingCode code,
                            const std::string& restriction = "") {
  v1::Envelope envelope;
  envelope.set_envelope_id("PK-E-1");
  envelope.mutable_message()->set_handling_code(code);
  envelope.mutable_message()->set_handling_restriction(restriction);
  v1::EvidenceBundle bundle;
  bundle.mutable_envelope()->set_envelope(envelope.SerializeAsString());
  return bundle;
}

TEST(CliFormatTest, EvidenceMarkingIsReadFromTheSignedEnvelopeBytes) {
  ASSERT_OK_AND_ASSIGN(const HandlingMarking h1,
                       EvidenceMarking(BundleOf(v1::HANDLING_CODE_H1)));
  EXPECT_EQ(h1.code, v1::HANDLING_CODE_H1);
  EXPECT_EQ(FormatMarking(h1),
            "*** Handling H1: not for use as evidence in judicial proceedings "
            "without the originator's permission ***\n");
  EXPECT_EQ(FormatMarking(h1, /*verified=*/false),
            "*** Handling H1: not for use as evidence in judicial proceedings "
            "without the originator's permission (as the unverified envelope "
            "states) ***\n");

  ASSERT_OK_AND_ASSIGN(
      const HandlingMarking h3,
      EvidenceMarking(BundleOf(v1::HANDLING_CODE_H3, "no press")));
  EXPECT_EQ(h3.restriction, "no press");
  EXPECT_EQ(h3.notice, "H3: restricted by the originator: no press");
}

TEST(CliFormatTest, EvidenceMarkingShowsTheReceiversHeldHandlingToo) {
  v1::EvidenceBundle bundle = BundleOf(v1::HANDLING_CODE_H2);
  ASSERT_OK_AND_ASSIGN(HandlingMarking marking, EvidenceMarking(bundle));
  EXPECT_EQ(marking.held_notice, "");
  EXPECT_EQ(FormatMarking(marking),
            "*** Handling H2: no onward dissemination without the "
            "originator's permission ***\n");

  bundle.set_held_handling_code(v1::HANDLING_CODE_H3);
  bundle.set_held_handling_restriction(
      "no press; and as sent: H2: no onward dissemination without the "
      "originator's permission");
  ASSERT_OK_AND_ASSIGN(marking, EvidenceMarking(bundle));
  // What the envelope states comes first, as signed.
  EXPECT_EQ(marking.code, v1::HANDLING_CODE_H2);
  EXPECT_EQ(marking.held_code, v1::HANDLING_CODE_H3);
  EXPECT_EQ(FormatMarking(marking),
            "*** Handling H2: no onward dissemination without the "
            "originator's permission ***\n"
            "*** Held by the receiving gateway under H3: restricted by the "
            "originator: no press; and as sent: H2: no onward dissemination "
            "without the originator's permission (its copy of the case "
            "differs; not signed) ***\n");

  // A held handling asking less than the envelope is not shown as one.
  bundle.set_held_handling_code(v1::HANDLING_CODE_H0);
  bundle.clear_held_handling_restriction();
  ASSERT_OK_AND_ASSIGN(marking, EvidenceMarking(bundle));
  EXPECT_EQ(marking.held_notice, "");
  EXPECT_THAT(FormatMarking(marking),
              HasSubstr("*** Note: the bundle states a held handling that "
                        "asks less than the envelope; ignored ***"));
}

TEST(CliFormatTest, EvidenceMarkingRefusesEnvelopeWithoutCodeOrBytes) {
  EXPECT_THAT(EvidenceMarking(BundleOf(v1::HANDLING_CODE_UNSPECIFIED)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("envelope.message.handling_code")));
  v1::EvidenceBundle garbage;
  garbage.mutable_envelope()->set_envelope("\xff\xff\xff");
  EXPECT_THAT(EvidenceMarking(garbage),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("envelope.envelope")));
}

}  // namespace
}  // namespace casebridge::cli

namespace casebridge::cli {
namespace {

TEST(ReadTextFileTest, TakesUpToTheLimitAndNamesTheFlagBeyond) {
  const std::string dir = testing::NewTempDir("text-file");
  const std::string at_limit = testing::WriteFile(
      dir + "/at-limit.txt", std::string(kMaxTextFileBytes, 'a'));
  ASSERT_OK_AND_ASSIGN(const std::string text,
                       ReadTextFile("--body-file", at_limit));
  EXPECT_EQ(text.size(), kMaxTextFileBytes);
  const std::string beyond = testing::WriteFile(
      dir + "/beyond.txt", std::string(kMaxTextFileBytes + 1, 'a'));
  EXPECT_THAT(ReadTextFile("--body-file", beyond),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(::testing::HasSubstr("--body-file"),
                                        ::testing::HasSubstr("more than"))));
  EXPECT_THAT(ReadTextFile("--summary-file", dir + "/missing.txt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("--summary-file")));
}

TEST(ReadTextFileTest, LinesSkipBlanksAndCarriageReturns) {
  const std::string dir = testing::NewTempDir("text-lines");
  const std::string path =
      testing::WriteFile(dir + "/victims.txt", "V1:a\r\n\r\n  \n:b\r\n");
  ASSERT_OK_AND_ASSIGN(const std::vector<std::string> lines,
                       ReadTextLines("--victims-file", path));
  EXPECT_THAT(lines, ::testing::ElementsAre("V1:a", ":b"));
}

}  // namespace
}  // namespace casebridge::cli
