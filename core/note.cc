#include "core/note.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status_macros.h"
#include "core/utf8.h"

namespace casebridge::note {
namespace {

// The em dash (U+2014) and space that open every signature line.
constexpr absl::string_view kSignaturePrefix = "\xE2\x80\x94 ";
constexpr absl::string_view kCosignatureHeader = "cosignature/v1\n";
// The spec lets verifiers cap the count (it must be at least 16); 100 is the
// cap the Go reference implementation uses.
constexpr size_t kMaxSignatures = 100;
constexpr size_t kKeyIdSize = 4;
constexpr size_t kTimestampSize = 8;
constexpr uint64_t kMaxTimestamp =
    static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

std::string BigEndian32(uint32_t v) {
  std::string out(4, '\0');
  for (int i = 3; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<char>(v & 0xFF);
    v >>= 8;
  }
  return out;
}

std::string BigEndian64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<char>(v & 0xFF);
    v >>= 8;
  }
  return out;
}

uint64_t ReadBigEndian(absl::string_view bytes) {
  uint64_t v = 0;
  for (const char c : bytes) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

std::string Hex32(uint32_t v) { return crypto::HexEncode(BigEndian32(v)); }

// Base64Unescape accepts missing padding, embedded whitespace and non-zero
// trailing bits, so several strings decode to the same bytes. A signature line
// or key that could be rewritten without changing what it decodes to would
// defeat "any changed byte fails", so only the one canonical encoding passes.
std::optional<std::string> DecodeCanonicalBase64(absl::string_view encoded) {
  std::string decoded;
  if (!absl::Base64Unescape(encoded, &decoded)) return std::nullopt;
  if (absl::Base64Escape(decoded) != encoded) return std::nullopt;
  return decoded;
}

// Decodes one code point of `text` (well-formed UTF-8) at `*pos`, advancing
// `*pos` past it.
uint32_t NextCodePoint(absl::string_view text, size_t* pos) {
  const auto b0 = static_cast<uint8_t>(text[*pos]);
  size_t len = 1;
  uint32_t cp = b0;
  if (b0 >= 0xF0) {
    len = 4;
    cp = b0 & 0x07;
  } else if (b0 >= 0xE0) {
    len = 3;
    cp = b0 & 0x0F;
  } else if (b0 >= 0xC0) {
    len = 2;
    cp = b0 & 0x1F;
  }
  for (size_t k = 1; k < len; ++k) {
    cp = (cp << 6) | (static_cast<uint8_t>(text[*pos + k]) & 0x3F);
  }
  *pos += len;
  return cp;
}

// Unicode White_Space (the set Go's unicode.IsSpace uses, as the spec's
// reference implementation does).
bool IsUnicodeSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Why `text` may not appear in a note (not UTF-8, or an ASCII control
// character other than newline), or nullopt if it may.
std::optional<std::string> NoteTextProblem(absl::string_view text) {
  if (!IsValidUtf8(text)) return "is not valid UTF-8";
  for (size_t i = 0; i < text.size(); ++i) {
    const auto b = static_cast<uint8_t>(text[i]);
    if (b < 0x20 && b != '\n') {
      return absl::StrFormat("has control character 0x%02x at byte %d", b, i);
    }
  }
  return std::nullopt;
}

// Why `name` is not a valid key name, or nullopt if it is.
std::optional<std::string> NameProblem(absl::string_view name) {
  if (name.empty()) return "key name is empty";
  if (auto problem = NoteTextProblem(name)) {
    return absl::StrCat("key name ", *problem);
  }
  size_t pos = 0;
  while (pos < name.size()) {
    const uint32_t cp = NextCodePoint(name, &pos);
    if (cp == '+') {
      return absl::StrCat("key name \"", name, "\" contains '+'");
    }
    if (IsUnicodeSpace(cp)) {
      return absl::StrCat("key name \"", name, "\" contains a space");
    }
  }
  return std::nullopt;
}

// What Sign and Cosign accept: text that Parse would give back unchanged.
absl::Status CheckSignable(absl::string_view text, absl::string_view name) {
  if (text.empty() || text.back() != '\n') {
    return absl::InvalidArgumentError(
        "signing a note: text does not end in a newline");
  }
  if (auto problem = NoteTextProblem(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("signing a note: text ", *problem));
  }
  if (auto problem = NameProblem(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("signing a note: ", *problem));
  }
  return absl::OkStatus();
}

std::string CosignedMessage(absl::string_view text, uint64_t timestamp) {
  return absl::StrCat(kCosignatureHeader, "time ", timestamp, "\n", text);
}

// Checks that `key` is of `type` and self-consistent (the struct is public,
// so it may not come from ParseVerifierKey or MakeVerifierKey), and builds
// its verifier.
absl::StatusOr<std::unique_ptr<crypto::Ed25519Verifier>> VerifierFor(
    const VerifierKey& key, uint8_t type) {
  if (key.type != type) {
    return absl::InvalidArgumentError(
        absl::StrFormat("verifier key \"%s\" is of type 0x%02x, not 0x%02x",
                        key.name, key.type, type));
  }
  if (key.public_key.size() != crypto::kEd25519PublicKeySize ||
      key.key_id != KeyId(key.name, key.type, key.public_key)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "verifier key \"", key.name,
        "\": key id does not match the public key, or the key is not 32 "
        "bytes"));
  }
  return crypto::Ed25519Verifier::FromRawPublicKey(key.public_key);
}

