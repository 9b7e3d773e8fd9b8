// Offline verification of an evidence bundle (server/evidence.h,
// casebridge.v1.EvidenceBundle) with the two gateways' public keys alone.
//
// A bundle proves one envelope's exchange: the origin signed the envelope,
// the receiver signed a receipt for exactly those bytes, the origin's log
// holds the SENT entry and the receiver's log the RECEIVED entry, each
// included in a checkpoint signed by its own gateway and cosigned by the
// other. Checks, in order, stopping at the first that fails:
//
//   bundle        only fields this verifier knows (an unknown field could be
//                 a known one whose tag was damaged)
//   envelope      signature by the origin's envelope key (the origin is the
//                 gateway whose key made it); origin_gateway,
//                 destination_gateway and envelope_id agree with that origin
//   receipt       signature by the receiver's envelope key; it acknowledges
//                 these envelope bytes and comes from the receiver
//   sent          the entry decodes, is entry envelope.origin_audit_index
//                 (== sent.index), was made by the sending office, succeeded
//                 and names the envelope and its message; the checkpoint is
//                 the origin log's, signed by the origin's checkpoint key and
//                 cosigned by the receiver's witness key (or a previous key
//                 of that purpose listed in the keys file); the inclusion
//                 proof leads from the entry to its root
//   received      the same in the receiver's log, cosigned by the origin;
//                 the entry is receipt.receiver_audit_index, action
//                 "envelope.received" by the origin gateway; with a payload
//                 salt, its payload hash is SHA-256(salt || envelope
//                 signature). Without one (purged under retention) a note
//                 says so: the entry is proved, not which signature it saw.
#ifndef CASEBRIDGE_CORE_EVIDENCE_CHECK_H_
#define CASEBRIDGE_CORE_EVIDENCE_CHECK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "casebridge/v1/audit.pb.h"
#include "casebridge/v1/common.pb.h"
#include "core/public_keys.h"

namespace casebridge::evidence {

struct EvidenceReport {
  // Empty when the bundle verifies; otherwise "<check>: <what>", e.g.
  // "received.inclusion_proof: root mismatch: ..." or
  // "envelope.signature: does not verify for key ...".
  std::string problem;
  // Not failures: e.g. the payload salt was purged.
  std::vector<std::string> notes;

  // What was established (valid as far as the checks got).
  std::string envelope_id;
  std::string message_id;
  v1::Country origin = v1::COUNTRY_UNSPECIFIED;
  v1::Country receiver = v1::COUNTRY_UNSPECIFIED;
  uint64_t sent_index = 0;
  uint64_t sent_checkpoint_size = 0;
  uint64_t received_index = 0;
  uint64_t received_checkpoint_size = 0;

  bool ok() const { return problem.empty(); }
};

EvidenceReport VerifyEvidence(const v1::EvidenceBundle& bundle,
                              const keys::PublicKeys& keys);

}  // namespace casebridge::evidence

#endif  // CASEBRIDGE_CORE_EVIDENCE_CHECK_H_
