#ifndef CASEBRIDGE_SERVER_SCHEMA_H_
#define CASEBRIDGE_SERVER_SCHEMA_H_

#include <vector>

#include "server/sqlite.h"

namespace casebridge::server {

// The gateway database's migrations, oldest first. Documented column by
// column in schema.cc and docs/storage.md. Never edit a released migration:
// add the next one.
const std::vector<sqlite::Migration>& GatewayMigrations();

}  // namespace casebridge::server

#endif  // CASEBRIDGE_SERVER_SCHEMA_H_
