#ifndef CASEBRIDGE_SERVER_OFFICE_SERVICE_H_
#define CASEBRIDGE_SERVER_OFFICE_SERVICE_H_

#include <optional>

#include "casebridge/v1/office.grpc.pb.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/crypto.h"
#include "server/call_handler.h"
#include "server/case_store.h"
#include "server/exchange_store.h"
#include "server/inbox_watchers.h"
#include "server/work_queue.h"

namespace casebridge::server {

class PeerLink;

// Nests gRPC's WithRawCallbackMethod_* wrappers, each a template over its
// base class, around `Service`: every method listed is served raw.
template <class Service, template <class> class... Methods>
struct WithRawCallbackMethods {
  using type = Service;
};
template <class Service, template <class> class First,
          template <class> class... Rest>
struct WithRawCallbackMethods<Service, First, Rest...> {
  using type = First<typename WithRawCallbackMethods<Service, Rest...>::type>;
};

// Whether a SendMessage call is served ahead of the other calls waiting for
// the work queue: one that sends an URGENT message (a rescue request does
// not wait behind routine traffic).
inline bool SendsUrgent(const v1::SendMessageRequest& request) {
  return request.message().priority() == v1::PRIORITY_URGENT;
}

// Every method is served from raw bytes through CallHandler::Unary, which
// parses, authorizes and audits (see call_handler.h).
using OfficeServiceBase = WithRawCallbackMethods<
    v1::OfficeService::Service, v1::OfficeService::WithRawCallbackMethod_WhoAmI,
    v1::OfficeService::WithRawCallbackMethod_OpenCase,
    v1::OfficeService::WithRawCallbackMethod_GetCase,
    v1::OfficeService::WithRawCallbackMethod_ListCases,
    v1::OfficeService::WithRawCallbackMethod_UpdateCase,
    v1::OfficeService::WithRawCallbackMethod_ShareCase,
    v1::OfficeService::WithRawCallbackMethod_SendMessage,
    v1::OfficeService::WithRawCallbackMethod_WatchInbox,
    v1::OfficeService::WithRawCallbackMethod_Acknowledge,
    v1::OfficeService::WithRawCallbackMethod_GetDeliveryStatus,
    v1::OfficeService::WithRawCallbackMethod_CancelMessage,
    v1::OfficeService::WithRawCallbackMethod_GrantDissemination,
    v1::OfficeService::WithRawCallbackMethod_WithdrawDissemination,
    v1::OfficeService::WithRawCallbackMethod_ForwardCase>::type;

// OfficeService on the office port: case references (office_service.cc),
// the exchange RPCs (office_exchange.cc) and onward dissemination under the
// handling codes (GrantDissemination, ForwardCase: office_exchange.cc;
// WithdrawDissemination: office_service.cc).
class OfficeServiceImpl final : public OfficeServiceBase {
 public:
  // What the exchange RPCs need. Pointers must outlive the service.
  struct Exchange {
    ExchangeStore* store = nullptr;
    const crypto::Ed25519Signer* envelope_signer = nullptr;
    std::function<void()> wake_sender;    // something was queued
    const PeerLink* peer_link = nullptr;  // null: its state is not told
    InboxWatchers* watchers = nullptr;
    WorkQueue* work = nullptr;
    const Clock* clock = nullptr;
  };

  // All pointers must outlive the service.
  OfficeServiceImpl(const config::Gateway* config, CallHandler* handler,
                    CaseStore* cases, AuditLog* audit, Exchange exchange);

