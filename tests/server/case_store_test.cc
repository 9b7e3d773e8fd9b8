#include "server/case_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <latch>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/crypto.h"
#include "google/protobuf/util/time_util.h"
#include "server/sqlite_case_store.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::server {
namespace {

using ::casebridge::testing::FakeClock;
using ::casebridge::testing::NewTempDir;
using ::casebridge::testing::StatusIs;
using ::google::protobuf::util::TimeUtil;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kFia[] = "spiffe://pk.casebridge/office/fia-liaison-desk";
constexpr char kEmbassy[] = "spiffe://pk.casebridge/office/embassy-beijing";
constexpr char kUrduSummary[] =
    "متاثرہ کی بازیابی: لاہور سے شادی کے جھوٹے وعدے پر لے جایا گیا";
constexpr char kChineseSummary[] = "受害者已获救，目前在北京大使馆";

v1::CaseReference Draft(
    const std::string& local_reference, const std::string& summary,
    v1::CaseCategory category = v1::CASE_CATEGORY_FORCED_MARRIAGE_FRAUD) {
  v1::CaseReference c;
  c.set_local_reference(local_reference);
  c.set_category(category);
  c.set_summary(summary);
  c.add_victims()->set_pseudonym("V1");
  c.set_handling_code(v1::HANDLING_CODE_H1);
  c.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
  c.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_2);
  return c;
}

AuditEvent OpenEvent(const std::string& actor = kFia) {
  AuditEvent event;
  event.actor = actor;
  event.action = "case.open";
  event.payload = "request bytes";
  return event;
}

AuditEvent UpdateEvent(const std::string& id, const std::string& actor = kFia) {
  AuditEvent event;
  event.actor = actor;
  event.action = "case.update";
  event.subjects = {id};
  event.payload = "update bytes";
  return event;
}

std::vector<std::string> Ids(const std::vector<v1::CaseReference>& cases) {
  std::vector<std::string> ids;
  for (const auto& c : cases) ids.push_back(c.exchange_id());
  return ids;
}

class CaseStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir("case-store");
    Reopen();
  }

  void Reopen() {
    store_.reset();
    auto store = GatewayStore::Open(dir_, v1::COUNTRY_PK, &clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  SqliteCaseStore& cases() { return store_->cases(); }
  SqliteAuditLog& audit() { return store_->audit_log(); }

  uint64_t AuditSize() {
    auto size = audit().Size();
    EXPECT_TRUE(size.ok()) << size.status();
    return size.ok() ? *size : 0;
  }

  size_t CaseCount() {
    auto page = cases().ListCases({}, 0, 1000);
    EXPECT_TRUE(page.ok()) << page.status();
    return page.ok() ? page->cases.size() : 0;
  }

  // Opens a case without a request id and returns its exchange id.
  std::string Open(const v1::CaseReference& draft,
                   const std::string& owner = kFia) {
    auto opened = cases().OpenCase(draft, owner, {}, OpenEvent(owner));
    EXPECT_TRUE(opened.ok()) << opened.status();
    return opened.ok() ? opened->case_reference.exchange_id() : "";
  }

  absl::StatusOr<v1::CaseReference> SetStatus(const std::string& id,
                                              int64_t version,
                                              v1::CaseStatus status) {
    return cases().UpdateCase(
        id, version,
        [status](v1::CaseReference& c) {
          c.set_status(status);
          return absl::OkStatus();
        },
        kFia, UpdateEvent(id));
  }

  FakeClock clock_;  // 2026-11-29 12:00 UTC
  std::string dir_;
  std::unique_ptr<GatewayStore> store_;
};

TEST_F(CaseStoreTest, OpenCaseMintsSequentialExchangeIds) {
  ASSERT_OK_AND_ASSIGN(
      const OpenedCase first,
      cases().OpenCase(Draft("FIR-1/2026", "first"), kFia, {}, OpenEvent()));
  ASSERT_OK_AND_ASSIGN(
      const OpenedCase second,
      cases().OpenCase(Draft("FIR-2/2026", "second"), kFia, {}, OpenEvent()));
  EXPECT_EQ(first.case_reference.exchange_id(), "PK-2026-000001");
  EXPECT_EQ(second.case_reference.exchange_id(), "PK-2026-000002");
  EXPECT_FALSE(first.replayed);
  EXPECT_FALSE(second.replayed);
}

TEST_F(CaseStoreTest, OpenCaseSetsOutputFields) {
  ASSERT_OK_AND_ASSIGN(
      const OpenedCase opened,
      cases().OpenCase(Draft("FIR-1/2026", "summary"), kFia, {}, OpenEvent()));
  const v1::CaseReference& c = opened.case_reference;
  EXPECT_EQ(c.status(), v1::CASE_STATUS_OPEN);
  EXPECT_EQ(c.owner_office(), kFia);
  EXPECT_EQ(c.origin_country(), v1::COUNTRY_PK);
  EXPECT_EQ(c.version(), 1);
  EXPECT_EQ(c.updated_by(), kFia);
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(c.created_at()),
            absl::ToUnixMicros(clock_.Now()));
  EXPECT_EQ(c.updated_at(), c.created_at());
  EXPECT_EQ(c.local_reference(), "FIR-1/2026");
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference stored,
                       cases().GetCase(c.exchange_id()));
  EXPECT_EQ(stored.SerializeAsString(), c.SerializeAsString());
}

