#ifndef CASEBRIDGE_SERVER_PEER_SERVICE_H_
#define CASEBRIDGE_SERVER_PEER_SERVICE_H_

#include "casebridge/v1/peer.grpc.pb.h"
#include "server/call_handler.h"
#include "server/inbound.h"
#include "server/witness.h"
#include "server/work_queue.h"

namespace casebridge::server {

// Initial metadata the peer port sends once it admitted a Deliver stream
// (the sender's PeerLink takes the link as up on it).
inline constexpr char kDeliverAdmittedMetadata[] =
    "casebridge-deliver-admitted";
// With it, the largest envelope the peer port accepts (its
// limits.max_envelope_bytes, in decimal): the sender withholds a larger
// one, which would be refused for good or, over the port's message size,
// end the stream each time it is sent.
inline constexpr char kDeliverMaxEnvelopeMetadata[] =
    "casebridge-max-envelope-bytes";

using PeerServiceBase = v1::PeerService::WithRawCallbackMethod_Deliver<
    v1::PeerService::WithRawCallbackMethod_AddCheckpoint<
        v1::PeerService::Service>>;

// PeerService on the peer port. Admits only the pinned peer gateway.
// Deliver takes envelopes pipelined on one stream: each is checked on the
// work queue as it arrives, those that pass are stored in batches (one
// transaction for every envelope checked meanwhile), and each is answered
// (receipt or refusal) as soon as it is done, a receipt only once its
// transaction committed, so answers may come out of order; `sequence`
// matches them. AddCheckpoint is the witness (server/witness.h).
class PeerServiceImpl final : public PeerServiceBase {
 public:
  // Pointers must outlive the service.
  PeerServiceImpl(CallHandler* handler, Inbound* inbound, WorkQueue* work,
                  Witness* witness)
      : handler_(handler), inbound_(inbound), work_(work), witness_(witness) {}

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Deliver(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* AddCheckpoint(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;

 private:
  CallHandler* const handler_;
  Inbound* const inbound_;
  WorkQueue* const work_;
  Witness* const witness_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_PEER_SERVICE_H_
