// The C++ client of a gateway's office port. Written against the generated
// StubInterface, so tests can hand it a MockOfficeServiceStub.
#ifndef CASEBRIDGE_CLIENT_OFFICE_CLIENT_H_
#define CASEBRIDGE_CLIENT_OFFICE_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "casebridge/v1/audit.grpc.pb.h"
#include "casebridge/v1/office.grpc.pb.h"
#include "core/config.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace casebridge::client {

// A mutual-TLS channel to the gateway named in `config`, which must present
// `config.gateway_identity`; `args` are added to the channel's own.
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(
    const config::Client& config,
    grpc::ChannelArguments args = grpc::ChannelArguments());

class OfficeClient {
 public:
  // Every call gets a deadline of `timeout`. The stubs may be mocks.
  OfficeClient(std::unique_ptr<v1::OfficeService::StubInterface> office,
               std::unique_ptr<v1::AuditService::StubInterface> audit,
               std::unique_ptr<grpc::health::v1::Health::StubInterface> health,
               absl::Duration timeout);

  // Connects per `config` (no network traffic until the first call).
  static absl::StatusOr<std::unique_ptr<OfficeClient>> Create(
      const config::Client& config);

  // Errors are the gateway's status (code and reason) as absl::Status.
  absl::StatusOr<v1::WhoAmIResponse> WhoAmI();
  // SERVING / NOT_SERVING of `service` ("" for the whole gateway).
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(
      const std::string& service = "");
  absl::StatusOr<v1::CaseReference> OpenCase(
      const v1::CaseReference& draft, const std::string& request_id = "");
  absl::StatusOr<v1::CaseReference> GetCase(const std::string& exchange_id);
  // The whole response: the case, and whether personal data was withheld
  // from it (the caller's role may not read it).
  absl::StatusOr<v1::GetCaseResponse> GetCaseResponse(
      const std::string& exchange_id);
  absl::StatusOr<v1::ListCasesResponse> ListCases(
      const v1::ListCasesRequest& request);
  absl::StatusOr<v1::CaseReference> UpdateCase(
      const v1::UpdateCaseRequest& request);
  absl::StatusOr<v1::GetEntriesResponse> GetAuditEntries(uint64_t start,
                                                         int page_size);
  // The gateway's newest signed checkpoint (a C2SP signed note, with the
  // peer's cosignature once witnessed).
  absl::StatusOr<std::string> GetCheckpoint();
  // The evidence bundle of one envelope, named by its envelope id
  // ("PK-E-...") or by the id of the message it carried ("PK-M-...");
  // FAILED_PRECONDITION until both logs' entries are covered by cosigned
  // checkpoints.
  absl::StatusOr<v1::EvidenceBundle> GetEvidence(const std::string& id);
  absl::StatusOr<v1::ShareCaseResponse> ShareCase(
      const v1::ShareCaseRequest& request);
  absl::StatusOr<v1::GrantDisseminationResponse> GrantDissemination(
      const v1::GrantDisseminationRequest& request);
  absl::StatusOr<v1::WithdrawDisseminationResponse> WithdrawDissemination(
      const v1::WithdrawDisseminationRequest& request);
  absl::StatusOr<v1::ForwardCaseResponse> ForwardCase(
      const v1::ForwardCaseRequest& request);
  absl::StatusOr<v1::SendMessageResponse> SendMessage(
      const v1::SendMessageRequest& request);
  absl::StatusOr<v1::DeliveryStatus> GetDeliveryStatus(
      const std::string& message_id);
  // Withdraws an own message not yet delivered; returns its status.
  absl::StatusOr<v1::DeliveryStatus> CancelMessage(
      const std::string& message_id, const std::string& reason);
  // Returns the id of the acknowledgement message travelling back.
  absl::StatusOr<std::string> Acknowledge(const std::string& message_id,
                                          v1::AcknowledgementKind kind,
                                          const std::string& note);

  // Called when a standing watch lost its stream to UNAVAILABLE (the gateway
  // restarted, the connection was recycled or dropped): why, the cursor it
  // resumes from, and how long it waits first.
  using WatchInterrupted = std::function<void(
      const absl::Status& why, const std::string& cursor, absl::Duration wait)>;

  // Streams the inbox after `cursor` ("" from the start) and calls
  // `on_message` for each message until it returns false, `max_wait` passes
  // (absl::InfiniteDuration() for no limit), or the stream ends. Returns the
  // stream's end status (OK when stopped by `on_message` or `max_wait`;
  // UNAVAILABLE if `max_wait` ran out while the gateway could not be
  // reached, since messages may then be waiting unseen).
  // Each stream carries a deadline (at most kMaxWatchStream; a longer watch
  // opens the next stream from the last cursor). With `on_interrupted`, a
  // stream ended by UNAVAILABLE is opened again from the last cursor after
  // a backoff (1 s, doubling to 30 s; back to 1 s once a stream delivers),
  // for as long as `max_wait` allows, and `on_interrupted` is told each
  // time; any other end status is returned. Nothing is lost or repeated:
  // the cursor is the last message handed to `on_message`.
  absl::Status WatchInbox(
      const std::string& cursor, absl::Duration max_wait,
      const std::function<bool(const v1::WatchInboxResponse&)>& on_message,
      const WatchInterrupted& on_interrupted = nullptr);

  // Under the gateway's default connection age (an hour, which gRPC
  // jitters by a tenth), so that a standing watch seldom meets it.
  static constexpr absl::Duration kMaxWatchStream = absl::Minutes(20);

 private:
  void Prepare(grpc::ClientContext& context) const;

  std::unique_ptr<v1::OfficeService::StubInterface> office_;
  std::unique_ptr<v1::AuditService::StubInterface> audit_;
  std::unique_ptr<grpc::health::v1::Health::StubInterface> health_;
  absl::Duration timeout_;
};

}  // namespace casebridge::client

#endif  // CASEBRIDGE_CLIENT_OFFICE_CLIENT_H_
