#include "core/grpc_status.h"

#include <string>
#include <utility>

#include "core/log.h"
#include "core/status_mark.h"

namespace casebridge {

namespace {

// The payload that marks a status's message as the gateway's own detail.
constexpr char kLogOnlyPayload[] = "type.casebridge.dev/detail.log-only";

}  // namespace

absl::Status WithLogOnlyDetail(absl::Status status) {
  return WithMark(std::move(status), kLogOnlyPayload);
}

bool HasLogOnlyDetail(const absl::Status& status) {
  return HasMark(status, kLogOnlyPayload);
}

std::string ShownMessage(const absl::Status& status) {
  if (!HasLogOnlyDetail(status)) return std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return "the gateway's database was busy; try again";
    case absl::StatusCode::kResourceExhausted:
      return "the gateway's storage is full; try again later";
    default:
      return "storage error at the gateway; the gateway log has details";
  }
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(status.code());
  if (code == grpc::StatusCode::INTERNAL ||
      code == grpc::StatusCode::DATA_LOSS ||
      code == grpc::StatusCode::UNKNOWN) {
    log::Error("rpc.internal_error",
               {{"code", GrpcCodeName(code)},
                {"detail", std::string(status.message())}});
    return grpc::Status(code, "internal error; the gateway log has details");
  }
  if (HasLogOnlyDetail(status)) {
    log::Warning("rpc.storage_error",
                 {{"code", GrpcCodeName(code)},
                  {"detail", std::string(status.message())}});
  }
  return grpc::Status(code, ShownMessage(status));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

}  // namespace casebridge
