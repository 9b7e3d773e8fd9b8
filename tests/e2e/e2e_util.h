// Clients of a gateway process for end-to-end tests, over real mutual TLS.
#ifndef CASEBRIDGE_TESTS_E2E_E2E_UTIL_H_
#define CASEBRIDGE_TESTS_E2E_E2E_UTIL_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "casebridge/v1/common.pb.h"
#include "client/office_client.h"
#include "core/config.h"
#include "tests/testing/test_pki.h"

namespace casebridge::testing {

// An office client presenting the test PKI's `cert_stem` (e.g.
// "pk/offices/fia-liaison-desk", "bad/revoked") to `endpoint`, expecting
// the gateway of `gateway_country`.
std::unique_ptr<client::OfficeClient> OfficeClientFor(
    const std::string& cert_stem, const std::string& endpoint,
    const std::string& gateway_country = "PK");

// A client's configuration for `endpoint`, presenting `cert_stem` of the
// test PKI and trusting the CA of `gateway_country` ("PK" or "CN").
config::Client ClientConfig(const std::string& cert_stem,
                            const std::string& endpoint,
                            const std::string& gateway_country);

// A channel to `endpoint` presenting `cert_stem`.
std::shared_ptr<grpc::Channel> ChannelFor(const std::string& cert_stem,
                                          const std::string& endpoint,
                                          const std::string& gateway_country);

// An empty AddCheckpoint on the PK gateway's peer port at `peer_endpoint`,
// presenting `cert_stem`: the call's status (the peer gets INVALID_ARGUMENT
// from the witness; anyone else is refused before it).
grpc::Status CallPeerPort(const std::string& cert_stem,
                          const std::string& peer_endpoint);

// The exchange id the PK gateway mints for its `n`th case this year
// (gateway processes run on the real clock).
std::string PkExchangeId(int n);

// Polls `condition` every 20 ms until it holds or `timeout` passes; the
// condition's last value.
bool WaitUntil(const std::function<bool()>& condition,
               absl::Duration timeout = absl::Seconds(30));

// How many lines of `text` (a gateway's log) contain `needle`.
size_t CountLines(absl::string_view text, absl::string_view needle);

// Configs of a PK and a CN gateway in `dir` that name each other's peer
// ports. The peer ports are fixed, so a restarted gateway is found where its
// peer looks for it; office ports are picked anew at each start.
struct GatewayPairConfigs {
  std::string pk;  // path of the PK gateway's config
  std::string cn;  // path of the CN gateway's config
};
// `customize`, if set, adjusts each side's options (`country` says which)
// before its config is written.
GatewayPairConfigs WriteGatewayPairConfigs(
    const std::string& dir, int retry_max_seconds = 1,
    const std::function<void(GatewayConfigOptions&)>& customize = nullptr);

// The CN gateway's default [[offices]] and a second MPS office (Guangzhou):
// for tests of who among the peer's offices sees what.
std::string CnOfficesWithGuangzhou();

// A complete, valid new case.
v1::CaseReference ValidDraft(
    const std::string& summary =
        "Woman held in Handan after a brokered marriage");

// Every audit entry the office behind `auditor` may read, page by page
// (a failed call is a test failure and ends the reading).
std::vector<v1::AuditEntry> ReadAuditEntries(client::OfficeClient& auditor);
// Those of them recording `action`.
std::vector<v1::AuditEntry> ReadAuditEntries(client::OfficeClient& auditor,
                                             const std::string& action);

// Opens `draft` as the office behind `office` and shares it with the peer
// country's liaison desk, as an office must before it sends messages on its
// own case (SendMessage's FAILED_PRECONDITION otherwise): the exchange id.
// The share reaches the liaison desk's inbox ahead of the case's messages.
absl::StatusOr<std::string> OpenSharedCase(
    client::OfficeClient& office,
    const v1::CaseReference& draft = ValidDraft());

}  // namespace casebridge::testing

#endif  // CASEBRIDGE_TESTS_E2E_E2E_UTIL_H_
