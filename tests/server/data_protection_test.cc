// Data protection at rest and retention (docs/storage.md#data-protection,
// docs/audit-log.md#retention), against real SQLite files: what reaches the
// disk is read back as raw bytes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/audit_entry.h"
#include "core/crypto.h"
#include "core/envelope.h"
#include "core/public_keys.h"
#include "core/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "server/audit_verifier.h"
#include "server/data_key_rotation.h"
#include "server/evidence.h"
#include "server/record_keys.h"
#include "server/sqlite_case_store.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::casebridge::testing::WriteFile;
using ::google::protobuf::util::TimeUtil;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kPkGateway[] = "spiffe://pk.casebridge/gateway";
constexpr char kCnGateway[] = "spiffe://cn.casebridge/gateway";
constexpr char kFia[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kMps[] = "spiffe://cn.casebridge/office/mps-liaison";

// Personal text that must never reach the disk in the clear.
constexpr char kRemark[] = "remark: age 19, speaks Saraiki, scar on left hand";
constexpr char kLocation[] = "location: 河北省邯郸市丛台区 third house east";
constexpr char kBody[] = "body: victim seen at the Guangzhou garment works";

std::string ReadRaw(const std::string& path) {
  auto bytes = crypto::ReadFile(path);
  return bytes.ok() ? *bytes : "";
}

AuditEvent Event(const std::string& action, const std::string& actor = kFia,
                 const std::string& payload = "request bytes") {
  AuditEvent event;
  event.actor = actor;
  event.action = action;
  event.payload = payload;
  return event;
}

AuditEvent UpdateEvent(const std::string& exchange_id) {
  AuditEvent event = Event("case.update");
  event.subjects = {exchange_id};
  return event;
}

v1::CaseReference Draft() {
  v1::CaseReference c;
  c.set_local_reference("FIR-77/2026");
  c.set_category(v1::CASE_CATEGORY_FORCED_LABOUR);
  c.set_summary("Recruited for factory work abroad.");
  v1::VictimReference& v = *c.add_victims();
  v.set_pseudonym("V1");
  v.set_remarks(kRemark);
  v1::Location& l = *c.add_last_known_locations();
  l.set_description(kLocation);
  l.set_country(v1::COUNTRY_CN);
  c.set_handling_code(v1::HANDLING_CODE_H1);
  c.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
  c.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_2);
  return c;
}

class DataProtectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("data-protection");
    key_file_ = NewTempDir("data-protection-key") + "/data.key";
    Reopen();
  }

  void Reopen(bool with_key = true) {
    store_.reset();
    StoreOptions options;
    options.data_dir = dir_;
    options.country = v1::COUNTRY_PK;
    if (with_key) options.data_key_file = key_file_;
    auto store = GatewayStore::Open(options, &clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  // The database file and its WAL, as an attacker holding them reads them.
  std::string RawFiles() const {
    const std::string db = GatewayStore::DatabasePath(dir_);
    return ReadRaw(db) + ReadRaw(db + "-wal");
  }

  // The log's entries of `action`, in order.
  // The salt of entry `index`; nullopt once purged.
  std::optional<std::string> Salt(uint64_t index) {
    auto got = store_->audit_log().PayloadSalt(index);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : std::nullopt;
  }

  std::vector<StoredEntry> EntriesOf(const std::string& action) {
    std::vector<StoredEntry> found;
    auto size = store_->audit_log().Size();
    EXPECT_TRUE(size.ok()) << size.status();
    if (!size.ok()) return found;
    auto entries = store_->audit_log().Read(0, *size);
    EXPECT_TRUE(entries.ok()) << entries.status();
    if (!entries.ok()) return found;
    for (StoredEntry& e : *entries) {
      if (e.entry.action == action) found.push_back(std::move(e));
    }
    return found;
  }

  // One retention run under `policy` at the clock's time.
  absl::StatusOr<RetentionReport> Purge(
      const config::RetentionSettings& policy) {
    return store_->PurgeExpired(policy, clock_.Now(), kPkGateway);
  }

  v1::CaseReference Open(const v1::CaseReference& draft = Draft(),
                         const RequestKey& key = {}) {
    auto opened =
        store_->cases().OpenCase(draft, kFia, key, Event("case.open"));
    EXPECT_TRUE(opened.ok()) << opened.status();
    return opened.ok() ? opened->case_reference : v1::CaseReference{};
  }

  v1::CaseReference Close(const std::string& exchange_id) {
    auto closed = store_->cases().UpdateCase(
        exchange_id, 1,
        [](v1::CaseReference& c) {
          c.set_status(v1::CASE_STATUS_CLOSED);
          return absl::OkStatus();
        },
        kFia, UpdateEvent(exchange_id));
    EXPECT_TRUE(closed.ok()) << closed.status();
    return closed.ok() ? *closed : v1::CaseReference{};
  }

  v1::CaseMessage PeerMessage(const std::string& message_id,
                              v1::MessageKind kind,
                              const std::string& body = kBody) {
    v1::CaseMessage m;
    m.set_message_id(message_id);
    m.set_exchange_id("CN-2026-000001");
    m.set_kind(kind);
    m.set_priority(v1::PRIORITY_URGENT);
    m.set_body(body);
    m.set_sender_office(kMps);
    m.set_recipient_office(kFia);
    m.set_sender_country(v1::COUNTRY_CN);
    return m;
  }

  // A note of the FIA desk to MPS's liaison desk.
  v1::CaseMessage OutgoingNote(const std::string& message_id,
                               const std::string& body) {
    v1::CaseMessage m = PeerMessage(message_id, v1::MESSAGE_KIND_NOTE, body);
    m.set_sender_office(kFia);
    m.set_recipient_office(kMps);
    m.set_sender_country(v1::COUNTRY_PK);
    return m;
  }

  // Stores an envelope from the Chinese gateway the way the receiver does:
  // its envelope.received entry commits to the sender's signature.
  void Receive(const v1::CaseMessage& message) {
    ASSERT_OK(Accept(message).status());
  }

  // `padding`: bytes of a field the sender adds to the wrapper, outside
  // what it signs.
  absl::StatusOr<InboundResult> Accept(const v1::CaseMessage& message,
                                       size_t padding = 0) {
    v1::Envelope envelope;
    envelope.set_envelope_id("E-" + message.message_id());
    envelope.set_origin_gateway(kCnGateway);
    envelope.set_destination_gateway(kPkGateway);
    *envelope.mutable_created_at() =
        TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_.Now()));
    *envelope.mutable_message() = message;
    envelope.set_origin_audit_index(41);
    auto signed_envelope = exchange::SignEnvelope(envelope, *cn_envelope_);
    CB_RETURN_IF_ERROR(signed_envelope.status());
    if (padding > 0) {
      signed_envelope->GetReflection()
          ->MutableUnknownFields(&*signed_envelope)
          ->AddLengthDelimited(99, std::string(padding, 'x'));
    }
    return store_->exchange().AcceptInbound(
        *signed_envelope, envelope, {kFia},
        [&](uint64_t index,
            absl::Time at) -> absl::StatusOr<v1::SignedReceipt> {
          v1::Receipt receipt;
          receipt.set_envelope_id(envelope.envelope_id());
          receipt.set_envelope_sha256(
              exchange::EnvelopeDigest(*signed_envelope));
          *receipt.mutable_received_at() =
              TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(at));
          receipt.set_receiver_audit_index(index);
          receipt.set_receiver_gateway(kPkGateway);
          return exchange::SignReceipt(receipt, *pk_envelope_);
        },
        Event("envelope.received", kCnGateway, signed_envelope->signature()));
  }

  // Queues `message` to the peer in envelope "E-<message id>".
  void Send(const v1::CaseMessage& message, const RequestKey& key = {}) {
    OutgoingMessage out;
    out.message = message;
    out.envelope_id = "E-" + message.message_id();
    out.seal = [&](uint64_t index) -> absl::StatusOr<v1::SignedEnvelope> {
      v1::Envelope envelope;
      envelope.set_envelope_id(out.envelope_id);
      envelope.set_origin_gateway(kPkGateway);
      envelope.set_destination_gateway(kCnGateway);
      *envelope.mutable_created_at() =
          TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_.Now()));
      *envelope.mutable_message() = message;
      envelope.set_origin_audit_index(index);
      return exchange::SignEnvelope(envelope, *pk_envelope_);
    };
    ASSERT_OK(store_->exchange()
                  .QueueOutgoing(out, key, Event("message.send"))
                  .status());
  }

  std::vector<InboxItem> Inbox() {
    auto items = store_->exchange().ReadInbox(kFia, 0, 100);
    EXPECT_TRUE(items.ok()) << items.status();
    return items.ok() ? *items : std::vector<InboxItem>{};
  }

  // The first column of the first row `sql` selects with `id` as its one
  // parameter, as bytes; empty if there is no row.
  std::string Column(const std::string& sql, const std::string& id) {
    std::string out;
    EXPECT_OK(
        store_->database().Read([&](sqlite::Connection& c) -> absl::Status {
          CB_ASSIGN_OR_RETURN(auto stmt, c.Prepare(sql));
          stmt.Bind(1, id);
          CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
          if (row) out = stmt.ColumnBlob(0);
          return absl::OkStatus();
        }));
    return out;
  }

  // The wrapped key of `record`; empty if there is none.
  std::string WrappedKey(const std::string& record) {
    return Column("SELECT wrapped FROM record_keys WHERE record = ?", record);
  }

  // The offline verifier (`casebridge audit verify`) over the data
  // directory; the store must be closed.
  AuditVerifyReport VerifyOffline() {
    keys::PublicKeys keys;
    const auto pk_checkpoint = crypto::Ed25519Signer::Generate();
    const auto pk_witness = crypto::Ed25519Signer::Generate();
    const auto cn_checkpoint = crypto::Ed25519Signer::Generate();
    const auto cn_witness = crypto::Ed25519Signer::Generate();
    auto pk = keys::MakeGatewayKeys(v1::COUNTRY_PK, pk_envelope_->public_key(),
                                    pk_checkpoint->public_key(),
                                    pk_witness->public_key());
    auto cn = keys::MakeGatewayKeys(v1::COUNTRY_CN, cn_envelope_->public_key(),
                                    cn_checkpoint->public_key(),
                                    cn_witness->public_key());
    EXPECT_OK(pk.status());
    EXPECT_OK(cn.status());
    keys.pk = *std::move(pk);
    keys.cn = *std::move(cn);
    AuditVerifyOptions options;
    options.allow_unwitnessed = true;
    auto report = VerifyDataDir(dir_, keys, options);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *report : AuditVerifyReport{};
  }

  FakeClock clock_{absl::FromCivil(absl::CivilSecond(2026, 11, 29, 8, 0, 0),
                                   absl::UTCTimeZone())};
  std::string dir_;
  std::string key_file_;
  std::unique_ptr<GatewayStore> store_;
  std::unique_ptr<crypto::Ed25519Signer> pk_envelope_ =
      crypto::Ed25519Signer::Generate();
  std::unique_ptr<crypto::Ed25519Signer> cn_envelope_ =
      crypto::Ed25519Signer::Generate();
};

