#include "client/cli_format.h"

#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "core/grpc_status.h"
#include "core/handling_notice.h"
#include "core/identity.h"
#include "core/utf8.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"

namespace casebridge::cli {
namespace {

using google::protobuf::EnumDescriptor;
using google::protobuf::EnumValueDescriptor;

// Prefix shared by the values of an enum: "CASE_STATUS_" for CaseStatus.
std::string EnumPrefix(const EnumDescriptor* type) {
  std::string prefix;
  for (const char c : type->name()) {
    if (absl::ascii_isupper(static_cast<unsigned char>(c)) && !prefix.empty()) {
      prefix.push_back('_');
    }
    prefix.push_back(absl::ascii_toupper(static_cast<unsigned char>(c)));
  }
  return prefix + "_";
}

// Decodes one code point at `i` (input is valid UTF-8 from the gateway);
// returns its byte length.
size_t CodePointAt(const std::string& s, size_t i, uint32_t* cp) {
  const auto b = static_cast<unsigned char>(s[i]);
  size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : 4;
  if (i + len > s.size()) len = s.size() - i;
  uint32_t v = len == 1   ? b
               : len == 2 ? (b & 0x1F)
               : len == 3 ? (b & 0x0F)
                          : (b & 0x07);
  for (size_t k = 1; k < len; ++k) {
    v = (v << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  }
  *cp = v;
  return len;
}

int CellWidth(uint32_t cp) {
  const bool wide =
      (cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0xA4CF) ||
      (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
      (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
      (cp >= 0xFFE0 && cp <= 0xFFE6) || cp >= 0x20000;
  return wide ? 2 : 1;
}

size_t DisplayWidth(const std::string& s) {
  size_t width = 0;
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    i += CodePointAt(s, i, &cp);
    width += static_cast<size_t>(CellWidth(cp));
  }
  return width;
}

std::string Time(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC",
                          absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

template <typename E>
std::string Spell(const EnumDescriptor* type, E value) {
  const EnumValueDescriptor* v =
      type->FindValueByNumber(static_cast<int>(value));
  return v == nullptr ? absl::StrCat(static_cast<int>(value)) : EnumSpelling(v);
}

// `text` with each of its later lines indented by `indent`: stored text
// printed on lines of its own never starts a line where the output's own
// headings and entries do, so a line break in it cannot pass for one.
std::string Continued(absl::string_view text, absl::string_view indent) {
  return absl::StrReplaceAll(text, {{"\n", absl::StrCat("\n", indent)}});
}

std::string HandlingText(const v1::CaseReference& c) {
  const std::string code =
      Spell(v1::HandlingCode_descriptor(), c.handling_code());
  const std::string upper = absl::AsciiStrToUpper(code);
  return c.handling_restriction().empty()
             ? upper
             : absl::StrCat(upper, " (", c.handling_restriction(), ")");
}

}  // namespace

std::string EnumSpelling(const EnumValueDescriptor* value) {
  std::string name = value->name();
  const std::string prefix = EnumPrefix(value->type());
  if (absl::StartsWith(name, prefix)) name = name.substr(prefix.size());
  return absl::StrReplaceAll(absl::AsciiStrToLower(name), {{"_", "-"}});
}

absl::StatusOr<int> ParseEnum(const EnumDescriptor* type,
                              const std::string& flag,
                              const std::string& text) {
  const std::string wanted =
      absl::StrReplaceAll(absl::AsciiStrToLower(text), {{"_", "-"}});
  std::vector<std::string> accepted;
  for (int i = 0; i < type->value_count(); ++i) {
    const EnumValueDescriptor* v = type->value(i);
    if (v->number() == 0) continue;  // UNSPECIFIED is never a choice
    const std::string spelling = EnumSpelling(v);
    if (spelling == wanted ||
        absl::StrReplaceAll(absl::AsciiStrToLower(v->name()), {{"_", "-"}}) ==
            wanted) {
      return v->number();
    }
    accepted.push_back(spelling);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      flag, ": \"", text, "\" is not one of ", absl::StrJoin(accepted, ", ")));
}

absl::StatusOr<v1::Evaluation> ParseEvaluation(const std::string& text) {
  if (text.size() != 2) {
    return absl::InvalidArgumentError(
        "--evaluation: expected source reliability A-D or X and accuracy 1-4, "
        "e.g. B2");
  }
  v1::Evaluation e;
  switch (absl::ascii_toupper(static_cast<unsigned char>(text[0]))) {
    case 'A':
      e.set_source_reliability(v1::SOURCE_RELIABILITY_A);
      break;
    case 'B':
      e.set_source_reliability(v1::SOURCE_RELIABILITY_B);
      break;
    case 'C':
      e.set_source_reliability(v1::SOURCE_RELIABILITY_C);
      break;
    case 'D':
      e.set_source_reliability(v1::SOURCE_RELIABILITY_D);
      break;
    case 'X':
      e.set_source_reliability(v1::SOURCE_RELIABILITY_X);
      break;
    default:
      return absl::InvalidArgumentError(
          "--evaluation: source reliability must be A, B, C, D or X");
  }
  if (text[1] < '1' || text[1] > '4') {
    return absl::InvalidArgumentError(
        "--evaluation: information accuracy must be 1, 2, 3 or 4");
  }
  e.set_information_accuracy(
      static_cast<v1::InformationAccuracy>(text[1] - '0'));
  return e;
}

std::string FormatEvaluation(const v1::Evaluation& e) {
  static constexpr char kSources[] = "?ABCDX";
  const int s = e.source_reliability();
  const int a = e.information_accuracy();
  return absl::StrCat(std::string(1, s >= 0 && s <= 5 ? kSources[s] : '?'),
                      a >= 1 && a <= 4 ? absl::StrCat(a) : "?");
}

absl::StatusOr<v1::VictimReference> ParseVictim(const std::string& text) {
  v1::VictimReference v;
  const size_t colon = text.find(':');
  v.set_pseudonym(text.substr(0, colon));
  if (colon != std::string::npos) v.set_remarks(text.substr(colon + 1));
  // No pseudonym (":REMARKS"): the gateway mints one.
  return v;
}

absl::StatusOr<v1::Location> ParseLocation(const std::string& text) {
  const size_t at = text.rfind('@');
  if (at == std::string::npos) {
    return absl::InvalidArgumentError(
        "--location: expected DESCRIPTION@PK or DESCRIPTION@CN");
  }
  v1::Location l;
  l.set_description(text.substr(0, at));
  l.set_country(CountryFromCode(absl::AsciiStrToUpper(text.substr(at + 1))));
  if (l.country() == v1::COUNTRY_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "--location: country after '@' must be PK or CN");
  }
  return l;
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string Truncate(const std::string& text, size_t max) {
  std::string out;
  size_t width = 0;
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    const size_t len = CodePointAt(text, i, &cp);
    const auto w = static_cast<size_t>(CellWidth(cp));
    if (cp == '\n' || cp == '\t') {
      out.push_back(' ');
      width += 1;
      i += len;
      continue;
    }
    if (width + w > max) {
      // Make room for the ellipsis.
      while (!out.empty() && width + 1 > max) {
        size_t back = out.size() - 1;
        while (back > 0 &&
               (static_cast<unsigned char>(out[back]) & 0xC0) == 0x80)
          --back;
        uint32_t last = 0;
        CodePointAt(out, back, &last);
        width -= static_cast<size_t>(CellWidth(last));
        out.resize(back);
      }
      return out + "…";
    }
    out.append(text, i, len);
    width += w;
    i += len;
  }
  return out;
}

TerminalFilter::~TerminalFilter() {
  // A character cut short: not UTF-8.
  for (size_t i = 0; i < held_.size(); ++i) out_->sputc('?');
  out_->pubsync();
}

int TerminalFilter::overflow(int c) {
  if (traits_type::eq_int_type(c, traits_type::eof())) return 0;
  const char ch = traits_type::to_char_type(c);
  return xsputn(&ch, 1) == 1 ? c : traits_type::eof();
}

namespace {

// U+202A..U+202E and U+2066..U+2069 at `text[i]`: its code point, or 0.
char32_t DirectionControlAt(absl::string_view text, size_t i) {
  if (i + 2 >= text.size() || text[i] != '\xE2') return 0;
  const auto second = static_cast<unsigned char>(text[i + 1]);
  const auto third = static_cast<unsigned char>(text[i + 2]);
  if ((second == 0x80 && third >= 0xAA && third <= 0xAE) ||
      (second == 0x81 && third >= 0xA6 && third <= 0xA9)) {
    return 0x2000 | ((second & 0x03u) << 6) | (third & 0x3Fu);
  }
  return 0;
}

// Whether text[i..] is the start of a character the filter may change,
// cut short by the end of the write.
bool CutShort(absl::string_view text, size_t i) {
  const size_t left = text.size() - i;
  if (text[i] == '\xC2') return left == 1;
  if (text[i] != '\xE2') return false;
  return left == 1 ||
         (left == 2 && (text[i + 1] == '\x80' || text[i + 1] == '\x81'));
}

}  // namespace

std::streamsize TerminalFilter::xsputn(const char* s, std::streamsize n) {
  std::string text = std::move(held_);
  held_.clear();
  text.append(s, static_cast<size_t>(n));
  std::string shown;
  shown.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (CutShort(text, i)) {
      held_ = text.substr(i);
      break;
    }
    if (const size_t control = ControlCharacterAt(text, i)) {
      shown.push_back('?');
      i += control;
    } else if (const char32_t direction = DirectionControlAt(text, i)) {
      absl::StrAppend(&shown, "<U+",
                      absl::AsciiStrToUpper(absl::StrCat(
                          absl::Hex(static_cast<uint32_t>(direction)))),
                      ">");
      i += 3;
    } else {
      shown.push_back(text[i++]);
    }
  }
  const auto size = static_cast<std::streamsize>(shown.size());
  // Short: the stream fails (a full disk, a closed file), and says so.
  return out_->sputn(shown.data(), size) == size ? n : 0;
}

int TerminalFilter::sync() { return out_->pubsync(); }

std::string JsonLine(const nlohmann::ordered_json& json) {
  return json.dump(-1, ' ', /*ensure_ascii=*/true) + "\n";
}

std::string FormatTable(const std::vector<std::vector<std::string>>& raw) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(raw.size());
  for (const auto& raw_row : raw) {
    std::vector<std::string>& row = rows.emplace_back();
    for (const std::string& cell : raw_row) {
      row.push_back(absl::StrReplaceAll(cell, {{"\n", " "}, {"\t", " "}}));
    }
  }
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) {
        line.append(widths[i] - DisplayWidth(row[i]) + 2, ' ');
      }
    }
    out += line + "\n";
  }
  return out;
}

