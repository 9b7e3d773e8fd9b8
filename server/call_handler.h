// The path every RPC takes: off gRPC's callback thread onto the work queue,
// then deadline check, identification, authorization, the handler body, and
// an audit entry for every refusal. One place, so no RPC can skip a step.
#ifndef CASEBRIDGE_SERVER_CALL_HANDLER_H_
#define CASEBRIDGE_SERVER_CALL_HANDLER_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/clock.h"
#include "core/config.h"
#include "google/protobuf/message.h"
#include "server/audit_log.h"
#include "server/authorizer.h"
#include "server/work_queue.h"

namespace casebridge::server {

// Which listener a service instance is bound to.
enum class Port { kOffice, kPeer };

// Bytes of `message` in deterministic order (for hashing requests).
std::string DeterministicBytes(const google::protobuf::Message& message);

// Audit subject from untrusted input: kept only if short, valid UTF-8.
std::vector<std::string> SafeSubjects(std::vector<std::string> candidates);

class CallHandler {
 public:
  using Body = std::function<absl::Status(const Caller&)>;

  // All pointers must outlive the handler.
  CallHandler(Port port, const config::Gateway* config, AuditLog* audit,
              WorkQueue* work, const Clock* clock);

  // For a unary RPC: runs `body` on the work queue for an admitted caller and
  // finishes the call with its status.
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context,
                                  Action action, std::string audit_action,
                                  const google::protobuf::Message& request,
                                  std::vector<std::string> subjects, Body body);

  // The same checks for any call shape: runs on the work queue and calls
  // `finish` with the outcome.
  void Run(grpc::CallbackServerContext* context, Action action,
           std::string audit_action, std::string payload,
           std::vector<std::string> subjects, Body body,
           std::function<void(const grpc::Status&)> finish);

  // An AuditEvent for a successful call by `caller`.
  static AuditEvent Event(const Caller& caller, std::string action,
                          const google::protobuf::Message& request,
                          std::vector<std::string> subjects = {});

  Port port() const { return port_; }

 private:
  absl::StatusOr<Caller> Admit(grpc::CallbackServerContext* context,
                               Action action, std::string* identity) const;

  const Port port_;
  const config::Gateway* const config_;
  AuditLog* const audit_;
  WorkQueue* const work_;
  const Clock* const clock_;
  OfficeAuthorizer office_authorizer_;
  config::Office peer_;  // the peer gateway, as the peer port's only caller
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_CALL_HANDLER_H_