// Sealing.

TEST_F(DataProtectionTest, CaseFieldsAreSealedOnDiskAndReadBackInTheClear) {
  const v1::CaseReference opened = Open();
  ASSERT_EQ(opened.victims(0).remarks(), kRemark);

  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       store_->cases().GetCase(opened.exchange_id()));
  EXPECT_EQ(got.victims(0).remarks(), kRemark);
  EXPECT_EQ(got.last_known_locations(0).description(), kLocation);
  ASSERT_OK_AND_ASSIGN(const CasePage page,
                       store_->cases().ListCases(CaseFilter{}, 0, 10));
  ASSERT_EQ(page.cases.size(), 1u);
  EXPECT_EQ(page.cases[0].victims(0).remarks(), kRemark);

  const std::string raw = RawFiles();
  ASSERT_NE(raw.find(opened.exchange_id()), std::string::npos)
      << "the raw files are not the database";
  EXPECT_EQ(raw.find(kRemark), std::string::npos);
  EXPECT_EQ(raw.find(kLocation), std::string::npos);
  EXPECT_EQ(raw.find("Saraiki"), std::string::npos);
  EXPECT_THAT(WrappedKey(CaseRecord(opened.exchange_id())), Not(IsEmpty()));
}

TEST_F(DataProtectionTest, MessageBodiesAndEnvelopesAreSealedOnDisk) {
  Receive(PeerMessage("CN-M-1", v1::MESSAGE_KIND_RESCUE_UPDATE));
  Send(OutgoingNote("PK-M-1", "outgoing: shelter in Lahore ready"));

  const std::vector<InboxItem> inbox = Inbox();
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].message.body(), kBody);
  ASSERT_OK_AND_ASSIGN(const v1::CaseMessage sent,
                       store_->exchange().GetOutgoingMessage("PK-M-1"));
  EXPECT_EQ(sent.body(), "outgoing: shelter in Lahore ready");
  // The sender gets the envelope exactly as signed.
  ASSERT_OK_AND_ASSIGN(const std::vector<OutboxItem> ready,
                       store_->exchange().ReadyToSend(clock_.Now(), 10, {}));
  ASSERT_EQ(ready.size(), 1u);
  exchange::KeyRing ring;
  ASSERT_OK(ring.Add(
      *crypto::Ed25519Verifier::FromRawPublicKey(pk_envelope_->public_key())));
  ASSERT_OK_AND_ASSIGN(
      const v1::Envelope envelope,
      exchange::VerifyEnvelope(ready[0].signed_envelope, ring, 1 << 20));
  EXPECT_EQ(envelope.message().body(), "outgoing: shelter in Lahore ready");

  const std::string raw = RawFiles();
  ASSERT_NE(raw.find("CN-M-1"), std::string::npos);
  EXPECT_EQ(raw.find(kBody), std::string::npos);
  EXPECT_EQ(raw.find("shelter in Lahore"), std::string::npos);
}

TEST_F(DataProtectionTest, FieldsAPeerAddsOutsideTheSignedBytesAreNotSealedIn) {
  // Kept, such a field would make evidence bundles of the envelope
  // unverifiable (a verifier refuses fields it does not know) and take room
  // past the envelope's size limit.
  ASSERT_OK(Accept(PeerMessage("CN-M-1", v1::MESSAGE_KIND_RESCUE_UPDATE),
                   /*padding=*/64 << 10)
                .status());
  std::string stored;
  bool sealed = false;
  ASSERT_OK(store_->database().Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(auto row,
                        c.Prepare("SELECT signed_envelope, sealed FROM inbound "
                                  "WHERE envelope_id = 'E-CN-M-1'"));
    CB_ASSIGN_OR_RETURN(const bool found, row.Step());
    if (found) {
      stored = row.ColumnBlob(0);
      sealed = row.ColumnInt(1) != 0;
    }
    return absl::OkStatus();
  }));
  EXPECT_TRUE(sealed);
  EXPECT_LT(stored.size(), 4096u);
  v1::SignedEnvelope wrapper;
  ASSERT_TRUE(wrapper.ParseFromString(stored));
  EXPECT_TRUE(wrapper.GetReflection()->GetUnknownFields(wrapper).empty());
  // And the envelope itself reads back as signed.
  ASSERT_EQ(Inbox().size(), 1u);
  EXPECT_EQ(Inbox()[0].message.body(), kBody);
}

TEST_F(DataProtectionTest, MintsPseudonymsForVictimsWithoutOne) {
  v1::CaseReference draft = Draft();
  draft.mutable_victims(0)->clear_pseudonym();
  draft.add_victims()->set_pseudonym("V2");
  draft.add_victims();
  const v1::CaseReference opened = Open(draft);
  ASSERT_EQ(opened.victims_size(), 3);
  EXPECT_THAT(opened.victims(0).pseudonym(), MatchesRegex("V-[A-Z2-7]{8}"));
  EXPECT_EQ(opened.victims(1).pseudonym(), "V2");
  EXPECT_THAT(opened.victims(2).pseudonym(), MatchesRegex("V-[A-Z2-7]{8}"));
  EXPECT_NE(opened.victims(0).pseudonym(), opened.victims(2).pseudonym());
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       store_->cases().GetCase(opened.exchange_id()));
  EXPECT_EQ(got.victims(0).pseudonym(), opened.victims(0).pseudonym());
}

TEST_F(DataProtectionTest, SealsRowsWrittenBeforeTheKeyWhenOpenedWithIt) {
  // Written as a gateway before migration 6 did: in the clear.
  Reopen(/*with_key=*/false);
  const v1::CaseReference opened = Open();
  Receive(PeerMessage("CN-M-OLD", v1::MESSAGE_KIND_NOTE));
  ASSERT_NE(RawFiles().find(kRemark), std::string::npos)
      << "the row was not written in the clear";

  Reopen(/*with_key=*/true);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       store_->cases().GetCase(opened.exchange_id()));
  EXPECT_EQ(got.victims(0).remarks(), kRemark);
  ASSERT_EQ(Inbox().size(), 1u);
  EXPECT_EQ(Inbox()[0].message.body(), kBody);
  // Each row sealed is audited by the gateway, named by its ids and column.
  std::vector<std::vector<std::string>> audited;
  for (const StoredEntry& e : EntriesOf(kSealedAtOpenAction)) {
    EXPECT_EQ(e.entry.actor, kPkGateway);
    audited.push_back(e.entry.subjects);
  }
  EXPECT_THAT(audited,
              ::testing::UnorderedElementsAre(
                  ::testing::ElementsAre(opened.exchange_id(), "cases.body"),
                  ::testing::ElementsAre("CN-M-OLD", "messages.body"),
                  ::testing::ElementsAre("CN-M-OLD", "E-CN-M-OLD",
                                         "inbound.envelope")));
  // Once: the next open finds nothing in the clear.
  Reopen(/*with_key=*/true);
  EXPECT_EQ(EntriesOf(kSealedAtOpenAction).size(), 3u);
  store_.reset();  // checkpoints the WAL into the file
  const std::string raw = RawFiles();
  EXPECT_EQ(raw.find(kRemark), std::string::npos);
  EXPECT_EQ(raw.find(kLocation), std::string::npos);
  EXPECT_EQ(raw.find(kBody), std::string::npos);
}

TEST_F(DataProtectionTest, SealsAPurgedCaseLeftInTheClearWhenOpened) {
  // Purged cases used to keep their remainder in the clear; the next open
  // with the key seals it, as it does rows from before the key.
  Reopen(/*with_key=*/false);
  const v1::CaseReference closed = Close(Open().exchange_id());
  config::RetentionSettings policy;
  policy.case_status_days[v1::CASE_STATUS_CLOSED] = 1;
  clock_.Advance(absl::Hours(48));
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  ASSERT_EQ(report.cases, 1);

  Reopen(/*with_key=*/true);
  EXPECT_THAT(WrappedKey(CaseRecord(closed.exchange_id())), Not(IsEmpty()));
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       store_->cases().GetCase(closed.exchange_id()));
  EXPECT_TRUE(got.has_personal_data_purged_at());
  EXPECT_THAT(got.victims(), IsEmpty());
  EXPECT_EQ(got.local_reference(), closed.local_reference());
}

TEST_F(DataProtectionTest, AChangedWrappedKeyReadsAsDataLoss) {
  const v1::CaseReference opened = Open();
  const std::string record = CaseRecord(opened.exchange_id());
  std::string wrapped = WrappedKey(record);
  wrapped.back() = static_cast<char>(wrapped.back() ^ 1);
  ASSERT_OK(store_->database().Write([&](sqlite::Connection& c) {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare("UPDATE record_keys SET wrapped = ? WHERE record = ?"));
    stmt.BindBlob(1, wrapped).Bind(2, record);
    return stmt.Run();
  }));
  EXPECT_THAT(store_->cases().GetCase(opened.exchange_id()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("does not open under the data key")));
}

