// The one place absl::Status becomes grpc::Status. INTERNAL, DATA_LOSS and
// UNKNOWN details, and those marked WithLogOnlyDetail, go to the log only;
// the client sees a generic message.
#ifndef CASEBRIDGE_CORE_GRPC_STATUS_H_
#define CASEBRIDGE_CORE_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace casebridge {

grpc::Status ToGrpcStatus(const absl::Status& status);

// Marks `status` as carrying this gateway's own detail in its message (the
// SQL, SQLite's error and code: marked where SQLite's errors become
// statuses). The gateway log gets the message; an office, the peer gateway
// and the audit log get ShownMessage's text instead. The mark is a payload:
// it stays in this process. An OK status stays OK.
absl::Status WithLogOnlyDetail(absl::Status status);
bool HasLogOnlyDetail(const absl::Status& status);

// The message of `status` that may leave the gateway log: for a status
// marked WithLogOnlyDetail, a fixed text by code that says what the caller
// can do (UNAVAILABLE: the database was busy, try again; RESOURCE_EXHAUSTED:
// the storage is full, try again later; any other: a storage error, see
// the gateway log); for any other status, its own message.
std::string ShownMessage(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// "INVALID_ARGUMENT", "PERMISSION_DENIED"...
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_GRPC_STATUS_H_
