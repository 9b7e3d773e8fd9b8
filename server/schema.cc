#include "server/schema.h"

namespace casebridge::server {

const std::vector<sqlite::Migration>& GatewayMigrations() {
  static const auto* migrations = new std::vector<sqlite::Migration>{
      {1, "cases and hash-chained audit log", R"sql(
-- One row per case reference this gateway holds.
CREATE TABLE cases (
  seq             INTEGER PRIMARY KEY,    -- insertion order; the listing and paging key
  exchange_id     TEXT NOT NULL UNIQUE,   -- "PK-2026-000123"
  local_reference TEXT NOT NULL,          -- originator's FIR number (copy of body's)
  category        INTEGER NOT NULL,       -- v1.CaseCategory (copy of body's)
  status          INTEGER NOT NULL,       -- v1.CaseStatus (copy of body's)
  owner_office    TEXT NOT NULL,          -- SPIFFE id (copy of body's)
  summary         TEXT NOT NULL,          -- UTF-8 (copy of body's), for text search
  version         INTEGER NOT NULL,       -- optimistic-concurrency version (copy of body's)
  created_us      INTEGER NOT NULL,       -- unix microseconds
  updated_us      INTEGER NOT NULL,       -- unix microseconds
  body            BLOB NOT NULL,          -- serialized v1.CaseReference: the authoritative record
  request_id      TEXT,                   -- OpenCase idempotency key, NULL if none
  request_hash    BLOB                    -- SHA-256 of that OpenCase request
);
CREATE UNIQUE INDEX cases_by_request ON cases(owner_office, request_id)
  WHERE request_id IS NOT NULL;
CREATE INDEX cases_by_status ON cases(status, seq);
CREATE INDEX cases_by_owner ON cases(owner_office, seq);

-- Last exchange id number minted per year: ids are "<country>-<year>-<n>".
CREATE TABLE exchange_id_counters (
  year INTEGER PRIMARY KEY,
  last INTEGER NOT NULL
);

-- The audit log (docs/audit-log.md). Only `entry` and `link` are trusted by
-- verification; the other columns are decoded copies for queries.
CREATE TABLE audit_log (
  idx         INTEGER PRIMARY KEY,  -- 0-based position, contiguous
  entry       BLOB NOT NULL,        -- encoded entry, version 1
  link        BLOB NOT NULL,        -- hash-chain link over entry and previous link
  time_us     INTEGER NOT NULL,     -- copy of the entry's time
  actor       TEXT NOT NULL,        -- copy of the entry's actor
  action      TEXT NOT NULL,        -- copy of the entry's action
  status_code INTEGER NOT NULL      -- copy of the entry's outcome
);
CREATE INDEX audit_by_actor ON audit_log(actor, idx);

-- Salt of each entry's payload hash. Deleting a row (retention) leaves the
-- log verifiable; it only ends the ability to prove which payload was meant.
CREATE TABLE audit_payload_salts (
  idx  INTEGER PRIMARY KEY REFERENCES audit_log(idx),
  salt BLOB NOT NULL                -- 16 random bytes
);
)sql"},
  };
  return *migrations;
}

}  // namespace casebridge::server
