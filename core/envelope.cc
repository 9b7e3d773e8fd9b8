#include "core/envelope.h"

#include <climits>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/proto_utf8.h"
#include "core/status_macros.h"
#include "core/status_mark.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message.h"
#include "google/protobuf/unknown_field_set.h"

namespace casebridge::exchange {
namespace {

// What differs between envelopes and receipts.
struct Kind {
  absl::string_view name;       // "envelope" / "receipt", as in messages
  absl::string_view context;    // signed before the bytes
  absl::string_view type_name;  // full protobuf name, as in messages
};

constexpr Kind kEnvelope = {"envelope", kEnvelopeContext,
                            "casebridge.v1.Envelope"};
constexpr Kind kReceipt = {"receipt", kReceiptContext, "casebridge.v1.Receipt"};

// A key id sent by the peer, fit for an error message and the audit log.
std::string QuoteKeyId(absl::string_view key_id) {
  if (key_id.empty()) return "(empty)";
  if (key_id.size() > 64) return "(unprintable)";
  for (const char c : key_id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c))) {
      return "(unprintable)";
    }
  }
  return std::string(key_id);
}

absl::Status DoesNotVerify(absl::string_view key_id) {
  return Permanently(absl::UnauthenticatedError(
      absl::StrCat("signature: does not verify for key ", QuoteKeyId(key_id))));
}

// Deterministic serialization: map entries sorted by key, so the same
// message made twice signs the same bytes. (Determinism is a convenience,
// not a contract: verification never re-serializes.)
absl::StatusOr<std::string> Serialize(const google::protobuf::Message& message,
                                      const Kind& kind) {
  std::string bytes;
  bool ok = false;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    ok = message.SerializeToCodedStream(&coded) && !coded.HadError();
  }
  if (!ok) {
    return absl::InternalError(
        absl::StrCat("serializing the ", kind.name, " failed"));
  }
  // proto3 serializes invalid UTF-8 in string fields but no parser accepts
  // it back: refuse to sign what the peer could not read.
  if (const std::optional<std::string> field =
          FindInvalidUtf8Field(message.GetDescriptor(), bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind.name, ".", *field, ": not valid UTF-8"));
  }
  return bytes;
}

absl::StatusOr<std::string> SignBytes(absl::string_view bytes, const Kind& kind,
                                      const crypto::Ed25519Signer& signer) {
  return signer.Sign(absl::StrCat(kind.context, bytes));
}

// Steps 1-3 of VerifyEnvelope (size, key, signature) for either kind.
absl::Status Authenticate(absl::string_view bytes, absl::string_view signature,
                          absl::string_view key_id, const KeyRing& keys,
                          size_t max_bytes, const Kind& kind) {
  if (bytes.size() > max_bytes) {
    return Permanently(absl::ResourceExhaustedError(
        absl::StrCat(kind.name, ": ", bytes.size(),
                     " bytes exceeds the limit of ", max_bytes)));
  }
  CB_ASSIGN_OR_RETURN(const crypto::Ed25519Verifier* verifier,
                      keys.Trusted(key_id));
  if (signature.size() != crypto::kEd25519SignatureSize) {
    return DoesNotVerify(key_id);
  }
  absl::Status verified =
      verifier->Verify(absl::StrCat(kind.context, bytes), signature);
  if (verified.code() == absl::StatusCode::kUnauthenticated) {
    return DoesNotVerify(key_id);
  }
  return verified;  // OK, or INTERNAL if OpenSSL itself failed
}

// Step 4: parses bytes that have been authenticated.
absl::Status Parse(absl::string_view bytes, const Kind& kind,
                   google::protobuf::Message* message) {
  if (bytes.size() > static_cast<size_t>(INT_MAX) ||
      !message->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind.name, ": not a well-formed ", kind.type_name));
  }
  return absl::OkStatus();
}

// The payload that marks a permanent refusal (Permanently).
constexpr char kPermanentPayload[] = "type.casebridge.dev/refusal.permanent";

}  // namespace

absl::Status Permanently(absl::Status refusal) {
  return WithMark(std::move(refusal), kPermanentPayload);
}

bool IsMarkedPermanent(const absl::Status& refusal) {
  return HasMark(refusal, kPermanentPayload);
}

