#include "tests/e2e/e2e_util.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "casebridge/v1/peer.grpc.pb.h"
#include "core/config.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {

config::Client ClientConfig(const std::string& cert_stem,
                            const std::string& endpoint,
                            const std::string& gateway_country) {
  const std::string gw = gateway_country == "PK" ? "pk" : "cn";
  config::Client c;
  c.endpoint = endpoint;
  c.gateway_identity = "spiffe://" + gw + ".casebridge/gateway";
  c.cert = Pki(cert_stem + ".crt");
  c.key = Pki(cert_stem + ".key");
  c.ca = Pki(gw + "/ca.crt");
  c.timeout_seconds = 10;
  return c;
}

std::unique_ptr<client::OfficeClient> OfficeClientFor(
    const std::string& cert_stem, const std::string& endpoint,
    const std::string& gateway_country) {
  auto client = client::OfficeClient::Create(
      ClientConfig(cert_stem, endpoint, gateway_country));
  if (!client.ok()) {
    ADD_FAILURE() << client.status();
    return nullptr;
  }
  return *std::move(client);
}

std::shared_ptr<grpc::Channel> ChannelFor(const std::string& cert_stem,
                                          const std::string& endpoint,
                                          const std::string& gateway_country) {
  auto channel =
      client::Connect(ClientConfig(cert_stem, endpoint, gateway_country));
  if (!channel.ok()) {
    ADD_FAILURE() << channel.status();
    return nullptr;
  }
  return *channel;
}

grpc::Status CallPeerPort(const std::string& cert_stem,
                          const std::string& peer_endpoint) {
  auto stub =
      v1::PeerService::NewStub(ChannelFor(cert_stem, peer_endpoint, "PK"));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::AddCheckpointResponse response;
  return stub->AddCheckpoint(&context, v1::AddCheckpointRequest(), &response);
}

std::string PkExchangeId(int n) {
  const auto year = absl::ToCivilYear(absl::Now(), absl::UTCTimeZone()).year();
  return absl::StrFormat("PK-%04d-%06d", year, n);
}

size_t CountLines(absl::string_view text, absl::string_view needle) {
  size_t n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StrContains(line, needle)) ++n;
  }
  return n;
}

bool WaitUntil(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(20));  // polling the condition
  }
  return condition();
}

GatewayPairConfigs WriteGatewayPairConfigs(
    const std::string& dir, int retry_max_seconds,
    const std::function<void(GatewayConfigOptions&)>& customize) {
  const int pk_peer = ReserveFreePort();
  const int cn_peer = ReserveFreePort();
  auto write = [&](const std::string& country, int own, int theirs) {
    GatewayConfigOptions o;
    o.country = country;
    o.data_dir = dir + "/" + country + "-data";
    o.peer_address = absl::StrCat("127.0.0.1:", own);
    o.peer_endpoint = absl::StrCat("127.0.0.1:", theirs);
    o.retry_max_seconds = retry_max_seconds;
    if (customize) customize(o);
    return WriteFile(dir + "/" + country + ".toml", GatewayConfigToml(o));
  };
  return {write("PK", pk_peer, cn_peer), write("CN", cn_peer, pk_peer)};
}

std::string CnOfficesWithGuangzhou() {
  return absl::StrCat(DefaultOfficesToml("CN"), R"(
[[offices]]
identity = "spiffe://cn.casebridge/office/mps-guangzhou"
name = "MPS Guangzhou"
role = "liaison_officer"
)");
}

v1::CaseReference ValidDraft(const std::string& summary) {
  v1::CaseReference c;
  c.set_local_reference("FIR 118/2026 PS Gujranwala");
  c.set_category(v1::CASE_CATEGORY_FORCED_MARRIAGE_FRAUD);
  c.set_summary(summary);
  c.set_handling_code(v1::HANDLING_CODE_H2);
  c.mutable_evaluation()->set_source_reliability(v1::SOURCE_RELIABILITY_B);
  c.mutable_evaluation()->set_information_accuracy(v1::INFORMATION_ACCURACY_2);
  v1::VictimReference* v = c.add_victims();
  v->set_pseudonym("V1");
  v->set_remarks("age 19");
  v1::Location* l = c.add_last_known_locations();
  l->set_description("Handan, Hebei");
  l->set_country(v1::COUNTRY_CN);
  return c;
}

std::vector<v1::AuditEntry> ReadAuditEntries(client::OfficeClient& auditor) {
  std::vector<v1::AuditEntry> all;
  uint64_t start = 0;
  while (true) {
    auto page = auditor.GetAuditEntries(start, 1000);
    EXPECT_OK(page);
    if (!page.ok() || page->entries().empty()) break;
    all.insert(all.end(), page->entries().begin(), page->entries().end());
    start = page->next_start();
  }
  return all;
}

std::vector<v1::AuditEntry> ReadAuditEntries(client::OfficeClient& auditor,
                                             const std::string& action) {
  std::vector<v1::AuditEntry> entries = ReadAuditEntries(auditor);
  std::erase_if(entries,
                [&](const v1::AuditEntry& e) { return e.action() != action; });
  return entries;
}

absl::StatusOr<std::string> OpenSharedCase(client::OfficeClient& office,
                                           const v1::CaseReference& draft) {
  auto opened = office.OpenCase(draft);
  if (!opened.ok()) return opened.status();
  v1::ShareCaseRequest share;
  share.set_exchange_id(opened->exchange_id());
  auto shared = office.ShareCase(share);
  if (!shared.ok()) return shared.status();
  return opened->exchange_id();
}

}  // namespace casebridge::testing
