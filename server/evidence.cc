#include "server/evidence.h"

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "casebridge/v1/exchange.pb.h"
#include "core/grpc_status.h"
#include "core/handling_notice.h"
#include "core/log.h"
#include "core/status_macros.h"

namespace casebridge::server {
namespace {

constexpr absl::Duration kPeerDeadline = absl::Seconds(10);

struct Found {
  bool outgoing = false;
  // Serialized v1.SignedEnvelope, opened if it was sealed; empty if purged.
  std::string signed_envelope;
  std::optional<std::string> receipt;  // serialized v1.SignedReceipt
  uint64_t received_index = 0;         // inbound only
  // Inbound only: the message as stored here (serialized v1.CaseMessage,
  // opened), empty if purged.
  std::string message;
};

// Sets the bundle's held handling when the message as stored here
// (`stored`, serialized; empty if purged or unreadable) is held to more
// than its envelope states. The proof does not depend on it: a stored copy
// that does not parse only leaves it out.
void AddHeldHandling(const std::string& envelope_id, const std::string& stored,
                     v1::EvidenceBundle* bundle) {
  if (stored.empty()) return;
  v1::CaseMessage held;
  v1::Envelope envelope;
  if (!held.ParseFromString(stored) ||
      !envelope.ParseFromString(bundle->envelope().envelope())) {
    log::Warning("evidence.held_handling_unreadable",
                 {{"envelope_id", envelope_id}});
    return;
  }
  const v1::CaseMessage& sent = envelope.message();
  if (held.handling_code() == sent.handling_code() &&
      held.handling_restriction() == sent.handling_restriction()) {
    return;
  }
  bundle->set_held_handling_code(held.handling_code());
  bundle->set_held_handling_restriction(held.handling_restriction());
}

}  // namespace

Evidence::Evidence(sqlite::Database* db, SqliteAuditLog* audit,
                   ChannelSource peer, const RecordSealer* sealer,
                   const WitnessRefusal* refusal)
    : db_(db),
      audit_(audit),
      sealer_(sealer),
      refusal_(refusal),
      peer_(std::move(peer)) {}

absl::Status Evidence::NotCoveredYet(uint64_t index,
                                     const absl::Status& refusal) {
  if (refusal.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "audit entry ", index,
        " is not yet covered by a checkpoint the peer cosigned; try again "
        "in a few seconds"));
  }
  if (refusal.code() == absl::StatusCode::kDataLoss) {  // our own
    return absl::FailedPreconditionError(absl::StrCat(
        "audit entry ", index,
        " is not covered by a checkpoint the peer cosigned, and ",
        refusal.message(),
        ": its log was changed behind its back; its operator must act "
        "(docs/operations.md, checkpoint.failed)"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "audit entry ", index,
      " is not covered by a checkpoint the peer cosigned, and the peer "
      "refuses this gateway's checkpoints (",
      absl::StatusCodeToString(refusal.code()), ": ", refusal.message(),
      "): this log no longer extends what the peer cosigned (restored from a "
      "backup?); the operators of both gateways must settle it "
      "(docs/operations.md, The peer refuses our checkpoints)"));
}

absl::StatusOr<v1::LogEvidence> Evidence::Prove(uint64_t index,
                                                bool with_salt) {
  CB_ASSIGN_OR_RETURN(const auto checkpoint,
                      audit_->CosignedCheckpointCovering(index));
  if (!checkpoint.has_value()) {
    return NotCoveredYet(
        index, refusal_ != nullptr ? refusal_->Get() : absl::OkStatus());
  }
  CB_ASSIGN_OR_RETURN(const auto entries, audit_->Read(index, 1));
  if (entries.empty() || entries.front().index != index) {
    return absl::DataLossError(
        absl::StrCat("audit entry ", index, " is missing"));
  }
  CB_ASSIGN_OR_RETURN(const auto proof,
                      audit_->InclusionProof(index, checkpoint->size));
  v1::LogEvidence out;
  out.set_entry(entries.front().bytes);
  out.set_index(index);
  out.set_checkpoint(checkpoint->note);
  for (const std::string& hash : proof) out.add_inclusion_proof(hash);
  if (with_salt) {
    CB_ASSIGN_OR_RETURN(const auto salt, audit_->PayloadSalt(index));
    if (salt.has_value()) out.set_payload_salt(*salt);
  }
  return out;
}

absl::StatusOr<std::string> Evidence::Opened(sqlite::Connection& conn,
                                             std::string stored, bool sealed,
                                             const std::string& message_id,
                                             const char* field) const {
  if (!sealed || stored.empty()) return stored;
  CB_ASSIGN_OR_RETURN(
      const v1::SignedEnvelope envelope,
      FromStoredEnvelope(sealer_, conn, MessageRecord(message_id), field,
                         stored, sealed));
  return envelope.SerializeAsString();
}

