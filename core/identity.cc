#include "core/identity.h"

#include <grpcpp/security/auth_context.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace casebridge {
namespace {

constexpr absl::string_view kScheme = "spiffe://";
constexpr absl::string_view kTrustDomainSuffix = ".casebridge";

bool IsValidName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

absl::string_view CountryCode(v1::Country country) {
  switch (country) {
    case v1::COUNTRY_PK:
      return "PK";
    case v1::COUNTRY_CN:
      return "CN";
    default:
      return "";
  }
}

v1::Country CountryFromCode(absl::string_view code) {
  if (code == "PK") return v1::COUNTRY_PK;
  if (code == "CN") return v1::COUNTRY_CN;
  return v1::COUNTRY_UNSPECIFIED;
}

std::string GatewayIdentity(v1::Country country) {
  if (country != v1::COUNTRY_PK && country != v1::COUNTRY_CN) return "";
  const absl::string_view code = country == v1::COUNTRY_PK ? "pk" : "cn";
  return absl::StrCat(kScheme, code, kTrustDomainSuffix, "/gateway");
}

absl::StatusOr<SpiffeId> ParseSpiffeId(absl::string_view uri) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("identity \"", uri, "\" ", why));
  };
  if (!absl::StartsWith(uri, kScheme))
    return bad("does not start with spiffe://");
  const absl::string_view rest = uri.substr(kScheme.size());
  const std::vector<absl::string_view> parts = absl::StrSplit(rest, '/');
  SpiffeId id;
  id.uri = std::string(uri);
  if (parts[0] == "pk.casebridge") {
    id.country = v1::COUNTRY_PK;
  } else if (parts[0] == "cn.casebridge") {
    id.country = v1::COUNTRY_CN;
  } else {
    return bad("has a trust domain other than pk.casebridge or cn.casebridge");
  }
  if (parts.size() == 2 && parts[1] == "gateway") {
    id.kind = PrincipalKind::kGateway;
    return id;
  }
  if (parts.size() != 3)
    return bad("is not <domain>/gateway, /office/<name> or /auditor/<name>");
  if (parts[1] == "office") {
    id.kind = PrincipalKind::kOffice;
  } else if (parts[1] == "auditor") {
    id.kind = PrincipalKind::kAuditor;
  } else {
    return bad("is not <domain>/gateway, /office/<name> or /auditor/<name>");
  }
  if (!IsValidName(parts[2]))
    return bad("has a name that is not 1-64 of [a-z0-9-]");
  id.name = std::string(parts[2]);
  return id;
}

absl::StatusOr<std::string> PeerSpiffeId(const grpc::AuthContext& context) {
  if (!context.IsPeerAuthenticated()) {
    return absl::UnauthenticatedError("peer is not authenticated");
  }
  std::string found;
  int count = 0;
  for (const grpc::string_ref& value : context.FindPropertyValues("peer_uri")) {
    const std::string san(value.data(), value.size());
    if (absl::StartsWith(san, kScheme)) {
      found = san;
      ++count;
    }
  }
  if (count != 1) {
    return absl::UnauthenticatedError(absl::StrCat(
        "client certificate must carry exactly one spiffe:// URI SAN, has ",
        count));
  }
  return found;
}

}  // namespace casebridge