std::string FormatCase(const v1::CaseReference& c) {
  std::vector<std::vector<std::string>> rows = {
      {"Exchange id:", c.exchange_id()},
      {"Local reference:", c.local_reference()},
      {"Status:", Spell(v1::CaseStatus_descriptor(), c.status())},
      {"Category:", Spell(v1::CaseCategory_descriptor(), c.category())},
      {"Handling:", HandlingText(c)},
      {"Evaluation:", FormatEvaluation(c.evaluation())},
      {"Owner:", c.owner_office()},
      {"Version:", absl::StrCat(c.version())},
      {"Opened:", Time(c.created_at())},
      {"Updated:", absl::StrCat(Time(c.updated_at()), " by ", c.updated_by())},
  };
  // The handling notice comes first: a reader sees it before the content.
  std::string out =
      c.handling_notice().empty()
          ? ""
          : absl::StrCat("*** Handling ",
                         Continued(c.handling_notice(), "    "), " ***\n");
  out += FormatTable(rows);
  out += absl::StrCat("Summary:\n  ",
                      absl::StrReplaceAll(c.summary(), {{"\n", "\n  "}}), "\n");
  if (c.victims_size() > 0) {
    out += "Victims (pseudonymous):\n";
    for (const auto& v : c.victims()) {
      out += absl::StrCat("  ", v.pseudonym(), v.remarks().empty() ? "" : " — ",
                          Continued(v.remarks(), "    "), "\n");
    }
  }
  if (c.has_personal_data_purged_at()) {
    // Not the same as none recorded: they were destroyed.
    out += absl::StrCat(
        "Personal data purged by retention at ",
        Time(c.personal_data_purged_at()),
        ": victims' remarks and last known locations are no longer held\n");
  }
  if (c.last_known_locations_size() > 0) {
    out += "Last known locations:\n";
    for (const auto& l : c.last_known_locations()) {
      out += absl::StrCat(
          "  ", Continued(l.description(), "    "), " (",
          CountryCode(l.country()),
          l.has_observed_at() ? absl::StrCat(", ", Time(l.observed_at())) : "",
          ")\n");
    }
  }
  return out;
}

