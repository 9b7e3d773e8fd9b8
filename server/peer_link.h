// The sending end of the exchange: one thread that keeps a Deliver stream
// open to the peer gateway and feeds it from the outbox
// (docs/exchange.md#sending).
//
// Up to limits.delivery_window envelopes are in flight at once, at most one
// per case, so a case's messages reach the peer in the order they were
// queued while other cases overtake (URGENT first: ExchangeStore::
// ReadyToSend). A receipt is verified against the peer's keys and the
// envelope sent before it is stored; a permanent refusal marks the envelope
// FAILED; anything else (refusal, broken stream, peer away) is retried with
// capped exponential backoff and jitter, for as long as it takes and across
// restarts (the outbox is durable; the peer answers a resent envelope with
// the receipt it gave first).
//
// Threads, per stream: the sender thread writes each round to the stream as
// soon as it is read from the outbox; the reader thread reads answers and
// verifies receipts; the recorder thread records, in one transaction
// (ExchangeStore::RecordSending), the attempts of the rounds written since
// its last record (with the envelope.sent entry of each first transmission)
// and the verified receipts read meanwhile. An answer is never recorded
// before the attempt of its envelope. An URGENT envelope's answer is
// recorded by the reader at once. Non-URGENT envelopes leave a few slots of
// the window free (UrgentReserve), so an URGENT envelope never waits for a
// receipt.
#ifndef CASEBRIDGE_SERVER_PEER_LINK_H_
#define CASEBRIDGE_SERVER_PEER_LINK_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "casebridge/v1/peer.grpc.pb.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/envelope.h"
#include "server/audit_log.h"
#include "server/exchange_store.h"
#include "server/peer_channel.h"

namespace casebridge::server {

class PeerLink {
 public:
  // Starts the sender thread, which connects over `channel`. All pointers
  // must outlive the link.
  static std::unique_ptr<PeerLink> Start(const config::Gateway* config,
                                         ExchangeStore* store,
                                         const exchange::KeyRing* peer_keys,
                                         PeerChannel* channel,
                                         const Clock* clock);
  ~PeerLink();
  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;

  // Something was queued, or the revocation lists changed: look at the
  // channel and the outbox now. Thread-safe, never blocks.
  void Wake();
  // Ends the stream (envelopes in flight stay in the outbox, to be sent
  // again) and joins the thread. Idempotent.
  void Stop();

  // Whether the peer gateway has admitted the current Deliver stream (it
  // says so in the stream's initial metadata, kDeliverAdmittedMetadata), since
  // when, and, while it has not, why the last stream ended.
  struct LinkState {
    bool up = false;
    absl::Time since;    // of the current state (down: since the link start
                         // or the last time it was up)
    absl::Status error;  // down: the end of the last stream (UNAVAILABLE
                         // before the first)
  };
  LinkState link_state() const;
  // What a down link's `error` means, in words for an office (the
  // endpoint and TLS details are for the operator's log).
  static std::string DownReason(const absl::Status& error);
  // The status a refusal by the peer stands for: its code and reason. A
  // code that is no error (0, OK) or none gRPC knows is UNKNOWN, so that a
  // refusal is never recorded, audited or shown as a success.
  static absl::Status RefusalStatus(const v1::DeliveryRefusal& refusal);
  // Told of the state at once, then each time the link goes up or down
  // (from the link's threads, under its lock: it must not call back into
  // the link). Null: no more calls.
  void set_on_link_change(std::function<void(bool up)> callback);

  // Delay before attempt number `attempts` + 1: 200 ms doubling per attempt,
  // capped at `cap`, then scaled by `jitter` in [0.5, 1].
  static absl::Duration Backoff(int attempts, absl::Duration cap,
                                double jitter);

  // Slots of a window of `window` envelopes that only URGENT envelopes may
  // take: window / 8, at most 8 (0 for a window under 8).
  static size_t UrgentReserve(size_t window);