absl::StatusOr<v1::EvidenceBundle> Evidence::LocalPart(
    const std::string& envelope_id) {
  std::optional<Found> found;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(auto out,
                        c.Prepare("SELECT signed_envelope, receipt, sealed, "
                                  "message_id FROM outbox "
                                  "WHERE envelope_id = ?"));
    out.Bind(1, envelope_id);
    CB_ASSIGN_OR_RETURN(const bool sent, out.Step());
    if (sent) {
      Found f;
      f.outgoing = true;
      CB_ASSIGN_OR_RETURN(f.signed_envelope,
                          Opened(c, out.ColumnBlob(0), out.ColumnInt(2) != 0,
                                 out.ColumnText(3), kOutboxEnvelopeField));
      if (!out.ColumnIsNull(1)) f.receipt = out.ColumnBlob(1);
      found = std::move(f);
      return absl::OkStatus();
    }
    CB_ASSIGN_OR_RETURN(
        auto in,
        c.Prepare("SELECT i.signed_envelope, i.receipt, i.audit_index, "
                  "i.sealed, i.message_id, m.body, m.sealed FROM inbound i "
                  "LEFT JOIN messages m ON m.message_id = i.message_id "
                  "WHERE i.envelope_id = ?"));
    in.Bind(1, envelope_id);
    CB_ASSIGN_OR_RETURN(const bool received, in.Step());
    if (received) {
      Found f;
      CB_ASSIGN_OR_RETURN(f.signed_envelope,
                          Opened(c, in.ColumnBlob(0), in.ColumnInt(3) != 0,
                                 in.ColumnText(4), kInboundEnvelopeField));
      f.receipt = in.ColumnBlob(1);
      f.received_index = static_cast<uint64_t>(in.ColumnInt(2));
      if (!in.ColumnIsNull(5)) {
        absl::StatusOr<std::string> message = FromStored(
            sealer_, c, MessageRecord(in.ColumnText(4)), kMessageBodyField,
            in.ColumnBlob(5), in.ColumnInt(6) != 0);
        if (message.ok()) {
          f.message = *std::move(message);
        } else {
          log::Warning("evidence.held_handling_unreadable",
                       {{"envelope_id", envelope_id},
                        {"error", std::string(message.status().message())}});
        }
      }
      found = std::move(f);
    }
    return absl::OkStatus();
  }));
  if (!found.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("envelope ", envelope_id, " was not exchanged here"));
  }
  if (found->signed_envelope.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "envelope ", envelope_id, " was purged under the retention policy"));
  }
  v1::EvidenceBundle bundle;
  if (!bundle.mutable_envelope()->ParseFromString(found->signed_envelope)) {
    return absl::DataLossError(
        absl::StrCat("stored envelope ", envelope_id, " does not parse"));
  }
  if (found->receipt.has_value() &&
      !bundle.mutable_receipt()->ParseFromString(*found->receipt)) {
    return absl::DataLossError(
        absl::StrCat("stored receipt of ", envelope_id, " does not parse"));
  }
  if (found->outgoing) {
    if (!found->receipt.has_value()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "envelope ", envelope_id,
          " has no receipt yet: evidence exists once it is delivered"));
    }
    v1::Envelope envelope;
    if (!envelope.ParseFromString(bundle.envelope().envelope())) {
      return absl::DataLossError(
          absl::StrCat("stored envelope ", envelope_id, " does not parse"));
    }
    CB_ASSIGN_OR_RETURN(*bundle.mutable_sent(),
                        Prove(envelope.origin_audit_index(), false));
  } else {
    CB_ASSIGN_OR_RETURN(*bundle.mutable_received(),
                        Prove(found->received_index, true));
    AddHeldHandling(envelope_id, found->message, &bundle);
  }
  return bundle;
}

