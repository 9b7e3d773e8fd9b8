// Signed envelopes and receipts between the two gateways (DESIGN.md section
// 4; byte-level rules in docs/exchange.md#signed-envelopes-and-receipts).
//
// The origin serializes an Envelope once and signs
//   kEnvelopeContext || serialized bytes
// with its Ed25519 envelope key. The bytes travel unchanged in
// SignedEnvelope.envelope; the receiver verifies the signature over exactly
// those bytes and only then parses them. Nothing here ever re-serializes a
// parsed message to check a signature. Receipts work the same way with
// kReceiptContext.
#ifndef CASEBRIDGE_CORE_ENVELOPE_H_
#define CASEBRIDGE_CORE_ENVELOPE_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "casebridge/v1/exchange.pb.h"
#include "core/clock.h"
#include "core/crypto.h"

namespace casebridge::exchange {

// Domain separation: a signature made for one kind of message never verifies
// as another. Each context ends with one newline byte (0x0A).
inline constexpr absl::string_view kEnvelopeContext =
    "casebridge/envelope/v1\n";
inline constexpr absl::string_view kReceiptContext = "casebridge/receipt/v1\n";
inline constexpr absl::string_view kKeyIdContext = "casebridge/key-id/v1\n";

// Receipts are small and fixed in shape; anything larger is refused unread.
inline constexpr size_t kMaxReceiptBytes = size_t{64} * 1024;

// Length of a key id in hex characters (8 bytes of a SHA-256).
inline constexpr size_t kKeyIdLength = 16;

// The key id of an Ed25519 public key given as its 32 raw bytes: lower-case
// hex of the first 8 bytes of SHA-256(kKeyIdContext || raw_public_key), 16
// characters. Stable for a key; says nothing about the key's owner.
std::string KeyId(absl::string_view raw_public_key);

// The public keys a gateway trusts for one purpose (the peer's envelope and
// receipt keys), found by key id. Several keys may be trusted at once while a
// key is rotated: the peer's previous key is trusted until a stated time
// (docs/operations.md#signing-key-rotation). With a clock set, a key is not
// trusted after its time; without one (offline verifiers, which check
// signatures made in the past) every key of the ring is.
//
// Thread-compatible: fill it during setup, then share it read-only; Find may
// be called from many threads as long as nobody calls Add.
class KeyRing {
 public:
  KeyRing() = default;
  KeyRing(KeyRing&&) = default;
  KeyRing& operator=(KeyRing&&) = default;
  KeyRing(const KeyRing&) = delete;
  KeyRing& operator=(const KeyRing&) = delete;

  // One SubjectPublicKeyInfo PEM file per key. INVALID_ARGUMENT if `paths` is
  // empty; errors reading or parsing a file, and ALREADY_EXISTS for a key
  // given twice, name the file.
  static absl::StatusOr<KeyRing> FromPemFiles(
      const std::vector<std::string>& paths);

  // Trusts `verifier`'s key under KeyId(verifier->public_key()).
  // ALREADY_EXISTS if that key id is in the ring already; INVALID_ARGUMENT
  // for a null verifier.
  // `trusted_until`: the end of its overlap, for a previous key.
  [[nodiscard]] absl::Status Add(
      std::unique_ptr<crypto::Ed25519Verifier> verifier,
      absl::Time trusted_until = absl::InfiniteFuture());

  // Checks trusted_until against `clock` (which must outlive the ring).
  void set_clock(const Clock* clock) { clock_ = clock; }

  // The verifier for `key_id`, or nullptr if the key is not in the ring. The
  // pointer stays valid for the life of the ring.
  const crypto::Ed25519Verifier* Find(absl::string_view key_id) const;

  // The verifier for `key_id` if it is trusted now: UNAUTHENTICATED
  // "key_id: unknown signing key <id>" if not in the ring, or "key_id:
  // signing key <id> was trusted until <time>" after its time.
  absl::StatusOr<const crypto::Ed25519Verifier*> Trusted(
      absl::string_view key_id) const;

  // When `key_id` stops being trusted (InfiniteFuture for a current key);
  // InfinitePast if it is not in the ring.
  absl::Time TrustedUntil(absl::string_view key_id) const;

  // Key ids in the order they were added (for logs and diagnostics).
  std::vector<std::string> key_ids() const;
  size_t size() const { return keys_.size(); }

 private:
  struct Key {
    std::string id;
    std::unique_ptr<crypto::Ed25519Verifier> verifier;
    absl::Time trusted_until;
  };
  const Key* Lookup(absl::string_view key_id) const;

  std::vector<Key> keys_;
  const Clock* clock_ = nullptr;
};

// A refusal that sending the same envelope again can never change: its
// signed bytes are too large, do not verify, or carry a handling code
// weaker than its case's. Marked in the status (a payload), so the receiver
// tells the sender to stop (DeliveryRefusal.permanent) whatever the wording
// of the message. The payload stays in this process: it never reaches the
// wire.
absl::Status Permanently(absl::Status refusal);
// Whether `refusal` was marked by Permanently.
bool IsMarkedPermanent(const absl::Status& refusal);

// Signs envelopes and receipts with one Ed25519 key, computing its key id
// once. `signer` must outlive this object. Thread-safe (Ed25519Signer is).
class Signer {
 public:
  explicit Signer(const crypto::Ed25519Signer& signer);

