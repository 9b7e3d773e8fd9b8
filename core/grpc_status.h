// The one place absl::Status becomes grpc::Status. INTERNAL, DATA_LOSS and
// UNKNOWN details go to the log only; the client sees a generic message.
#ifndef CASEBRIDGE_CORE_GRPC_STATUS_H_
#define CASEBRIDGE_CORE_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace casebridge {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// "INVALID_ARGUMENT", "PERMISSION_DENIED"...
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_GRPC_STATUS_H_