std::string FormatCaseTable(const std::vector<v1::CaseReference>& cases) {
  std::vector<std::vector<std::string>> rows = {{"EXCHANGE ID", "STATUS",
                                                 "CATEGORY", "H", "EVAL", "VER",
                                                 "OWNER", "SUMMARY"}};
  for (const auto& c : cases) {
    std::string owner = c.owner_office();
    if (auto id = ParseSpiffeId(owner); id.ok()) owner = id->name;
    rows.push_back({c.exchange_id(),
                    Spell(v1::CaseStatus_descriptor(), c.status()),
                    Spell(v1::CaseCategory_descriptor(), c.category()),
                    absl::AsciiStrToUpper(Spell(v1::HandlingCode_descriptor(),
                                                c.handling_code())),
                    FormatEvaluation(c.evaluation()), absl::StrCat(c.version()),
                    owner, Truncate(c.summary(), 48)});
  }
  std::string out = FormatTable(rows);
  // Codes that restrict the reader's use are spelled out under the table.
  for (const auto& c : cases) {
    if (c.handling_notice().empty() ||
        c.handling_code() == v1::HANDLING_CODE_H0) {
      continue;
    }
    absl::StrAppend(&out, "*** ", c.exchange_id(), ": ",
                    Continued(c.handling_notice(), "    "), " ***\n");
  }
  return out;
}

