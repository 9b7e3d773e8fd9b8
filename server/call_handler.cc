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

namespace {

// The calls that stay open as streams: tracked until they end, and under
// the stream limit (WatchInbox).
bool IsStream(Action action) {
  return action == Action::kWatchInbox || action == Action::kDeliver;
}

}  // namespace

std::vector<std::string> SafeSubjects(std::vector<std::string> candidates) {
  std::vector<std::string> out;
  for (std::string& s : candidates) {
    if (!s.empty() && s.size() <= 128 && IsValidUtf8(s))
      out.push_back(std::move(s));
  }
  return out;
}

CallHandler::CallHandler(Port port, const config::Gateway* config,
                         AuditLog* audit, WorkQueue* work, const Clock* clock,
                         const Revocations* revocations, CallLimiter* limiter,
                         const PolicyHolder* policies, CallLimiter* strangers)
    : port_(port),
      config_(config),
      audit_(audit),
      work_(work),
      clock_(clock),
      revocations_(revocations),
      limiter_(limiter),
      policies_(policies),
      strangers_(strangers),
      office_authorizer_(policies),
      peer_{config->peer_identity, "peer gateway", v1::ROLE_UNSPECIFIED} {}

CallHandler::Screened CallHandler::Screen(grpc::CallbackServerContext* context,
                                          Action action) {
  Screened out;
  auto auth = context->auth_context();
  if (auth == nullptr) {
    out.status = absl::UnauthenticatedError("no TLS peer");
    return out;
  }
  const bool office = port_ == Port::kOffice;
  auto id = PeerSpiffeId(*auth);
  if (!id.ok()) {
    out.audit = AuditStranger(
        office ? "callers without one spiffe:// identity on the office port"
               : "callers without one spiffe:// identity on the peer port",
        &out);
    out.status = id.status();
    return out;
  }
  out.identity = *id;
  // The peer CA is foreign: it can issue any number of identities, so its
  // certificates other than the peer's share one bucket, ahead of the
  // revocation check and the per-identity limits.
  if (!office && *id != config_->peer_identity) {
    out.audit = AuditStranger(
        "callers other than the peer gateway on the peer port", &out);
    out.status = absl::PermissionDeniedError(
        absl::StrCat("identity ", *id, " is not the configured peer gateway"));
    return out;
  }
  // Revocation first: a revoked certificate must not spend the allowance of
  // the identity it shares with the office's new certificate. Its refusals
  // are audited once per burst, in a bucket of their own.
  if (revocations_ != nullptr) {
    const auto pem = auth->FindPropertyValues("x509_pem_cert");
    if (pem.empty()) {
      out.status =
          absl::UnauthenticatedError("no client certificate in the handshake");
      return out;
    }
    if (absl::Status revoked = revocations_->Check(
            absl::string_view(pem.front().data(), pem.front().size()), *id);
        !revoked.ok()) {
      if (limiter_ != nullptr) {
        const std::string bucket = absl::StrCat(*id, " (revoked certificate)");
        const CallLimiter::Decision decision = limiter_->AdmitCall(bucket);
        out.audit = decision.status.ok() || decision.audit;
        // This bucket has no other limit: a call it admits ends its burst.
        if (decision.status.ok()) {
          out.burst_limiter = limiter_;
          out.burst_identity = bucket;
          out.burst = limiter_->CloseBurst(bucket);
        }
      }
      out.status = std::move(revoked);
      return out;
    }
  }
  // Then the limits, keyed by the verified identity, so that a flood of
  // calls that would be refused anyway cannot flood the audit log.
  if (limiter_ != nullptr) {
    const CallLimiter::Decision decision = limiter_->AdmitCall(*id);
    if (!decision.status.ok()) {
      out.audit = decision.audit;
      out.status = decision.status;
      return out;
    }
    // Past the rate limit, a call ends a burst of refusals whatever happens
    // to it next (refused for its role or a missing deadline, say), or an
    // identity that is never admitted would keep its burst open for good. A
    // stream still has the stream limit ahead: its task closes the burst
    // once past it, or once refused for anything else.
    if (!IsStream(action)) {
      out.burst_limiter = limiter_;
      out.burst_identity = *id;
      out.burst = limiter_->CloseBurst(*id);
    }
  }
  return out;
}

