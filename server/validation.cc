#include "server/validation.h"

#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/identity.h"
#include "core/status_macros.h"
#include "core/utf8.h"
#include "google/protobuf/unknown_field_set.h"

namespace casebridge::server {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

std::string Field(absl::string_view prefix, absl::string_view name) {
  return prefix.empty() ? std::string(name) : absl::StrCat(prefix, ".", name);
}

absl::Status CheckEvaluation(absl::string_view field, const v1::Evaluation& e) {
  if (!v1::SourceReliability_IsValid(e.source_reliability()) ||
      e.source_reliability() == v1::SOURCE_RELIABILITY_UNSPECIFIED) {
    return Invalid(Field(field, "source_reliability"),
                   "is required (A, B, C, D or X)");
  }
  if (!v1::InformationAccuracy_IsValid(e.information_accuracy()) ||
      e.information_accuracy() == v1::INFORMATION_ACCURACY_UNSPECIFIED) {
    return Invalid(Field(field, "information_accuracy"),
                   "is required (1, 2, 3 or 4)");
  }
  return absl::OkStatus();
}

absl::Status CheckHandlingCode(absl::string_view field, v1::HandlingCode code) {
  if (!v1::HandlingCode_IsValid(code) ||
      code == v1::HANDLING_CODE_UNSPECIFIED) {
    return Invalid(field, "is required (H0, H1, H2 or H3)");
  }
  return absl::OkStatus();
}

absl::Status CheckCategory(absl::string_view field, v1::CaseCategory category) {
  if (!v1::CaseCategory_IsValid(category) ||
      category == v1::CASE_CATEGORY_UNSPECIFIED) {
    return Invalid(field, "is required");
  }
  return absl::OkStatus();
}

absl::Status CheckVictims(absl::string_view prefix,
                          const v1::CaseReference& c) {
  const std::string field = Field(prefix, "victims");
  if (static_cast<size_t>(c.victims_size()) > kMaxVictims) {
    return Invalid(field, absl::StrCat("at most ", kMaxVictims, " entries"));
  }
  std::set<std::string> seen;
  for (int i = 0; i < c.victims_size(); ++i) {
    const std::string item = absl::StrCat(field, "[", i, "]");
    const v1::VictimReference& v = c.victims(i);
    // Empty: the gateway mints one when it stores the case (pseudonymous by
    // default, docs/storage.md#data-protection).
    CB_RETURN_IF_ERROR(CheckText(Field(item, "pseudonym"), v.pseudonym(), 0,
                                 kMaxPseudonymChars));
    if (!v.pseudonym().empty() && !seen.insert(v.pseudonym()).second) {
      return Invalid(Field(item, "pseudonym"), "is used twice in this case");
    }
    CB_RETURN_IF_ERROR(
        CheckText(Field(item, "remarks"), v.remarks(), 0, kMaxRemarksChars));
  }
  return absl::OkStatus();
}

absl::Status CheckLocations(absl::string_view prefix,
                            const v1::CaseReference& c) {
  const std::string field = Field(prefix, "last_known_locations");
  if (static_cast<size_t>(c.last_known_locations_size()) > kMaxLocations) {
    return Invalid(field, absl::StrCat("at most ", kMaxLocations, " entries"));
  }
  for (int i = 0; i < c.last_known_locations_size(); ++i) {
    const std::string item = absl::StrCat(field, "[", i, "]");
    const v1::Location& l = c.last_known_locations(i);
    CB_RETURN_IF_ERROR(CheckText(Field(item, "description"), l.description(), 1,
                                 kMaxLocationChars));
    if (!v1::Country_IsValid(l.country()) ||
        l.country() == v1::COUNTRY_UNSPECIFIED) {
      return Invalid(Field(item, "country"), "is required (PK or CN)");
    }
    if (l.has_observed_at()) {
      CB_RETURN_IF_ERROR(
          CheckTimestamp(Field(item, "observed_at"), l.observed_at()));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSizesUnder(const google::protobuf::Message& message,
                             const std::string& prefix) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* reflection = message.GetReflection();
  if (const google::protobuf::UnknownFieldSet& unknown =
          reflection->GetUnknownFields(message);
      !unknown.empty()) {
    return Invalid(
        prefix.empty() ? "request" : prefix,
        absl::StrCat("carries field number ", unknown.field(0).number(),
                     ", which this gateway does not know (is the "
                     "client newer than the gateway?)"));
  }
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  std::string scratch;
  for (const FieldDescriptor* f : fields) {
    const std::string name = Field(prefix, f->name());
    const int count = f->is_repeated() ? reflection->FieldSize(message, f) : 1;
    for (int i = 0; i < count; ++i) {
      const std::string path =
          f->is_repeated() ? absl::StrCat(name, "[", i, "]") : name;
      if (f->type() == FieldDescriptor::TYPE_STRING ||
          f->type() == FieldDescriptor::TYPE_BYTES) {
        const std::string& value =
            f->is_repeated()
                ? reflection->GetRepeatedStringReference(message, f, i,
                                                         &scratch)
                : reflection->GetStringReference(message, f, &scratch);
        const size_t max = MaxFieldBytes(f->full_name());
        if (value.size() > max) {
          return Invalid(path, absl::StrCat("is longer than ", max, " bytes"));
        }
      } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        CB_RETURN_IF_ERROR(CheckSizesUnder(
            f->is_repeated() ? reflection->GetRepeatedMessage(message, f, i)
                             : reflection->GetMessage(message, f),
            path));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTimestamp(absl::string_view field,
                            const google::protobuf::Timestamp& t) {
  // 0001-01-01 .. 9999-12-31, as google.protobuf.Timestamp defines.
  if (t.seconds() < -62135596800 || t.seconds() > 253402300799 ||
      t.nanos() < 0 || t.nanos() > 999999999) {
    return Invalid(field, "is not a valid timestamp");
  }
  return absl::OkStatus();
}

size_t MaxFieldBytes(absl::string_view full_name) {
  // Text fields: 4 bytes (the longest UTF-8 character) per character of
  // their limit in docs/api.md#field-rules.
  static const auto* kLimits = new std::map<std::string, size_t, std::less<>>{
      {"casebridge.v1.CaseReference.local_reference",
       4 * kMaxLocalReferenceChars},
      {"casebridge.v1.CaseReference.summary", 4 * kMaxSummaryChars},
      {"casebridge.v1.CaseReference.handling_restriction",
       4 * kMaxRestrictionChars},
      {"casebridge.v1.VictimReference.pseudonym", 4 * kMaxPseudonymChars},
      {"casebridge.v1.VictimReference.remarks", 4 * kMaxRemarksChars},
      {"casebridge.v1.Location.description", 4 * kMaxLocationChars},
      {"casebridge.v1.CaseMessage.body", 4 * kMaxMessageBodyChars},
      {"casebridge.v1.CaseMessage.in_reply_to", 4 * 64},
      {"casebridge.v1.ListCasesRequest.text", 4 * kMaxSearchTextChars},
      {"casebridge.v1.AcknowledgeRequest.note", 4 * 1000},
      {"casebridge.v1.CancelMessageRequest.reason", 4 * kMaxCancelReasonChars},
  };
  auto it = kLimits->find(full_name);
  return it == kLimits->end() ? kDefaultMaxFieldBytes : it->second;
}

absl::Status CheckRequestFields(const google::protobuf::Message& request) {
  return CheckSizesUnder(request, "");
}

std::string Quote(absl::string_view text) {
  if (!IsValidUtf8(text)) return "\"(not UTF-8)\"";
  std::string out;
  for (size_t i = 0; i < text.size() && out.size() < 64;) {
    if (const size_t control = ControlCharacterAt(text, i, true)) {
      out.push_back('?');
      i += control;
    } else {
      out.push_back(text[i++]);
    }
  }
  // Never end inside a multi-byte character.
  while (!out.empty() && !IsValidUtf8(out)) out.pop_back();
  if (out.size() < text.size()) out += "…";
  return absl::StrCat("\"", out, "\"");
}

absl::Status CheckText(absl::string_view field, absl::string_view value,
                       size_t min, size_t max) {
  const std::optional<size_t> length = Utf8Length(value);
  if (!length.has_value()) return Invalid(field, "is not valid UTF-8");
  if (*length < min) {
    return Invalid(
        field, min == 1 ? "is required"
                        : absl::StrCat("needs at least ", min, " characters"));
  }
  if (*length > max) {
    return Invalid(field, absl::StrCat("is longer than ", max, " characters"));
  }
  for (size_t i = 0; i < value.size(); ++i) {
    if (ControlCharacterAt(value, i)) {
      return Invalid(field, "contains a control character");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckExchangeId(absl::string_view field, absl::string_view value) {
  // <PK|CN>-<4 digits>-<6 digits>
  auto digits = [&](size_t from, size_t n) {
    for (size_t i = from; i < from + n; ++i) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(value[i])))
        return false;
    }
    return true;
  };
  if (value.empty()) return Invalid(field, "is required");
  if (value.size() != 14 ||
      !(value.substr(0, 3) == "PK-" || value.substr(0, 3) == "CN-") ||
      !digits(3, 4) || value[7] != '-' || !digits(8, 6)) {
    return Invalid(field, absl::StrCat(Quote(value),
                                       " is not an exchange id like "
                                       "PK-2026-000123"));
  }
  return absl::OkStatus();
}

absl::Status CheckRequestId(absl::string_view field, absl::string_view value) {
  if (value.empty()) return absl::OkStatus();
  if (value.size() > 64) return Invalid(field, "is longer than 64 characters");
  for (const char c : value) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-') {
      return Invalid(field, "may only hold A-Z, a-z, 0-9, '.', '_' and '-'");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateMessageContent(const v1::CaseMessage& m,
                                    absl::string_view prefix) {
  const std::string p(prefix);
  CB_RETURN_IF_ERROR(CheckExchangeId(Field(p, "exchange_id"), m.exchange_id()));
  if (!v1::MessageKind_IsValid(m.kind()) ||
      m.kind() == v1::MESSAGE_KIND_UNSPECIFIED) {
    return Invalid(Field(p, "kind"), "is required");
  }
  if (!v1::Priority_IsValid(m.priority()) ||
      m.priority() == v1::PRIORITY_UNSPECIFIED) {
    return Invalid(Field(p, "priority"),
                   "is required (ROUTINE, PRIORITY or URGENT)");
  }
  const bool update = m.kind() == v1::MESSAGE_KIND_RESCUE_UPDATE;
  if (!v1::RescueStage_IsValid(m.rescue_stage())) {
    return Invalid(Field(p, "rescue_stage"), "is not a known stage");
  }
  if (update && m.rescue_stage() == v1::RESCUE_STAGE_UNSPECIFIED) {
    return Invalid(Field(p, "rescue_stage"), "is required with RESCUE_UPDATE");
  }
  if (!update && m.rescue_stage() != v1::RESCUE_STAGE_UNSPECIFIED) {
    return Invalid(Field(p, "rescue_stage"),
                   "is only allowed with RESCUE_UPDATE");
  }
  const bool share = m.kind() == v1::MESSAGE_KIND_CASE_SHARE;
  CB_RETURN_IF_ERROR(CheckText(Field(p, "body"), m.body(), share ? 0 : 1,
                               kMaxMessageBodyChars));
  if (share != m.has_case_reference()) {
    return Invalid(Field(p, "case_reference"),
                   share ? "is required with CASE_SHARE"
                         : "is only allowed with CASE_SHARE");
  }
  const bool grant = m.kind() == v1::MESSAGE_KIND_DISSEMINATION_GRANT ||
                     m.kind() == v1::MESSAGE_KIND_DISSEMINATION_WITHDRAWAL;
  if (grant != m.has_dissemination_grant()) {
    return Invalid(Field(p, "dissemination_grant"),
                   grant ? "is required with DISSEMINATION_GRANT and "
                           "DISSEMINATION_WITHDRAWAL"
                         : "is only allowed with DISSEMINATION_GRANT and "
                           "DISSEMINATION_WITHDRAWAL");
  }
  if (grant) {
    const v1::DisseminationGrant& g = m.dissemination_grant();
    const std::string field = Field(p, "dissemination_grant");
    if (g.any_office() == (g.offices_size() > 0)) {
      return Invalid(field,
                     "exactly one of offices and any_office is required");
    }
    if (static_cast<size_t>(g.offices_size()) > kMaxGrantOffices) {
      return Invalid(Field(field, "offices"),
                     absl::StrCat("at most ", kMaxGrantOffices, " entries"));
    }
    for (int i = 0; i < g.offices_size(); ++i) {
      CB_RETURN_IF_ERROR(CheckText(absl::StrCat(field, ".offices[", i, "]"),
                                   g.offices(i), 1, 256));
    }
  }
  const bool reply = m.kind() == v1::MESSAGE_KIND_INFORMATION_RESPONSE ||
                     m.kind() == v1::MESSAGE_KIND_ACKNOWLEDGEMENT;
  if (reply && m.in_reply_to().empty()) {
    return Invalid(Field(p, "in_reply_to"), "is required with this kind");
  }
  CB_RETURN_IF_ERROR(
      CheckText(Field(p, "in_reply_to"), m.in_reply_to(), 0, 64));
  if (!v1::HandlingCode_IsValid(m.handling_code())) {
    return Invalid(Field(p, "handling_code"), "is not a known handling code");
  }
  CB_RETURN_IF_ERROR(CheckText(Field(p, "handling_restriction"),
                               m.handling_restriction(), 0,
                               kMaxRestrictionChars));
  if (!m.handling_restriction().empty() &&
      m.handling_code() != v1::HANDLING_CODE_UNSPECIFIED &&
      m.handling_code() != v1::HANDLING_CODE_H3) {
    return Invalid(Field(p, "handling_restriction"),
                   "is only allowed with handling code H3");
  }
  if (m.has_evaluation()) {
    CB_RETURN_IF_ERROR(CheckEvaluation(Field(p, "evaluation"), m.evaluation()));
  }
  return absl::OkStatus();
}

absl::Status ValidateCaseConsistency(const v1::CaseReference& c,
                                     absl::string_view prefix) {
  if (c.handling_code() == v1::HANDLING_CODE_H3) {
    if (c.handling_restriction().empty()) {
      return Invalid(Field(prefix, "handling_restriction"),
                     "is required with handling code H3");
    }
  } else if (!c.handling_restriction().empty()) {
    return Invalid(Field(prefix, "handling_restriction"),
                   "is only allowed with handling code H3");
  }
  return absl::OkStatus();
}

absl::Status ValidateOpenCase(const v1::OpenCaseRequest& request) {
  CB_RETURN_IF_ERROR(CheckRequestId("request_id", request.request_id()));
  if (!request.has_case_reference()) {
    return Invalid("case_reference", "is required");
  }
  const v1::CaseReference& c = request.case_reference();
  const std::string p = "case_reference";
  // Output-only fields: the gateway sets them.
  if (!c.exchange_id().empty())
    return Invalid(Field(p, "exchange_id"), "is output only");
  if (c.status() != v1::CASE_STATUS_UNSPECIFIED)
    return Invalid(Field(p, "status"), "is output only (new cases are OPEN)");
  if (!c.owner_office().empty())
    return Invalid(Field(p, "owner_office"), "is output only");
  if (c.origin_country() != v1::COUNTRY_UNSPECIFIED)
    return Invalid(Field(p, "origin_country"), "is output only");
  if (c.version() != 0) return Invalid(Field(p, "version"), "is output only");
  if (c.has_created_at())
    return Invalid(Field(p, "created_at"), "is output only");
  if (c.has_updated_at())
    return Invalid(Field(p, "updated_at"), "is output only");
  if (!c.updated_by().empty())
    return Invalid(Field(p, "updated_by"), "is output only");
  if (!c.handling_notice().empty())
    return Invalid(Field(p, "handling_notice"), "is output only");
  if (c.has_personal_data_purged_at())
    return Invalid(Field(p, "personal_data_purged_at"), "is output only");

  // The content as the peer's copy is held to it, and an evaluation.
  CB_RETURN_IF_ERROR(ValidateSharedCase(c, p));
  if (!c.has_evaluation())
    return Invalid(Field(p, "evaluation"), "is required");
  return absl::OkStatus();
}

absl::Status ValidateSharedCase(const v1::CaseReference& c,
                                absl::string_view prefix) {
  CB_RETURN_IF_ERROR(CheckText(Field(prefix, "local_reference"),
                               c.local_reference(), 1,
                               kMaxLocalReferenceChars));
  CB_RETURN_IF_ERROR(CheckCategory(Field(prefix, "category"), c.category()));
  CB_RETURN_IF_ERROR(
      CheckText(Field(prefix, "summary"), c.summary(), 1, kMaxSummaryChars));
  CB_RETURN_IF_ERROR(CheckVictims(prefix, c));
  CB_RETURN_IF_ERROR(CheckLocations(prefix, c));
  CB_RETURN_IF_ERROR(
      CheckHandlingCode(Field(prefix, "handling_code"), c.handling_code()));
  CB_RETURN_IF_ERROR(CheckText(Field(prefix, "handling_restriction"),
                               c.handling_restriction(), 0,
                               kMaxRestrictionChars));
  if (c.has_evaluation()) {
    CB_RETURN_IF_ERROR(
        CheckEvaluation(Field(prefix, "evaluation"), c.evaluation()));
  }
  return ValidateCaseConsistency(c, prefix);
}

absl::Status ValidatePeerRecordFields(const v1::CaseReference& c,
                                      v1::Country peer_country,
                                      absl::string_view prefix) {
  if (c.has_created_at()) {
    CB_RETURN_IF_ERROR(
        CheckTimestamp(Field(prefix, "created_at"), c.created_at()));
  }
  if (c.has_updated_at()) {
    CB_RETURN_IF_ERROR(
        CheckTimestamp(Field(prefix, "updated_at"), c.updated_at()));
  }
  auto peer_office = [&](absl::string_view field,
                         const std::string& value) -> absl::Status {
    const absl::StatusOr<SpiffeId> id = ParseSpiffeId(value);
    if (!id.ok() || id->country != peer_country ||
        id->kind != PrincipalKind::kOffice) {
      return Invalid(Field(prefix, field),
                     absl::StrCat(Quote(value),
                                  " is not an office of the peer's country"));
    }
    return absl::OkStatus();
  };
  CB_RETURN_IF_ERROR(peer_office("owner_office", c.owner_office()));
  if (!c.updated_by().empty()) {
    CB_RETURN_IF_ERROR(peer_office("updated_by", c.updated_by()));
  }
  return absl::OkStatus();
}

absl::Status ValidateUpdateCase(const v1::UpdateCaseRequest& request) {
  if (!request.has_case_reference()) {
    return Invalid("case_reference", "is required");
  }
  const v1::CaseReference& c = request.case_reference();
  const std::string p = "case_reference";
  CB_RETURN_IF_ERROR(CheckExchangeId(Field(p, "exchange_id"), c.exchange_id()));
  if (request.expected_version() <= 0) {
    return Invalid("expected_version",
                   "is required: the version you read (1 or more)");
  }
  if (request.update_mask().paths_size() == 0) {
    return Invalid("update_mask", "must name at least one field");
  }
  for (const std::string& path : request.update_mask().paths()) {
    if (path == "status") {
      if (!v1::CaseStatus_IsValid(c.status()) ||
          c.status() == v1::CASE_STATUS_UNSPECIFIED) {
        return Invalid(Field(p, "status"), "is required when updated");
      }
    } else if (path == "summary") {
      CB_RETURN_IF_ERROR(
          CheckText(Field(p, "summary"), c.summary(), 1, kMaxSummaryChars));
    } else if (path == "local_reference") {
      CB_RETURN_IF_ERROR(CheckText(Field(p, "local_reference"),
                                   c.local_reference(), 1,
                                   kMaxLocalReferenceChars));
    } else if (path == "victims") {
      CB_RETURN_IF_ERROR(CheckVictims(p, c));
    } else if (path == "last_known_locations") {
      CB_RETURN_IF_ERROR(CheckLocations(p, c));
    } else if (path == "handling_code") {
      CB_RETURN_IF_ERROR(
          CheckHandlingCode(Field(p, "handling_code"), c.handling_code()));
    } else if (path == "handling_restriction") {
      CB_RETURN_IF_ERROR(CheckText(Field(p, "handling_restriction"),
                                   c.handling_restriction(), 0,
                                   kMaxRestrictionChars));
    } else if (path == "evaluation") {
      CB_RETURN_IF_ERROR(
          CheckEvaluation(Field(p, "evaluation"), c.evaluation()));
    } else {
      return Invalid("update_mask",
                     absl::StrCat(Quote(path),
                                  " cannot be updated (allowed: status, "
                                  "summary, local_reference, victims, "
                                  "last_known_locations, handling_code, "
                                  "handling_restriction, evaluation)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateListCases(const v1::ListCasesRequest& request) {
  if (!v1::CaseStatus_IsValid(request.status())) {
    return Invalid("status", "is not a known case status");
  }
  if (!v1::CaseCategory_IsValid(request.category())) {
    return Invalid("category", "is not a known category");
  }
  if (!request.owner_office().empty()) {
    auto id = ParseSpiffeId(request.owner_office());
    if (!id.ok() || id->kind == PrincipalKind::kGateway) {
      return Invalid("owner_office", "is not an office or auditor SPIFFE id");
    }
  }
  CB_RETURN_IF_ERROR(CheckText("text", request.text(), 0, kMaxSearchTextChars));
  if (request.page_size() < 0 || request.page_size() > kMaxPageSize) {
    return Invalid("page_size",
                   absl::StrCat("must be between 1 and ", kMaxPageSize,
                                " (0 for ", kDefaultPageSize, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckTransition(v1::CaseStatus from, v1::CaseStatus to) {
  using S = v1::CaseStatus;
  if (from == to) return absl::OkStatus();
  auto allowed = [](S f, S t) {
    switch (f) {
      case v1::CASE_STATUS_OPEN:
        return t == v1::CASE_STATUS_UNDER_INVESTIGATION ||
               t == v1::CASE_STATUS_VICTIM_LOCATED ||
               t == v1::CASE_STATUS_CLOSED;
      case v1::CASE_STATUS_UNDER_INVESTIGATION:
        return t == v1::CASE_STATUS_VICTIM_LOCATED ||
               t == v1::CASE_STATUS_CLOSED;
      case v1::CASE_STATUS_VICTIM_LOCATED:
        return t == v1::CASE_STATUS_VICTIM_RESCUED ||
               t == v1::CASE_STATUS_UNDER_INVESTIGATION ||
               t == v1::CASE_STATUS_CLOSED;
      case v1::CASE_STATUS_VICTIM_RESCUED:
        return t == v1::CASE_STATUS_REPATRIATED || t == v1::CASE_STATUS_CLOSED;
      case v1::CASE_STATUS_REPATRIATED:
        return t == v1::CASE_STATUS_CLOSED;
      case v1::CASE_STATUS_CLOSED:
        return t == v1::CASE_STATUS_UNDER_INVESTIGATION;  // reopened
      default:
        return false;
    }
  };
  if (!allowed(from, to)) {
    return absl::FailedPreconditionError(
        absl::StrCat("case_reference.status: a case cannot go from ",
                     v1::CaseStatus_Name(from), " to ", v1::CaseStatus_Name(to),
                     " (see docs/api.md#status-transitions)"));
  }
  return absl::OkStatus();
}

}  // namespace casebridge::server
