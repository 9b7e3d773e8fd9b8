// Finding invalid UTF-8 in a protobuf message's wire bytes. proto3 parsers
// refuse such messages without saying which field was at fault; the gateway
// walks the bytes itself so that the refusal can name it.
#ifndef CASEBRIDGE_CORE_PROTO_UTF8_H_
#define CASEBRIDGE_CORE_PROTO_UTF8_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace casebridge {

// The path of the first `string` field in `bytes` (wire format of a message
// of type `type`) whose value is not valid UTF-8, e.g.
// "case_reference.victims[1].remarks". nullopt if every string field is
// valid, or if the bytes are not well-formed wire format (then the parser's
// own refusal stands).
std::optional<std::string> FindInvalidUtf8Field(
    const google::protobuf::Descriptor* type, absl::string_view bytes);

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_PROTO_UTF8_H_