TEST_F(CaseStoreTest, ExchangeIdCarriesYearAndRestartsNumberingEachYear) {
  EXPECT_EQ(Open(Draft("FIR-1", "a")), "PK-2026-000001");
  clock_.Set(absl::FromCivil(absl::CivilSecond(2027, 1, 1, 0, 0, 1),
                             absl::UTCTimeZone()));
  EXPECT_EQ(Open(Draft("FIR-2", "b")), "PK-2027-000001");
  EXPECT_EQ(Open(Draft("FIR-3", "c")), "PK-2027-000002");
}

TEST_F(CaseStoreTest, ChinaGatewayMintsCnIds) {
  store_.reset();
  ASSERT_OK_AND_ASSIGN(
      auto store,
      GatewayStore::Open(NewTempDir("case-store-cn"), v1::COUNTRY_CN, &clock_));
  ASSERT_OK_AND_ASSIGN(
      const OpenedCase opened,
      store->cases().OpenCase(Draft("京公刑-1", "案件"),
                              "spiffe://cn.casebridge/office/mps-liaison", {},
                              OpenEvent()));
  EXPECT_EQ(opened.case_reference.exchange_id(), "CN-2026-000001");
  EXPECT_EQ(opened.case_reference.origin_country(), v1::COUNTRY_CN);
}

TEST_F(CaseStoreTest, OpenCaseAppendsOneAuditEntryNamingTheCase) {
  for (int i = 1; i <= 2; ++i) {
    const uint64_t before = AuditSize();
    AuditEvent event = OpenEvent();
    event.subjects = {"request-subject"};
    ASSERT_OK_AND_ASSIGN(const OpenedCase opened,
                         cases().OpenCase(Draft("FIR", "s"), kFia, {}, event));
    EXPECT_EQ(AuditSize(), before + 1);
    ASSERT_OK_AND_ASSIGN(const auto entries, audit().Read(before, 10));
    ASSERT_EQ(entries.size(), 1u);
    EXPECT_EQ(entries[0].entry.action, "case.open");
    EXPECT_EQ(entries[0].entry.actor, kFia);
    EXPECT_THAT(
        entries[0].entry.subjects,
        ElementsAre("request-subject", opened.case_reference.exchange_id()));
  }
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, audit().Verify());
  EXPECT_TRUE(report.ok()) << report.problem;
}

TEST_F(CaseStoreTest, OpenCaseStoresNothingWhenAuditAppendFails) {
  // Make every audit insert fail: the case must not be stored either.
  ASSERT_OK(store_->database().Write([](sqlite::Connection& c) {
    return c.Exec(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'audit refused'); END;");
  }));
  EXPECT_THAT(
      cases().OpenCase(Draft("FIR-1", "s"), kFia, {}, OpenEvent()),
      StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("audit refused")));
  EXPECT_EQ(CaseCount(), 0u);
  EXPECT_EQ(AuditSize(), 0u);

  ASSERT_OK(store_->database().Write([](sqlite::Connection& c) {
    return c.Exec("DROP TRIGGER refuse_audit");
  }));
  // The exchange id counter was rolled back too.
  EXPECT_EQ(Open(Draft("FIR-1", "s")), "PK-2026-000001");
}

