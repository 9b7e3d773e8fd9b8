#include "server/write_priority.h"

namespace casebridge::server {
namespace {

thread_local WritePriority current_write_priority = WritePriority::kNormal;

}  // namespace

ScopedWritePriority::ScopedWritePriority(WritePriority priority)
    : previous_(current_write_priority) {
  current_write_priority = priority;
}

ScopedWritePriority::~ScopedWritePriority() {
  current_write_priority = previous_;
}

WritePriority ScopedWritePriority::Current() { return current_write_priority; }

}  // namespace casebridge::server