absl::StatusOr<Caller> CallHandler::Authorize(
    grpc::CallbackServerContext* context, Action action,
    const std::string& identity) {
  if (port_ == Port::kOffice) {
    if (policies_ == nullptr) {
      return absl::InternalError("office port without an access policy");
    }
    auto caller = office_authorizer_.Identify(identity);
    if (!caller.ok()) return caller.status();
    if (auto allowed = OfficeAuthorizer::Authorize(*caller, action);
        !allowed.ok()) {
      return allowed;
    }
    // A standing WatchInbox may run without a deadline; it ends with its
    // connection at the latest (limits.max_connection_age_seconds).
    if (action != Action::kWatchInbox &&
        context->deadline() == std::chrono::system_clock::time_point::max()) {
      return absl::InvalidArgumentError(
          "deadline: is required on every call to the office port (set a "
          "timeout on the call)");
    }
    return caller;
  }
  // Peer port: only the pinned peer gateway, and only peer and audit calls.
  if (identity != config_->peer_identity) {
    return absl::PermissionDeniedError(absl::StrCat(
        "identity ", identity, " is not the configured peer gateway"));
  }
  static const auto* kPeerActions = new std::set<Action>{
      Action::kDeliver,           Action::kAddCheckpoint,
      Action::kGetCheckpoint,     Action::kGetEntries,
      Action::kGetInclusionProof, Action::kGetConsistencyProof,
      Action::kGetEvidence};
  if (!kPeerActions->contains(action)) {
    return absl::PermissionDeniedError(
        absl::StrCat("the peer gateway may not call ", ActionName(action)));
  }
  return Caller{identity, &peer_, nullptr};
}

absl::Status CallHandler::TrackStream(grpc::CallbackServerContext* context,
                                      Action action,
                                      const std::string& identity,
                                      const std::string& audit_action,
                                      bool* audit) {
  OpenStream stream;
  stream.identity = identity;
  stream.action = action;
  stream.audit_action = audit_action;
  if (auto auth = context->auth_context(); auth != nullptr) {
    const auto pem = auth->FindPropertyValues("x509_pem_cert");
    if (!pem.empty()) {
      stream.peer_pem.assign(pem.front().data(), pem.front().size());
    }
  }
  if (limiter_ != nullptr &&
      (action == Action::kWatchInbox || action == Action::kDeliver)) {
    const CallLimiter::Decision decision = limiter_->OpenStream(identity);
    if (!decision.status.ok()) {
      *audit = decision.audit;
      return decision.status;
    }
    stream.counted = true;
  }
  absl::MutexLock lock(&streams_mu_);
  const std::string pem = stream.peer_pem;
  streams_[context] = std::move(stream);
  // The certificate may have been revoked since Admit checked it, and the
  // scan for revoked streams may have run before this stream was listed:
  // one of the two checks sees it. (The entry stays until the call is done,
  // which releases its stream slot.)
  if (revocations_ != nullptr && !pem.empty() && revocations_->IsRevoked(pem)) {
    return revocations_->Check(pem, identity);
  }
  // Likewise for a policy replaced since Admit: the replacement is in force
  // before its scan of open streams begins.
  if (policies_ != nullptr) {
    const std::shared_ptr<const AccessPolicy> policy = policies_->Current();
    const config::Office* office = policy->Find(identity);
    if (office == nullptr || !policy->Allows(*office, action)) {
      return absl::PermissionDeniedError(absl::StrCat(
          "identity ", identity, " may no longer call ", ActionName(action),
          " (policy ", policy->digest().substr(0, 12), ")"));
    }
  }
  return absl::OkStatus();
}

bool CallHandler::AuditStranger(const std::string& group, Screened* screened) {
  if (strangers_ == nullptr) return true;
  const CallLimiter::Decision decision = strangers_->AdmitCall(group);
  if (!decision.status.ok()) return decision.audit;
  screened->burst_limiter = strangers_;
  screened->burst_identity = group;
  screened->burst = strangers_->CloseBurst(group);
  return true;
}

void CallHandler::AuditBurst(const CallLimiter& limiter,
                             const std::string& identity,
                             const CallLimiter::Decision& closed) {
  limiter.Summarize(*audit_, identity, closed);
}