TEST_F(CaseStoreTest, ReplayedRequestIdReturnsSameCaseAndWritesNothing) {
  const RequestKey key{"req-1", crypto::Sha256("request one")};
  ASSERT_OK_AND_ASSIGN(
      const OpenedCase first,
      cases().OpenCase(Draft("FIR-1", "s"), kFia, key, OpenEvent()));
  const uint64_t audit_size = AuditSize();
  clock_.Advance(absl::Minutes(5));

  ASSERT_OK_AND_ASSIGN(
      const OpenedCase again,
      cases().OpenCase(Draft("FIR-1", "s"), kFia, key, OpenEvent()));
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.case_reference.SerializeAsString(),
            first.case_reference.SerializeAsString());
  EXPECT_EQ(CaseCount(), 1u);
  EXPECT_EQ(AuditSize(), audit_size);
}

TEST_F(CaseStoreTest, ReusedRequestIdWithOtherContentIsAlreadyExists) {
  ASSERT_OK(cases()
                .OpenCase(Draft("FIR-1", "s"), kFia,
                          {"req-1", crypto::Sha256("request one")}, OpenEvent())
                .status());
  const uint64_t audit_size = AuditSize();
  EXPECT_THAT(
      cases().OpenCase(Draft("FIR-2", "other"), kFia,
                       {"req-1", crypto::Sha256("request two")}, OpenEvent()),
      StatusIs(absl::StatusCode::kAlreadyExists,
               AllOf(HasSubstr("req-1"), HasSubstr("PK-2026-000001"))));
  EXPECT_EQ(CaseCount(), 1u);
  EXPECT_EQ(AuditSize(), audit_size);
  // No exchange id was used up.
  EXPECT_EQ(Open(Draft("FIR-3", "s")), "PK-2026-000002");
}

TEST_F(CaseStoreTest, RequestIdsAreScopedToTheOwner) {
  const RequestKey key{"req-1", crypto::Sha256("request")};
  ASSERT_OK_AND_ASSIGN(
      const OpenedCase fia,
      cases().OpenCase(Draft("FIR-1", "s"), kFia, key, OpenEvent()));
  ASSERT_OK_AND_ASSIGN(const OpenedCase embassy,
                       cases().OpenCase(Draft("FIR-1", "s"), kEmbassy, key,
                                        OpenEvent(kEmbassy)));
  EXPECT_FALSE(embassy.replayed);
  EXPECT_NE(embassy.case_reference.exchange_id(),
            fia.case_reference.exchange_id());
  EXPECT_EQ(CaseCount(), 2u);
}

TEST_F(CaseStoreTest, CasesWithoutRequestIdAreNeverReplays) {
  const std::string a = Open(Draft("FIR-1", "s"));
  const std::string b = Open(Draft("FIR-1", "s"));
  EXPECT_NE(a, b);
  EXPECT_EQ(CaseCount(), 2u);
}

TEST_F(CaseStoreTest, AnUpdateAndTheReleaseOfItsAnswerCommitTogether) {
  const std::string id = Open(Draft("FIR-1", "before"));
  const uint64_t audit_size = AuditSize();
  const auto summary = [](const char* text) {
    return [text](v1::CaseReference& c) {
      c.set_summary(text);
      return absl::OkStatus();
    };
  };
  int64_t seen_version = 0;
  const CaseStore::AlsoAudit released =
      [&](const v1::CaseReference& stored) -> std::optional<AuditEvent> {
    seen_version = stored.version();
    AuditEvent event;
    event.actor = kFia;
    event.action = kCaseUpdatePersonalDataAction;
    event.subjects = {stored.exchange_id()};
    return event;
  };
  ASSERT_OK(
      cases()
          .UpdateCase(id, 1, summary("after"), kFia, UpdateEvent(id), released)
          .status());
  EXPECT_EQ(seen_version, 2);  // given the case as stored
  ASSERT_EQ(AuditSize(), audit_size + 2);
  ASSERT_OK_AND_ASSIGN(auto last, audit().Read(audit_size + 1, 1));
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].entry.action, kCaseUpdatePersonalDataAction);

  // The release's entry cannot be written (a full disk): the update is not
  // made either, so its retry with the same expected_version goes through.
  ASSERT_OK(store_->database().Write([](sqlite::Connection& c) {
    return c.Exec(
        "CREATE TEMP TRIGGER no_room BEFORE INSERT ON main.audit_log "
        "WHEN NEW.action = 'case.update.personal_data' "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END");
  }));
  EXPECT_FALSE(
      cases()
          .UpdateCase(id, 2, summary("again"), kFia, UpdateEvent(id), released)
          .ok());
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference unchanged, cases().GetCase(id));
  EXPECT_EQ(unchanged.version(), 2);
  EXPECT_EQ(unchanged.summary(), "after");
  EXPECT_EQ(AuditSize(), audit_size + 2);

  // Nothing to release: the update's own entry alone.
  ASSERT_OK(store_->database().Write([](sqlite::Connection& c) {
    return c.Exec("DROP TRIGGER temp.no_room");
  }));
  ASSERT_OK(cases()
                .UpdateCase(id, 2, summary("again"), kFia, UpdateEvent(id),
                            [](const v1::CaseReference&) {
                              return std::optional<AuditEvent>();
                            })
                .status());
  EXPECT_EQ(AuditSize(), audit_size + 3);
}

