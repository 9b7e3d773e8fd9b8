// Storage of case references. Every change commits together with the audit
// entry that records it, or not at all.
#ifndef CASEBRIDGE_SERVER_CASE_STORE_H_
#define CASEBRIDGE_SERVER_CASE_STORE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "casebridge/v1/common.pb.h"
#include "server/audit_log.h"

namespace casebridge::server {

struct CaseFilter {
  v1::CaseStatus status = v1::CASE_STATUS_UNSPECIFIED;        // any if unset
  v1::CaseCategory category = v1::CASE_CATEGORY_UNSPECIFIED;  // any if unset
  std::string owner_office;                                   // any if empty
  std::string text;  // substring of exchange id, local reference or summary
  // Need-to-know (docs/api.md#need-to-know): when set, only cases whose
  // exchange id starts with `own_prefix` (our country's, e.g. "PK-") and
  // peer cases with a message in this office's inbox.
  std::string visible_to_office;
  std::string own_prefix;
  // With `own_prefix`: the conditions on fields (status, category, owner,
  // text) apply to our own cases only, and every visible peer case is
  // returned for the caller to test on the version the office may read
  // (OfficeServiceImpl::AsGivenTo): a newer version held back from it must
  // not decide, by its fields, whether or where the case is listed.
  bool peer_fields_unfiltered = false;
};

// How a peer case reached an office (docs/api.md#need-to-know).
enum class CaseAccess {
  kNone,  // no message of the case is in the office's inbox: it may not
          // know of the case
  // Messages of it are there, but none as the peer addressed it: copies
  // passed on with ExchangeStore::ForwardCase, acknowledgements of the
  // office's own messages (no choice of the peer to address it).
  kReached,
  // A message of it went there as its envelope addressed the office (or
  // the country, routed to it).
  kAddressed,
};

struct CasePage {
  std::vector<v1::CaseReference> cases;
  std::vector<int64_t> positions;  // of each case, as `after` takes it
  // Position after the last case returned; pass as `after` for the next page.
  int64_t last_position() const {
    return positions.empty() ? 0 : positions.back();
  }
  bool has_more = false;
};

struct OpenedCase {
  v1::CaseReference case_reference;
  bool replayed = false;  // the request id had already opened this case
};

// Audit actions of case calls whose payload, the office's request, may hold
// a case's personal fields: a case's purge clears their salts. The
// `.personal_data` ones record that an answer released personal data (an
// OpenCase replay answers with the case as stored; an UpdateCase with the
// case as changed) and carry the same request.
inline constexpr char kCaseOpenAction[] = "case.open";
inline constexpr char kCaseOpenReplayedAction[] = "case.open.replayed";
inline constexpr char kCaseOpenPersonalDataAction[] = "case.open.personal_data";
inline constexpr char kCaseUpdateAction[] = "case.update";
inline constexpr char kCaseUpdatePersonalDataAction[] =
    "case.update.personal_data";

// The idempotency key of an OpenCase call.
struct RequestKey {
  std::string request_id;    // empty: not idempotent
  std::string request_hash;  // SHA-256 of the request
};

class CaseStore {
 public:
  virtual ~CaseStore() = default;

  // Mints the next exchange id and stores `draft` as version 1, status OPEN,
  // owned by `owner`; appends `audit` (with the new id added as a subject) in
  // the same transaction. A request id already used by `owner` returns the
  // case it opened if the hash matches (replayed = true, nothing written), or
  // ALREADY_EXISTS if not.
  virtual absl::StatusOr<OpenedCase> OpenCase(const v1::CaseReference& draft,
                                              const std::string& owner,
                                              const RequestKey& key,
                                              const AuditEvent& audit) = 0;

  // NOT_FOUND if there is no such case.
  virtual absl::StatusOr<v1::CaseReference> GetCase(
      const std::string& exchange_id) = 0;

  // How peer case `exchange_id` reached `office`'s inbox, in one read.
  virtual absl::StatusOr<CaseAccess> AccessOf(const std::string& exchange_id,
                                              const std::string& office) = 0;

  // Cases matching `filter` after position `after` (0: from the start),
  // oldest first, at most `page_size`.
  virtual absl::StatusOr<CasePage> ListCases(const CaseFilter& filter,
                                             int64_t after, int page_size) = 0;

  // What an UpdateCase appends besides its own entry, given the case as
  // stored: the release of its personal data in the answer, which must be
  // on record in the same commit (an entry that failed after the update
  // would turn a done update into an error, and its retry into ABORTED).
  using AlsoAudit =
      std::function<std::optional<AuditEvent>(const v1::CaseReference&)>;

  // In one transaction: reads the case (NOT_FOUND), checks that its version
  // is `expected_version` (ABORTED otherwise), lets `apply` change it (an
  // error from `apply` aborts everything), stamps version+1, time and
  // `actor`, stores it and appends `audit`, then what `also` (if given)
  // returns for the stored case. Returns the stored case.
  virtual absl::StatusOr<v1::CaseReference> UpdateCase(
      const std::string& exchange_id, int64_t expected_version,
      const std::function<absl::Status(v1::CaseReference&)>& apply,
      const std::string& actor, const AuditEvent& audit,
      const AlsoAudit& also) = 0;
  // The same, appending `audit` alone.
  absl::StatusOr<v1::CaseReference> UpdateCase(
      const std::string& exchange_id, int64_t expected_version,
      const std::function<absl::Status(v1::CaseReference&)>& apply,
      const std::string& actor, const AuditEvent& audit) {
    return UpdateCase(exchange_id, expected_version, apply, actor, audit,
                      nullptr);
  }
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_CASE_STORE_H_