TEST_F(DataProtectionTest, APayloadPutInTheClearReadsAsDataLoss) {
  // Someone with write access to the file replaces a case's sealed body with
  // one of their own in the clear (a weaker handling code, say): the AEAD
  // would catch a changed ciphertext, so the row says "not sealed".
  const v1::CaseReference opened = Open();
  v1::CaseReference forged = opened;
  forged.set_handling_code(v1::HANDLING_CODE_H0);
  forged.clear_victims();
  Receive(PeerMessage("CN-M-FORGED", v1::MESSAGE_KIND_NOTE));
  v1::CaseMessage forged_message =
      PeerMessage("CN-M-FORGED", v1::MESSAGE_KIND_NOTE);
  forged_message.set_body("go to the wrong address");
  ASSERT_OK(store_->database().Write([&](sqlite::Connection& c) {
    CB_ASSIGN_OR_RETURN(auto cases,
                        c.Prepare("UPDATE cases SET body = ?, sealed = 0 "
                                  "WHERE exchange_id = ?"));
    cases.BindBlob(1, forged.SerializeAsString()).Bind(2, opened.exchange_id());
    CB_RETURN_IF_ERROR(cases.Run());
    CB_ASSIGN_OR_RETURN(auto messages,
                        c.Prepare("UPDATE messages SET body = ?, sealed = 0 "
                                  "WHERE message_id = 'CN-M-FORGED'"));
    messages.BindBlob(1, forged_message.SerializeAsString());
    return messages.Run();
  }));
  EXPECT_THAT(store_->cases().GetCase(opened.exchange_id()),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(CaseRecord(opened.exchange_id())),
                             HasSubstr("is in the clear"))));
  EXPECT_THAT(store_->exchange().ReadInbox(kFia, 0, 10),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(MessageRecord("CN-M-FORGED")),
                             HasSubstr("changed outside the gateway"))));
}

TEST_F(DataProtectionTest, AnOutgoingMessagesHeadIsReadWithoutItsBody) {
  // Who sent a message is decided from the columns kept in the clear: a
  // body that no longer opens does not make the answer differ.
  Send(OutgoingNote("PK-M-1", "outgoing: shelter in Lahore ready"));
  ASSERT_OK(store_->database().Write([&](sqlite::Connection& c) {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare("UPDATE messages SET body = zeroblob(length(body)) "
                  "WHERE message_id = 'PK-M-1'"));
    return stmt.Run();
  }));
  EXPECT_THAT(store_->exchange().GetOutgoingMessage("PK-M-1"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("PK-M-1")));
  ASSERT_OK_AND_ASSIGN(const v1::CaseMessage head,
                       store_->exchange().GetOutgoingHead("PK-M-1"));
  EXPECT_EQ(head.message_id(), "PK-M-1");
  EXPECT_EQ(head.sender_office(), kFia);
  EXPECT_FALSE(head.exchange_id().empty());
  EXPECT_TRUE(head.body().empty());
  EXPECT_THAT(store_->exchange().GetOutgoingHead("PK-M-404"),
              StatusIs(absl::StatusCode::kNotFound,
                       "outgoing message PK-M-404 not found"));
}

TEST_F(DataProtectionTest, ACaseBodyPutBackFromAnEarlierVersionIsCaught) {
  // Someone with write access to the file (and an old WAL frame or backup)
  // puts back the sealed body of version 1 after the case was closed: it
  // still opens under the case's record key with the same associated data.
  const v1::CaseReference opened = Open();
  const std::string id = opened.exchange_id();
  auto write = [&](const std::string& sql, const std::string& value) {
    ASSERT_OK(store_->database().Write([&](sqlite::Connection& c) {
      CB_ASSIGN_OR_RETURN(auto stmt, c.Prepare(sql));
      stmt.BindBlob(1, value).Bind(2, id);
      return stmt.Run();
    }));
  };
  const std::string first_body =
      Column("SELECT body FROM cases WHERE exchange_id = ?", id);
  ASSERT_EQ(Close(id).version(), 2);

  // The body alone: refused wherever the case is read.
  write("UPDATE cases SET body = ? WHERE exchange_id = ?", first_body);
  const auto put_back = StatusIs(
      absl::StatusCode::kDataLoss,
      AllOf(HasSubstr(id), HasSubstr("holds version 1 but its row says "
                                     "version 2")));
  EXPECT_THAT(store_->cases().GetCase(id), put_back);
  EXPECT_THAT(store_->cases().ListCases(CaseFilter{}, 0, 10), put_back);
  EXPECT_THAT(store_->cases().UpdateCase(
                  id, 1, [](v1::CaseReference&) { return absl::OkStatus(); },
                  kFia, UpdateEvent(id)),
              put_back);
  EXPECT_EQ(
      Column("SELECT CAST(version AS TEXT) FROM cases WHERE exchange_id = ?",
             id),
      "2");

  // With the version column put back too, the case reads as it was; the
  // offline verifier compares it with the log, which recorded two versions.
  write("UPDATE cases SET version = CAST(? AS INTEGER) WHERE exchange_id = ?",
        "1");
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference rolled_back,
                       store_->cases().GetCase(id));
  EXPECT_EQ(rolled_back.status(), v1::CASE_STATUS_OPEN);
  store_.reset();
  const AuditVerifyReport report = VerifyOffline();
  EXPECT_FALSE(report.ok);
  EXPECT_THAT(report.problem,
              AllOf(HasSubstr(id),
                    HasSubstr("is at version 1 in the store, "
                              "but the log records 2 versions"),
                    HasSubstr("put back from an earlier copy")));
  EXPECT_EQ(report.cases_checked, 0u);
}

TEST_F(DataProtectionTest,
       TheOfflineVerifierFindsOwnCasesAtTheirLoggedVersion) {
  const std::string closed = Open().exchange_id();
  Close(closed);
  Open();
  // A refused update is in the log too, and changed nothing.
  AuditEvent refused = UpdateEvent(closed);
  refused.outcome = absl::AbortedError("expected_version: stale");
  ASSERT_OK(store_->audit_log().Append(refused).status());
  Receive(PeerMessage("CN-M-1", v1::MESSAGE_KIND_NOTE));
  store_.reset();
  const AuditVerifyReport report = VerifyOffline();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.cases_checked, 2u);
}

TEST_F(DataProtectionTest, PayloadsPutBackAfterTheirPurgeAreFoundOffline) {
  // Someone with write access and a backup from before a retention run puts
  // a purged case and a purged message back (wrapped key, body and all): the
  // rows then say "not purged", which the log contradicts.
  const std::string closed = Close(Open().exchange_id()).exchange_id();
  Receive(PeerMessage("CN-M-NOTE", v1::MESSAGE_KIND_NOTE));
  config::RetentionSettings policy;
  policy.case_status_days[v1::CASE_STATUS_CLOSED] = 7;
  policy.message_kind_days[v1::MESSAGE_KIND_NOTE] = 7;
  clock_.Advance(absl::Hours(24) * 8);
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  ASSERT_EQ(report.cases, 1);
  ASSERT_EQ(report.messages, 1);
  const std::string db = GatewayStore::DatabasePath(dir_);
  store_.reset();
  {
    const AuditVerifyReport purged = VerifyOffline();
    EXPECT_TRUE(purged.ok) << purged.problem;
    EXPECT_EQ(purged.cases_checked, 1u);
  }

  auto put_back = [&](const std::string& sql, const std::string& id) {
    auto c = sqlite::Connection::Open(db, false);
    ASSERT_OK(c.status());
    ASSERT_OK_AND_ASSIGN(auto stmt, (*c)->Prepare(sql));
    stmt.Bind(1, id);
    ASSERT_OK(stmt.Run());
  };
  put_back("UPDATE messages SET purged_us = NULL WHERE message_id = ?",
           "CN-M-NOTE");
  EXPECT_THAT(VerifyOffline().problem,
              AllOf(StartsWith("message \"CN-M-NOTE\" had its payload purged "
                               "under retention in entry "),
                    HasSubstr("put back from an earlier copy")));

  put_back("UPDATE cases SET purged_us = NULL WHERE exchange_id = ?", closed);
  const AuditVerifyReport both = VerifyOffline();
  EXPECT_FALSE(both.ok);
  EXPECT_THAT(
      both.problem,
      AllOf(StartsWith("2 records disagree with the log; the first: case"),
            HasSubstr(absl::StrCat("\"", closed,
                                   "\" had its personal data purged under "
                                   "retention in entry "))));
  EXPECT_EQ(both.cases_checked, 0u);

  // The next retention run purges both again; the log keeps the trace.
  Reopen();
  ASSERT_OK_AND_ASSIGN(const RetentionReport again, Purge(policy));
  EXPECT_EQ(again.cases, 1);
  EXPECT_EQ(again.messages, 1);
  store_.reset();
  const AuditVerifyReport repurged = VerifyOffline();
  EXPECT_FALSE(repurged.ok);
  EXPECT_THAT(
      repurged.problem,
      AllOf(StartsWith("2 records disagree with the log; the first: case"),
            HasSubstr("had its personal data purged under retention twice "
                      "(entries "),
            HasSubstr("put back from an earlier copy in between")));
}

TEST_F(DataProtectionTest,
       APayloadPutInTheClearIsSealedAtTheNextOpenOnlyOnTheRecord) {
  // The same forgery, the gateway restarted: the open cannot tell the row
  // from one written before data protection and seals it, but the log says
  // so, committing to the bytes it found.
  const v1::CaseReference opened = Open();
  v1::CaseReference forged = opened;
  forged.set_handling_code(v1::HANDLING_CODE_H0);
  forged.clear_victims();
  const std::string forged_bytes = forged.SerializeAsString();
  ASSERT_OK(store_->database().Write([&](sqlite::Connection& c) {
    CB_ASSIGN_OR_RETURN(auto cases,
                        c.Prepare("UPDATE cases SET body = ?, sealed = 0 "
                                  "WHERE exchange_id = ?"));
    cases.BindBlob(1, forged_bytes).Bind(2, opened.exchange_id());
    return cases.Run();
  }));
  ASSERT_THAT(EntriesOf(kSealedAtOpenAction), IsEmpty());

  Reopen();
  const std::vector<StoredEntry> sealed = EntriesOf(kSealedAtOpenAction);
  ASSERT_EQ(sealed.size(), 1u);
  EXPECT_EQ(sealed[0].entry.actor, kPkGateway);
  EXPECT_THAT(sealed[0].entry.subjects,
              ::testing::ElementsAre(opened.exchange_id(), "cases.body"));
  ASSERT_OK_AND_ASSIGN(const std::optional<std::string> salt,
                       store_->audit_log().PayloadSalt(sealed[0].index));
  ASSERT_TRUE(salt.has_value());
  EXPECT_EQ(sealed[0].entry.payload_hash,
            audit::PayloadHash(*salt, forged_bytes));
  store_.reset();
  const AuditVerifyReport verified = VerifyOffline();
  EXPECT_TRUE(verified.ok) << verified.problem;
}