TEST_F(CaseStoreTest, GetCaseOfUnknownIdIsNotFound) {
  EXPECT_THAT(
      cases().GetCase("PK-2026-000042"),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("PK-2026-000042")));
}

TEST_F(CaseStoreTest, UpdateCaseBumpsVersionAndStampsActorAndTime) {
  const std::string id = Open(Draft("FIR-1", "before"));
  clock_.Advance(absl::Hours(2));
  const uint64_t audit_size = AuditSize();
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference updated,
                       cases().UpdateCase(
                           id, 1,
                           [](v1::CaseReference& c) {
                             c.set_summary("after");
                             c.set_status(v1::CASE_STATUS_UNDER_INVESTIGATION);
                             return absl::OkStatus();
                           },
                           kEmbassy, UpdateEvent(id, kEmbassy)));
  EXPECT_EQ(updated.version(), 2);
  EXPECT_EQ(updated.updated_by(), kEmbassy);
  EXPECT_EQ(updated.owner_office(), kFia);
  EXPECT_EQ(updated.summary(), "after");
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(updated.updated_at()),
            absl::ToUnixMicros(clock_.Now()));
  EXPECT_NE(updated.updated_at(), updated.created_at());

  ASSERT_OK_AND_ASSIGN(const v1::CaseReference stored, cases().GetCase(id));
  EXPECT_EQ(stored.SerializeAsString(), updated.SerializeAsString());
  EXPECT_EQ(AuditSize(), audit_size + 1);
  ASSERT_OK_AND_ASSIGN(const auto entries, audit().Read(audit_size, 1));
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].entry.action, "case.update");
  EXPECT_EQ(entries[0].entry.actor, kEmbassy);
  EXPECT_THAT(entries[0].entry.subjects, Contains(id));

  // The listing columns follow the body.
  CaseFilter filter;
  filter.status = v1::CASE_STATUS_UNDER_INVESTIGATION;
  filter.text = "after";
  ASSERT_OK_AND_ASSIGN(const CasePage page, cases().ListCases(filter, 0, 10));
  EXPECT_THAT(Ids(page.cases), ElementsAre(id));
}

TEST_F(CaseStoreTest, UpdateCaseWithStaleVersionIsAbortedAndChangesNothing) {
  const std::string id = Open(Draft("FIR-1", "original"));
  ASSERT_OK(SetStatus(id, 1, v1::CASE_STATUS_UNDER_INVESTIGATION).status());
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference before, cases().GetCase(id));
  const uint64_t audit_size = AuditSize();
  bool applied = false;

  EXPECT_THAT(
      cases().UpdateCase(
          id, 1,
          [&](v1::CaseReference& c) {
            applied = true;
            c.set_summary("lost update");
            return absl::OkStatus();
          },
          kFia, UpdateEvent(id)),
      StatusIs(absl::StatusCode::kAborted,
               AllOf(HasSubstr("expected_version"), HasSubstr("version 2"))));
  EXPECT_FALSE(applied);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference after, cases().GetCase(id));
  EXPECT_EQ(after.SerializeAsString(), before.SerializeAsString());
  EXPECT_EQ(after.version(), 2);
  EXPECT_EQ(AuditSize(), audit_size);
}