std::string FormatWhoAmI(const v1::WhoAmIResponse& who) {
  return FormatTable(
      {{"Identity:", who.identity()},
       {"Name:", who.display_name()},
       {"Role:", Spell(v1::Role_descriptor(), who.role())},
       {"Country:", std::string(CountryCode(who.country()))},
       {"Gateway:", who.gateway_identity()},
       {"May:", absl::StrJoin(who.allowed_actions(), ", ")},
       {"Peer offices:", who.peer_offices().empty()
                             ? "(none)"
                             : absl::StrJoin(who.peer_offices(), ", ")},
       {"Policy:", who.policy_digest().substr(0, 16)}});
}

std::string UnavailableHint(absl::string_view message) {
  // The gateway's word about the peer gateway (evidence bundles).
  if (absl::StartsWith(message, "the peer gateway")) return "";
  if (absl::StrContains(message, "Custom verification check failed")) {
    return "this office's client file does not accept the gateway it "
           "reached: check `ca` (the CA that issued the gateway's "
           "certificate), `gateway_identity` and `endpoint` in it";
  }
  if (absl::StrContains(message, "certificate verify failed") ||
      absl::StrContains(message, "CERTIFICATE_VERIFY_FAILED")) {
    return "the gateway's certificate did not verify: it may have expired "
           "or not be valid yet (or this computer's clock is wrong; its "
           "operator can check with `casebridge certs status`), or this "
           "office's client file names another CA: check `ca` and "
           "`endpoint` in it";
  }
  for (absl::string_view transport :
       {"failed to connect", "Failed to connect", "Socket closed",
        "Connection reset", "Connection refused", "Broken pipe", "handshake",
        "Handshake", "Transport closed", "GOAWAY", "DNS resolution failed",
        "empty address list", "Endpoint read failed", "keepalive",
        "connections to all backends failing"}) {
    if (absl::StrContains(message, transport)) {
      return "the gateway is not running or not reachable at the configured "
             "endpoint, or it refused this office's certificate (revoked, or "
             "issued by another CA); ask its operator if it persists";
    }
  }
  return "";
}