std::string KeyId(absl::string_view raw_public_key) {
  crypto::Sha256Hasher hasher;
  hasher.Update(kKeyIdContext);
  hasher.Update(raw_public_key);
  const std::string digest = hasher.Finish();
  return crypto::HexEncode(
      absl::string_view(digest).substr(0, kKeyIdLength / 2));
}

// --- KeyRing -----------------------------------------------------------------

absl::StatusOr<KeyRing> KeyRing::FromPemFiles(
    const std::vector<std::string>& paths) {
  if (paths.empty()) {
    return absl::InvalidArgumentError("key ring: no public key files given");
  }
  KeyRing ring;
  for (const std::string& path : paths) {
    CB_ASSIGN_OR_RETURN(std::unique_ptr<crypto::Ed25519Verifier> verifier,
                        crypto::Ed25519Verifier::FromPemFile(path));
    const absl::Status added = ring.Add(std::move(verifier));
    if (!added.ok()) {
      return absl::Status(added.code(),
                          absl::StrCat(path, ": ", added.message()));
    }
  }
  return ring;
}

absl::Status KeyRing::Add(std::unique_ptr<crypto::Ed25519Verifier> verifier,
                          absl::Time trusted_until) {
  if (verifier == nullptr) {
    return absl::InvalidArgumentError("key ring: null verifier");
  }
  std::string key_id = KeyId(verifier->public_key());
  if (Find(key_id) != nullptr) {
    return absl::AlreadyExistsError(
        absl::StrCat("key ", key_id, " is already in the key ring"));
  }
  keys_.push_back(Key{std::move(key_id), std::move(verifier), trusted_until});
  return absl::OkStatus();
}

const KeyRing::Key* KeyRing::Lookup(absl::string_view key_id) const {
  // A handful of keys at most (one, two while rotating): a scan is fine.
  for (const Key& key : keys_) {
    if (key.id == key_id) return &key;
  }
  return nullptr;
}

const crypto::Ed25519Verifier* KeyRing::Find(absl::string_view key_id) const {
  const Key* key = Lookup(key_id);
  return key == nullptr ? nullptr : key->verifier.get();
}

absl::StatusOr<const crypto::Ed25519Verifier*> KeyRing::Trusted(
    absl::string_view key_id) const {
  const Key* key = key_id.empty() ? nullptr : Lookup(key_id);
  if (key == nullptr) {
    return absl::UnauthenticatedError(
        absl::StrCat("key_id: unknown signing key ", QuoteKeyId(key_id)));
  }
  if (clock_ != nullptr && clock_->Now() > key->trusted_until) {
    return absl::UnauthenticatedError(
        absl::StrCat("key_id: signing key ", key->id, " was trusted until ",
                     absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", key->trusted_until,
                                      absl::UTCTimeZone())));
  }
  return key->verifier.get();
}

absl::Time KeyRing::TrustedUntil(absl::string_view key_id) const {
  const Key* key = Lookup(key_id);
  return key == nullptr ? absl::InfinitePast() : key->trusted_until;
}

std::vector<std::string> KeyRing::key_ids() const {
  std::vector<std::string> ids;
  ids.reserve(keys_.size());
  for (const Key& key : keys_) ids.push_back(key.id);
  return ids;
}

// --- Signer ------------------------------------------------------------------

Signer::Signer(const crypto::Ed25519Signer& signer)
    : signer_(signer), key_id_(KeyId(signer.public_key())) {}

absl::StatusOr<v1::SignedEnvelope> Signer::SignEnvelope(
    const v1::Envelope& envelope) const {
  CB_ASSIGN_OR_RETURN(std::string bytes, Serialize(envelope, kEnvelope));
  CB_ASSIGN_OR_RETURN(std::string signature,
                      SignBytes(bytes, kEnvelope, signer_));
  v1::SignedEnvelope out;
  out.set_envelope(std::move(bytes));
  out.set_signature(std::move(signature));
  out.set_key_id(key_id_);
  return out;
}