TEST_F(CaseStoreTest, UpdateCaseReturnsApplyErrorAndStoresNothing) {
  const std::string id = Open(Draft("FIR-1", "original"));
  const uint64_t audit_size = AuditSize();
  EXPECT_THAT(cases().UpdateCase(
                  id, 1,
                  [](v1::CaseReference& c) {
                    c.set_summary("half-made change");
                    return absl::FailedPreconditionError(
                        "a case cannot go from OPEN to REPATRIATED");
                  },
                  kFia, UpdateEvent(id)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("OPEN to REPATRIATED")));
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference after, cases().GetCase(id));
  EXPECT_EQ(after.summary(), "original");
  EXPECT_EQ(after.version(), 1);
  EXPECT_EQ(AuditSize(), audit_size);
}

TEST_F(CaseStoreTest, UpdateCaseOfUnknownIdIsNotFound) {
  const uint64_t audit_size = AuditSize();
  EXPECT_THAT(
      SetStatus("PK-2026-000404", 1, v1::CASE_STATUS_CLOSED),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("PK-2026-000404")));
  EXPECT_EQ(AuditSize(), audit_size);
}

TEST_F(CaseStoreTest, SuccessiveUpdatesEachNeedTheLatestVersion) {
  const std::string id = Open(Draft("FIR-1", "s"));
  ASSERT_OK_AND_ASSIGN(auto v2,
                       SetStatus(id, 1, v1::CASE_STATUS_UNDER_INVESTIGATION));
  ASSERT_OK_AND_ASSIGN(auto v3,
                       SetStatus(id, 2, v1::CASE_STATUS_VICTIM_LOCATED));
  EXPECT_EQ(v2.version(), 2);
  EXPECT_EQ(v3.version(), 3);
  EXPECT_THAT(SetStatus(id, 2, v1::CASE_STATUS_CLOSED),
              StatusIs(absl::StatusCode::kAborted, ::testing::_));
  EXPECT_THAT(SetStatus(id, 4, v1::CASE_STATUS_CLOSED),
              StatusIs(absl::StatusCode::kAborted, ::testing::_));
}

class CaseListTest : public CaseStoreTest {
 protected:
  void SetUp() override {
    CaseStoreTest::SetUp();
    ids_.push_back(Open(Draft("FIR-101/2026", kUrduSummary)));
    ids_.push_back(Open(Draft("LHR-7", "Lured by a job offer in Guangzhou",
                              v1::CASE_CATEGORY_FORCED_LABOUR)));
    ids_.push_back(Open(Draft("EMB-3", kChineseSummary), kEmbassy));
    ids_.push_back(Open(Draft("FIR-104/2026", "Marriage bureau in Lahore")));
    ids_.push_back(Open(Draft("EMB-5", "Job offer, factory work",
                              v1::CASE_CATEGORY_FORCED_LABOUR),
                        kEmbassy));
    ASSERT_OK(
        SetStatus(ids_[1], 1, v1::CASE_STATUS_UNDER_INVESTIGATION).status());
    ASSERT_OK(
        SetStatus(ids_[4], 1, v1::CASE_STATUS_UNDER_INVESTIGATION).status());
  }

  std::vector<std::string> List(const CaseFilter& filter) {
    auto page = cases().ListCases(filter, 0, 100);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) return {};
    EXPECT_FALSE(page->has_more);
    return Ids(page->cases);
  }

  std::vector<std::string> ids_;
};

TEST_F(CaseListTest, NoFilterListsAllOldestFirst) {
  EXPECT_EQ(List({}), ids_);
  EXPECT_THAT(ids_,
              ElementsAre("PK-2026-000001", "PK-2026-000002", "PK-2026-000003",
                          "PK-2026-000004", "PK-2026-000005"));
}

TEST_F(CaseListTest, FiltersByStatus) {
  CaseFilter filter;
  filter.status = v1::CASE_STATUS_UNDER_INVESTIGATION;
  EXPECT_THAT(List(filter), ElementsAre(ids_[1], ids_[4]));
  filter.status = v1::CASE_STATUS_OPEN;
  EXPECT_THAT(List(filter), ElementsAre(ids_[0], ids_[2], ids_[3]));
  filter.status = v1::CASE_STATUS_CLOSED;
  EXPECT_THAT(List(filter), IsEmpty());
}

TEST_F(CaseListTest, FiltersByCategory) {
  CaseFilter filter;
  filter.category = v1::CASE_CATEGORY_FORCED_LABOUR;
  EXPECT_THAT(List(filter), ElementsAre(ids_[1], ids_[4]));
  filter.category = v1::CASE_CATEGORY_SUSPECTED_ORGAN_TRADE;
  EXPECT_THAT(List(filter), IsEmpty());
}

