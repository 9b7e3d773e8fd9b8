// The C2SP parsers (core/note.h) on any text: a checkpoint the peer sends
// to be cosigned (AddCheckpoint), a cosigned note it sends back, a verifier
// key an operator pastes into public-keys.toml. Each refuses with
// INVALID_ARGUMENT or parses; what parses formats again to exactly the same
// text (signatures are over bytes, so one note has one spelling).
// Verification runs on whatever parses, against the C2SP example key
// (tests/testdata/signed-note.txt), whose note is in the corpus.
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/note.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace note = casebridge::note;

// From the C2SP signed-note specification's example.
constexpr absl::string_view kExampleKey =
    "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";

bool Refused(const absl::Status& status) {
  return status.code() == absl::StatusCode::kInvalidArgument &&
         !status.message().empty();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);

  const absl::StatusOr<note::Note> parsed = note::Parse(text);
  if (parsed.ok()) {
    FUZZ_CHECK(!parsed->signatures.empty());
    FUZZ_CHECK(note::Format(*parsed) == text);
    static const note::VerifierKey key = *note::ParseVerifierKey(kExampleKey);
    const absl::Status plain = note::Verify(*parsed, key);
    FUZZ_CHECK(plain.ok() || plain.code() == absl::StatusCode::kNotFound ||
               plain.code() == absl::StatusCode::kUnauthenticated);
    note::VerifierKey cosigner = key;
    cosigner.type = note::kTypeCosignatureV1;
    cosigner.key_id =
        note::KeyId(cosigner.name, cosigner.type, cosigner.public_key);
    const absl::StatusOr<uint64_t> cosigned =
        note::VerifyCosignature(*parsed, cosigner);
    FUZZ_CHECK(!cosigned.ok());  // nobody has this key's cosignature
  } else {
    FUZZ_CHECK(Refused(parsed.status()));
  }

  const absl::StatusOr<note::Checkpoint> checkpoint =
      note::ParseCheckpoint(text);
  if (checkpoint.ok()) {
    FUZZ_CHECK(checkpoint->root.size() == 32);
    FUZZ_CHECK(note::FormatCheckpoint(*checkpoint) == text);
  } else {
    FUZZ_CHECK(Refused(checkpoint.status()));
  }

  const absl::StatusOr<note::VerifierKey> key = note::ParseVerifierKey(text);
  if (key.ok()) {
    FUZZ_CHECK(key->public_key.size() == 32);
    FUZZ_CHECK(note::FormatVerifierKey(*key) == text);
  } else {
    FUZZ_CHECK(Refused(key.status()));
  }
  return 0;
}