absl::StatusOr<v1::EvidenceBundle> Evidence::Bundle(
    const std::string& envelope_id, const grpc::CallbackServerContext* call) {
  CB_ASSIGN_OR_RETURN(v1::EvidenceBundle bundle, LocalPart(envelope_id));
  if (!peer_) {
    return absl::FailedPreconditionError("no peer gateway to ask");
  }
  if (peer_asks_.fetch_add(1) >= kMaxPeerAsks) {
    peer_asks_.fetch_sub(1);
    return absl::UnavailableError(
        "other evidence bundles are waiting for the peer gateway; try again "
        "in a few seconds");
  }
  const absl::Cleanup done = [this] { peer_asks_.fetch_sub(1); };
  std::unique_ptr<grpc::ClientContext> context =
      call != nullptr ? grpc::ClientContext::FromCallbackServerContext(*call)
                      : std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + kPeerDeadline));
  v1::GetEvidenceRequest request;
  request.set_envelope_id(envelope_id);
  v1::GetEvidenceResponse response;
  const grpc::Status status = v1::AuditService::NewStub(peer_())->GetEvidence(
      context.get(), request, &response);
  if (!status.ok()) {
    // The call asking ended first (cancelled, or its deadline, which is the
    // question's too, passed): its own end, not the peer's refusal. (Seen
    // a moment late, it is taken for the peer's silence, as below.)
    if (call != nullptr && call->IsCancelled()) {
      return absl::CancelledError(
          "the call ended while the peer gateway was asked");
    }
    const absl::Status peer = FromGrpcStatus(status);
    // The peer's CANCELLED or DEADLINE_EXCEEDED is not this call's own: as
    // such it would go unaudited. The peer could not be heard in time.
    if (peer.code() == absl::StatusCode::kCancelled ||
        peer.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::UnavailableError(absl::StrCat(
          "the peer gateway: ", absl::StatusCodeToString(peer.code()), ": ",
          peer.message()));
    }
    return absl::Status(peer.code(),
                        absl::StrCat("the peer gateway: ", peer.message()));
  }
  // Fields the peer added that this gateway does not know go no further:
  // the offline verifier refuses a bundle that carries them.
  response.DiscardUnknownFields();
  const v1::EvidenceBundle& theirs = response.bundle();
  if (bundle.has_sent()) {
    if (!theirs.has_received()) {
      return absl::UnavailableError(
          "the peer gateway sent no RECEIVED entry proof");
    }
    v1::Receipt receipt;
    if (!receipt.ParseFromString(bundle.receipt().receipt()) ||
        theirs.received().index() != receipt.receiver_audit_index()) {
      return absl::UnavailableError(
          "the peer gateway's RECEIVED entry is not the one its receipt names");
    }
    *bundle.mutable_received() = theirs.received();
    // The receiver's statement of how it holds the message: kept only if it
    // asks at least what the envelope asks.
    v1::Envelope envelope;
    if (theirs.held_handling_code() != v1::HANDLING_CODE_UNSPECIFIED &&
        envelope.ParseFromString(bundle.envelope().envelope())) {
      if (HandlingAsksAll(theirs.held_handling_code(),
                          theirs.held_handling_restriction(),
                          envelope.message().handling_code(),
                          envelope.message().handling_restriction())) {
        bundle.set_held_handling_code(theirs.held_handling_code());
        bundle.set_held_handling_restriction(
            theirs.held_handling_restriction());
      } else {
        log::Warning("evidence.peer_held_handling_ignored",
                     {{"envelope_id", envelope_id},
                      {"held_under",
                       v1::HandlingCode_Name(theirs.held_handling_code())}});
      }
    }
  } else {
    if (!theirs.has_sent()) {
      return absl::UnavailableError(
          "the peer gateway sent no SENT entry proof");
    }
    v1::Envelope envelope;
    if (!envelope.ParseFromString(bundle.envelope().envelope()) ||
        theirs.sent().index() != envelope.origin_audit_index()) {
      return absl::UnavailableError(
          "the peer gateway's SENT entry is not the one its envelope names");
    }
    *bundle.mutable_sent() = theirs.sent();
  }
  return bundle;
}

absl::StatusOr<std::string> Evidence::EnvelopeOf(
    const std::string& message_id) {
  // A received message is found through its entry's subject rows (indexed),
  // and must be the one its inbound row carried: another subject of the
  // entry (the case's exchange id, the envelope id) is not a message id.
  CB_RETURN_IF_ERROR(audit_->CatchUpTree());
  std::optional<std::string> envelope;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare("SELECT envelope_id FROM outbox WHERE message_id = ?1 "
                  "UNION ALL SELECT i.envelope_id FROM inbound i JOIN "
                  "audit_subjects s ON s.idx = i.audit_index "
                  "WHERE s.subject = ?1 AND i.message_id = ?1 LIMIT 1"));
    stmt.Bind(1, message_id);
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (row) envelope = stmt.ColumnText(0);
    return absl::OkStatus();
  }));
  if (!envelope.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("message ", message_id, " was not exchanged here"));
  }
  return *envelope;
}

absl::StatusOr<bool> Evidence::VisibleTo(const std::string& office,
                                         const std::string& envelope_id) {
  bool visible = false;
  CB_RETURN_IF_ERROR(db_->Read([&](sqlite::Connection& c) -> absl::Status {
    // From the gateway's own records of the envelope, never from audit
    // subjects: a refused call's entry names what its caller sent, so a
    // caller could make an entry pair any envelope with a message of its
    // own. Visible to the office that sent the message the envelope
    // carried, and to each office whose inbox it reached.
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare("SELECT 1 FROM outbox o JOIN messages m "
                  "ON m.message_id = o.message_id "
                  "WHERE o.envelope_id = ?1 AND m.sender_office = ?2 "
                  "UNION ALL SELECT 1 FROM inbound i JOIN inbox x "
                  "ON x.message_id = i.message_id "
                  "WHERE i.envelope_id = ?1 AND x.office = ?2 LIMIT 1"));
    stmt.Bind(1, envelope_id).Bind(2, office);
    CB_ASSIGN_OR_RETURN(visible, stmt.Step());
    return absl::OkStatus();
  }));
  return visible;
}

}  // namespace casebridge::server