TEST_F(CaseListTest, FiltersByOwner) {
  CaseFilter filter;
  filter.owner_office = kEmbassy;
  EXPECT_THAT(List(filter), ElementsAre(ids_[2], ids_[4]));
  filter.owner_office = kFia;
  EXPECT_THAT(List(filter), ElementsAre(ids_[0], ids_[1], ids_[3]));
  filter.owner_office = "spiffe://pk.casebridge/office/nobody";
  EXPECT_THAT(List(filter), IsEmpty());
}

TEST_F(CaseListTest, FiltersByTextInSummaryLocalReferenceOrExchangeId) {
  CaseFilter filter;
  filter.text = "Job offer";  // summary, case-sensitive
  EXPECT_THAT(List(filter), ElementsAre(ids_[4]));
  filter.text = "job offer";
  EXPECT_THAT(List(filter), ElementsAre(ids_[1]));
  filter.text = "FIR-10";  // local reference
  EXPECT_THAT(List(filter), ElementsAre(ids_[0], ids_[3]));
  filter.text = "2026-000003";  // exchange id
  EXPECT_THAT(List(filter), ElementsAre(ids_[2]));
  filter.text = "no such text";
  EXPECT_THAT(List(filter), IsEmpty());
}

TEST_F(CaseListTest, FiltersByUrduAndChineseSubstrings) {
  CaseFilter filter;
  filter.text = "بازیابی";
  EXPECT_THAT(List(filter), ElementsAre(ids_[0]));
  filter.text = "获救";
  EXPECT_THAT(List(filter), ElementsAre(ids_[2]));
  filter.text = "北京";
  EXPECT_THAT(List(filter), ElementsAre(ids_[2]));
}

TEST_F(CaseListTest, CombinesFilters) {
  CaseFilter filter;
  filter.owner_office = kEmbassy;
  filter.status = v1::CASE_STATUS_UNDER_INVESTIGATION;
  filter.category = v1::CASE_CATEGORY_FORCED_LABOUR;
  EXPECT_THAT(List(filter), ElementsAre(ids_[4]));
  filter.text = "Guangzhou";
  EXPECT_THAT(List(filter), IsEmpty());
}

TEST_F(CaseListTest, PagesThroughResults) {
  ASSERT_OK_AND_ASSIGN(const CasePage first, cases().ListCases({}, 0, 2));
  EXPECT_THAT(Ids(first.cases), ElementsAre(ids_[0], ids_[1]));
  EXPECT_TRUE(first.has_more);

  ASSERT_OK_AND_ASSIGN(const CasePage second,
                       cases().ListCases({}, first.last_position(), 2));
  EXPECT_THAT(Ids(second.cases), ElementsAre(ids_[2], ids_[3]));
  EXPECT_TRUE(second.has_more);

  ASSERT_OK_AND_ASSIGN(const CasePage third,
                       cases().ListCases({}, second.last_position(), 2));
  EXPECT_THAT(Ids(third.cases), ElementsAre(ids_[4]));
  EXPECT_FALSE(third.has_more);
}

TEST_F(CaseListTest, LastFullPageHasNoMore) {
  CaseFilter filter;
  filter.status = v1::CASE_STATUS_OPEN;  // three cases
  ASSERT_OK_AND_ASSIGN(const CasePage first, cases().ListCases(filter, 0, 2));
  EXPECT_THAT(Ids(first.cases), ElementsAre(ids_[0], ids_[2]));
  EXPECT_TRUE(first.has_more);
  ASSERT_OK_AND_ASSIGN(const CasePage second,
                       cases().ListCases(filter, first.last_position(), 2));
  EXPECT_THAT(Ids(second.cases), ElementsAre(ids_[3]));
  EXPECT_FALSE(second.has_more);

  ASSERT_OK_AND_ASSIGN(const CasePage exact, cases().ListCases(filter, 0, 3));
  EXPECT_EQ(exact.cases.size(), 3u);
  EXPECT_FALSE(exact.has_more);
}

TEST_F(CaseListTest, PagingIsNotDisturbedByUpdates) {
  ASSERT_OK_AND_ASSIGN(const CasePage first, cases().ListCases({}, 0, 2));
  // Updating a case already listed must not bring it back on a later page.
  ASSERT_OK(SetStatus(ids_[0], 1, v1::CASE_STATUS_CLOSED).status());
  ASSERT_OK_AND_ASSIGN(const CasePage rest,
                       cases().ListCases({}, first.last_position(), 10));
  EXPECT_THAT(Ids(rest.cases), ElementsAre(ids_[2], ids_[3], ids_[4]));
}