bool MayHaveReachedTheGateway(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kDeadlineExceeded) return true;
  if (status.code() != absl::StatusCode::kUnavailable) return false;
  // No connection was made, so nothing was sent.
  for (absl::string_view before_sending :
       {"failed to connect", "Failed to connect", "andshake failed",
        "certificate verify failed", "CERTIFICATE_VERIFY_FAILED",
        "Connection refused", "DNS resolution failed", "empty address list"}) {
    if (absl::StrContains(status.message(), before_sending)) return false;
  }
  return true;
}

bool NoAnswer(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kDeadlineExceeded) return true;
  if (status.code() != absl::StatusCode::kUnavailable) return false;
  for (absl::string_view refused_here :
       {"Custom verification check failed", "certificate verify failed",
        "CERTIFICATE_VERIFY_FAILED"}) {
    if (absl::StrContains(status.message(), refused_here)) return false;
  }
  return true;
}

std::string FormatInboxLine(const v1::WatchInboxResponse& item) {
  const v1::CaseMessage& m = item.message();
  std::string kind = Spell(v1::MessageKind_descriptor(), m.kind());
  if (m.rescue_stage() != v1::RESCUE_STAGE_UNSPECIFIED) {
    absl::StrAppend(&kind, "/",
                    Spell(v1::RescueStage_descriptor(), m.rescue_stage()));
  }
  std::string sender = m.sender_office();
  if (auto id = ParseSpiffeId(sender); id.ok()) {
    sender = absl::StrCat(CountryCode(id->country), ":", id->name);
  }
  const std::string priority =
      absl::AsciiStrToUpper(Spell(v1::Priority_descriptor(), m.priority()));
  return absl::StrCat(
      Time(m.received_at()), "  ", m.exchange_id(), "  ", kind, "  ", priority,
      "  from ", sender, "  ", m.message_id(),
      // Which request an acknowledgement or a response answers.
      m.in_reply_to().empty() ? "" : absl::StrCat("  re ", m.in_reply_to()),
      "  (cursor ", item.cursor(), ")\n    ",
      // The whole text, line by line: a rescue request's address or phone
      // number may be at its end.
      absl::StrReplaceAll(
          m.body().empty() && m.has_case_reference()
              ? absl::StrCat("[case shared] ", m.case_reference().summary())
              : m.body(),
          {{"\n", "\n    "}}),
      "\n",
      m.handling_notice().empty()
          ? ""
          : absl::StrCat("    *** ", Continued(m.handling_notice(), "    "),
                         " ***\n"));
}

absl::StatusOr<HandlingMarking> EvidenceMarking(
    const v1::EvidenceBundle& bundle) {
  v1::Envelope envelope;
  if (!envelope.ParseFromString(bundle.envelope().envelope())) {
    return absl::InvalidArgumentError(
        "envelope.envelope: not a casebridge.v1.Envelope");
  }
  const v1::CaseMessage& m = envelope.message();
  HandlingMarking marking;
  marking.code = m.handling_code();
  marking.restriction = m.handling_restriction();
  marking.notice = HandlingNotice(marking.code, marking.restriction);
  if (marking.notice.empty()) {
    return absl::InvalidArgumentError(
        "envelope.message.handling_code: the signed envelope states none");
  }
  if (bundle.held_handling_code() == v1::HANDLING_CODE_UNSPECIFIED) {
    return marking;
  }
  if (!HandlingAsksAll(bundle.held_handling_code(),
                       bundle.held_handling_restriction(), marking.code,
                       marking.restriction)) {
    marking.held_problem =
        "the bundle states a held handling that asks less than the "
        "envelope; ignored";
    return marking;
  }
  marking.held_code = bundle.held_handling_code();
  marking.held_restriction = bundle.held_handling_restriction();
  marking.held_notice =
      HandlingNotice(marking.held_code, marking.held_restriction);
  return marking;
}