void CallHandler::OnCallDone(const grpc::CallbackServerContext* context) {
  std::string closed_identity;
  {
    absl::MutexLock lock(&streams_mu_);
    auto it = streams_.find(context);
    if (it == streams_.end()) return;
    if (it->second.ending && ending_thread_ != std::this_thread::get_id()) {
      // EndRevokedStreams is cancelling this call: the context must live
      // until it is done with it.
      auto done_ending =
          [this, context]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) {
            auto found = streams_.find(context);
            return found == streams_.end() || !found->second.ending;
          };
      streams_mu_.Await(absl::Condition(&done_ending));
      it = streams_.find(context);
      if (it == streams_.end()) return;
    }
    if (it->second.counted) closed_identity = it->second.identity;
    streams_.erase(it);
  }
  if (!closed_identity.empty() && limiter_ != nullptr) {
    limiter_->StreamClosed(closed_identity);
  }
}

int CallHandler::EndRevokedStreams() {
  if (revocations_ == nullptr) return 0;
  return EndStreams([this](const OpenStream& stream) -> absl::Status {
    if (!revocations_->IsRevoked(stream.peer_pem)) return absl::OkStatus();
    const absl::Status revoked =
        revocations_->Check(stream.peer_pem, stream.identity);
    return absl::UnauthenticatedError(
        absl::StrCat(revoked.message(), "; its open stream was ended"));
  });
}

int CallHandler::EndStreamsOutsidePolicy(const AccessPolicy& policy) {
  return EndStreams([&policy](const OpenStream& stream) -> absl::Status {
    const config::Office* office = policy.Find(stream.identity);
    if (office == nullptr) {
      return absl::PermissionDeniedError(absl::StrCat(
          "identity ", stream.identity,
          " is no longer in this gateway's office table (policy ",
          policy.digest().substr(0, 12), "); its open stream was ended"));
    }
    if (!policy.Allows(*office, stream.action)) {
      return absl::PermissionDeniedError(absl::StrCat(
          "role ", config::RoleName(office->role), " may no longer call ",
          ActionName(stream.action), " (policy ", policy.digest().substr(0, 12),
          "); its open stream was ended"));
    }
    return absl::OkStatus();
  });
}

int CallHandler::EndStreams(
    const std::function<absl::Status(const OpenStream&)>& why) {
  // The certificate monitor and the policy reloader may both end streams:
  // one at a time (ending_thread_ names the one cancelling).
  absl::MutexLock serial(&end_streams_mu_);
  std::vector<grpc::CallbackServerContext*> ending;
  std::vector<AuditEvent> events;
  {
    absl::MutexLock lock(&streams_mu_);
    for (auto& [context, stream] : streams_) {
      if (stream.ended) continue;  // also while it is ending
      absl::Status reason = why(stream);
      if (reason.ok()) continue;
      stream.ending = true;
      stream.ended = true;
      // The context is only ever used through the call it belongs to.
      ending.push_back(const_cast<grpc::CallbackServerContext*>(context));
      AuditEvent event;
      event.actor = stream.identity;
      event.action = stream.audit_action;
      event.outcome = std::move(reason);
      events.push_back(std::move(event));
    }
    if (ending.empty()) return 0;
    ending_thread_ = std::this_thread::get_id();
  }
  // Not under the lock: the call may finish at once, and its end is
  // reported to OnCallDone, which takes the lock.
  for (grpc::CallbackServerContext* context : ending) context->TryCancel();
  {
    absl::MutexLock lock(&streams_mu_);
    for (grpc::CallbackServerContext* context : ending) {
      auto it = streams_.find(context);
      if (it != streams_.end()) it->second.ending = false;
    }
    ending_thread_ = std::thread::id();
  }
  for (const AuditEvent& event : events) {
    AppendOrLog(*audit_, event);
    log::Warning("rpc.stream_ended",
                 {{"port", port_ == Port::kOffice ? "office" : "peer"},
                  {"action", event.action},
                  {"identity", event.actor},
                  {"reason", std::string(event.outcome.message())}});
  }
  return static_cast<int>(ending.size());
}

