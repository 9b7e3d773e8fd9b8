// The public keys file: both gateways' Ed25519 public keys, all an offline
// verifier (`casebridge audit verify`, `casebridge audit evidence verify`)
// needs to check envelopes, receipts, checkpoints and cosignatures. TOML,
// with paths of SubjectPublicKeyInfo PEM files relative to the file itself:
//
//   [pk]
//   envelope_public_key = "pk/signing/envelope.pub"
//   checkpoint_public_key = "pk/signing/checkpoint.pub"
//   witness_public_key = "pk/signing/witness.pub"
//   # after rotations: the keys used before, so that what was signed
//   # with them stays verifiable
//   previous_envelope_public_keys = ["pk/signing/envelope-2026.pub"]
//   previous_checkpoint_public_keys = ["pk/signing/checkpoint-2026.pub"]
//   previous_witness_public_keys = ["pk/signing/witness-2026.pub"]
//   [cn]
//   ...the same for cn...
//
// certs/make-dev-pki writes one (public-keys.toml); in production each side
// writes its own from the keys exchanged out of band (certs/README.md 2.6).
// Only public material: the file may be handed to any auditor.
#ifndef CASEBRIDGE_CORE_PUBLIC_KEYS_H_
#define CASEBRIDGE_CORE_PUBLIC_KEYS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "casebridge/v1/common.pb.h"
#include "core/envelope.h"
#include "core/note.h"

namespace casebridge::keys {

// A checkpoint or witness key with the end of its trust: InfiniteFuture for
// a gateway's current key, the end of the overlap for a previous one
// (docs/operations.md#signing-key-rotation).
struct TrustedNoteKey {
  note::VerifierKey key;
  absl::Time trusted_until = absl::InfiniteFuture();
};

// Checks `note`'s type-0x01 signature against the keys of one purpose (a
// log's current and previous checkpoint keys), found by name and key id.
// A key whose trusted_until is before `now` is no longer trusted; offline
// checks of what was signed in the past pass InfinitePast, which trusts every
// key. Returns the key that verified. UNAUTHENTICATED if a signature line by
// any of the keys does not verify (the whole note is refused, as
// note::Verify does), or if the only valid signatures are by keys no longer
// trusted ("signed note: key "<name>" (key id <id>) was trusted until
// <time>"); NOT_FOUND if the note carries no signature by any of them.
absl::StatusOr<const TrustedNoteKey*> VerifyNote(
    const note::Note& note, const std::vector<TrustedNoteKey>& keys,
    absl::Time now);

struct NoteCosignature {
  const TrustedNoteKey* key = nullptr;  // points into the keys given
  uint64_t timestamp = 0;               // the latest, if several
};
// The same for cosignature/v1 lines (type 0x04), as note::VerifyCosignature.
absl::StatusOr<NoteCosignature> VerifyNoteCosignature(
    const note::Note& note, const std::vector<TrustedNoteKey>& keys,
    absl::Time now);

// One gateway's public keys, in the forms the verifiers take.
struct GatewayKeys {
  v1::Country country = v1::COUNTRY_UNSPECIFIED;
  // Verifies the envelopes it sends and the receipts it returns.
  exchange::KeyRing envelope;
  // Its checkpoint key: name audit::LogOrigin(country), type 0x01.
  note::VerifierKey checkpoint;
  // Its witness key: name audit::WitnessName(country), type 0x04
  // (cosignature/v1), which cosigns the other gateway's checkpoints.
  note::VerifierKey witness;
  // Checkpoint and witness keys it used before rotations, with the same
  // names and types: what they signed stays verifiable (an offline check
  // has no overlap window, so they are trusted without an end).
  std::vector<note::VerifierKey> previous_checkpoint;
  std::vector<note::VerifierKey> previous_witness;

  // `checkpoint` then `previous_checkpoint`; `witness` then
  // `previous_witness`.
  std::vector<TrustedNoteKey> CheckpointKeys() const;
  std::vector<TrustedNoteKey> WitnessKeys() const;
};

struct PublicKeys {
  GatewayKeys pk;
  GatewayKeys cn;

  // The keys of `country`; nullptr unless it is COUNTRY_PK or COUNTRY_CN.
  const GatewayKeys* For(v1::Country country) const;
};

// Reads the public keys file at `path`. INVALID_ARGUMENT (or the code of the
// failing read) with a message "<path>: <dotted.key>: <what>" for a missing
// table or key, an unknown key, an unreadable file or a PEM that is not an
// Ed25519 public key; "<path>: line L, column C: ..." for bad TOML; NOT_FOUND
// "<path>: ..." if the file itself cannot be found.
absl::StatusOr<PublicKeys> LoadPublicKeys(const std::string& path);

// One gateway's keys from their raw 32-byte Ed25519 public keys (tests, and
// callers that hold the keys already).
absl::StatusOr<GatewayKeys> MakeGatewayKeys(v1::Country country,
                                            absl::string_view envelope_key,
                                            absl::string_view checkpoint_key,
                                            absl::string_view witness_key);

}  // namespace casebridge::keys

#endif  // CASEBRIDGE_CORE_PUBLIC_KEYS_H_
