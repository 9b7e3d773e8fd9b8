// Structured log lines: one JSON object per line on stderr, e.g.
//   {"time":"2026-11-29T11:40:02.123456Z","level":"info",
//    "event":"rpc.refused","port":"office","action":"case.open",...}
// Event names are dotted and stable; fields are data, never prose to parse.
#ifndef CASEBRIDGE_CORE_LOG_H_
#define CASEBRIDGE_CORE_LOG_H_

#include <nlohmann/json.hpp>

#include "absl/strings/string_view.h"

namespace casebridge::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below `level` are dropped. Default: kInfo. Thread-safe.
void SetMinLevel(Level level);

// Writes one line. `fields` must be a JSON object (or null). Thread-safe: a
// line is written with one call, so lines never interleave.
void Write(Level level, absl::string_view event,
           const nlohmann::json& fields = nullptr);

inline void Info(absl::string_view event,
                 const nlohmann::json& fields = nullptr) {
  Write(Level::kInfo, event, fields);
}
inline void Warning(absl::string_view event,
                    const nlohmann::json& fields = nullptr) {
  Write(Level::kWarning, event, fields);
}
inline void Error(absl::string_view event,
                  const nlohmann::json& fields = nullptr) {
  Write(Level::kError, event, fields);
}

}  // namespace casebridge::log

#endif  // CASEBRIDGE_CORE_LOG_H_