absl::Status NoSignatureBy(const VerifierKey& key) {
  return absl::NotFoundError(absl::StrCat("signed note: no signature by key \"",
                                          key.name, "\" (key id ",
                                          Hex32(key.key_id), ")"));
}

absl::Status DoesNotVerify(const VerifierKey& key, absl::string_view why) {
  return absl::UnauthenticatedError(
      absl::StrCat("signed note: signature by key \"", key.name, "\" (key id ",
                   Hex32(key.key_id), ") does not verify: ", why));
}

bool SignedBy(const Signature& signature, const VerifierKey& key) {
  return signature.name == key.name && signature.key_id == key.key_id;
}

absl::Status ParseSignatureLine(absl::string_view line, size_t number,
                                Note* note) {
  const std::string where =
      absl::StrCat("signed note: signature line ", number);
  if (line.substr(0, kSignaturePrefix.size()) != kSignaturePrefix) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": does not start with an em dash and a space"));
  }
  line.remove_prefix(kSignaturePrefix.size());
  const size_t space = line.find(' ');
  if (space == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": no space between key name and signature"));
  }
  const absl::string_view name = line.substr(0, space);
  const absl::string_view encoded = line.substr(space + 1);
  if (auto problem = NameProblem(name)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", *problem));
  }
  std::optional<std::string> decoded = DecodeCanonicalBase64(encoded);
  if (!decoded.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": signature is not canonical base64"));
  }
  if (decoded->size() <= kKeyIdSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": signature is ", decoded->size(),
                     " bytes, too short for a key id and a signature"));
  }
  Signature signature;
  signature.name = std::string(name);
  signature.key_id =
      static_cast<uint32_t>(ReadBigEndian(decoded->substr(0, kKeyIdSize)));
  signature.bytes = decoded->substr(kKeyIdSize);
  note->signatures.push_back(std::move(signature));
  return absl::OkStatus();
}

// Parses the size line of a checkpoint: canonical unsigned decimal.
absl::StatusOr<uint64_t> ParseTreeSize(absl::string_view line) {
  const std::string where =
      absl::StrCat("checkpoint line 2: size \"", line, "\"");
  if (line.empty()) {
    return absl::InvalidArgumentError("checkpoint line 2: size is empty");
  }
  for (const char c : line) {
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " is not a decimal number"));
    }
  }
  if (line.size() > 1 && line[0] == '0') {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " has a leading zero"));
  }
  uint64_t size = 0;
  for (const char c : line) {
    const auto digit = static_cast<uint64_t>(c - '0');
    if (size > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " does not fit in 64 bits"));
    }
    size = size * 10 + digit;
  }
  return size;
}

}  // namespace

uint32_t KeyId(absl::string_view name, uint8_t type,
               absl::string_view public_key) {
  crypto::Sha256Hasher hasher;
  hasher.Update(name);
  hasher.Update("\n");
  const char type_byte = static_cast<char>(type);
  hasher.Update(absl::string_view(&type_byte, 1));
  hasher.Update(public_key);
  const std::string hash = hasher.Finish();
  return static_cast<uint32_t>(ReadBigEndian(hash.substr(0, kKeyIdSize)));
}

absl::StatusOr<Note> Parse(absl::string_view signed_note) {
  if (auto problem = NoteTextProblem(signed_note)) {
    return absl::InvalidArgumentError(absl::StrCat("signed note: ", *problem));
  }
  if (signed_note.empty() || signed_note.back() != '\n') {
    return absl::InvalidArgumentError("signed note: does not end in a newline");
  }
  // The text may itself contain blank lines; signature lines never do, so
  // the last blank line is the separator.
  const size_t split = signed_note.rfind("\n\n");
  if (split == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "signed note: no blank line between the text and the signatures");
  }
  Note note;
  note.text = std::string(signed_note.substr(0, split + 1));
  absl::string_view block = signed_note.substr(split + 2);
  if (block.empty()) {
    return absl::InvalidArgumentError("signed note: no signature lines");
  }
  size_t number = 0;
  while (!block.empty()) {
    // `block` ends in "\n", so every line has one.
    const size_t end = block.find('\n');
    if (++number > kMaxSignatures) {
      return absl::InvalidArgumentError(absl::StrCat(
          "signed note: more than ", kMaxSignatures, " signatures"));
    }
    CB_RETURN_IF_ERROR(ParseSignatureLine(block.substr(0, end), number, &note));
    block.remove_prefix(end + 1);
  }
  return note;
}

