// The audit entry decoder (core/audit_entry.h) on any bytes: an entry read
// back from a database someone else may have written, or sent by the peer
// in GetEntries. It refuses with DATA_LOSS or decodes; what it decodes is
// encoded again to exactly the same bytes (the log hashes the bytes, so
// one entry has one encoding).
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "core/audit_entry.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<casebridge::audit::Entry> entry =
      casebridge::audit::Decode(bytes);
  if (!entry.ok()) {
    FUZZ_CHECK(entry.status().code() == absl::StatusCode::kDataLoss);
    FUZZ_CHECK(!entry.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(entry->subjects.size() <= casebridge::audit::kMaxSubjects);
  FUZZ_CHECK(casebridge::audit::Encode(*entry) == bytes);
  return 0;
}
