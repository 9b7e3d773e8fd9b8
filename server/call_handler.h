// The path every RPC takes: on gRPC's callback thread, identification,
// revocation and the rate limit (a refusal the limits count without
// auditing is answered there); then on the work queue, deadline check,
// authorization, the handler body, and an audit entry for every refusal.
// One place, so no RPC can skip a step.
#ifndef CASEBRIDGE_SERVER_CALL_HANDLER_H_
#define CASEBRIDGE_SERVER_CALL_HANDLER_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/status_macros.h"
#include "google/protobuf/message.h"
#include "server/audit_log.h"
#include "server/authorizer.h"
#include "server/call_limits.h"
#include "server/cert_monitor.h"
#include "server/validation.h"
#include "server/work_queue.h"

namespace casebridge::server {

// Which listener a service instance is bound to.
enum class Port { kOffice, kPeer };

// Bytes of `message` in deterministic order (for hashing requests).
std::string DeterministicBytes(const google::protobuf::Message& message);

// Audit subject from untrusted input: kept only if short, valid UTF-8.
std::vector<std::string> SafeSubjects(std::vector<std::string> candidates);

// Parses request bytes into `message`. INVALID_ARGUMENT naming the field for
// invalid UTF-8 (e.g. "case_reference.summary: is not valid UTF-8"), or
// saying the bytes are not a message of that type.
absl::Status ParseRequest(const std::string& bytes,
                          google::protobuf::Message* message);

std::string ByteBufferToString(const grpc::ByteBuffer& buffer);
absl::Status SerializeToByteBuffer(const google::protobuf::Message& message,
                                   grpc::ByteBuffer* buffer);

// One admitted call: who made it, what they asked, and the exact bytes
// received (what audit entries commit to).
template <typename Request>
struct Incoming {
  const Caller& caller;
  const Request& request;
  const std::string& bytes;
  // The call itself: a call this one makes on its behalf (to the peer)
  // can be cancelled with it (grpc::ClientContext::FromCallbackServerContext).
  const grpc::CallbackServerContext& context;

  // An AuditEvent recording this call's success.
  AuditEvent Event(std::string action,
                   std::vector<std::string> subjects = {}) const {
    AuditEvent event;
    event.actor = caller.identity;
    event.action = std::move(action);
    event.subjects = std::move(subjects);
    event.payload = bytes;
    return event;
  }
};

class CallHandler {
 public:
  using Body = std::function<absl::Status(const Caller&)>;