std::string Format(const Note& note) {
  std::string out = absl::StrCat(note.text, "\n");
  for (const Signature& signature : note.signatures) {
    absl::StrAppend(&out, kSignaturePrefix, signature.name, " ",
                    absl::Base64Escape(absl::StrCat(
                        BigEndian32(signature.key_id), signature.bytes)),
                    "\n");
  }
  return out;
}

absl::StatusOr<VerifierKey> ParseVerifierKey(absl::string_view vkey) {
  const size_t plus1 = vkey.find('+');
  if (plus1 == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "verifier key: want <name>+<key id>+<key>, found no '+'");
  }
  const size_t plus2 = vkey.find('+', plus1 + 1);
  if (plus2 == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "verifier key: want <name>+<key id>+<key>, found one '+'");
  }
  const absl::string_view name = vkey.substr(0, plus1);
  const absl::string_view hex_id = vkey.substr(plus1 + 1, plus2 - plus1 - 1);
  const absl::string_view encoded = vkey.substr(plus2 + 1);
  if (auto problem = NameProblem(name)) {
    return absl::InvalidArgumentError(absl::StrCat("verifier key: ", *problem));
  }
  if (hex_id.size() != 2 * kKeyIdSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("verifier key: key id \"", hex_id,
                     "\" is not 8 lower-case hex digits"));
  }
  uint32_t key_id = 0;
  for (const char c : hex_id) {
    uint32_t digit = 0;
    if (c >= '0' && c <= '9') {
      digit = static_cast<uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<uint32_t>(c - 'a' + 10);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("verifier key: key id \"", hex_id,
                       "\" is not 8 lower-case hex digits"));
    }
    key_id = (key_id << 4) | digit;
  }
  std::optional<std::string> decoded = DecodeCanonicalBase64(encoded);
  if (!decoded.has_value()) {
    return absl::InvalidArgumentError(
        "verifier key: key is not canonical base64");
  }
  if (decoded->empty()) {
    return absl::InvalidArgumentError("verifier key: key is empty");
  }
  VerifierKey key;
  key.name = std::string(name);
  key.type = static_cast<uint8_t>((*decoded)[0]);
  key.public_key = decoded->substr(1);
  key.key_id = key_id;
  if (key.type != kTypeEd25519 && key.type != kTypeCosignatureV1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("verifier key: unknown type 0x%02x", key.type));
  }
  if (key.public_key.size() != crypto::kEd25519PublicKeySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("verifier key: Ed25519 key is ", key.public_key.size(),
                     " bytes, want 32"));
  }
  const uint32_t want = KeyId(key.name, key.type, key.public_key);
  if (key_id != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("verifier key: key id ", hex_id,
                     " does not match the key (want ", Hex32(want), ")"));
  }
  return key;
}

std::string FormatVerifierKey(const VerifierKey& key) {
  const char type_byte = static_cast<char>(key.type);
  return absl::StrCat(key.name, "+", Hex32(key.key_id), "+",
                      absl::Base64Escape(absl::StrCat(
                          absl::string_view(&type_byte, 1), key.public_key)));
}

VerifierKey MakeVerifierKey(absl::string_view name, uint8_t type,
                            absl::string_view public_key) {
  VerifierKey key;
  key.name = std::string(name);
  key.type = type;
  key.public_key = std::string(public_key);
  key.key_id = KeyId(name, type, public_key);
  return key;
}

absl::StatusOr<Signature> Sign(absl::string_view text, absl::string_view name,
                               const crypto::Ed25519Signer& signer) {
  CB_RETURN_IF_ERROR(CheckSignable(text, name));
  CB_ASSIGN_OR_RETURN(std::string bytes, signer.Sign(text));
  Signature signature;
  signature.name = std::string(name);
  signature.key_id = KeyId(name, kTypeEd25519, signer.public_key());
  signature.bytes = std::move(bytes);
  return signature;
}

