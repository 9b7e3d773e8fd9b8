#include "core/public_keys.h"

#include <toml++/toml.h>

#include <array>
#include <filesystem>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/audit_entry.h"
#include "core/crypto.h"
#include "core/identity.h"
#include "core/status_macros.h"

namespace casebridge::keys {
namespace {

namespace fs = std::filesystem;

constexpr std::array<absl::string_view, 3> kKeyNames = {
    "envelope_public_key", "checkpoint_public_key", "witness_public_key"};
constexpr absl::string_view kPreviousEnvelopeKeys =
    "previous_envelope_public_keys";

// "<dotted.key>: <what>", keeping the code of `status`.
absl::Status AtKey(absl::string_view dotted, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(dotted, ": ", status.message()));
}

absl::Status Invalid(absl::string_view dotted, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(dotted, ": ", what));
}

// The public key named by `table`[`key`], a path relative to `base`.
absl::StatusOr<std::unique_ptr<crypto::Ed25519Verifier>> ReadKey(
    const toml::table& table, absl::string_view country, absl::string_view key,
    const fs::path& base) {
  const std::string dotted = absl::StrCat(country, ".", key);
  const toml::node* node = table.get(std::string_view(key.data(), key.size()));
  if (node == nullptr) return Invalid(dotted, "is required");
  const std::optional<std::string> raw = node->value<std::string>();
  if (!node->is_string() || !raw.has_value()) {
    return Invalid(dotted, "must be a string");
  }
  if (raw->empty()) return Invalid(dotted, "must not be empty");
  fs::path path(*raw);
  if (!path.is_absolute()) path = base / path;
  // FromPemFile names the file in its errors.
  auto verifier =
      crypto::Ed25519Verifier::FromPemFile(path.lexically_normal().string());
  if (!verifier.ok()) return AtKey(dotted, verifier.status());
  return verifier;
}

absl::StatusOr<GatewayKeys> ReadGateway(const toml::table& root,
                                        v1::Country country,
                                        const fs::path& base) {
  const std::string name = absl::AsciiStrToLower(CountryCode(country));
  const toml::node* node = root.get(name);
  if (node == nullptr) return Invalid(name, "section is required");
  if (!node->is_table()) return Invalid(name, "must be a table");
  const toml::table& table = *node->as_table();
  for (const auto& [key, value] : table) {
    const absl::string_view name_of_key(key.str().data(), key.str().size());
    bool known = name_of_key == kPreviousEnvelopeKeys;
    for (absl::string_view k : kKeyNames) known = known || name_of_key == k;
    if (!known) {
      return Invalid(absl::StrCat(name, ".", std::string(key.str())),
                     "unknown key");
    }
  }
  std::array<std::unique_ptr<crypto::Ed25519Verifier>, 3> read;
  for (size_t i = 0; i < kKeyNames.size(); ++i) {
    CB_ASSIGN_OR_RETURN(read[i], ReadKey(table, name, kKeyNames[i], base));
  }
  const std::string checkpoint_raw = read[1]->public_key();
  const std::string witness_raw = read[2]->public_key();
  GatewayKeys keys;
  keys.country = country;
  CB_RETURN_IF_ERROR(AtKey(absl::StrCat(name, ".", kKeyNames[0]),
                           keys.envelope.Add(std::move(read[0]))));
  // Envelope keys the gateway signed with before a rotation: what it signed
  // then stays verifiable (an offline check has no overlap window).
  if (const toml::node* previous =
          table.get(std::string(kPreviousEnvelopeKeys))) {
    const std::string dotted = absl::StrCat(name, ".", kPreviousEnvelopeKeys);
    if (!previous->is_array()) {
      return Invalid(dotted, "must be a list of file names");
    }
    size_t i = 0;
    for (const toml::node& element : *previous->as_array()) {
      const std::string at = absl::StrCat(dotted, "[", i++, "]");
      const std::optional<std::string> raw = element.value<std::string>();
      if (!element.is_string() || !raw.has_value() || raw->empty()) {
        return Invalid(at, "must be a file name");
      }
      fs::path file(*raw);
      if (!file.is_absolute()) file = base / file;
      auto verifier = crypto::Ed25519Verifier::FromPemFile(
          file.lexically_normal().string());
      if (!verifier.ok()) return AtKey(at, verifier.status());
      CB_RETURN_IF_ERROR(AtKey(at, keys.envelope.Add(*std::move(verifier))));
    }
  }
  keys.checkpoint = note::MakeVerifierKey(audit::LogOrigin(name),
                                          note::kTypeEd25519, checkpoint_raw);
  keys.witness = note::MakeVerifierKey(audit::WitnessName(name),
                                       note::kTypeCosignatureV1, witness_raw);
  return keys;
}

absl::StatusOr<PublicKeys> Parse(const std::string& text,
                                 const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "line ", e.source().begin.line, ", column ", e.source().begin.column,
        ": ", std::string(e.description())));
  }
  for (const auto& [key, value] : root) {
    if (key.str() != "pk" && key.str() != "cn") {
      return Invalid(std::string(key.str()), "unknown key");
    }
  }
  const fs::path base = fs::absolute(path).parent_path();
  PublicKeys keys;
  CB_ASSIGN_OR_RETURN(keys.pk, ReadGateway(root, v1::COUNTRY_PK, base));
  CB_ASSIGN_OR_RETURN(keys.cn, ReadGateway(root, v1::COUNTRY_CN, base));
  return keys;
}

}  // namespace

const GatewayKeys* PublicKeys::For(v1::Country country) const {
  switch (country) {
    case v1::COUNTRY_PK:
      return &pk;
    case v1::COUNTRY_CN:
      return &cn;
    default:
      return nullptr;
  }
}

absl::StatusOr<PublicKeys> LoadPublicKeys(const std::string& path) {
  auto text = crypto::ReadFile(path);  // names the path already
  if (!text.ok()) return text.status();
  auto keys = Parse(*text, path);
  if (!keys.ok()) {
    return absl::Status(keys.status().code(),
                        absl::StrCat(path, ": ", keys.status().message()));
  }
  return keys;
}

absl::StatusOr<GatewayKeys> MakeGatewayKeys(v1::Country country,
                                            absl::string_view envelope_key,
                                            absl::string_view checkpoint_key,
                                            absl::string_view witness_key) {
  const std::string name = absl::AsciiStrToLower(CountryCode(country));
  if (name.empty()) {
    return absl::InvalidArgumentError("country: must be PK or CN");
  }
  for (absl::string_view raw : {checkpoint_key, witness_key}) {
    if (raw.size() != crypto::kEd25519PublicKeySize) {
      return absl::InvalidArgumentError(
          absl::StrCat("an Ed25519 public key has 32 bytes, not ", raw.size()));
    }
  }
  CB_ASSIGN_OR_RETURN(auto envelope,
                      crypto::Ed25519Verifier::FromRawPublicKey(envelope_key));
  GatewayKeys keys;
  keys.country = country;
  CB_RETURN_IF_ERROR(keys.envelope.Add(std::move(envelope)));
  keys.checkpoint = note::MakeVerifierKey(audit::LogOrigin(name),
                                          note::kTypeEd25519, checkpoint_key);
  keys.witness = note::MakeVerifierKey(audit::WitnessName(name),
                                       note::kTypeCosignatureV1, witness_key);
  return keys;
}

}  // namespace casebridge::keys
