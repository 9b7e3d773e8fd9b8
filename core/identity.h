// SPIFFE identities (docs/configuration.md#identities):
//   spiffe://<pk|cn>.casebridge/gateway
//   spiffe://<pk|cn>.casebridge/office/<name>
//   spiffe://<pk|cn>.casebridge/auditor/<name>
// with <name> of 1-64 characters [a-z0-9-]. Authorization reads only the
// verified URI SAN, never the certificate's CN.
#ifndef CASEBRIDGE_CORE_IDENTITY_H_
#define CASEBRIDGE_CORE_IDENTITY_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "casebridge/v1/common.pb.h"

namespace grpc {
class AuthContext;
}

namespace casebridge {

enum class PrincipalKind { kGateway, kOffice, kAuditor };

struct SpiffeId {
  std::string uri;  // the whole id, as parsed
  v1::Country country = v1::COUNTRY_UNSPECIFIED;
  PrincipalKind kind = PrincipalKind::kGateway;
  std::string name;  // empty for a gateway
};

// INVALID_ARGUMENT naming what is wrong.
absl::StatusOr<SpiffeId> ParseSpiffeId(absl::string_view uri);

// "PK" / "CN"; "" for unspecified.
absl::string_view CountryCode(v1::Country country);
// COUNTRY_UNSPECIFIED unless `code` is "PK" or "CN".
v1::Country CountryFromCode(absl::string_view code);
// "spiffe://pk.casebridge/gateway" and the like; "" for an unknown country.
std::string GatewayIdentity(v1::Country country);

// The caller's verified SPIFFE id from the TLS handshake: the one URI SAN of
// its certificate that starts with "spiffe://". UNAUTHENTICATED if there is
// none or more than one.
absl::StatusOr<std::string> PeerSpiffeId(const grpc::AuthContext& context);

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_IDENTITY_H_