// Told by gRPC when each call's context is released, i.e. the call is done.
// Contexts are still allocated by gRPC itself (nullptr from New...).
class CallHandler::CallDoneHook final : public grpc::ContextAllocator {
 public:
  explicit CallDoneHook(CallHandler* handler) : handler_(handler) {}
  void Release(grpc::CallbackServerContext* context) override {
    handler_->OnCallDone(context);
  }
  void Release(grpc::GenericCallbackServerContext* /*context*/) override {}

 private:
  CallHandler* const handler_;
};

std::unique_ptr<grpc::ContextAllocator> CallHandler::MakeCallDoneHook() {
  return std::make_unique<CallDoneHook>(this);
}

void CallHandler::Run(grpc::CallbackServerContext* context, Action action,
                      std::string audit_action, std::string payload,
                      std::vector<std::string> subjects, Body body,
                      std::function<void(const grpc::Status&)> finish,
                      bool first) {
  Screened screened = Screen(context, action);
  if (!screened.status.ok() && !screened.audit &&
      screened.burst_limiter == nullptr) {
    // A limit refusal inside a burst: counted, not audited, so nothing is
    // left to do but answer.
    const grpc::Status reply = ToGrpcStatus(screened.status);
    log::Write(log::Level::kDebug, "rpc.refused",
               {{"port", port_ == Port::kOffice ? "office" : "peer"},
                {"action", audit_action},
                {"identity", screened.identity},
                {"code", GrpcCodeName(reply.error_code())},
                {"reason", reply.error_message()},
                {"ms", 0.0}});
    finish(reply);
    return;
  }
  auto task = [this, context, action, screened = std::move(screened),
               audit_action = std::move(audit_action),
               payload = std::move(payload), subjects = std::move(subjects),
               body = std::move(body), finish = std::move(finish)]() {
    const absl::Time start = clock_->Now();
    if (screened.burst_limiter != nullptr) {
      AuditBurst(*screened.burst_limiter, screened.burst_identity,
                 screened.burst);
    }
    const std::string& identity = screened.identity;
    absl::Status status = screened.status;
    bool audit = screened.audit;
    if (!status.ok()) {
      // Refused by the screening: audited whatever became of the call
      // since, as the first refusal of a burst must be.
    } else if (context->IsCancelled()) {
      status = absl::CancelledError("call cancelled before it ran");
    } else if (absl::FromChrono(context->deadline()) <= absl::Now()) {
      // gRPC deadlines are wall-clock instants: compared with real time.
      status =
          absl::DeadlineExceededError("deadline passed before the call ran");
    } else {
      auto caller = Authorize(context, action, identity);
      status = caller.status();
      const bool stream = IsStream(action);
      if (status.ok() && stream) {
        status = TrackStream(context, action, identity, audit_action, &audit);
      }
      // A stream past the stream limit, or refused before it, ends its
      // identity's burst (Screen closed it for the other calls).
      if (stream && limiter_ != nullptr && (!caller.ok() || status.ok())) {
        AuditBurst(*limiter_, identity, limiter_->CloseBurst(identity));
      }
      if (status.ok()) status = body(*caller);
    }
    const bool refused = !status.ok() &&
                         status.code() != absl::StatusCode::kCancelled &&
                         status.code() != absl::StatusCode::kDeadlineExceeded;
    if (refused && audit) {
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
      AppendOrLog(*audit_, event);
    }
    const grpc::Status reply = ToGrpcStatus(status);
    // Refusals inside a burst are counted, not logged one by one.
    const log::Level level = status.ok() ? log::Level::kInfo
                             : audit     ? log::Level::kWarning
                                         : log::Level::kDebug;
    log::Write(level, status.ok() ? "rpc.ok" : "rpc.refused",
               {{"port", port_ == Port::kOffice ? "office" : "peer"},
                {"action", audit_action},
                {"identity", identity},
                {"code", GrpcCodeName(reply.error_code())},
                {"reason", reply.error_message()},
                {"ms", absl::ToDoubleMilliseconds(clock_->Now() - start)}});
    finish(reply);
  };
  if (first) {
    work_->PostFirst(std::move(task));
  } else {
    work_->Post(std::move(task));
  }
}

}  // namespace casebridge::server