TEST_F(DataProtectionTest, PurgesClearTheSaltsOfWhatWasSealedAtOpen) {
  // Written in the clear, sealed (and audited, committing to the personal
  // data) at the next open, then purged: the entries' salts go too.
  Reopen(/*with_key=*/false);
  const v1::CaseReference opened = Open();
  Receive(PeerMessage("CN-M-OLD", v1::MESSAGE_KIND_NOTE));
  Reopen(/*with_key=*/true);
  Close(opened.exchange_id());
  const std::vector<StoredEntry> sealed = EntriesOf(kSealedAtOpenAction);
  ASSERT_EQ(sealed.size(), 3u);
  for (const StoredEntry& e : sealed) {
    ASSERT_NE(Salt(e.index), std::nullopt) << e.entry.subjects[0];
  }

  clock_.Advance(absl::Hours(24) * 10);
  config::RetentionSettings policy;
  policy.message_kind_days[v1::MESSAGE_KIND_NOTE] = 7;
  policy.case_status_days[v1::CASE_STATUS_CLOSED] = 7;
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  ASSERT_EQ(report.messages, 1);
  ASSERT_EQ(report.cases, 1);
  for (const StoredEntry& e : sealed) {
    EXPECT_EQ(Salt(e.index), std::nullopt) << e.entry.subjects[0];
  }
  store_.reset();
  const AuditVerifyReport verified = VerifyOffline();
  EXPECT_TRUE(verified.ok) << verified.problem;
}

// The data key and the database.

StoreOptions WithKey(const std::string& data_dir, const std::string& key) {
  StoreOptions options;
  options.data_dir = data_dir;
  options.country = v1::COUNTRY_PK;
  options.data_key_file = key;
  return options;
}

TEST_F(DataProtectionTest, WritesTheDataKeyCheckValueOnFirstUse) {
  EXPECT_THAT(WrappedKey(kDataKeyCheckRecord), Not(IsEmpty()));
}

TEST_F(DataProtectionTest, AMissingKeyIsNotReplacedWhileSealedDataExists) {
  Open();
  store_.reset();
  ASSERT_EQ(::unlink(key_file_.c_str()), 0);
  EXPECT_THAT(
      GatewayStore::Open(WithKey(dir_, key_file_), &clock_),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("data_protection.key_file: data key " +
                               key_file_ + " does not exist"),
                     HasSubstr("sealed under another key; restore the data "
                               "key file"))));
  struct stat st;
  EXPECT_NE(::stat(key_file_.c_str(), &st), 0) << "a new key was created";
}

TEST_F(DataProtectionTest, AMissingKeyIsNotReplacedEvenBeforeAnyCase) {
  // The check value alone is sealed data: the key is in use.
  store_.reset();
  ASSERT_EQ(::unlink(key_file_.c_str()), 0);
  EXPECT_THAT(GatewayStore::Open(WithKey(dir_, key_file_), &clock_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("restore the data key file")));
}

TEST_F(DataProtectionTest, AnotherDataKeyIsRefusedAtOpen) {
  Open();
  store_.reset();
  const std::string other =
      NewTempDir("data-protection-other-key") + "/data.key";
  ASSERT_OK(crypto::CreateKeyFile(other).status());
  EXPECT_THAT(
      GatewayStore::Open(WithKey(dir_, other), &clock_),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("data_protection.key_file: data key " + other +
                               " is not the key of the database"),
                     HasSubstr("sealed under another key; restore the data "
                               "key file"))));
  Reopen();  // the right key still opens it
}

TEST_F(DataProtectionTest, AnotherDataKeyIsRefusedWithoutACheckValue) {
  // A database sealed before the check value existed: a record's key tells.
  const v1::CaseReference opened = Open();
  ASSERT_OK(store_->database().Write([](sqlite::Connection& c) {
    return c.Exec("DELETE FROM record_keys WHERE record = 'check/data-key'");
  }));
  store_.reset();
  const std::string other =
      NewTempDir("data-protection-other-key") + "/data.key";
  ASSERT_OK(crypto::CreateKeyFile(other).status());
  EXPECT_THAT(GatewayStore::Open(WithKey(dir_, other), &clock_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(other), HasSubstr("does not open the "
                                                         "key of case/"))));
  // The right key opens it, and the check value is written.
  Reopen();
  EXPECT_THAT(WrappedKey(kDataKeyCheckRecord), Not(IsEmpty()));
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       store_->cases().GetCase(opened.exchange_id()));
  EXPECT_EQ(got.victims(0).remarks(), kRemark);
}

TEST_F(DataProtectionTest, SaysWhetherTheKeyIsInsideTheDataDirectory) {
  EXPECT_FALSE(store_->key_inside_data_dir());
  const std::string other_dir = NewTempDir("data-protection-default");
  ASSERT_OK_AND_ASSIGN(
      const auto inside,
      GatewayStore::Open(WithKey(other_dir, other_dir + "/data.key"), &clock_));
  EXPECT_TRUE(inside->key_inside_data_dir());
}

