#include "core/proto_utf8.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "core/utf8.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace casebridge {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

constexpr int kMaxDepth = 32;

std::string FieldPath(const std::string& prefix, const FieldDescriptor* field,
                      int index) {
  std::string name =
      prefix.empty() ? field->name() : absl::StrCat(prefix, ".", field->name());
  if (field->is_repeated()) absl::StrAppend(&name, "[", index, "]");
  return name;
}

// Returns false on malformed input; sets *found on the first bad string.
bool Walk(const Descriptor* type, CodedInputStream& in,
          const std::string& prefix, int depth,
          std::optional<std::string>* found) {
  if (depth > kMaxDepth) return false;
  std::map<int, int> seen;  // occurrences per field number, for indices
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return true;  // end of input or of the enclosing limit
    const int number = WireFormatLite::GetTagFieldNumber(tag);
    const FieldDescriptor* field = type->FindFieldByNumber(number);
    if (WireFormatLite::GetTagWireType(tag) !=
        WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      if (!WireFormatLite::SkipField(&in, tag)) return false;
      continue;
    }
    uint32_t length = 0;
    if (!in.ReadVarint32(&length)) return false;
    const int index = field != nullptr ? seen[number]++ : 0;
    if (field != nullptr && field->type() == FieldDescriptor::TYPE_STRING) {
      std::string value;
      if (!in.ReadString(&value, static_cast<int>(length))) return false;
      if (!IsValidUtf8(value)) {
        *found = FieldPath(prefix, field, index);
        return true;
      }
    } else if (field != nullptr &&
               field->type() == FieldDescriptor::TYPE_MESSAGE) {
      const auto limit = in.PushLimit(static_cast<int>(length));
      if (!Walk(field->message_type(), in, FieldPath(prefix, field, index),
                depth + 1, found)) {
        return false;
      }
      if (found->has_value()) return true;
      if (!in.ConsumedEntireMessage()) return false;
      in.PopLimit(limit);
    } else {
      if (!in.Skip(static_cast<int>(length))) return false;
    }
  }
}

}  // namespace

std::optional<std::string> FindInvalidUtf8Field(const Descriptor* type,
                                                absl::string_view bytes) {
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                      static_cast<int>(bytes.size()));
  std::optional<std::string> found;
  if (!Walk(type, in, "", 0, &found)) return std::nullopt;
  return found;
}

}  // namespace casebridge