  grpc::ServerUnaryReactor* WhoAmI(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* OpenCase(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetCase(grpc::CallbackServerContext* context,
                                    const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListCases(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* UpdateCase(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ShareCase(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* SendMessage(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* WatchInbox(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Acknowledge(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetDeliveryStatus(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* CancelMessage(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GrantDissemination(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* WithdrawDissemination(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ForwardCase(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;

 private:
  // The case if `caller` may know of it (need-to-know): our country's cases,
  // peer cases shared with the caller's office, or any with ReadAllCases.
  // NOT_FOUND otherwise, worded as for a case that does not exist. A peer
  // case is the version `caller`'s office was given (AsGivenTo).
  absl::StatusOr<v1::CaseReference> VisibleCase(const Caller& caller,
                                                const std::string& exchange_id);
  // Peer case `c` as `office` may read it. Under H2, an office that holds
  // the case only through ForwardCase, without the originator's permission
  // (never given, or withdrawn), is held to the newest version forwarded to
  // it: later versions reached this gateway without leave to pass them on.
  // It gets that version's content under the case's handling as held now
  // (and without personal data the case no longer holds); once retention
  // purged every copy forwarded to it, the case's ids, owner, creation time
  // and handling alone (version 0). Any other case is `c` itself. `access`,
  // if known, is the office's (CaseStore::AccessOf); read here if not.
  absl::StatusOr<v1::CaseReference> AsGivenTo(
      const std::string& office, v1::CaseReference c,
      std::optional<CaseAccess> access = std::nullopt);
  // Leaves `c`'s personal fields (victims' remarks, last known locations)
  // in place if `caller` may read personal data, adding its exchange id to
  // `read` when it has any; else clears them. False if any were withheld.
  static bool ReleasePersonalData(const Caller& caller, v1::CaseReference* c,
                                  std::vector<std::string>* read);
  // Whether `c` holds victims' remarks or last known locations.
  static bool HasPersonalData(const v1::CaseReference& c);
  // Audits that the call read the personal data of `exchange_ids` (if any).
  template <typename Request>
  absl::Status AuditPersonalRead(const Incoming<Request>& in,
                                 const std::string& action,
                                 const std::vector<std::string>& exchange_ids);

  // The head (ExchangeStore::GetOutgoingHead: no body) of the outgoing
  // message `message_id` if `caller` sent it, or may read any office's
  // under `any_office`; NOT_FOUND otherwise, as for no message.
  absl::StatusOr<v1::CaseMessage> OutgoingMessageOf(
      const Caller& caller, const std::string& message_id,
      std::optional<Action> any_office) const;
  // Adds the peer link's state to `status` of a message not yet delivered
  // while the link is down.
  void TellPeerLink(v1::DeliveryStatus* status) const;
  // The DISSEMINATION_GRANT (or, with `withdraw`, DISSEMINATION_WITHDRAWAL)
  // message for GrantDissemination / WithdrawDissemination, once the request
  // is checked: `offices` of the peer country or `any_office` (exactly one),
  // a case of ours visible to `caller`, owned by it or ShareAnyCase, under
  // the case's handling. Errors name the field or the reason.
  absl::StatusOr<v1::CaseMessage> DisseminationMessage(
      const Caller& caller, const std::string& request_id,
      const std::string& exchange_id,
      const google::protobuf::RepeatedPtrField<std::string>& offices,
      bool any_office, bool withdraw);
  // GrantDissemination or WithdrawDissemination (`withdraw`), audited as
  // `action`; both are authorized as the grant.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* DisseminationCall(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response, std::string action, bool withdraw);

  // Mints ids for `message` (kind, priority, content set by the caller) from
  // `caller` and readies it for the outbox: the seal signs the envelope.
  absl::StatusOr<OutgoingMessage> Seal(const Caller& caller,
                                       v1::CaseMessage message, absl::Time now);
  // Seals and queues `message`, and wakes the sender. With
  // `needs_shared_case`, FAILED_PRECONDITION unless its case was shared with
  // the peer (OutgoingMessage::needs_shared_case).
  absl::StatusOr<QueuedMessage> Queue(const Caller& caller,
                                      v1::CaseMessage message,
                                      const RequestKey& key, AuditEvent event,
                                      bool needs_shared_case = false);

  const config::Gateway* const config_;
  CallHandler* const handler_;
  CaseStore* const cases_;
  AuditLog* const audit_;
  const Exchange exchange_;
};

// Encodes / decodes ListCases page tokens: the position after the last case
// of the page, bound to a fingerprint of the filters it was made for.
std::string EncodePageToken(int64_t position,
                            const v1::ListCasesRequest& filters);
absl::StatusOr<int64_t> DecodePageToken(const std::string& token,
                                        const v1::ListCasesRequest& filters);

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_OFFICE_SERVICE_H_