TEST_F(DataProtectionTest, OpenCreatesAMissingKeyFileWithMode0600) {
  struct stat st;
  ASSERT_EQ(::stat(key_file_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600);
  EXPECT_EQ(st.st_size, 32);
}

TEST_F(DataProtectionTest, OpenRefusesAKeyFileOthersCanRead) {
  store_.reset();
  ASSERT_EQ(::chmod(key_file_.c_str(), 0644), 0);
  StoreOptions options;
  options.data_dir = dir_;
  options.country = v1::COUNTRY_PK;
  options.data_key_file = key_file_;
  EXPECT_THAT(GatewayStore::Open(options, &clock_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("data_protection.key_file: data key " +
                                 key_file_ + " has mode 0644")));
}

TEST_F(DataProtectionTest, SealingAtOpenLeavesNoPlaintextInTheFiles) {
  store_.reset();
  dir_ = NewTempDir("data-protection-old");
  Reopen(/*with_key=*/false);
  Open();
  Receive(PeerMessage("CN-M-OLD", v1::MESSAGE_KIND_NOTE));
  store_.reset();  // the plaintext is now in the database file itself
  ASSERT_NE(RawFiles().find(kRemark), std::string::npos);

  Reopen(/*with_key=*/true);
  const std::string raw = RawFiles();  // while the gateway runs
  EXPECT_EQ(raw.find(kRemark), std::string::npos);
  EXPECT_EQ(raw.find(kLocation), std::string::npos);
  EXPECT_EQ(raw.find(kBody), std::string::npos);
}

TEST_F(DataProtectionTest, EvidenceOpensTheSealedEnvelopeOnlyWithTheKey) {
  Receive(PeerMessage("CN-M-1", v1::MESSAGE_KIND_RESCUE_UPDATE));
  // Past the envelope: it opened and parsed, and the bundle now waits for a
  // checkpoint the peer cosigned.
  Evidence with_key(&store_->database(), &store_->audit_log(), nullptr,
                    store_->sealer());
  EXPECT_THAT(with_key.LocalPart("E-CN-M-1"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("checkpoint the peer cosigned")));
  Evidence without_key(&store_->database(), &store_->audit_log(), nullptr);
  EXPECT_THAT(without_key.LocalPart("E-CN-M-1"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("without the data key")));
}

// Retention.

TEST_F(DataProtectionTest, APurgedMessageKeepsWhoCancelledItNotWhy) {
  // The reason an office gives for withdrawing a message is free text
  // about it, and goes with its body.
  Send(OutgoingNote("PK-M-1", "outgoing: shelter in Lahore ready"));
  ASSERT_OK(store_->exchange().CancelOutgoing(
      "PK-M-1", absl::StrCat("cancelled by ", kFia, ": Ayesha found at home"),
      std::nullopt, Event("message.cancel")));
  ASSERT_OK_AND_ASSIGN(v1::DeliveryStatus status,
                       store_->exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_THAT(status.last_error(), HasSubstr("Ayesha"));

  clock_.Advance(absl::Hours(24) * 10);
  config::RetentionSettings policy;
  policy.message_kind_days[v1::MESSAGE_KIND_NOTE] = 7;
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  EXPECT_EQ(report.messages, 1);
  ASSERT_OK_AND_ASSIGN(status, store_->exchange().GetDeliveryStatus("PK-M-1"));
  EXPECT_EQ(status.state(), v1::DELIVERY_STATE_CANCELLED);
  EXPECT_EQ(status.last_error(), absl::StrCat("cancelled by ", kFia));
  EXPECT_EQ(RawFiles().find("Ayesha"), std::string::npos);
}

TEST_F(DataProtectionTest, PurgesMessagesByKindAndNothingElse) {
  Receive(PeerMessage("CN-M-NOTE", v1::MESSAGE_KIND_NOTE));
  Receive(PeerMessage("CN-M-RESCUE", v1::MESSAGE_KIND_RESCUE_REQUEST));
  Receive(PeerMessage("CN-M-UPDATE", v1::MESSAGE_KIND_RESCUE_UPDATE));
  const std::string note_key = WrappedKey(MessageRecord("CN-M-NOTE"));
  ASSERT_FALSE(note_key.empty());
  clock_.Advance(absl::Hours(24) * 10);
  Receive(PeerMessage("CN-M-NOTE-NEW", v1::MESSAGE_KIND_NOTE));

  config::RetentionSettings policy;
  policy.message_days = 30;  // rescue updates: not yet
  policy.message_kind_days[v1::MESSAGE_KIND_NOTE] = 7;
  policy.message_kind_days[v1::MESSAGE_KIND_RESCUE_REQUEST] = 0;  // kept
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  EXPECT_EQ(report.messages, 1);
  EXPECT_EQ(report.cases, 0);

  // In arrival order; the purged message is no longer read from the inbox
  // (an office resuming from an older cursor would otherwise get an empty
  // message), and cannot be answered.
  const std::vector<InboxItem> inbox = Inbox();
  ASSERT_EQ(inbox.size(), 3u);
  EXPECT_EQ(inbox[0].message.message_id(), "CN-M-RESCUE");
  EXPECT_EQ(inbox[0].message.body(), kBody);
  EXPECT_EQ(inbox[1].message.message_id(), "CN-M-UPDATE");
  EXPECT_EQ(inbox[1].message.body(), kBody);
  EXPECT_EQ(inbox[2].message.message_id(), "CN-M-NOTE-NEW");
  EXPECT_EQ(inbox[2].message.body(), kBody);
  EXPECT_THAT(
      store_->exchange().AcknowledgeAndReply(
          kFia, "CN-M-NOTE", clock_.Now(), Event("message.acknowledge"),
          [](const v1::CaseMessage&) -> absl::StatusOr<OutgoingMessage> {
            return absl::InternalError("not to be reached");
          },
          Event("message.send")),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               "message CN-M-NOTE had its payload purged under the retention "
               "policy"));
  EXPECT_EQ(WrappedKey(MessageRecord("CN-M-NOTE")), "");
  EXPECT_NE(WrappedKey(MessageRecord("CN-M-RESCUE")), "");
  // The entries naming the purged message lose their salts; the others'
  // stay.
  ASSERT_OK_AND_ASSIGN(const uint64_t size, store_->audit_log().Size());
  ASSERT_OK_AND_ASSIGN(const std::vector<StoredEntry> entries,
                       store_->audit_log().Read(0, size));
  int named_note = 0;
  int named_rescue = 0;
  for (const StoredEntry& e : entries) {
    const auto& subjects = e.entry.subjects;
    const bool note = std::find(subjects.begin(), subjects.end(),
                                "CN-M-NOTE") != subjects.end();
    const bool rescue = std::find(subjects.begin(), subjects.end(),
                                  "CN-M-RESCUE") != subjects.end();
    if (!note && !rescue) continue;
    const std::optional<std::string> salt = Salt(e.index);
    if (note && e.entry.action != "retention.purge") {
      ++named_note;
      EXPECT_EQ(salt, std::nullopt) << e.entry.action;
    }
    if (rescue) {
      ++named_rescue;
      EXPECT_NE(salt, std::nullopt) << e.entry.action;
    }
  }
  EXPECT_GT(named_note, 0);
  EXPECT_GT(named_rescue, 0);

  // 40 days on, only the rescue request (kept for ever) remains.
  clock_.Advance(absl::Hours(24) * 40);
  ASSERT_OK_AND_ASSIGN(const RetentionReport later, Purge(policy));
  EXPECT_EQ(later.messages, 2);
  EXPECT_NE(WrappedKey(MessageRecord("CN-M-RESCUE")), "");

  store_.reset();
  EXPECT_EQ(RawFiles().find(note_key), std::string::npos)
      << "the shredded key is still in the file";
  const AuditVerifyReport verified = VerifyOffline();
  EXPECT_TRUE(verified.ok) << verified.problem;
  EXPECT_GT(verified.purged_payloads, 0u);
  // The rescue request's envelope still matches its entry; the purged ones
  // are counted, not failed.
  EXPECT_EQ(verified.payloads_checked, 1u);
}

TEST_F(DataProtectionTest, PurgesClosedCasesAndShredsTheirKey) {
  const v1::CaseReference kept = Open();
  const v1::CaseReference closed = Open();
  Close(closed.exchange_id());
  const std::string closed_key = WrappedKey(CaseRecord(closed.exchange_id()));
  ASSERT_FALSE(closed_key.empty());
  ASSERT_NE(RawFiles().find(closed_key), std::string::npos)
      << "the wrapped key is not where the test looks";

  config::RetentionSettings policy;
  policy.case_status_days[v1::CASE_STATUS_CLOSED] = 30;
  clock_.Advance(absl::Hours(24) * 29);
  ASSERT_OK_AND_ASSIGN(RetentionReport report, Purge(policy));
  EXPECT_EQ(report.cases, 0) << "purged before its time";
  clock_.Advance(absl::Hours(24) * 2);
  ASSERT_OK_AND_ASSIGN(report, Purge(policy));
  EXPECT_EQ(report.cases, 1);

  // Still answers, without the personal fields, and says so.
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference purged,
                       store_->cases().GetCase(closed.exchange_id()));
  EXPECT_EQ(purged.exchange_id(), closed.exchange_id());
  EXPECT_EQ(purged.status(), v1::CASE_STATUS_CLOSED);
  EXPECT_EQ(purged.local_reference(), "FIR-77/2026");
  EXPECT_EQ(purged.version(), 2);
  EXPECT_THAT(purged.victims(), IsEmpty());
  EXPECT_THAT(purged.last_known_locations(), IsEmpty());
  EXPECT_EQ(absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(
                purged.personal_data_purged_at())),
            clock_.Now());
  // The open case is untouched.
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference other,
                       store_->cases().GetCase(kept.exchange_id()));
  EXPECT_EQ(other.victims(0).remarks(), kRemark);
  EXPECT_FALSE(other.has_personal_data_purged_at());
  // A purged case is not changed any more.
  EXPECT_THAT(store_->cases().UpdateCase(
                  closed.exchange_id(), 2,
                  [](v1::CaseReference&) { return absl::OkStatus(); }, kFia,
                  Event("case.update")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("purged under the retention policy")));
  // The purge is audited.
  ASSERT_OK_AND_ASSIGN(const uint64_t size, store_->audit_log().Size());
  ASSERT_OK_AND_ASSIGN(const auto last, store_->audit_log().Read(size - 1, 1));
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].entry.action, "retention.purge");
  EXPECT_EQ(last[0].entry.actor, kPkGateway);
  EXPECT_THAT(last[0].entry.subjects,
              ::testing::ElementsAre(closed.exchange_id()));

  // What is left is sealed under a fresh key (never read from the clear).
  const std::string fresh_key = WrappedKey(CaseRecord(closed.exchange_id()));
  EXPECT_THAT(fresh_key, Not(IsEmpty()));
  EXPECT_NE(fresh_key, closed_key);
  int64_t sealed = -1;
  ASSERT_OK(store_->database().Read([&](sqlite::Connection& c) -> absl::Status {
    CB_ASSIGN_OR_RETURN(
        auto stmt, c.Prepare("SELECT sealed FROM cases WHERE exchange_id = ?"));
    stmt.Bind(1, closed.exchange_id());
    CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
    if (row) sealed = stmt.ColumnInt(0);
    return absl::OkStatus();
  }));
  EXPECT_EQ(sealed, 1);

  store_.reset();
  const std::string raw = RawFiles();
  EXPECT_EQ(raw.find(closed_key), std::string::npos)
      << "the shredded key is still in the file";
  const AuditVerifyReport verified = VerifyOffline();
  EXPECT_TRUE(verified.ok) << verified.problem;
  EXPECT_EQ(verified.purged_payloads, 2u);  // its case.open and case.update
}

TEST_F(DataProtectionTest, PurgesClearTheSaltsOfEveryRequestCarryingTheCase) {
  // OfficeService's entries for a case (case_store.h): each request that may
  // carry the personal fields, the answers that released them among them,
  // loses its salt with the case; an entry whose request names the case and
  // nothing else keeps it, as does every entry of a case not purged.
  const v1::CaseReference purged = Open();
  const v1::CaseReference kept = Open();
  const std::string personal_request = Draft().SerializeAsString();
  auto append = [&](const std::string& action, const std::string& exchange_id,
                    const std::string& payload) {
    AuditEvent event = Event(action, kFia, payload);
    event.subjects = {exchange_id};
    auto index = store_->audit_log().Append(event);
    EXPECT_TRUE(index.ok()) << index.status();
    return index.ok() ? *index : 0;
  };
  const std::vector<uint64_t> cleared = {
      append(kCaseOpenReplayedAction, purged.exchange_id(), personal_request),
      append(kCaseOpenPersonalDataAction, purged.exchange_id(),
             personal_request),
      append(kCaseUpdatePersonalDataAction, purged.exchange_id(),
             personal_request),
  };
  const std::vector<uint64_t> left = {
      append("case.get.personal_data", purged.exchange_id(),
             purged.exchange_id()),
      append(kCaseUpdatePersonalDataAction, kept.exchange_id(),
             personal_request),
  };
  Close(purged.exchange_id());
  for (const uint64_t index : cleared) ASSERT_NE(Salt(index), std::nullopt);

  config::RetentionSettings policy;
  policy.case_status_days[v1::CASE_STATUS_CLOSED] = 7;
  clock_.Advance(absl::Hours(24) * 8);
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  ASSERT_EQ(report.cases, 1);
  for (const uint64_t index : cleared) {
    EXPECT_EQ(Salt(index), std::nullopt) << "entry " << index;
  }
  for (const uint64_t index : left) {
    EXPECT_NE(Salt(index), std::nullopt) << "entry " << index;
  }
  store_.reset();
  const AuditVerifyReport verified = VerifyOffline();
  EXPECT_TRUE(verified.ok) << verified.problem;
  // case.open, case.update (the closing) and the three above.
  EXPECT_EQ(verified.purged_payloads, 5u);
}

TEST_F(DataProtectionTest, PurgesForgetTheRequestsOfWhatTheyPurge) {
  // A request's hash is an unsalted digest of the request, personal fields
  // and body included: it goes with them, and so does its request id.
  const RequestKey open_key{"req-open-1", crypto::Sha256("OpenCase bytes")};
  const v1::CaseReference opened = Open(Draft(), open_key);
  Close(opened.exchange_id());
  v1::CaseMessage note = PeerMessage("PK-M-NOTE", v1::MESSAGE_KIND_NOTE);
  note.set_sender_office(kFia);
  note.set_recipient_office(kMps);
  Send(note, {"req-send-1", crypto::Sha256("SendMessage bytes")});
  ASSERT_OK(store_->exchange().RecordRefused(
      "E-PK-M-NOTE", absl::PermissionDeniedError("peer refused"),
      Event("envelope.refused_by_peer", kPkGateway)));
  auto request_columns = [&](const std::string& sql, const std::string& id) {
    std::pair<bool, bool> nulls{false, false};
    EXPECT_OK(
        store_->database().Read([&](sqlite::Connection& c) -> absl::Status {
          CB_ASSIGN_OR_RETURN(auto stmt, c.Prepare(sql));
          stmt.Bind(1, id);
          CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
          if (!row) return absl::NotFoundError(id);
          nulls = {stmt.ColumnIsNull(0), stmt.ColumnIsNull(1)};
          return absl::OkStatus();
        }));
    return nulls;
  };
  constexpr char kCaseRequest[] =
      "SELECT request_id, request_hash FROM cases WHERE exchange_id = ?";
  constexpr char kMessageRequest[] =
      "SELECT request_id, request_hash FROM messages WHERE message_id = ?";
  ASSERT_EQ(request_columns(kCaseRequest, opened.exchange_id()),
            std::make_pair(false, false));
  ASSERT_EQ(request_columns(kMessageRequest, "PK-M-NOTE"),
            std::make_pair(false, false));

  config::RetentionSettings policy;
  policy.message_kind_days[v1::MESSAGE_KIND_NOTE] = 7;
  policy.case_status_days[v1::CASE_STATUS_CLOSED] = 7;
  clock_.Advance(absl::Hours(24) * 8);
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  ASSERT_EQ(report.cases, 1);
  ASSERT_EQ(report.messages, 1);
  EXPECT_EQ(request_columns(kCaseRequest, opened.exchange_id()),
            std::make_pair(true, true));
  EXPECT_EQ(request_columns(kMessageRequest, "PK-M-NOTE"),
            std::make_pair(true, true));
  // The request id is free again: the same request opens a new case.
  const v1::CaseReference again = Open(Draft(), open_key);
  EXPECT_NE(again.exchange_id(), opened.exchange_id());
}