  // See the free functions below.
  absl::StatusOr<v1::SignedEnvelope> SignEnvelope(
      const v1::Envelope& envelope) const;
  absl::StatusOr<v1::SignedReceipt> SignReceipt(
      const v1::Receipt& receipt) const;
  // The same receipt bytes as `signed_receipt`, signed with this key: a
  // replay answered after the key was rotated, whose first signature the
  // sender may no longer trust.
  absl::StatusOr<v1::SignedReceipt> SignAgain(
      const v1::SignedReceipt& signed_receipt) const;

  const std::string& key_id() const { return key_id_; }

 private:
  const crypto::Ed25519Signer& signer_;
  std::string key_id_;
};

// Serializes `envelope` once (deterministic serialization) and signs
// kEnvelopeContext || those bytes. SignedEnvelope.envelope holds exactly the
// signed bytes and key_id is KeyId(signer.public_key()). INVALID_ARGUMENT
// naming the field if a string field is not valid UTF-8 (the peer could not
// parse it); INTERNAL if serializing or signing fails.
absl::StatusOr<v1::SignedEnvelope> SignEnvelope(
    const v1::Envelope& envelope, const crypto::Ed25519Signer& signer);

// Checks `signed_envelope` and returns the parsed Envelope. Checks, in this
// order, stopping at the first failure:
//   1. size: envelope bytes above `max_bytes` -> RESOURCE_EXHAUSTED
//      "envelope: N bytes exceeds the limit of M" (no signature work done);
//   2. key: key_id empty or not in `keys` -> UNAUTHENTICATED
//      "key_id: unknown signing key <id>"; a previous key past its time
//      (KeyRing::Trusted) -> UNAUTHENTICATED
//      "key_id: signing key <id> was trusted until <time>";
//   3. signature: not 64 bytes, or not valid over kEnvelopeContext || the
//      exact envelope bytes -> UNAUTHENTICATED
//      "signature: does not verify for key <id>";
//   4. parse: bytes not a casebridge.v1.Envelope -> INVALID_ARGUMENT
//      "envelope: not a well-formed casebridge.v1.Envelope".
// <id> is the key id as sent if it is 1-64 characters [0-9a-zA-Z],
// "(empty)" if empty, "(unprintable)" otherwise. Unauthenticated bytes are
// never parsed. INTERNAL if OpenSSL itself fails. The content (ids, gateways,
// clock skew, duplicates) is the caller's to check.
absl::StatusOr<v1::Envelope> VerifyEnvelope(
    const v1::SignedEnvelope& signed_envelope, const KeyRing& keys,
    size_t max_bytes);

// As SignEnvelope, for a receipt, with kReceiptContext.
absl::StatusOr<v1::SignedReceipt> SignReceipt(
    const v1::Receipt& receipt, const crypto::Ed25519Signer& signer);

// As VerifyEnvelope, for a receipt, with kReceiptContext and a fixed limit of
// kMaxReceiptBytes. Messages name "receipt" instead of "envelope":
// "receipt: N bytes exceeds the limit of M",
// "receipt: not a well-formed casebridge.v1.Receipt".
absl::StatusOr<v1::Receipt> VerifyReceipt(
    const v1::SignedReceipt& signed_receipt, const KeyRing& keys);

// Whether a verified `receipt` acknowledges the envelope `sent`, in this
// order:
//   envelope_id      equals the envelope_id inside sent.envelope();
//   envelope_sha256  equals SHA-256(sent.envelope());
//   receiver_gateway equals `expected_receiver`.
// FAILED_PRECONDITION naming the first field that differs;
// INVALID_ARGUMENT if sent.envelope() is not a well-formed Envelope. The
// origin calls this before it stores a receipt.
absl::Status CheckReceiptMatches(const v1::Receipt& receipt,
                                 const v1::SignedEnvelope& sent,
                                 absl::string_view expected_receiver);

// SHA-256 of the exact envelope bytes: 32 raw bytes. What a receipt's
// envelope_sha256 must hold, and what deduplication compares.
std::string EnvelopeDigest(const v1::SignedEnvelope& signed_envelope);

// The peer's signed envelope or receipt as this gateway stores it (and puts
// it in evidence bundles): its three fields, without any field the sender
// added to the wrapper besides them. Nobody signed those, and an evidence
// verifier refuses a bundle that carries fields it does not know, so a peer
// could otherwise make its own envelopes and receipts unprovable.
std::string StoredBytes(const v1::SignedEnvelope& signed_envelope);
std::string StoredBytes(const v1::SignedReceipt& signed_receipt);

}  // namespace casebridge::exchange

#endif  // CASEBRIDGE_CORE_ENVELOPE_H_
