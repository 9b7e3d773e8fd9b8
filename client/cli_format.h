// Text and JSON rendering for the casebridge CLI, and parsing of the
// human spellings of enums ("forced-marriage-fraud", "victim-located", "B2").
#ifndef CASEBRIDGE_CLIENT_CLI_FORMAT_H_
#define CASEBRIDGE_CLIENT_CLI_FORMAT_H_

#include <nlohmann/json.hpp>
#include <streambuf>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "casebridge/v1/audit.pb.h"
#include "casebridge/v1/common.pb.h"
#include "casebridge/v1/office.pb.h"
#include "google/protobuf/descriptor.h"

namespace casebridge::cli {

// The CLI spelling of an enum value: its name without the enum's prefix, in
// lower case with '-' for '_' (CASE_STATUS_VICTIM_LOCATED -> victim-located).
std::string EnumSpelling(const google::protobuf::EnumValueDescriptor* value);

// Parses a CLI spelling (case-insensitive; '_' or '-') of a value of `type`,
// or its full proto name. INVALID_ARGUMENT listing the accepted spellings.
absl::StatusOr<int> ParseEnum(const google::protobuf::EnumDescriptor* type,
                              const std::string& flag, const std::string& text);

// "B2" -> source B, accuracy 2.
absl::StatusOr<v1::Evaluation> ParseEvaluation(const std::string& text);
std::string FormatEvaluation(const v1::Evaluation& evaluation);

// "V1", "V1:remarks", or ":remarks" (the gateway mints the pseudonym).
absl::StatusOr<v1::VictimReference> ParseVictim(const std::string& text);
// "description@PK" or "description@CN".
absl::StatusOr<v1::Location> ParseLocation(const std::string& text);

// The text in `path` ("-": standard input), for the flags that take text
// from a file (--body-file, --summary-file, ...), so that victims' details
// need not be typed on a command line, where `ps` shows them to every local
// user and the shell's history keeps them. INVALID_ARGUMENT naming `flag`
// for anything but a regular file or standard input, more than
// kMaxTextFileBytes, or text that is not UTF-8. A final newline is dropped.
inline constexpr size_t kMaxTextFileBytes = size_t{1} << 20;
absl::StatusOr<std::string> ReadTextFile(const std::string& flag,
                                         const std::string& path);
// The same, split into its lines with text (for one victim or location a
// line); blank lines are skipped.
absl::StatusOr<std::vector<std::string>> ReadTextLines(const std::string& flag,
                                                       const std::string& path);

// Protobuf JSON (field names as in the .proto, enums by name).
std::string ToJson(const google::protobuf::Message& message);

// Readable renderings.
std::string FormatCase(const v1::CaseReference& c);
std::string FormatCaseTable(const std::vector<v1::CaseReference>& cases);
std::string FormatWhoAmI(const v1::WhoAmIResponse& who);
std::string FormatAuditEntries(const v1::GetEntriesResponse& entries);
// What an UNAVAILABLE status with `message` may mean, as a line to print
// after it ("" when the gateway itself answered: its message says why).
// gRPC's words for a connection that failed cover both a gateway that is not
// there and a handshake the gateway refused (it shows as "Socket closed");
// a gateway certificate this client does not accept points at the office's
// own client file.
std::string UnavailableHint(absl::string_view message);

// Whether a call that failed with `status` may have been done all the same
// (its deadline passed, or the connection broke after it was sent); false
// when no connection was made, so nothing was sent.
bool MayHaveReachedTheGateway(const absl::Status& status);

// Whether a call that failed with `status` got no answer worth taking as
// final: the gateway could not be reached (or refused the handshake, which
// looks the same), did not answer in time, or said it cannot serve now
// (UNAVAILABLE, DEADLINE_EXCEEDED). Trying again later may work. Not when
// this client refused the gateway's certificate: its client file or the
// gateway's certificate must change first.
bool NoAnswer(const absl::Status& status);

// One line for an inbox message: time, case, kind[/stage], priority,
// sender, then the whole body, each of its lines indented.
std::string FormatInboxLine(const v1::WatchInboxResponse& item);
std::string FormatDeliveryStatus(const v1::DeliveryStatus& status);

// The handling marking of the message an evidence bundle proves, read from
// the signed envelope bytes alone: a field beside the signature could be
// stripped or changed without breaking it. The notice is worded as the
// gateway words it (docs/api.md#handling-codes).
struct HandlingMarking {
  v1::HandlingCode code = v1::HANDLING_CODE_UNSPECIFIED;
  std::string restriction;  // with H3
  std::string notice;       // e.g. "H1: not for use as evidence ..."
  // The receiving gateway's held handling (EvidenceBundle
  // held_handling_code), when it holds the message to more than the
  // envelope states; empty otherwise.
  v1::HandlingCode held_code = v1::HANDLING_CODE_UNSPECIFIED;
  std::string held_restriction;
  std::string held_notice;
  // Set instead of the above when the bundle states a held handling that
  // does not ask all the envelope asks (or is no code): it is not shown.
  std::string held_problem;
};
// INVALID_ARGUMENT naming the field if the bundle's envelope bytes do not
// parse or carry no handling code.
absl::StatusOr<HandlingMarking> EvidenceMarking(
    const v1::EvidenceBundle& bundle);
// The line a reader sees first: "*** Handling H1: ... ***", followed, when
// the receiving gateway holds the message to more, by "*** Held by the
// receiving gateway under H3: ... ***" (or a line saying a held handling
// asking less was ignored). Not `verified`: of a bundle whose signatures did
// not check out, said so.
std::string FormatMarking(const HandlingMarking& marking, bool verified = true);

// Passes what is written to `out` on with every control character but
// newline and tab (C0, DEL, C1: ControlCharacterAt) shown as '?'. What a
// gateway returns, or an evidence file holds, may quote text another office
// or the peer chose (an audit entry's subjects, a peer's refusal), which
// must not steer the terminal (clear lines, move the cursor, hide what
// follows). The CLI puts one over stdout and one over stderr, so no output
// path can miss it; JSON output escapes control characters itself
// (JsonLine, and protobuf's JSON). The direction overrides, embeddings and
// isolates (U+202A..U+202E, U+2066..U+2069) are shown as "<U+202E>":
// quoted inside a counterpart's text they would show an address, a phone
// number or an id reversed or moved. Marks (U+200E, U+200F, U+061C) stay,
// as Urdu text needs them.
// A write or flush that fails below fails the stream (badbit), as it would
// without the filter.
class TerminalFilter final : public std::streambuf {
 public:
  explicit TerminalFilter(std::streambuf* out) : out_(out) {}
  ~TerminalFilter() override;
  TerminalFilter(const TerminalFilter&) = delete;
  TerminalFilter& operator=(const TerminalFilter&) = delete;

 protected:
  int overflow(int c) override;
  std::streamsize xsputn(const char* s, std::streamsize n) override;
  int sync() override;

 private:
  std::streambuf* const out_;
  // The start of a character a write ended in, if it may be one the
  // filter changes: 0xC2 (a C1 control), or 0xE2 with up to one more byte
  // (a direction control).
  std::string held_;
};

// `json` on one line with every character beyond ASCII escaped (\uXXXX):
// exact for any JSON reader, and nothing in it for a TerminalFilter to
// change (plain dump() writes DEL and C1 controls raw, which the filter
// would show as '?').
std::string JsonLine(const nlohmann::ordered_json& json);

// Columns padded by display width (CJK characters take two cells). Each
// cell on one line: newlines and tabs become spaces.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);
// Cuts `text` to at most `max` display cells, adding "…" when cut.
std::string Truncate(const std::string& text, size_t max);

}  // namespace casebridge::cli

#endif  // CASEBRIDGE_CLIENT_CLI_FORMAT_H_
