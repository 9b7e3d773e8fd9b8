#include "core/public_keys.h"

#include <toml++/toml.h>

#include <array>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
constexpr absl::string_view kPreviousCheckpointKeys =
    "previous_checkpoint_public_keys";
constexpr absl::string_view kPreviousWitnessKeys =
    "previous_witness_public_keys";
constexpr std::array<absl::string_view, 3> kPreviousKeyLists = {
    kPreviousEnvelopeKeys, kPreviousCheckpointKeys, kPreviousWitnessKeys};

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

// A list of previous keys, `table`[`key`], each a path relative to `base`;
// empty if the key is absent. Errors name "<country>.<key>[i]".
absl::StatusOr<std::vector<std::unique_ptr<crypto::Ed25519Verifier>>>
ReadPreviousKeys(const toml::table& table, absl::string_view country,
                 absl::string_view key, const fs::path& base) {
  std::vector<std::unique_ptr<crypto::Ed25519Verifier>> out;
  const toml::node* previous = table.get(std::string(key));
  if (previous == nullptr) return out;
  const std::string dotted = absl::StrCat(country, ".", key);
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
    auto verifier =
        crypto::Ed25519Verifier::FromPemFile(file.lexically_normal().string());
    if (!verifier.ok()) return AtKey(at, verifier.status());
    out.push_back(*std::move(verifier));
  }
  return out;
}

// Adds `previous` to `keys` as keys of `current`'s name and type. A key
// that is the current one or listed twice is refused (ALREADY_EXISTS), as
// in an envelope key ring.
absl::Status AddPreviousNoteKeys(
    const note::VerifierKey& current,
    const std::vector<std::unique_ptr<crypto::Ed25519Verifier>>& previous,
    absl::string_view dotted, std::vector<note::VerifierKey>* keys) {
  for (size_t i = 0; i < previous.size(); ++i) {
    note::VerifierKey key = note::MakeVerifierKey(current.name, current.type,
                                                  previous[i]->public_key());
    bool known = key.public_key == current.public_key;
    for (const note::VerifierKey& k : *keys) {
      known = known || k.public_key == key.public_key;
    }
    if (known) {
      return absl::AlreadyExistsError(
          absl::StrCat(dotted, "[", i, "]: key ",
                       exchange::KeyId(key.public_key), " is listed already"));
    }
    keys->push_back(std::move(key));
  }
  return absl::OkStatus();
}

std::string UtcTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

std::string HexKeyId(uint32_t id) {
  return absl::StrCat(absl::Hex(id, absl::kZeroPad8));
}

// The rules shared by VerifyNote and VerifyNoteCosignature: `verify` checks
// the note against one key (note::Verify or note::VerifyCosignature, with
// NOT_FOUND for no line by it) and yields a value to maximise (the
// cosignature's timestamp).
absl::StatusOr<NoteCosignature> VerifyByAny(
    const std::vector<TrustedNoteKey>& keys, absl::Time now,
    const std::function<absl::StatusOr<uint64_t>(const note::VerifierKey&)>&
        verify) {
  if (keys.empty()) {
    return absl::InvalidArgumentError("signed note: no verifier key given");
  }
  NoteCosignature best;
  const TrustedNoteKey* expired = nullptr;
  absl::Status none_by_first;
  for (const TrustedNoteKey& k : keys) {
    absl::StatusOr<uint64_t> verified = verify(k.key);
    if (verified.status().code() == absl::StatusCode::kNotFound) {
      if (&k == &keys.front()) none_by_first = verified.status();
      continue;
    }
    // A line by a known key that does not verify refuses the whole note,
    // whether or not that key is still trusted.
    if (!verified.ok()) return verified.status();
    if (now > k.trusted_until) {
      if (expired == nullptr) expired = &k;
      continue;
    }
    if (best.key == nullptr || *verified > best.timestamp) {
      best.key = &k;
      best.timestamp = *verified;
    }
  }
  if (best.key != nullptr) return best;
  if (expired != nullptr) {
    return absl::UnauthenticatedError(
        absl::StrCat("signed note: key \"", expired->key.name, "\" (key id ",
                     HexKeyId(expired->key.key_id), ") was trusted until ",
                     UtcTime(expired->trusted_until)));
  }
  if (keys.size() == 1) return none_by_first;
  std::vector<std::string> previous;
  for (size_t i = 1; i < keys.size(); ++i) {
    previous.push_back(HexKeyId(keys[i].key.key_id));
  }
  return absl::NotFoundError(absl::StrCat(
      none_by_first.message(), ", nor by previous key ",
      previous.size() == 1 ? "id " : "ids ", absl::StrJoin(previous, ", ")));
}