absl::StatusOr<v1::SignedReceipt> Signer::SignReceipt(
    const v1::Receipt& receipt) const {
  CB_ASSIGN_OR_RETURN(std::string bytes, Serialize(receipt, kReceipt));
  CB_ASSIGN_OR_RETURN(std::string signature,
                      SignBytes(bytes, kReceipt, signer_));
  v1::SignedReceipt out;
  out.set_receipt(std::move(bytes));
  out.set_signature(std::move(signature));
  out.set_key_id(key_id_);
  return out;
}

absl::StatusOr<v1::SignedReceipt> Signer::SignAgain(
    const v1::SignedReceipt& signed_receipt) const {
  CB_ASSIGN_OR_RETURN(std::string signature,
                      SignBytes(signed_receipt.receipt(), kReceipt, signer_));
  v1::SignedReceipt out;
  out.set_receipt(signed_receipt.receipt());
  out.set_signature(std::move(signature));
  out.set_key_id(key_id_);
  return out;
}

// --- Free functions ----------------------------------------------------------

absl::StatusOr<v1::SignedEnvelope> SignEnvelope(
    const v1::Envelope& envelope, const crypto::Ed25519Signer& signer) {
  return Signer(signer).SignEnvelope(envelope);
}

absl::StatusOr<v1::SignedReceipt> SignReceipt(
    const v1::Receipt& receipt, const crypto::Ed25519Signer& signer) {
  return Signer(signer).SignReceipt(receipt);
}

absl::StatusOr<v1::Envelope> VerifyEnvelope(
    const v1::SignedEnvelope& signed_envelope, const KeyRing& keys,
    size_t max_bytes) {
  CB_RETURN_IF_ERROR(
      Authenticate(signed_envelope.envelope(), signed_envelope.signature(),
                   signed_envelope.key_id(), keys, max_bytes, kEnvelope));
  v1::Envelope envelope;
  CB_RETURN_IF_ERROR(Parse(signed_envelope.envelope(), kEnvelope, &envelope));
  return envelope;
}

absl::StatusOr<v1::Receipt> VerifyReceipt(
    const v1::SignedReceipt& signed_receipt, const KeyRing& keys) {
  CB_RETURN_IF_ERROR(
      Authenticate(signed_receipt.receipt(), signed_receipt.signature(),
                   signed_receipt.key_id(), keys, kMaxReceiptBytes, kReceipt));
  v1::Receipt receipt;
  CB_RETURN_IF_ERROR(Parse(signed_receipt.receipt(), kReceipt, &receipt));
  return receipt;
}

absl::Status CheckReceiptMatches(const v1::Receipt& receipt,
                                 const v1::SignedEnvelope& sent,
                                 absl::string_view expected_receiver) {
  v1::Envelope envelope;
  if (absl::Status parsed = Parse(sent.envelope(), kEnvelope, &envelope);
      !parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sent ", parsed.message()));
  }
  if (receipt.envelope_id() != envelope.envelope_id()) {
    return absl::FailedPreconditionError(
        "envelope_id: the receipt names another envelope than the one sent");
  }
  if (receipt.envelope_sha256() != EnvelopeDigest(sent)) {
    return absl::FailedPreconditionError(
        "envelope_sha256: does not match SHA-256 of the envelope bytes sent");
  }
  if (receipt.receiver_gateway() != expected_receiver) {
    return absl::FailedPreconditionError(absl::StrCat(
        "receiver_gateway: the receipt is not from ", expected_receiver));
  }
  return absl::OkStatus();
}

std::string EnvelopeDigest(const v1::SignedEnvelope& signed_envelope) {
  return crypto::Sha256(signed_envelope.envelope());
}

namespace {

template <typename Wrapper>
std::string KnownFieldsOnly(const Wrapper& wrapper) {
  if (wrapper.GetReflection()->GetUnknownFields(wrapper).empty()) {
    return wrapper.SerializeAsString();
  }
  Wrapper known = wrapper;
  known.DiscardUnknownFields();
  return known.SerializeAsString();
}

}  // namespace

std::string StoredBytes(const v1::SignedEnvelope& signed_envelope) {
  return KnownFieldsOnly(signed_envelope);
}

std::string StoredBytes(const v1::SignedReceipt& signed_receipt) {
  return KnownFieldsOnly(signed_receipt);
}

}  // namespace casebridge::exchange
