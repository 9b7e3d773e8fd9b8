#include "core/evidence_check.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "casebridge/v1/exchange.pb.h"
#include "core/audit_entry.h"
#include "core/envelope.h"
#include "core/identity.h"
#include "core/ids.h"
#include "core/merkle.h"
#include "core/note.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/unknown_field_set.h"

namespace casebridge::evidence {
namespace {

// No limit of a gateway applies offline; this only bounds the work.
constexpr size_t kMaxEnvelopeBytes = size_t{64} << 20;

constexpr char kReceivedAction[] = "envelope.received";

std::string Quote(absl::string_view s) {
  constexpr size_t kMaxShown = 80;
  const bool cut = s.size() > kMaxShown;
  return absl::StrCat("\"", absl::CHexEscape(s.substr(0, kMaxShown)),
                      cut ? "...\"" : "\"");
}

v1::Country Other(v1::Country c) {
  return c == v1::COUNTRY_PK ? v1::COUNTRY_CN : v1::COUNTRY_PK;
}

std::string Lower(v1::Country c) { return c == v1::COUNTRY_PK ? "pk" : "cn"; }

// The path of the first message inside `message` that carries fields this
// build does not know; nullopt if none.
std::optional<std::string> UnknownFieldsAt(
    const google::protobuf::Message& message, const std::string& path) {
  const google::protobuf::Reflection* reflection = message.GetReflection();
  if (!reflection->GetUnknownFields(message).empty()) return path;
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const google::protobuf::FieldDescriptor* field : fields) {
    if (field->cpp_type() !=
        google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      continue;
    }
    const std::string inner = absl::StrCat(path, ".", field->name());
    if (field->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
        if (auto at = UnknownFieldsAt(
                reflection->GetRepeatedMessage(message, field, i), inner)) {
          return at;
        }
      }
    } else if (auto at = UnknownFieldsAt(reflection->GetMessage(message, field),
                                         inner)) {
      return at;
    }
  }
  return std::nullopt;
}

bool Names(const audit::Entry& entry, const std::string& id) {
  return std::find(entry.subjects.begin(), entry.subjects.end(), id) !=
         entry.subjects.end();
}

// Checks one log's part: `part` is `name` ("sent" or "received") of the
// bundle, in the log of `log_keys`'s gateway, to be cosigned by
// `witness_keys`'s. `expected_index` (named `index_source`) is where the
// envelope or receipt says the entry is. `check_entry` adds the checks
// particular to the entry, run before the checkpoint's. Returns the problem,
// or "" with `*entry` and `*checkpoint_size` set.
std::string CheckLog(
    const v1::LogEvidence& part, absl::string_view name,
    const keys::GatewayKeys& log_keys, const keys::GatewayKeys& witness_keys,
    uint64_t expected_index, absl::string_view index_source,
    const std::function<std::string(const audit::Entry&)>& check_entry,
    audit::Entry* entry, uint64_t* checkpoint_size) {
  auto decoded = audit::Decode(part.entry());
  if (!decoded.ok()) {
    return absl::StrCat(name, ".entry: ", decoded.status().message());
  }
  if (decoded->index != part.index()) {
    return absl::StrCat(name, ".entry: says it is entry ", decoded->index,
                        ", but ", name, ".index is ", part.index());
  }
  if (part.index() != expected_index) {
    return absl::StrCat(name, ".index: is ", part.index(), ", but ",
                        index_source, " is ", expected_index);
  }
  if (std::string problem = check_entry(*decoded); !problem.empty()) {
    return problem;
  }

  auto note = note::Parse(part.checkpoint());
  if (!note.ok()) {
    return absl::StrCat(name, ".checkpoint: ", note.status().message());
  }
  auto checkpoint = note::ParseCheckpoint(note->text);
  if (!checkpoint.ok()) {
    return absl::StrCat(name, ".checkpoint: ", checkpoint.status().message());
  }
  if (checkpoint->origin != log_keys.checkpoint.name) {
    return absl::StrCat(name, ".checkpoint: origin ", Quote(checkpoint->origin),
                        " is not ", log_keys.checkpoint.name);
  }
  // Any key of the right purpose listed in the keys file: offline, what was
  // signed before a rotation stays verifiable.
  if (const auto signed_ok = keys::VerifyNote(*note, log_keys.CheckpointKeys(),
                                              absl::InfinitePast());
      !signed_ok.ok()) {
    return absl::StrCat(name, ".checkpoint.signature: no valid signature by ",
                        log_keys.checkpoint.name, "'s checkpoint key (",
                        signed_ok.status().message(), ")");
  }
  if (auto cosigned = keys::VerifyNoteCosignature(
          *note, witness_keys.WitnessKeys(), absl::InfinitePast());
      !cosigned.ok()) {
    return absl::StrCat(
        name, ".checkpoint.cosignature: no valid cosignature by ",
        witness_keys.witness.name, " (", cosigned.status().message(), ")");
  }
  const std::vector<std::string> proof(part.inclusion_proof().begin(),
                                       part.inclusion_proof().end());
  if (const absl::Status included = merkle::VerifyInclusion(
          part.index(), checkpoint->size, merkle::LeafHash(part.entry()), proof,
          checkpoint->root);
      !included.ok()) {
    return absl::StrCat(name, ".inclusion_proof: ", included.message());
  }
  *entry = *std::move(decoded);
  *checkpoint_size = checkpoint->size;
  return "";
}

}  // namespace