absl::Status Verify(const Note& note, const VerifierKey& key) {
  CB_ASSIGN_OR_RETURN(auto verifier, VerifierFor(key, kTypeEd25519));
  // Every signature line of the key must verify: one that does not means the
  // note was tampered with or the key is shared, and either way the spec says
  // to reject the whole note.
  bool found = false;
  for (const Signature& signature : note.signatures) {
    if (!SignedBy(signature, key)) continue;
    found = true;
    const absl::Status status = verifier->Verify(note.text, signature.bytes);
    if (!status.ok()) return DoesNotVerify(key, status.message());
  }
  return found ? absl::OkStatus() : NoSignatureBy(key);
}

absl::StatusOr<Signature> Cosign(absl::string_view text, absl::string_view name,
                                 uint64_t timestamp,
                                 const crypto::Ed25519Signer& signer) {
  CB_RETURN_IF_ERROR(CheckSignable(text, name));
  if (timestamp > kMaxTimestamp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cosigning a note: timestamp ", timestamp, " exceeds 2^63 - 1"));
  }
  CB_ASSIGN_OR_RETURN(std::string ed25519,
                      signer.Sign(CosignedMessage(text, timestamp)));
  Signature signature;
  signature.name = std::string(name);
  signature.key_id = KeyId(name, kTypeCosignatureV1, signer.public_key());
  signature.bytes = absl::StrCat(BigEndian64(timestamp), ed25519);
  return signature;
}

absl::StatusOr<uint64_t> VerifyCosignature(const Note& note,
                                           const VerifierKey& key) {
  CB_ASSIGN_OR_RETURN(auto verifier, VerifierFor(key, kTypeCosignatureV1));
  // As in Verify, every cosignature by the key must verify. A cosigner may
  // have cosigned the same checkpoint more than once; the latest time is the
  // strongest statement, so that is the one returned.
  std::optional<uint64_t> latest;
  for (const Signature& signature : note.signatures) {
    if (!SignedBy(signature, key)) continue;
    if (signature.bytes.size() !=
        kTimestampSize + crypto::kEd25519SignatureSize) {
      return DoesNotVerify(
          key, absl::StrCat("cosignature is ", signature.bytes.size(),
                            " bytes, want 72"));
    }
    const uint64_t timestamp = ReadBigEndian(
        absl::string_view(signature.bytes).substr(0, kTimestampSize));
    if (timestamp > kMaxTimestamp) {
      return DoesNotVerify(
          key, absl::StrCat("timestamp ", timestamp, " exceeds 2^63 - 1"));
    }
    const absl::Status status = verifier->Verify(
        CosignedMessage(note.text, timestamp),
        absl::string_view(signature.bytes).substr(kTimestampSize));
    if (!status.ok()) return DoesNotVerify(key, status.message());
    if (!latest.has_value() || timestamp > *latest) latest = timestamp;
  }
  if (!latest.has_value()) return NoSignatureBy(key);
  return *latest;
}

std::string FormatCheckpoint(const Checkpoint& checkpoint) {
  std::string out = absl::StrCat(checkpoint.origin, "\n", checkpoint.size, "\n",
                                 absl::Base64Escape(checkpoint.root), "\n");
  for (const std::string& extension : checkpoint.extensions) {
    absl::StrAppend(&out, extension, "\n");
  }
  return out;
}

absl::StatusOr<Checkpoint> ParseCheckpoint(absl::string_view text) {
  if (auto problem = NoteTextProblem(text)) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: ", *problem));
  }
  if (text.empty() || text.back() != '\n') {
    return absl::InvalidArgumentError("checkpoint: does not end in a newline");
  }
  std::vector<absl::string_view> lines;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    lines.push_back(text.substr(0, end));
    text.remove_prefix(end + 1);
  }
  if (lines.size() < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint: ", lines.size(),
                     " lines, want origin, size and root hash"));
  }
  Checkpoint checkpoint;
  if (lines[0].empty()) {
    return absl::InvalidArgumentError("checkpoint line 1: origin is empty");
  }
  checkpoint.origin = std::string(lines[0]);
  CB_ASSIGN_OR_RETURN(checkpoint.size, ParseTreeSize(lines[1]));
  std::optional<std::string> root = DecodeCanonicalBase64(lines[2]);
  if (!root.has_value()) {
    return absl::InvalidArgumentError(
        "checkpoint line 3: root hash is not canonical base64");
  }
  if (root->size() != crypto::kSha256Size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint line 3: root hash is ", root->size(), " bytes, want 32"));
  }
  checkpoint.root = std::move(*root);
  for (size_t i = 3; i < lines.size(); ++i) {
    if (lines[i].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint line ", i + 1, ": extension line is empty"));
    }
    checkpoint.extensions.emplace_back(lines[i]);
  }
  return checkpoint;
}

}  // namespace casebridge::note
