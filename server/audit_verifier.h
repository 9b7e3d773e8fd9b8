// Offline verification of a gateway's audit log, from its data directory and
// the two gateways' public keys alone (`casebridge audit verify`). Trusts
// nothing stored but the entry bytes and the signatures:
//
//   - entries are contiguous from 0, each decodes and says it is the entry
//     at its position;
//   - the leaves are recomputed and compared with the stored leaf hashes
//     (which names an entry edited in place); entries after the newest
//     checkpoint may have none yet (the gateway adds them in batches before
//     it signs), every earlier one must;
//   - at each checkpoint the root recomputed from the entries must equal the
//     stored root and the root in the signed note; the note must carry a
//     valid signature by the log's checkpoint key, and every cosignature by
//     the peer's witness key must verify; a checkpoint marked cosigned must
//     carry one. The keys are those of the keys file, current and previous:
//     a checkpoint signed or cosigned before a rotation needs the old key
//     listed, or it is the first bad checkpoint. A log whose history was
//     rewritten and re-signed with the gateway's own key no longer matches
//     the cosignatures the peer gave;
//   - consecutive checkpoints are proved consistent with a consistency proof
//     over the recomputed tree;
//   - a checkpoint larger than the log means entries were removed from its
//     end;
//   - for each received envelope still kept, the RECEIVED entry's payload
//     hash must commit to the envelope's signature (unless its salt was
//     purged under retention, which is counted, not failed);
//   - once the log itself is sound, the gateway's own cases against it: each
//     case opened in the log must be in the store at the version its
//     successful `case.open` and `case.update` entries make (one each), and
//     every case in the store with this gateway's country prefix must have
//     been opened in the log. A case put back from an earlier copy (an old
//     WAL frame, a backup) together with its row's version column is caught
//     here; a body put back alone is refused by the gateway when it reads it
//     (FromStoredCase). Cases shared by the peer are not checked.
//
// Opens <data_dir>/gateway.db read-only in one read transaction, so it may
// run next to a live gateway (it sees the log as of its start).
#ifndef CASEBRIDGE_SERVER_AUDIT_VERIFIER_H_
#define CASEBRIDGE_SERVER_AUDIT_VERIFIER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/public_keys.h"

namespace casebridge::server {

struct AuditVerifyOptions {
  // Accept a log none of whose checkpoints the peer cosigned (a gateway that
  // never had a peer, or a test).
  bool allow_unwitnessed = false;
};

struct AuditVerifyReport {
  bool ok = true;
  uint64_t entries = 0;             // entries verified (all of them when ok)
  uint64_t checkpoints = 0;         // checkpoints verified
  uint64_t cosigned = 0;            // of those, with a valid peer cosignature
  uint64_t witnessed_size = 0;      // size of the newest cosigned checkpoint
  uint64_t consistency_proofs = 0;  // between consecutive checkpoints
  uint64_t purged_payloads = 0;     // entries whose salt was purged (retention)
  uint64_t payloads_checked = 0;    // received envelopes matched to an entry
  uint64_t cases_checked = 0;  // own cases found at the version the log gives
  std::string origin;  // the log's origin line, e.g. "pk.casebridge/audit"
  // Where verification stopped, when not ok. A problem with no position
  // (e.g. "log not witnessed") sets neither.
  std::optional<uint64_t> first_bad_entry;
  std::optional<uint64_t> first_bad_checkpoint;  // its size
  std::string problem;
  // Facts worth saying that are not failures (unwitnessed tail, skipped
  // consistency proofs).
  std::vector<std::string> notes;
};

// Verifies the log in `data_dir`. An error status means the log could not
// be examined (no database, not a gateway database, I/O error): the caller
// learns nothing about its integrity. Damage found is an OK status with a
// report that is not ok.
absl::StatusOr<AuditVerifyReport> VerifyDataDir(
    const std::string& data_dir, const keys::PublicKeys& keys,
    const AuditVerifyOptions& options);

// What the verifier reads of an entry, found without decoding it into
// strings. Exposed for tests.
struct EntryView {
  uint64_t index = 0;
  int32_t status_code = 0;
  absl::string_view action;
  absl::string_view first_subject;  // empty if the entry names none
  absl::string_view payload_hash;
  // The subjects shaped like a message id ("PK-M-..." or "CN-M-...").
  // Cleared and refilled by each scan: reuse one view to keep its storage.
  std::vector<absl::string_view> message_ids;
};
// OK, filling `view` (which points into `bytes`), exactly when
// audit::Decode(bytes) succeeds; otherwise Decode's DATA_LOSS error.
absl::Status ScanEntry(absl::string_view bytes, EntryView* view);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_AUDIT_VERIFIER_H_