TEST_F(DataProtectionTest, PurgingAnAcknowledgementClearsItsRequestsSalt) {
  // The acknowledging office's note becomes the reply's body: the
  // message.acknowledge entry, whose payload is that request, goes with the
  // reply even while the message acknowledged is kept for ever.
  Receive(PeerMessage("CN-M-RESCUE", v1::MESSAGE_KIND_RESCUE_REQUEST));
  const std::string note = "Called her brother on +92 300 1234567";
  ASSERT_OK_AND_ASSIGN(
      const QueuedMessage reply,
      store_->exchange().AcknowledgeAndReply(
          kFia, "CN-M-RESCUE", clock_.Now(),
          Event("message.acknowledge", kFia, note),
          [&](const v1::CaseMessage& acknowledged)
              -> absl::StatusOr<OutgoingMessage> {
            OutgoingMessage out;
            out.message.set_message_id("PK-M-ACK");
            out.message.set_exchange_id(acknowledged.exchange_id());
            out.message.set_kind(v1::MESSAGE_KIND_ACKNOWLEDGEMENT);
            out.message.set_in_reply_to(acknowledged.message_id());
            out.message.set_body(note);
            out.envelope_id = "E-PK-M-ACK";
            out.seal =
                [this, message = out.message](
                    uint64_t index) -> absl::StatusOr<v1::SignedEnvelope> {
              v1::Envelope envelope;
              envelope.set_envelope_id("E-PK-M-ACK");
              envelope.set_origin_gateway(kPkGateway);
              envelope.set_destination_gateway(kCnGateway);
              *envelope.mutable_message() = message;
              envelope.set_origin_audit_index(index);
              return exchange::SignEnvelope(envelope, *pk_envelope_);
            };
            return out;
          },
          Event("message.send", kFia, note)));
  ASSERT_EQ(reply.message_id, "PK-M-ACK");
  const std::vector<StoredEntry> acknowledged =
      EntriesOf("message.acknowledge");
  ASSERT_EQ(acknowledged.size(), 1u);
  EXPECT_THAT(acknowledged[0].entry.subjects,
              ::testing::ElementsAre("CN-M-RESCUE", "PK-M-ACK"));
  ASSERT_OK(store_->exchange().RecordRefused(
      "E-PK-M-ACK", absl::PermissionDeniedError("peer refused"),
      Event("envelope.refused_by_peer", kPkGateway)));

  config::RetentionSettings policy;
  policy.message_kind_days[v1::MESSAGE_KIND_ACKNOWLEDGEMENT] = 7;
  policy.message_kind_days[v1::MESSAGE_KIND_RESCUE_REQUEST] = 0;  // kept
  clock_.Advance(absl::Hours(24) * 8);
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  ASSERT_EQ(report.messages, 1);
  EXPECT_EQ(Salt(acknowledged[0].index), std::nullopt);
}

TEST_F(DataProtectionTest, ACaseThatNoLongerOpensDoesNotStopTheOtherPurges) {
  // A closed case whose stored body no longer opens (a flipped bit) is left
  // as it is and reported, every hour; the other closed cases and the
  // refusals' salts are purged all the same.
  const v1::CaseReference broken = Open();
  Close(broken.exchange_id());
  const std::string sound = Close(Open().exchange_id()).exchange_id();
  ASSERT_OK(store_->database().Write([&](sqlite::Connection& c) {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare("UPDATE cases SET body = X'01020304' WHERE exchange_id = ?"));
    stmt.Bind(1, broken.exchange_id());
    return stmt.Run();
  }));
  AuditEvent refused = Event("case.open", kFia, "OpenCase naming a victim");
  refused.outcome = absl::InvalidArgumentError("case_reference: is required");
  ASSERT_OK_AND_ASSIGN(const uint64_t refusal,
                       store_->audit_log().Append(refused));

  config::RetentionSettings policy;
  policy.case_status_days[v1::CASE_STATUS_CLOSED] = 7;
  clock_.Advance(absl::Hours(24) * 8);
  EXPECT_THAT(
      Purge(policy),
      StatusIs(absl::StatusCode::kDataLoss,
               AllOf(StartsWith(absl::StrCat("case ", broken.exchange_id(),
                                             " was not purged: ")),
                     HasSubstr("; 1 case purged"))));
  EXPECT_EQ(Salt(refusal), std::nullopt);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference purged,
                       store_->cases().GetCase(sound));
  EXPECT_TRUE(purged.has_personal_data_purged_at());
  EXPECT_THAT(purged.victims(), IsEmpty());
  EXPECT_EQ(WrappedKey(CaseRecord(broken.exchange_id())).empty(), false)
      << "the unreadable case was shredded";
  // The next run finds it again, and only it.
  EXPECT_THAT(Purge(policy), StatusIs(absl::StatusCode::kDataLoss,
                                      AllOf(HasSubstr(broken.exchange_id()),
                                            HasSubstr("; 0 cases purged"))));
}

TEST_F(DataProtectionTest, PurgeLeavesNoWrappedKeyInTheFilesWhileRunning) {
  Receive(PeerMessage("CN-M-NOTE", v1::MESSAGE_KIND_NOTE));
  const std::string note_key = WrappedKey(MessageRecord("CN-M-NOTE"));
  ASSERT_NE(RawFiles().find(note_key), std::string::npos);
  clock_.Advance(absl::Hours(24) * 10);
  config::RetentionSettings policy;
  policy.message_kind_days[v1::MESSAGE_KIND_NOTE] = 7;
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  ASSERT_EQ(report.messages, 1);
  // Neither the database file nor its WAL, the gateway still running.
  EXPECT_EQ(RawFiles().find(note_key), std::string::npos);
}

TEST_F(DataProtectionTest, PurgeLeavesNoPlaintextInTheFilesWhileRunning) {
  // A store without the data key keeps payloads in the clear until purged.
  store_.reset();
  dir_ = NewTempDir("data-protection-clear");
  Reopen(/*with_key=*/false);
  Receive(PeerMessage("CN-M-NOTE", v1::MESSAGE_KIND_NOTE));
  ASSERT_NE(RawFiles().find(kBody), std::string::npos);
  clock_.Advance(absl::Hours(24) * 10);
  config::RetentionSettings policy;
  policy.message_days = 7;
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  ASSERT_EQ(report.messages, 1);
  EXPECT_EQ(RawFiles().find(kBody), std::string::npos);
}

TEST_F(DataProtectionTest, AnOwedWalTruncationIsMadeGoodByTheNextRun) {
  // A run that shredded and then failed (or whose truncation was refused)
  // leaves it owed: the next run truncates though it purges nothing.
  Receive(PeerMessage("CN-M-NOTE", v1::MESSAGE_KIND_NOTE));
  const std::string wal = GatewayStore::DatabasePath(dir_) + "-wal";
  ASSERT_GT(std::filesystem::file_size(wal), 0u);
  config::RetentionSettings nothing_expires;
  ASSERT_OK_AND_ASSIGN(
      RetentionReport report,
      store_->PurgeExpired(nothing_expires, clock_.Now(), kPkGateway));
  EXPECT_EQ(report.messages + report.cases, 0);
  EXPECT_GT(std::filesystem::file_size(wal), 0u)
      << "truncated though nothing was shredded or owed";
  store_->database().OweWalTruncation();
  ASSERT_OK_AND_ASSIGN(
      report, store_->PurgeExpired(nothing_expires, clock_.Now(), kPkGateway));
  EXPECT_EQ(report.messages + report.cases, 0);
  EXPECT_EQ(std::filesystem::file_size(wal), 0u);
  EXPECT_FALSE(store_->database().wal_truncation_owed());
}

TEST_F(DataProtectionTest, ConflictingEnvelopesFollowTheShortestRetention) {
  Receive(PeerMessage("CN-M-1", v1::MESSAGE_KIND_NOTE));
  constexpr char kOther[] = "conflict: another victim near Multan";
  EXPECT_THAT(Accept(PeerMessage("CN-M-1", v1::MESSAGE_KIND_NOTE, kOther)),
              StatusIs(absl::StatusCode::kAlreadyExists, ::testing::_));
  ASSERT_NE(RawFiles().find(kOther), std::string::npos)
      << "the conflicting envelope was not kept";
  // No default retention: only one kind has one.
  config::RetentionSettings policy;
  policy.message_kind_days[v1::MESSAGE_KIND_RESCUE_UPDATE] = 7;
  clock_.Advance(absl::Hours(24) * 6);
  ASSERT_OK(Purge(policy).status());
  ASSERT_NE(RawFiles().find(kOther), std::string::npos) << "purged too early";
  clock_.Advance(absl::Hours(24) * 2);
  ASSERT_OK(Purge(policy).status());
  EXPECT_EQ(RawFiles().find(kOther), std::string::npos);
}

