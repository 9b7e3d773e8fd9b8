#include "server/call_handler.h"

#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"
#include "core/identity.h"
#include "core/log.h"
#include "core/proto_utf8.h"
#include "core/utf8.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace casebridge::server {

std::string DeterministicBytes(const google::protobuf::Message& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return out;
}

absl::Status ParseRequest(const std::string& bytes,
                          google::protobuf::Message* message) {
  if (message->ParseFromString(bytes)) return absl::OkStatus();
  if (auto field = FindInvalidUtf8Field(message->GetDescriptor(), bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(*field, ": is not valid UTF-8"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("request: not a well-formed ",
                   message->GetDescriptor()->full_name(), " message"));
}

std::string ByteBufferToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  out.reserve(buffer.Length());
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

absl::Status SerializeToByteBuffer(const google::protobuf::Message& message,
                                   grpc::ByteBuffer* buffer) {
  std::string bytes;
  if (!message.SerializeToString(&bytes)) {
    return absl::InternalError(
        absl::StrCat("serializing ", message.GetDescriptor()->full_name()));
  }
  grpc::Slice slice(bytes);
  grpc::ByteBuffer(&slice, 1).Swap(buffer);
  return absl::OkStatus();
}

std::vector<std::string> SafeSubjects(std::vector<std::string> candidates) {
  std::vector<std::string> out;
  for (std::string& s : candidates) {
    if (!s.empty() && s.size() <= 128 && IsValidUtf8(s))
      out.push_back(std::move(s));
  }
  return out;
}

CallHandler::CallHandler(Port port, const config::Gateway* config,
                         AuditLog* audit, WorkQueue* work, const Clock* clock)
    : port_(port),
      config_(config),
      audit_(audit),
      work_(work),
      clock_(clock),
      office_authorizer_(config->offices),
      peer_{config->peer_identity, "peer gateway", v1::ROLE_UNSPECIFIED} {}

absl::StatusOr<Caller> CallHandler::Admit(grpc::CallbackServerContext* context,
                                          Action action,
                                          std::string* identity) const {
  auto auth = context->auth_context();
  if (auth == nullptr) return absl::UnauthenticatedError("no TLS peer");
  auto id = PeerSpiffeId(*auth);
  if (!id.ok()) return id.status();
  *identity = *id;
  if (port_ == Port::kOffice) {
    auto caller = office_authorizer_.Identify(*id);
    if (!caller.ok()) return caller.status();
    if (auto allowed = OfficeAuthorizer::Authorize(*caller, action);
        !allowed.ok()) {
      return allowed;
    }
    return caller;
  }
  // Peer port: only the pinned peer gateway, and only peer and audit calls.
  if (*id != config_->peer_identity) {
    return absl::PermissionDeniedError(
        absl::StrCat("identity ", *id, " is not the configured peer gateway"));
  }
  if (action != Action::kDeliver && action != Action::kAddCheckpoint &&
      action != Action::kReadAudit) {
    return absl::PermissionDeniedError(
        absl::StrCat("the peer gateway may not call ", ActionName(action)));
  }
  return Caller{*id, &peer_};
}

void CallHandler::Run(grpc::CallbackServerContext* context, Action action,
                      std::string audit_action, std::string payload,
                      std::vector<std::string> subjects, Body body,
                      std::function<void(const grpc::Status&)> finish) {
  work_->Post([this, context, action, audit_action = std::move(audit_action),
               payload = std::move(payload), subjects = std::move(subjects),
               body = std::move(body), finish = std::move(finish)]() {
    const absl::Time start = clock_->Now();
    std::string identity = "unauthenticated";
    absl::Status status;
    if (context->IsCancelled()) {
      status = absl::CancelledError("call cancelled before it ran");
    } else if (absl::FromChrono(context->deadline()) <= absl::Now()) {
      // gRPC deadlines are wall-clock instants: compared with real time.
      status =
          absl::DeadlineExceededError("deadline passed before the call ran");
    } else {
      auto caller = Admit(context, action, &identity);
      status = caller.ok() ? body(*caller) : caller.status();
    }
    const bool refused = !status.ok() &&
                         status.code() != absl::StatusCode::kCancelled &&
                         status.code() != absl::StatusCode::kDeadlineExceeded;
    if (refused) {
      AuditEvent event;
      event.actor = identity;
      event.action = audit_action;
      event.subjects = subjects;
      event.payload = payload;
      // Internal details go to the log only, never to auditors' screens.
      const bool internal = status.code() == absl::StatusCode::kInternal ||
                            status.code() == absl::StatusCode::kDataLoss ||
                            status.code() == absl::StatusCode::kUnknown;
      event.outcome = internal
                          ? absl::Status(status.code(),
                                         "internal error; see the gateway log")
                          : status;
      auto appended = audit_->Append(event);
      if (!appended.ok()) {
        log::Error("audit.append_failed",
                   {{"action", audit_action},
                    {"error", std::string(appended.status().message())}});
      }
    }
    const grpc::Status reply = ToGrpcStatus(status);
    log::Write(status.ok() ? log::Level::kInfo : log::Level::kWarning,
               status.ok() ? "rpc.ok" : "rpc.refused",
               {{"port", port_ == Port::kOffice ? "office" : "peer"},
                {"action", audit_action},
                {"identity", identity},
                {"code", GrpcCodeName(reply.error_code())},
                {"reason", reply.error_message()},
                {"ms", absl::ToDoubleMilliseconds(clock_->Now() - start)}});
    finish(reply);
  });
}

}  // namespace casebridge::server