  // A unary RPC served from raw bytes, so that a request gRPC's parser would
  // refuse without a reason (invalid UTF-8) is refused here naming the field,
  // and audited like any other refusal. Parses, admits the caller, runs
  // `body` on the work queue, and finishes the call. `subjects` picks the ids
  // an audit entry of a refusal names. `first`, if set, says whether a
  // well-formed request is served ahead of the others waiting for the work
  // queue (WorkQueue::PostFirst), e.g. one that sends an URGENT message.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Unary(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw_request,
      grpc::ByteBuffer* raw_response, Action action, std::string audit_action,
      std::function<std::vector<std::string>(const Request&)> subjects,
      std::function<absl::Status(const Incoming<Request>&, Response*)> body,
      std::function<bool(const Request&)> first = nullptr) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    auto bytes =
        std::make_shared<const std::string>(ByteBufferToString(*raw_request));
    auto request = std::make_shared<Request>();
    absl::Status parsed = ParseRequest(*bytes, request.get());
    std::vector<std::string> names;
    if (parsed.ok() && subjects) names = subjects(*request);
    if (parsed.ok() && port_ == Port::kOffice) {
      parsed = CheckRequestFields(*request);
    }
    const bool ahead = parsed.ok() && first && first(*request);
    Run(
        context, action, std::move(audit_action), *bytes,
        SafeSubjects(std::move(names)),
        [context, bytes, request, parsed, raw_response,
         body = std::move(body)](const Caller& caller) -> absl::Status {
          if (!parsed.ok()) return parsed;
          Response response;
          CB_RETURN_IF_ERROR(
              body(Incoming<Request>{caller, *request, *bytes, *context},
                   &response));
          return SerializeToByteBuffer(response, raw_response);
        },
        [reactor](const grpc::Status& status) { reactor->Finish(status); },
        ahead);
    return reactor;
  }

  // All pointers must outlive the handler. `revocations` is checked on every
  // call (null: none). `limiter` applies the port's per-identity limits
  // (null: none). `strangers` decides which calls the port can only refuse
  // (no single spiffe:// identity; on the peer port, not the peer) are
  // audited on their own (null: all). `policies` is the office port's
  // access policy (required there, unused on the peer port).
  CallHandler(Port port, const config::Gateway* config, AuditLog* audit,
              WorkQueue* work, const Clock* clock,
              const Revocations* revocations = nullptr,
              CallLimiter* limiter = nullptr,
              const PolicyHolder* policies = nullptr,
              CallLimiter* strangers = nullptr);

  // The same checks for any call shape: runs on the work queue (ahead of
  // the others waiting if `first`) and calls `finish` with the outcome.
  void Run(grpc::CallbackServerContext* context, Action action,
           std::string audit_action, std::string payload,
           std::vector<std::string> subjects, Body body,
           std::function<void(const grpc::Status&)> finish, bool first = false);

  Port port() const { return port_; }

  // Ends every open stream (WatchInbox, Deliver) whose client certificate
  // is now revoked, and audits each. Returns how many were ended.
  int EndRevokedStreams();

  // Ends every open stream whose caller `policy` no longer admits (gone
  // from the office table, or its role may no longer make the call), and
  // audits each. Returns how many were ended. Called after the policy in
  // force was replaced by `policy`.
  int EndStreamsOutsidePolicy(const AccessPolicy& policy);

  // Gives the listener of this handler's port a hook that tells the handler
  // when each call is done (so open streams are known). The handler must
  // outlive the server.
  std::unique_ptr<grpc::ContextAllocator> MakeCallDoneHook();

 private:
  // An admitted stream, from admission until its call is done.
  struct OpenStream {
    std::string identity;
    Action action = Action::kWatchInbox;
    std::string peer_pem;      // the client certificate
    std::string audit_action;  // of the call that opened it
    bool counted = false;      // holds a slot of the stream limit
    bool ending = false;       // EndRevokedStreams is cancelling it
    // Cancelled already: a later scan (another CRL or policy change before
    // the call is done) neither cancels nor audits it again.
    bool ended = false;
  };

  // What Screen decided on gRPC's thread, for the task on the work queue.
  struct Screened {
    absl::Status status;  // OK: passed the limits; else the refusal
    std::string identity = "unauthenticated";
    bool audit = true;  // false: a limit refusal inside a burst
    // A burst of refusals this call ended, for its summary entry (written
    // on the work queue: an audit append commits).
    const CallLimiter* burst_limiter = nullptr;
    std::string burst_identity;
    CallLimiter::Decision burst;
  };

  // The checks that need no store, made on gRPC's thread before the call is
  // queued: the verified identity, the callers a port can only refuse,
  // revocation and the per-identity rate limit. So a flood of calls that the
  // limits refuse is answered at once, and never waits in, or lengthens, the
  // work queue that every office's calls share.
  Screened Screen(grpc::CallbackServerContext* context, Action action);
  // The checks after the rate limit: the identity's role and action on
  // the office port (and a deadline), or the pinned peer on the peer port.
  absl::StatusOr<Caller> Authorize(grpc::CallbackServerContext* context,
                                   Action action, const std::string& identity);
  // The stream limit, and tracking of the stream until OnCallDone.
  absl::Status TrackStream(grpc::CallbackServerContext* context, Action action,
                           const std::string& identity,
                           const std::string& audit_action, bool* audit);
  // A call this port can only refuse, from the callers `group` names:
  // whether its refusal is audited on its own. Each group shares one
  // bucket, so callers a foreign CA can mint without end cannot grow the
  // limiter or the log.
  // A burst it ends is left in `*screened` for its summary.
  bool AuditStranger(const std::string& group, Screened* screened);
  // Writes the summary entry of a burst of `limiter`'s refusals.
  void AuditBurst(const CallLimiter& limiter, const std::string& identity,
                  const CallLimiter::Decision& closed);
  // Cancels and audits every open stream for which `why` is not OK (its
  // outcome is the audited reason). Returns how many.
  int EndStreams(const std::function<absl::Status(const OpenStream&)>& why);
  void OnCallDone(const grpc::CallbackServerContext* context);

  class CallDoneHook;

  const Port port_;
  const config::Gateway* const config_;
  AuditLog* const audit_;
  WorkQueue* const work_;
  const Clock* const clock_;
  const Revocations* const revocations_;
  CallLimiter* const limiter_;
  const PolicyHolder* const policies_;
  CallLimiter* const strangers_;
  OfficeAuthorizer office_authorizer_;
  config::Office peer_;  // the peer gateway, as the peer port's only caller

  absl::Mutex end_streams_mu_ ABSL_ACQUIRED_BEFORE(streams_mu_);
  mutable absl::Mutex streams_mu_;
  std::map<const grpc::CallbackServerContext*, OpenStream> streams_
      ABSL_GUARDED_BY(streams_mu_);
  // The thread inside EndRevokedStreams' cancellations, if any.
  std::thread::id ending_thread_ ABSL_GUARDED_BY(streams_mu_);
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_CALL_HANDLER_H_