TEST_F(DataProtectionTest, RefusalsLoseTheirSaltsAfterTheShortestRetention) {
  // A refused OpenCase and a refused SendMessage: their requests carried
  // personal data that nothing stored.
  AuditEvent open = Event("case.open", kFia, Draft().SerializeAsString());
  open.outcome = absl::InvalidArgumentError("victims[0].pseudonym: too long");
  ASSERT_OK_AND_ASSIGN(const uint64_t refused_open,
                       store_->audit_log().Append(open));
  AuditEvent send = Event("message.send", kFia, kBody);
  send.subjects = {"PK-2026-000404"};
  send.outcome = absl::NotFoundError("no case PK-2026-000404");
  ASSERT_OK_AND_ASSIGN(const uint64_t refused_send,
                       store_->audit_log().Append(send));
  const v1::CaseReference kept = Open();  // its case.open entry succeeded
  ASSERT_OK_AND_ASSIGN(const std::optional<std::string> open_salt,
                       store_->audit_log().PayloadSalt(refused_open));
  ASSERT_TRUE(open_salt.has_value());
  ASSERT_NE(RawFiles().find(*open_salt), std::string::npos)
      << "the salt is not where the test looks";

  // Nothing is ever purged without retention.
  clock_.Advance(absl::Hours(24) * 400);
  ASSERT_OK_AND_ASSIGN(RetentionReport report,
                       store_->PurgeExpired(config::RetentionSettings{},
                                            clock_.Now(), kPkGateway));
  EXPECT_EQ(report.refusals, 0);

  // The shortest retention set (closed cases, 7 days) applies, and a fresh
  // refusal waits for it.
  AuditEvent recent = Event("case.get", kMps, "PK-2026-000001");
  recent.outcome = absl::PermissionDeniedError("not this office's case");
  ASSERT_OK_AND_ASSIGN(const uint64_t refused_recently,
                       store_->audit_log().Append(recent));
  config::RetentionSettings policy;
  policy.message_days = 30;
  policy.message_kind_days[v1::MESSAGE_KIND_NOTE] = 0;  // kept for ever
  policy.case_status_days[v1::CASE_STATUS_CLOSED] = 7;
  clock_.Advance(absl::Hours(24) * 6);
  ASSERT_OK_AND_ASSIGN(report, Purge(policy));
  EXPECT_EQ(report.refusals, 2);
  EXPECT_EQ(report.messages + report.cases, 0);
  EXPECT_EQ(Salt(refused_open), std::nullopt);
  EXPECT_EQ(Salt(refused_send), std::nullopt);
  // Neither in the database file nor in its WAL, the gateway still running.
  EXPECT_EQ(RawFiles().find(*open_salt), std::string::npos)
      << "the purged salt is still in the files";
  EXPECT_NE(Salt(refused_recently), std::nullopt) << "purged before its time";
  EXPECT_NE(Salt(refused_send + 1), std::nullopt)
      << "the successful case.open of " << kept.exchange_id() << " lost it";
  clock_.Advance(absl::Hours(24) * 2);
  ASSERT_OK_AND_ASSIGN(report, Purge(policy));
  EXPECT_EQ(report.refusals, 1);
  EXPECT_EQ(Salt(refused_recently), std::nullopt);

  store_.reset();
  const AuditVerifyReport verified = VerifyOffline();
  EXPECT_TRUE(verified.ok) << verified.problem;
  EXPECT_EQ(verified.purged_payloads, 3u);
}

TEST_F(DataProtectionTest, PurgingACasePurgesTheSharesThatCarryIt) {
  // Our case, shared twice: one share failed, one still queued.
  const v1::CaseReference ours = Close(Open().exchange_id());
  const auto share = [&](const std::string& message_id) {
    v1::CaseMessage m = PeerMessage(message_id, v1::MESSAGE_KIND_CASE_SHARE);
    m.set_exchange_id(ours.exchange_id());
    m.set_sender_office(kFia);
    m.set_recipient_office(kMps);
    m.set_sender_country(v1::COUNTRY_PK);
    *m.mutable_case_reference() = ours;
    return m;
  };
  Send(share("PK-M-SHARE-1"));
  Send(share("PK-M-SHARE-2"));
  ASSERT_OK(store_->exchange().RecordRefused(
      "E-PK-M-SHARE-1", absl::PermissionDeniedError("refused"),
      Event("envelope.refused", kPkGateway)));
  // A peer case, received in a share and closed.
  v1::CaseMessage received =
      PeerMessage("CN-M-SHARE", v1::MESSAGE_KIND_CASE_SHARE);
  v1::CaseReference theirs = Draft();
  theirs.set_exchange_id("CN-2026-000001");
  theirs.set_origin_country(v1::COUNTRY_CN);
  theirs.set_owner_office(kMps);
  theirs.set_status(v1::CASE_STATUS_CLOSED);
  theirs.set_version(3);
  *theirs.mutable_updated_at() =
      TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_.Now()));
  *received.mutable_case_reference() = theirs;
  Receive(received);
  // Another kind of message about the case is not a copy of it.
  Receive(PeerMessage("CN-M-NOTE", v1::MESSAGE_KIND_NOTE));

  config::RetentionSettings policy;
  policy.case_status_days[v1::CASE_STATUS_CLOSED] = 30;
  clock_.Advance(absl::Hours(24) * 31);
  ASSERT_OK_AND_ASSIGN(const RetentionReport report, Purge(policy));
  EXPECT_EQ(report.cases, 2);
  EXPECT_EQ(report.messages, 2);
  EXPECT_EQ(WrappedKey(MessageRecord("PK-M-SHARE-1")), "");
  EXPECT_EQ(WrappedKey(MessageRecord("CN-M-SHARE")), "");
  EXPECT_NE(WrappedKey(MessageRecord("PK-M-SHARE-2")), "") << "in flight";
  EXPECT_NE(WrappedKey(MessageRecord("CN-M-NOTE")), "");
  // A purged outgoing message still names its sender and case, so that its
  // sender can follow its delivery.
  ASSERT_OK_AND_ASSIGN(const v1::CaseMessage failed,
                       store_->exchange().GetOutgoingMessage("PK-M-SHARE-1"));
  EXPECT_FALSE(failed.has_case_reference());
  EXPECT_EQ(failed.message_id(), "PK-M-SHARE-1");
  EXPECT_EQ(failed.sender_office(), kFia);
  EXPECT_EQ(failed.exchange_id(), ours.exchange_id());
  EXPECT_EQ(failed.kind(), v1::MESSAGE_KIND_CASE_SHARE);
  EXPECT_TRUE(failed.body().empty());
  ASSERT_OK_AND_ASSIGN(const v1::CaseMessage queued,
                       store_->exchange().GetOutgoingMessage("PK-M-SHARE-2"));
  EXPECT_EQ(queued.case_reference().victims(0).remarks(), kRemark);
  const std::vector<InboxItem> inbox = Inbox();
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].message.message_id(), "CN-M-NOTE");
  EXPECT_EQ(inbox[0].message.body(), kBody);

  // Each purged share is audited as message retention audits it.
  ASSERT_OK_AND_ASSIGN(const uint64_t size, store_->audit_log().Size());
  ASSERT_OK_AND_ASSIGN(const auto entries, store_->audit_log().Read(0, size));
  std::vector<std::string> purged;
  for (const auto& stored : entries) {
    if (stored.entry.action == "retention.purge") {
      purged.insert(purged.end(), stored.entry.subjects.begin(),
                    stored.entry.subjects.end());
    }
  }
  EXPECT_THAT(purged, ::testing::UnorderedElementsAre(
                          ours.exchange_id(), "CN-2026-000001", "PK-M-SHARE-1",
                          "CN-M-SHARE"));

  // The queued share goes once it is no longer in flight.
  ASSERT_OK(store_->exchange().RecordRefused(
      "E-PK-M-SHARE-2", absl::PermissionDeniedError("refused"),
      Event("envelope.refused", kPkGateway)));
  ASSERT_OK_AND_ASSIGN(const RetentionReport later, Purge(policy));
  EXPECT_EQ(later.cases, 0);
  EXPECT_EQ(later.messages, 1);
  EXPECT_EQ(WrappedKey(MessageRecord("PK-M-SHARE-2")), "");

  store_.reset();
  const AuditVerifyReport verified = VerifyOffline();
  EXPECT_TRUE(verified.ok) << verified.problem;
}

// Data key rotation (server/data_key_rotation.h).

class DataKeyRotationTest : public DataProtectionTest {
 protected:
  absl::StatusOr<DataKeyRotationReport> Rotate() {
    return RotateDataKey(WithKey(dir_, key_file_), kPkGateway, &clock_);
  }

  std::string Pending() const { return PendingDataKeyPath(key_file_); }

  bool Exists(const std::string& path) const {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
  }

  // Writes raw key bytes as a data key file (mode 0600).
  void WriteKey(const std::string& path, const std::string& raw) {
    WriteFile(path, raw);
    ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  }

  int RecordKeyRows() {
    int rows = 0;
    EXPECT_OK(
        store_->database().Read([&](sqlite::Connection& c) -> absl::Status {
          CB_ASSIGN_OR_RETURN(
              auto stmt, c.Prepare("SELECT count(*) FROM record_keys WHERE "
                                   "record != 'check/data-key'"));
          CB_ASSIGN_OR_RETURN(const bool row, stmt.Step());
          if (row) rows = static_cast<int>(stmt.ColumnInt(0));
          return absl::OkStatus();
        }));
    return rows;
  }

  std::string CheckId() {
    return DataKeyCheckId(WrappedKey(kDataKeyCheckRecord));
  }

  uint64_t AuditSize() {
    auto size = store_->audit_log().Size();
    EXPECT_OK(size.status());
    return size.ok() ? *size : 0;
  }
};

