// What an office or the peer sends, from its wire bytes to the checks that
// run before anything is stored (server/call_handler.h ParseRequest,
// server/validation.h, server/handling.h, core/handling_notice.h). The first
// input byte chooses the message type, the rest is its wire format.
// - Parsing refuses with INVALID_ARGUMENT, and names a field for invalid
//   UTF-8 only when protobuf itself refuses the bytes.
// - Validation refuses with INVALID_ARGUMENT (FAILED_PRECONDITION for a
//   status transition) or accepts.
// - A message from the peer that passed the receiver's content checks still
//   passes them once it is held to a case as stored here (an office's own,
//   or one the peer shared): what the receiver stores and shows its offices
//   is well-formed.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "casebridge/v1/exchange.pb.h"
#include "casebridge/v1/office.pb.h"
#include "core/handling_notice.h"
#include "core/proto_utf8.h"
#include "google/protobuf/stubs/logging.h"
#include "server/call_handler.h"
#include "server/handling.h"
#include "server/office_service.h"
#include "server/validation.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

namespace v1 = casebridge::v1;
using casebridge::server::ParseRequest;

bool Refusal(const absl::Status& status) {
  return status.code() == absl::StatusCode::kInvalidArgument &&
         !status.message().empty();
}

// Parses as the office port does; false if refused (and checks the refusal).
bool Parse(const std::string& bytes, google::protobuf::Message* message) {
  const absl::Status parsed = ParseRequest(bytes, message);
  if (parsed.ok()) {
    FUZZ_CHECK(
        !casebridge::FindInvalidUtf8Field(message->GetDescriptor(), bytes)
             .has_value());
    return true;
  }
  FUZZ_CHECK(Refusal(parsed));
  return false;
}

void Check(const absl::Status& status) {
  FUZZ_CHECK(status.ok() || Refusal(status) ||
             status.code() == absl::StatusCode::kFailedPrecondition);
}

// The receiver's own checks of a message's content (server/inbound.cc).
absl::Status ReceiverChecks(const v1::CaseMessage& m) {
  absl::Status status =
      casebridge::server::ValidateMessageContent(m, "message");
  if (status.ok()) {
    status = casebridge::server::CheckMessageHandling(m, "message");
  }
  if (status.ok() && m.has_case_reference()) {
    status = casebridge::server::ValidateSharedCase(m.case_reference(),
                                                    "message.case_reference");
  }
  return status;
}

void Received(casebridge::fuzz::Input& in) {
  const std::string held_bytes = in.Bytes(in.U16() % 2048);
  v1::CaseMessage message;
  if (!Parse(std::string(in.rest()), &message)) return;
  if (!ReceiverChecks(message).ok()) return;
  v1::CaseReference held;
  if (!Parse(held_bytes, &held)) return;
  // As a case is stored here: an office's own (OpenCase's checks are
  // stricter) or one the peer shared.
  if (!casebridge::server::ValidateSharedCase(held, "case").ok()) return;
  casebridge::HoldToHeldCase(held, &message);
  const absl::Status after = ReceiverChecks(message);
  if (!after.ok()) {
    std::fprintf(stderr, "held to %s:\n%s\n", held.ShortDebugString().c_str(),
                 after.ToString().c_str());
  }
  FUZZ_CHECK(after.ok());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // protobuf logs every string field it refuses; the refusals are expected.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  casebridge::fuzz::Input in(data, size);
  const uint8_t type = in.U8() % 6;
  const std::string bytes(in.rest());
  switch (type) {
    case 0: {
      v1::OpenCaseRequest r;
      if (!Parse(bytes, &r)) break;
      Check(casebridge::server::CheckRequestFields(r));
      Check(casebridge::server::ValidateOpenCase(r));
      break;
    }
    case 1: {
      v1::UpdateCaseRequest r;
      if (!Parse(bytes, &r)) break;
      Check(casebridge::server::CheckRequestFields(r));
      Check(casebridge::server::ValidateUpdateCase(r));
      break;
    }
    case 2: {
      v1::ListCasesRequest r;
      if (!Parse(bytes, &r)) break;
      Check(casebridge::server::ValidateListCases(r));
      const auto position =
          casebridge::server::DecodePageToken(r.page_token(), r);
      // Unsigned, and any position is the caller's to ask for: a token
      // need not be canonical, only refused clearly when it is not one.
      FUZZ_CHECK(position.ok() || Refusal(position.status()));
      // A token the gateway makes (positions are case sequence numbers,
      // never negative) is read back, for these filters, as it was made.
      const int64_t made_at = std::abs(int64_t{r.page_size()});
      const std::string made = casebridge::server::EncodePageToken(made_at, r);
      const auto back = casebridge::server::DecodePageToken(made, r);
      FUZZ_CHECK(back.ok() && *back == made_at);
      break;
    }
    case 3: {
      v1::SendMessageRequest r;
      if (!Parse(bytes, &r)) break;
      Check(casebridge::server::CheckRequestFields(r));
      Check(casebridge::server::ValidateMessageContent(r.message(), "message"));
      break;
    }
    case 4: {
      v1::CaseMessage m;
      if (!Parse(bytes, &m)) break;
      Check(ReceiverChecks(m));
      break;
    }
    default:
      Received(in);
      break;
  }
  return 0;
}