std::string FormatMarking(const HandlingMarking& marking, bool verified) {
  std::string out = absl::StrCat(
      "*** Handling ", Continued(marking.notice, "    "),
      verified ? "" : " (as the unverified envelope states)", " ***\n");
  if (!marking.held_notice.empty()) {
    absl::StrAppend(&out, "*** Held by the receiving gateway under ",
                    Continued(marking.held_notice, "    "),
                    " (its copy of the case differs; not signed) ***\n");
  } else if (!marking.held_problem.empty()) {
    absl::StrAppend(&out, "*** Note: ", marking.held_problem, " ***\n");
  }
  return out;
}

std::string FormatDeliveryStatus(const v1::DeliveryStatus& s) {
  std::vector<std::vector<std::string>> rows = {
      {"Message:", s.message_id()},
      {"State:", Spell(v1::DeliveryState_descriptor(), s.state())},
      {"Attempts:", absl::StrCat(s.attempts())},
      {"Queued:", Time(s.queued_at())},
      {"Delivered:", Time(s.delivered_at())},
  };
  if (!s.last_error().empty()) rows.push_back({"Last error:", s.last_error()});
  if (!s.waiting_behind().empty()) {
    rows.push_back({"Waiting:", s.waiting_behind()});
  }
  if (s.has_peer_link_down_since()) {
    rows.push_back({"Peer link:",
                    absl::StrCat("down since ", Time(s.peer_link_down_since()),
                                 ": ", s.peer_link_down_reason())});
  }
  if (s.has_receipt()) {
    rows.push_back({"Receipt:", absl::StrCat(s.receipt().receipt().size(),
                                             " bytes, signed by key ",
                                             s.receipt().key_id())});
  }
  return FormatTable(rows);
}

std::string FormatAuditEntries(const v1::GetEntriesResponse& entries) {
  std::vector<std::vector<std::string>> rows = {
      {"#", "TIME", "ACTOR", "ACTION", "SUBJECTS", "OUTCOME"}};
  for (const auto& e : entries.entries()) {
    rows.push_back(
        {absl::StrCat(e.index()), Time(e.time()), e.actor(), e.action(),
         absl::StrJoin(e.subjects(), ","),
         e.status_code() == 0
             ? "OK"
             : Truncate(absl::StrCat(GrpcCodeName(static_cast<grpc::StatusCode>(
                                         e.status_code())),
                                     ": ", e.status_message()),
                        60)});
  }
  if (entries.entries().empty()) {
    return absl::StrCat("No entries from index ", entries.next_start(),
                        " on.\n");
  }
  return absl::StrCat(FormatTable(rows), "Next page: --start ",
                      entries.next_start(), "\n");
}

absl::StatusOr<std::string> ReadTextFile(const std::string& flag,
                                         const std::string& path) {
  std::ifstream file;
  std::istream* in = &std::cin;
  if (path != "-") {
    std::error_code error;
    if (!std::filesystem::is_regular_file(path, error)) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": ", path,
          error ? absl::StrCat(" cannot be read: ", error.message())
                : std::string(" is not a regular file"),
          " (give a file, or - for standard input)"));
    }
    file.open(path, std::ios::binary);
    if (!file) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": ", path, " cannot be opened"));
    }
    in = &file;
  }
  // One byte more than allowed tells a file that is too long.
  std::string text(kMaxTextFileBytes + 1, '\0');
  in->read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in->bad()) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": reading ", path == "-" ? "standard input" : path, " failed"));
  }
  text.resize(static_cast<size_t>(in->gcount()));
  if (text.size() > kMaxTextFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path == "-" ? "standard input" : path,
                     " holds more than ", kMaxTextFileBytes, " bytes"));
  }
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path == "-" ? "standard input" : path,
                     " is not UTF-8 text"));
  }
  if (absl::EndsWith(text, "\r\n")) {
    text.resize(text.size() - 2);
  } else if (absl::EndsWith(text, "\n")) {
    text.pop_back();
  }
  return text;
}

absl::StatusOr<std::vector<std::string>> ReadTextLines(
    const std::string& flag, const std::string& path) {
  auto text = ReadTextFile(flag, path);
  if (!text.ok()) return text.status();
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (absl::EndsWith(line, "\r")) line.remove_suffix(1);
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    lines.emplace_back(line);
  }
  return lines;
}

}  // namespace casebridge::cli