TEST_F(CaseStoreTest, UrduAndChineseSummariesRoundTripByteForByte) {
  const std::string urdu = Open(Draft("FIR-1", kUrduSummary));
  const std::string chinese = Open(Draft("京-1", kChineseSummary));
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference u, cases().GetCase(urdu));
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference c, cases().GetCase(chinese));
  EXPECT_EQ(u.summary(), std::string(kUrduSummary));
  EXPECT_EQ(c.summary(), std::string(kChineseSummary));
  EXPECT_EQ(c.local_reference(), "京-1");
}

TEST_F(CaseStoreTest, DataSurvivesRestart) {
  const std::string first = Open(Draft("FIR-1", kUrduSummary));
  ASSERT_OK(SetStatus(first, 1, v1::CASE_STATUS_UNDER_INVESTIGATION).status());
  ASSERT_OK_AND_ASSIGN(
      const OpenedCase opened,
      cases().OpenCase(Draft("FIR-2", "s"), kFia,
                       {"req-9", crypto::Sha256("r")}, OpenEvent()));
  const std::string replayable = opened.case_reference.exchange_id();
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference before, cases().GetCase(first));
  const uint64_t audit_size = AuditSize();

  Reopen();
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference after, cases().GetCase(first));
  EXPECT_EQ(after.SerializeAsString(), before.SerializeAsString());
  EXPECT_EQ(AuditSize(), audit_size);
  // The counter and the idempotency keys persisted.
  EXPECT_EQ(Open(Draft("FIR-3", "s")), "PK-2026-000003");
  ASSERT_OK_AND_ASSIGN(
      const OpenedCase replay,
      cases().OpenCase(Draft("FIR-2", "s"), kFia,
                       {"req-9", crypto::Sha256("r")}, OpenEvent()));
  EXPECT_TRUE(replay.replayed);
  EXPECT_EQ(replay.case_reference.exchange_id(), replayable);
  ASSERT_OK_AND_ASSIGN(const VerifyReport report, audit().Verify());
  EXPECT_TRUE(report.ok()) << report.problem;
}

TEST_F(CaseStoreTest, ConcurrentUpdatesOfOneVersionLetExactlyOneWin) {
  const std::string id = Open(Draft("FIR-1", "s"));
  const uint64_t audit_size = AuditSize();
  constexpr int kThreads = 2;
  std::latch start(kThreads);
  std::vector<absl::StatusOr<v1::CaseReference>> results(
      kThreads, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      results[t] = cases().UpdateCase(
          id, 1,
          [t](v1::CaseReference& c) {
            c.set_summary(absl::StrCat("writer ", t));
            return absl::OkStatus();
          },
          kFia, UpdateEvent(id));
    });
  }
  for (auto& thread : threads) thread.join();

  int ok = 0;
  int aborted = 0;
  std::string winner;
  for (const auto& result : results) {
    if (result.ok()) {
      ++ok;
      winner = result->summary();
    } else if (result.status().code() == absl::StatusCode::kAborted) {
      ++aborted;
    } else {
      ADD_FAILURE() << result.status();
    }
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(aborted, 1);
  ASSERT_OK_AND_ASSIGN(const v1::CaseReference stored, cases().GetCase(id));
  EXPECT_EQ(stored.version(), 2);
  EXPECT_EQ(stored.summary(), winner);
  EXPECT_EQ(AuditSize(), audit_size + 1);
}

TEST_F(CaseStoreTest, ConcurrentOpensMintDistinctIds) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 5;
  std::latch start(kThreads);
  std::vector<std::vector<std::string>> minted(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kPerThread; ++i) {
        auto opened =
            cases().OpenCase(Draft("FIR", "s"), kFia, {}, OpenEvent());
        if (opened.ok())
          minted[t].push_back(opened->case_reference.exchange_id());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::set<std::string> all;
  for (const auto& ids : minted) {
    EXPECT_EQ(ids.size(), static_cast<size_t>(kPerThread));
    all.insert(ids.begin(), ids.end());
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(all.count("PK-2026-000020"), 1u);
  EXPECT_EQ(AuditSize(), static_cast<uint64_t>(kThreads * kPerThread));
}

}  // namespace
}  // namespace casebridge::server