 private:
  PeerLink(const config::Gateway* config, ExchangeStore* store,
           const exchange::KeyRing* peer_keys, const Clock* clock,
           PeerChannel* channel);

  struct InFlight {
    OutboxItem item;
  };
  // An answer read from the stream, waiting for the recorder.
  struct Answer {
    OutboxItem item;
    v1::DeliverResponse response;
    // For a receipt: OK if it verified and matches the envelope sent.
    absl::Status checked;
  };

  void Run();
  // One stream's life: returns when it broke or Stop() was called.
  void RunStream();
  void ReadResponses(grpc::ClientContext* context,
                     grpc::ClientReaderWriter<v1::DeliverRequest,
                                              v1::DeliverResponse>* stream);
  void MarkUp();
  void MarkDown(absl::Status error);
  // Reader thread: takes the answer's envelope out of flight and hands it
  // to the recorder; an URGENT envelope's answer is checked and recorded at
  // once, so that it never waits behind a batch of ROUTINE receipts.
  void HandleResponse(v1::DeliverResponse response);
  // For a receipt: verifies it and that it matches the envelope sent.
  void Check(Answer& answer) const;
  // Records `answers` (checked), in one transaction with the attempts
  // waiting (ExchangeStore::RecordSending), and frees their cases for the
  // next envelope. false if the database refused the record (the attempts
  // wait for the next one; the answers' envelopes are retried).
  bool Record(const std::vector<Answer>& answers);
  // Recorder thread: records attempts and answers as they come until the
  // reader is done and everything is recorded.
  void RecordAnswers();
  void RecordRefusal(const Answer& answer);
  // Marks `item`, larger than the `peer_max` bytes the peer accepts, FAILED
  // without sending it (envelope.withheld).
  void Withhold(const OutboxItem& item, size_t peer_max);
  // Puts an envelope back for a later attempt.
  void Retry(const OutboxItem& item, const absl::Status& error);
  absl::Duration NextBackoff(int attempts);
  // An entry about `item` by this gateway. Subjects: the exchange id, and
  // the message and envelope ids unless the store call adds them itself
  // (RecordSending's deliveries, RecordRefused).
  enum class Ids { kAll, kStoreAddsThem };
  AuditEvent Event(std::string action, const OutboxItem& item,
                   std::string payload, Ids ids = Ids::kAll) const;

  const config::Gateway* const config_;
  ExchangeStore* const store_;
  const exchange::KeyRing* const peer_keys_;
  const Clock* const clock_;
  PeerChannel* const channel_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_broken_ ABSL_GUARDED_BY(mu_) = false;
  // The peer admitted the current stream (its metadata came).
  bool admitted_ ABSL_GUARDED_BY(mu_) = false;
  // The largest envelope the peer stated it accepts when it admitted the
  // current stream (kDeliverMaxEnvelopeMetadata); 0 if it did not say.
  size_t peer_max_envelope_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;  // current
  std::map<uint64_t, InFlight> in_flight_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> busy_cases_ ABSL_GUARDED_BY(mu_);
  // Answers read and not yet recorded; their cases stay busy until then.
  std::vector<Answer> answers_ ABSL_GUARDED_BY(mu_);
  bool reader_done_ ABSL_GUARDED_BY(mu_) = false;
  // Attempts of envelopes written to the stream and not yet taken by a
  // record, and the envelope id of each attempt a record is writing (one
  // per attempt: an envelope sent again while its attempt went unrecorded
  // has several, and each holds room in the window).
  std::vector<ExchangeStore::Attempt> attempts_ ABSL_GUARDED_BY(mu_);
  std::multiset<std::string> attempts_writing_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  absl::BitGen random_ ABSL_GUARDED_BY(mu_);

  mutable absl::Mutex link_mu_;
  LinkState link_ ABSL_GUARDED_BY(link_mu_);
  std::function<void(bool up)> on_link_change_ ABSL_GUARDED_BY(link_mu_);

  std::thread thread_;
};

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_PEER_LINK_H_