TEST_F(DataKeyRotationTest, RewrapsEveryRecordKeyAndKeepsTheDataReadable) {
  const v1::CaseReference kept = Open();
  const v1::CaseReference closed = Close(Open().exchange_id());
  Receive(PeerMessage("CN-M-1", v1::MESSAGE_KIND_RESCUE_REQUEST));
  // One record shredded by retention before the rotation.
  config::RetentionSettings policy;
  policy.case_status_days[v1::CASE_STATUS_CLOSED] = 1;
  clock_.Advance(absl::Hours(48));
  ASSERT_OK_AND_ASSIGN(RetentionReport purged, Purge(policy));
  ASSERT_EQ(purged.cases, 1);
  const int record_keys = RecordKeyRows();
  // The kept case, the message, and the fresh key of the purged case's
  // remainder.
  ASSERT_EQ(record_keys, 3);
  const std::string old_check_id = CheckId();
  const std::string old_wrapped = WrappedKey(CaseRecord(kept.exchange_id()));
  const std::string old_purged_wrapped =
      WrappedKey(CaseRecord(closed.exchange_id()));
  store_.reset();
  const std::string old_key = ReadRaw(key_file_);

  ASSERT_OK_AND_ASSIGN(const DataKeyRotationReport report, Rotate());
  EXPECT_EQ(report.record_keys, record_keys);
  EXPECT_FALSE(report.finished_interrupted);
  EXPECT_EQ(report.old_check_id, old_check_id);
  EXPECT_THAT(report.new_check_id, MatchesRegex("[0-9a-f]{16}"));
  EXPECT_NE(report.new_check_id, report.old_check_id);

  // The new key is in place, for its owner only; nothing pending is left.
  const std::string new_key = ReadRaw(key_file_);
  EXPECT_EQ(new_key.size(), 32u);
  EXPECT_NE(new_key, old_key);
  struct stat st;
  ASSERT_EQ(::stat(key_file_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600);
  EXPECT_FALSE(Exists(Pending()));

  Reopen();
  EXPECT_EQ(CheckId(), report.new_check_id);
  EXPECT_NE(WrappedKey(CaseRecord(kept.exchange_id())), old_wrapped);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       store_->cases().GetCase(kept.exchange_id()));
  EXPECT_EQ(got.victims(0).remarks(), kRemark);
  EXPECT_EQ(got.last_known_locations(0).description(), kLocation);
  const std::vector<InboxItem> inbox = Inbox();
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].message.body(), kBody);
  // The purged case's remainder is under its fresh key, rewrapped too.
  EXPECT_THAT(WrappedKey(CaseRecord(closed.exchange_id())), Not(IsEmpty()));
  EXPECT_NE(WrappedKey(CaseRecord(closed.exchange_id())), old_purged_wrapped);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference still_purged,
                       store_->cases().GetCase(closed.exchange_id()));
  EXPECT_THAT(still_purged.victims(), IsEmpty());

  // Audited, naming the check ids and nothing of the keys.
  ASSERT_OK_AND_ASSIGN(const uint64_t size, store_->audit_log().Size());
  ASSERT_OK_AND_ASSIGN(const auto last, store_->audit_log().Read(size - 1, 1));
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].entry.action, kDataKeyRotateAction);
  EXPECT_EQ(last[0].entry.actor, kPkGateway);
  EXPECT_THAT(last[0].entry.subjects,
              ::testing::ElementsAre(old_check_id, report.new_check_id));
  EXPECT_EQ(last[0].bytes.find(new_key), std::string::npos);

  // The old key no longer opens the database, and the error names the check
  // value it does not open.
  store_.reset();
  const std::string old_key_file =
      NewTempDir("data-protection-old-key") + "/data.key";
  WriteKey(old_key_file, old_key);
  EXPECT_THAT(GatewayStore::Open(WithKey(dir_, old_key_file), &clock_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("is not the key of the database"),
                             HasSubstr("check value, check id " +
                                       report.new_check_id))));
  // Neither the database nor its WAL holds the old wrapping any more.
  EXPECT_EQ(RawFiles().find(old_wrapped), std::string::npos);
  const AuditVerifyReport verified = VerifyOffline();
  EXPECT_TRUE(verified.ok) << verified.problem;
}

TEST_F(DataKeyRotationTest, IsRefusedWhileTheDatabaseIsOpen) {
  Open();
  const std::string key = ReadRaw(key_file_);
  const std::string check_id = CheckId();
  EXPECT_THAT(Rotate(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("in use by another running gateway")));
  EXPECT_EQ(ReadRaw(key_file_), key);
  EXPECT_FALSE(Exists(Pending()));
  EXPECT_EQ(CheckId(), check_id);
}

TEST_F(DataKeyRotationTest, IsRefusedWithAnotherKey) {
  Open();
  const std::string check_id = CheckId();
  const uint64_t audited = AuditSize();
  store_.reset();
  const std::string other =
      NewTempDir("data-protection-other-key") + "/data.key";
  ASSERT_OK(crypto::CreateKeyFile(other).status());
  const std::string other_key = ReadRaw(other);
  EXPECT_THAT(RotateDataKey(WithKey(dir_, other), kPkGateway, &clock_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("check id " + check_id)));
  EXPECT_EQ(ReadRaw(other), other_key);
  EXPECT_FALSE(Exists(PendingDataKeyPath(other)));
  Reopen();
  EXPECT_EQ(CheckId(), check_id);
  EXPECT_EQ(AuditSize(), audited);
}

TEST_F(DataKeyRotationTest, ARecordKeyThatDoesNotOpenChangesNothing) {
  const v1::CaseReference opened = Open();
  const std::string record = CaseRecord(opened.exchange_id());
  std::string damaged = WrappedKey(record);
  damaged[damaged.size() / 2] ^= 0x01;
  ASSERT_OK(store_->database().Write([&](sqlite::Connection& c) {
    CB_ASSIGN_OR_RETURN(
        auto stmt,
        c.Prepare("UPDATE record_keys SET wrapped = ? WHERE record = ?"));
    stmt.BindBlob(1, damaged).Bind(2, record);
    return stmt.Run();
  }));
  const std::string check_id = CheckId();
  const uint64_t audited = AuditSize();
  store_.reset();
  const std::string key = ReadRaw(key_file_);

  EXPECT_THAT(Rotate(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(record), HasSubstr("stays in force"))));
  EXPECT_EQ(ReadRaw(key_file_), key);
  EXPECT_FALSE(Exists(Pending())) << "the unused new key was left behind";
  Reopen();
  EXPECT_EQ(CheckId(), check_id);
  EXPECT_EQ(WrappedKey(record), damaged);
  EXPECT_EQ(AuditSize(), audited);
}

TEST_F(DataKeyRotationTest, ACommittedRotationIsFinishedAtTheNextOpen) {
  const v1::CaseReference opened = Open();
  store_.reset();
  const std::string old_key = ReadRaw(key_file_);
  ASSERT_OK_AND_ASSIGN(const DataKeyRotationReport report, Rotate());
  const std::string new_key = ReadRaw(key_file_);
  // As a crash between the commit and the rename leaves it: the database
  // sealed under the pending key, the old key still in the key file.
  ASSERT_EQ(::rename(key_file_.c_str(), Pending().c_str()), 0);
  WriteKey(key_file_, old_key);

  Reopen();
  EXPECT_TRUE(store_->finished_interrupted_rotation());
  EXPECT_EQ(ReadRaw(key_file_), new_key);
  EXPECT_FALSE(Exists(Pending()));
  EXPECT_EQ(CheckId(), report.new_check_id);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       store_->cases().GetCase(opened.exchange_id()));
  EXPECT_EQ(got.victims(0).remarks(), kRemark);
}

TEST_F(DataKeyRotationTest, ASecondRotationFinishesACommittedOneFirst) {
  Open();
  store_.reset();
  const std::string old_key = ReadRaw(key_file_);
  ASSERT_OK_AND_ASSIGN(const DataKeyRotationReport first, Rotate());
  const std::string new_key = ReadRaw(key_file_);
  ASSERT_EQ(::rename(key_file_.c_str(), Pending().c_str()), 0);
  WriteKey(key_file_, old_key);

  ASSERT_OK_AND_ASSIGN(const DataKeyRotationReport second, Rotate());
  EXPECT_TRUE(second.finished_interrupted);
  EXPECT_EQ(second.new_check_id, first.new_check_id);
  EXPECT_EQ(ReadRaw(key_file_), new_key);
  EXPECT_FALSE(Exists(Pending()));
  Reopen();
  EXPECT_EQ(CheckId(), first.new_check_id);
}

TEST_F(DataKeyRotationTest, ARotationThatNeverCommittedIsDiscardedAtOpen) {
  const v1::CaseReference opened = Open();
  const std::string check_id = CheckId();
  const uint64_t audited = AuditSize();
  store_.reset();
  const std::string key = ReadRaw(key_file_);
  // As a crash before the commit leaves it: a new key nothing is sealed
  // under.
  ASSERT_OK(crypto::CreateKeyFile(Pending()).status());

  Reopen();
  EXPECT_FALSE(store_->finished_interrupted_rotation());
  EXPECT_FALSE(Exists(Pending()));
  EXPECT_EQ(ReadRaw(key_file_), key);
  EXPECT_EQ(CheckId(), check_id);
  EXPECT_EQ(AuditSize(), audited);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference got,
                       store_->cases().GetCase(opened.exchange_id()));
  EXPECT_EQ(got.victims(0).remarks(), kRemark);
}

TEST_F(DataKeyRotationTest, APendingKeyThatOpensNothingIsRefusedAndKept) {
  Open();
  store_.reset();
  // Neither key opens the check value: nothing is removed.
  ASSERT_OK(crypto::CreateKeyFile(Pending()).status());
  const std::string other =
      NewTempDir("data-protection-other-key") + "/data.key";
  ASSERT_OK(crypto::CreateKeyFile(other).status());
  const std::string pending = ReadRaw(Pending());
  ASSERT_EQ(::rename(Pending().c_str(), PendingDataKeyPath(other).c_str()), 0);
  EXPECT_THAT(GatewayStore::Open(WithKey(dir_, other), &clock_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("interrupted rotation"),
                             HasSubstr("check id"))));
  EXPECT_EQ(ReadRaw(PendingDataKeyPath(other)), pending);
}

TEST_F(DataKeyRotationTest, NeedsAnExistingDatabaseAndKey) {
  store_.reset();
  const std::string empty = NewTempDir("data-protection-empty");
  EXPECT_THAT(
      RotateDataKey(WithKey(empty, empty + "/data.key"), kPkGateway, &clock_),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("there is no database")));
  EXPECT_FALSE(Exists(empty + "/gateway.db"));
  ASSERT_EQ(::unlink(key_file_.c_str()), 0);
  EXPECT_THAT(Rotate(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr("there is no key to rotate")));
  EXPECT_FALSE(Exists(key_file_));
}

}  // namespace
}  // namespace casebridge::server