std::vector<TrustedNoteKey> Trusted(
    const note::VerifierKey& current,
    const std::vector<note::VerifierKey>& previous) {
  std::vector<TrustedNoteKey> out;
  out.reserve(previous.size() + 1);
  out.push_back({current, absl::InfiniteFuture()});
  for (const note::VerifierKey& key : previous) {
    out.push_back({key, absl::InfiniteFuture()});
  }
  return out;
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
    bool known = false;
    for (absl::string_view k : kKeyNames) known = known || name_of_key == k;
    for (absl::string_view k : kPreviousKeyLists) {
      known = known || name_of_key == k;
    }
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
  // Keys the gateway signed with before a rotation: what it signed then
  // stays verifiable (an offline check has no overlap window).
  CB_ASSIGN_OR_RETURN(
      auto previous_envelope,
      ReadPreviousKeys(table, name, kPreviousEnvelopeKeys, base));
  for (size_t i = 0; i < previous_envelope.size(); ++i) {
    CB_RETURN_IF_ERROR(
        AtKey(absl::StrCat(name, ".", kPreviousEnvelopeKeys, "[", i, "]"),
              keys.envelope.Add(std::move(previous_envelope[i]))));
  }
  CB_ASSIGN_OR_RETURN(
      const auto previous_checkpoint,
      ReadPreviousKeys(table, name, kPreviousCheckpointKeys, base));
  CB_ASSIGN_OR_RETURN(
      const auto previous_witness,
      ReadPreviousKeys(table, name, kPreviousWitnessKeys, base));
  keys.checkpoint = note::MakeVerifierKey(audit::LogOrigin(name),
                                          note::kTypeEd25519, checkpoint_raw);
  keys.witness = note::MakeVerifierKey(audit::WitnessName(name),
                                       note::kTypeCosignatureV1, witness_raw);
  CB_RETURN_IF_ERROR(
      AddPreviousNoteKeys(keys.checkpoint, previous_checkpoint,
                          absl::StrCat(name, ".", kPreviousCheckpointKeys),
                          &keys.previous_checkpoint));
  CB_RETURN_IF_ERROR(AddPreviousNoteKeys(
      keys.witness, previous_witness,
      absl::StrCat(name, ".", kPreviousWitnessKeys), &keys.previous_witness));
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

std::vector<TrustedNoteKey> GatewayKeys::CheckpointKeys() const {
  return Trusted(checkpoint, previous_checkpoint);
}

std::vector<TrustedNoteKey> GatewayKeys::WitnessKeys() const {
  return Trusted(witness, previous_witness);
}

absl::StatusOr<const TrustedNoteKey*> VerifyNote(
    const note::Note& note, const std::vector<TrustedNoteKey>& keys,
    absl::Time now) {
  CB_ASSIGN_OR_RETURN(
      const NoteCosignature verified,
      VerifyByAny(
          keys, now,
          [&](const note::VerifierKey& key) -> absl::StatusOr<uint64_t> {
            CB_RETURN_IF_ERROR(note::Verify(note, key));
            return 0;
          }));
  return verified.key;
}

absl::StatusOr<NoteCosignature> VerifyNoteCosignature(
    const note::Note& note, const std::vector<TrustedNoteKey>& keys,
    absl::Time now) {
  return VerifyByAny(keys, now, [&](const note::VerifierKey& key) {
    return note::VerifyCosignature(note, key);
  });
}

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