EvidenceReport VerifyEvidence(const v1::EvidenceBundle& bundle,
                              const keys::PublicKeys& keys) {
  EvidenceReport report;
  auto fail = [&](std::string problem) {
    report.problem = std::move(problem);
    return report;
  };

  if (auto at = UnknownFieldsAt(bundle, "bundle")) {
    return fail(absl::StrCat(
        *at,
        ": carries fields this verifier does not know (damaged, or made "
        "by a newer version)"));
  }
  if (!bundle.has_envelope()) return fail("envelope: missing from the bundle");
  if (!bundle.has_receipt()) return fail("receipt: missing from the bundle");
  if (!bundle.has_sent()) return fail("sent: missing from the bundle");
  if (!bundle.has_received()) return fail("received: missing from the bundle");

  // --- envelope: the key that signed it names the origin.
  const v1::SignedEnvelope& signed_envelope = bundle.envelope();
  std::vector<v1::Country> signers;
  for (v1::Country c : {v1::COUNTRY_PK, v1::COUNTRY_CN}) {
    if (keys.For(c)->envelope.Find(signed_envelope.key_id()) != nullptr) {
      signers.push_back(c);
    }
  }
  if (signers.empty()) {
    return fail(
        absl::StrCat("envelope.key_id: ", Quote(signed_envelope.key_id()),
                     " is neither gateway's envelope key"));
  }
  auto envelope = exchange::VerifyEnvelope(
      signed_envelope, keys.For(signers.front())->envelope, kMaxEnvelopeBytes);
  if (!envelope.ok()) {
    return fail(absl::StrCat("envelope.", envelope.status().message()));
  }
  for (v1::Country c : signers) {
    if (envelope->origin_gateway() == GatewayIdentity(c)) report.origin = c;
  }
  if (report.origin == v1::COUNTRY_UNSPECIFIED) {
    return fail(absl::StrCat(
        "envelope.origin_gateway: ", Quote(envelope->origin_gateway()),
        " is not the gateway whose key signed the envelope (",
        GatewayIdentity(signers.front()), ")"));
  }
  report.receiver = Other(report.origin);
  if (envelope->destination_gateway() != GatewayIdentity(report.receiver)) {
    return fail(absl::StrCat("envelope.destination_gateway: ",
                             Quote(envelope->destination_gateway()), " is not ",
                             GatewayIdentity(report.receiver)));
  }
  if (!IsValidId(envelope->envelope_id(), report.origin, IdKind::kEnvelope)) {
    return fail(
        absl::StrCat("envelope.envelope_id: ", Quote(envelope->envelope_id()),
                     " is not an envelope id of ", CountryCode(report.origin)));
  }
  report.envelope_id = envelope->envelope_id();
  report.message_id = envelope->message().message_id();
  const keys::GatewayKeys& origin_keys = *keys.For(report.origin);
  const keys::GatewayKeys& receiver_keys = *keys.For(report.receiver);

  // --- receipt: by the receiver, for these bytes.
  auto receipt =
      exchange::VerifyReceipt(bundle.receipt(), receiver_keys.envelope);
  if (!receipt.ok()) {
    return fail(absl::StrCat("receipt.", receipt.status().message()));
  }
  if (const absl::Status matches = exchange::CheckReceiptMatches(
          *receipt, signed_envelope, GatewayIdentity(report.receiver));
      !matches.ok()) {
    return fail(absl::StrCat("receipt.", matches.message()));
  }

  // --- sent: the origin's entry recording the send.
  audit::Entry sent;
  std::string problem = CheckLog(
      bundle.sent(), "sent", origin_keys, receiver_keys,
      envelope->origin_audit_index(), "envelope.origin_audit_index",
      [&](const audit::Entry& e) -> std::string {
        const std::string& office = envelope->message().sender_office();
        if (e.actor != office) {
          return absl::StrCat("sent.entry: was made by ", Quote(e.actor),
                              ", not the sending office ", Quote(office));
        }
        if (e.status_code != 0) {
          return absl::StrCat("sent.entry: records a refusal (status code ",
                              e.status_code, ")");
        }
        // The calls that queue an envelope; another entry naming the same
        // ids (its cancel, say) is no record of the send.
        if (e.action != "message.send" && e.action != "case.share" &&
            e.action != "case.grant" && e.action != "case.withdraw_grant") {
          return absl::StrCat("sent.entry: records ", Quote(e.action),
                              ", not a send (message.send, case.share, "
                              "case.grant or case.withdraw_grant)");
        }
        if (!Names(e, report.envelope_id)) {
          return absl::StrCat("sent.entry: does not name envelope ",
                              report.envelope_id);
        }
        if (!Names(e, report.message_id)) {
          return absl::StrCat("sent.entry: does not name message ",
                              Quote(report.message_id));
        }
        return "";
      },
      &sent, &report.sent_checkpoint_size);
  if (!problem.empty()) return fail(std::move(problem));
  report.sent_index = sent.index;

  // --- received: the receiver's entry recording the receipt.
  audit::Entry received;
  problem = CheckLog(
      bundle.received(), "received", receiver_keys, origin_keys,
      receipt->receiver_audit_index(), "receipt.receiver_audit_index",
      [&](const audit::Entry& e) -> std::string {
        if (e.action != kReceivedAction) {
          return absl::StrCat("received.entry: action is ", Quote(e.action),
                              ", not ", kReceivedAction);
        }
        const std::string origin_gateway = GatewayIdentity(report.origin);
        if (e.actor != origin_gateway) {
          return absl::StrCat("received.entry: was made by ", Quote(e.actor),
                              ", not the origin gateway ", origin_gateway);
        }
        if (e.status_code != 0) {
          return absl::StrCat("received.entry: records a refusal (status code ",
                              e.status_code, ")");
        }
        if (!Names(e, report.envelope_id)) {
          return absl::StrCat("received.entry: does not name envelope ",
                              report.envelope_id);
        }
        if (!Names(e, report.message_id)) {
          return absl::StrCat("received.entry: does not name message ",
                              Quote(report.message_id));
        }
        return "";
      },
      &received, &report.received_checkpoint_size);
  if (!problem.empty()) return fail(std::move(problem));
  report.received_index = received.index;

  // The RECEIVED entry commits to the origin's signature: what ties the
  // receiver's log to this very envelope, not just to its id.
  const std::string& salt = bundle.received().payload_salt();
  if (salt.empty()) {
    report.notes.push_back(absl::StrCat(
        "payload purged: ", Lower(report.receiver),
        "'s salt of the RECEIVED entry was deleted under retention, so its "
        "payload hash can no longer be tied to the envelope's signature"));
  } else if (audit::PayloadHash(salt, signed_envelope.signature()) !=
             received.payload_hash) {
    return fail(
        "received.payload_salt: SHA-256(payload_salt || envelope signature) "
        "is not the RECEIVED entry's payload_hash");
  }
  if (bundle.held_handling_code() != v1::HANDLING_CODE_UNSPECIFIED) {
    report.notes.push_back(absl::StrCat(
        "held handling: ", Lower(report.receiver),
        " states it holds the message to more than the envelope asks (its "
        "copy of the case differs); that statement is not signed and not "
        "verified"));
  }
  return report;
}

}  // namespace casebridge::evidence
