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
      {2, "outbox, inbound envelopes and inboxes", R"sql(
-- Case messages sent and received (docs/exchange.md#outbox-inbound-and-inbox).
CREATE TABLE messages (
  seq              INTEGER PRIMARY KEY,    -- insertion order
  message_id       TEXT UNIQUE NOT NULL,   -- "<PK|CN>-M-..." minted by the origin gateway
  exchange_id      TEXT NOT NULL,          -- the case (copy of body's)
  direction        INTEGER NOT NULL,       -- 1 outgoing (sent from here), 2 incoming (from the peer)
  kind             INTEGER,                -- v1.MessageKind (copy of body's)
  priority         INTEGER,                -- v1.Priority (copy of body's)
  sender_office    TEXT,                   -- SPIFFE id (copy of body's)
  recipient_office TEXT,                   -- SPIFFE id, '' for the liaison desk (copy of body's)
  body             BLOB NOT NULL,          -- serialized v1.CaseMessage: the authoritative record
  created_us       INTEGER NOT NULL,       -- queued or received, unix microseconds
  request_id       TEXT,                   -- SendMessage/ShareCase idempotency key, NULL if none
  request_hash     BLOB                    -- SHA-256 of that request, NULL with request_id
);
CREATE UNIQUE INDEX messages_by_request ON messages(sender_office, request_id)
  WHERE request_id IS NOT NULL;

-- Envelopes to deliver to the peer gateway, one per outgoing message.
CREATE TABLE outbox (
  seq             INTEGER PRIMARY KEY,    -- queue order
  envelope_id     TEXT UNIQUE NOT NULL,   -- Envelope.envelope_id
  message_id      TEXT NOT NULL REFERENCES messages(message_id),  -- the message carried
  exchange_id     TEXT NOT NULL,          -- the case: per-case order is kept by this
  priority        INTEGER NOT NULL,       -- v1.Priority: URGENT (3) goes first
  signed_envelope BLOB NOT NULL,          -- serialized v1.SignedEnvelope, exactly as signed
  state           INTEGER NOT NULL,       -- v1.DeliveryState: 1 QUEUED, 2 SENT, 3 DELIVERED, 5 FAILED
  attempts        INTEGER NOT NULL DEFAULT 0,  -- delivery attempts so far
  next_attempt_us INTEGER NOT NULL,       -- not sent again before this, unix microseconds
  last_error      TEXT,                   -- why the last attempt failed or the peer refused; NULL if none
  receipt         BLOB,                   -- serialized v1.SignedReceipt from the peer, once DELIVERED
  queued_us       INTEGER NOT NULL,       -- unix microseconds
  delivered_us    INTEGER,                -- receipt stored, unix microseconds; NULL until then
  acknowledged_us INTEGER                 -- the addressed office's acknowledgement arrived; NULL until then
);
CREATE UNIQUE INDEX outbox_by_message ON outbox(message_id);
-- The sender's scheduler: envelopes not yet delivered, by case.
CREATE INDEX outbox_pending ON outbox(exchange_id, seq) WHERE state IN (1, 2);

-- Envelopes received from the peer, with the receipt we gave for each.
CREATE TABLE inbound (
  envelope_id     TEXT PRIMARY KEY,       -- Envelope.envelope_id: the deduplication key
  envelope_sha256 BLOB NOT NULL,          -- SHA-256 of the envelope bytes (32 bytes)
  signed_envelope BLOB NOT NULL,          -- serialized v1.SignedEnvelope, exactly as received
  receipt         BLOB NOT NULL,          -- our serialized v1.SignedReceipt, returned again to replays
  received_us     INTEGER NOT NULL,       -- unix microseconds, as in the receipt
  audit_index     INTEGER NOT NULL        -- our audit entry recording the receipt
);

-- Envelopes that reused a received envelope id with other bytes: evidence.
CREATE TABLE envelope_conflicts (
  id              INTEGER PRIMARY KEY,    -- arrival order
  envelope_id     TEXT NOT NULL,          -- the id reused (inbound.envelope_id)
  signed_envelope BLOB NOT NULL,          -- serialized v1.SignedEnvelope, exactly as received
  received_us     INTEGER NOT NULL        -- unix microseconds
);
CREATE INDEX envelope_conflicts_by_envelope ON envelope_conflicts(envelope_id, id);

-- Received messages per addressed office, in delivery order.
CREATE TABLE inbox (
  cursor          INTEGER PRIMARY KEY AUTOINCREMENT,  -- position; never reused
  office          TEXT NOT NULL,          -- SPIFFE id of the office addressed
  message_id      TEXT NOT NULL REFERENCES messages(message_id),  -- the message
  delivered_us    INTEGER,                -- first written to the office's WatchInbox stream; NULL until then
  acknowledged_us INTEGER,                -- unix microseconds; NULL until acknowledged
  UNIQUE(office, message_id)
);
CREATE INDEX inbox_by_office ON inbox(office, cursor);
)sql"},
      {3, "Merkle tree, checkpoints, witnessing and retention", R"sql(
-- The log is an RFC 6962 Merkle tree (docs/audit-log.md#merkle-tree); the
-- hash chain it replaces is dropped. Node (level, idx) is the hash of the
-- complete subtree of 2^level entries starting at entry idx * 2^level; level
-- 0 holds the leaf hashes. Derived data: verification recomputes it.
ALTER TABLE audit_log DROP COLUMN link;
CREATE TABLE audit_nodes (
  level INTEGER NOT NULL,
  idx   INTEGER NOT NULL,
  hash  BLOB NOT NULL,               -- 32 bytes
  PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Which entries name which ids (copies of the entries' subjects), so an
-- office can be shown the entries about its own messages.
CREATE TABLE audit_subjects (
  subject TEXT NOT NULL,
  idx     INTEGER NOT NULL REFERENCES audit_log(idx),
  PRIMARY KEY (subject, idx)
) WITHOUT ROWID;

-- Our signed checkpoints (C2SP signed notes), in size order. `note` gains
-- the peer's cosignature line once the peer has witnessed it.
CREATE TABLE checkpoints (
  size        INTEGER PRIMARY KEY,  -- tree size
  root        BLOB NOT NULL,        -- 32-byte root hash
  note        TEXT NOT NULL,        -- signed note, with any cosignatures
  created_us  INTEGER NOT NULL,     -- signed, unix microseconds
  cosigned_us INTEGER               -- the peer's cosignature stored; NULL until then
);

-- The newest checkpoint of the peer's log that we cosigned: what the next
-- one must be consistent with. One row per origin, replaced atomically.
CREATE TABLE witness_state (
  origin     TEXT PRIMARY KEY,      -- the peer log's origin line
  size       INTEGER NOT NULL,      -- tree size cosigned
  root       BLOB NOT NULL,         -- its 32-byte root hash
  note       TEXT NOT NULL,         -- the checkpoint with our cosignature
  updated_us INTEGER NOT NULL
);

-- Two signed checkpoints of the peer's log that cannot both be true.
CREATE TABLE checkpoint_forks (
  id           INTEGER PRIMARY KEY,
  origin       TEXT NOT NULL,
  held_note    TEXT NOT NULL,       -- the checkpoint we had cosigned
  offered_note TEXT NOT NULL,       -- the conflicting one offered
  received_us  INTEGER NOT NULL
);

-- Retention: when a message's payloads were purged (NULL while kept).
ALTER TABLE messages ADD COLUMN purged_us INTEGER;
)sql"},
      {4, "payload salts in the log rows", R"sql(
-- The salt of each entry's payload hash moves into the entry's own row: an
-- audited office call then writes one row of the log, not two. NULL once
-- purged (retention), which leaves the log verifiable; it only ends the
-- ability to prove which payload was meant. (The entry's tree nodes and
-- subject rows, both derived, are added in batches before each checkpoint:
-- SqliteAuditLog::CatchUpTree.)
ALTER TABLE audit_log ADD COLUMN salt BLOB;  -- 16 random bytes
UPDATE audit_log SET salt =
  (SELECT s.salt FROM audit_payload_salts s WHERE s.idx = audit_log.idx);
DROP TABLE audit_payload_salts;
)sql"},
      {5, "the sender's outbox order", R"sql(
-- Envelopes not yet delivered in sending order (URGENT first, then queue
-- order), holding every column the sender checks before it reads an
-- envelope: walking it from the start finds the next heads of cases to send
-- without reading or sorting the rest of the backlog
-- (ExchangeStore::ReadyToSend).
CREATE INDEX outbox_ready
  ON outbox(priority DESC, seq, exchange_id, next_attempt_us, state)
  WHERE state IN (1, 2);
)sql"},
      {6, "data protection: record keys, sealed fields, case retention", R"sql(
-- Each case's and each message's personal fields are sealed (AES-256-GCM)
-- under a key of their own; that key is stored here wrapped (sealed) under
-- the gateway's data key, which lives outside the database
-- (docs/storage.md#data-protection). Retention deletes the row: every copy
-- of the record's ciphertext left in free pages of this file or in its WAL
-- is then unreadable (a backup taken before keeps the wrapped key).
CREATE TABLE record_keys (
  record     TEXT PRIMARY KEY,      -- "case/<exchange id>" or "message/<message id>"
  wrapped    BLOB NOT NULL,         -- the record's 32-byte key, sealed under the data key
  created_us INTEGER NOT NULL       -- unix microseconds
) WITHOUT ROWID;

-- 1: the row's payload columns are sealed under its record's key (cases.body;
-- messages.body; the `envelope` field of outbox and inbound signed_envelope).
-- 0: stored as before migration 6, until the gateway seals them when it opens
-- the database with its data key; and for purged rows, which hold nothing
-- personal.
ALTER TABLE cases ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbound ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;

-- The message an inbound envelope carried (its envelope bytes are sealed
-- under that message's key); NULL only on rows written before migration 6,
-- until the gateway seals them.
ALTER TABLE inbound ADD COLUMN message_id TEXT;

-- Retention of cases: when the case's personal fields were purged; NULL
-- while kept. A purged case's body keeps every other field, in the clear.
ALTER TABLE cases ADD COLUMN purged_us INTEGER;
)sql"},
      {7, "need-to-know: the messages of a case", R"sql(
-- Which of our offices a peer case was shared with is read from the inboxes
-- its messages went to (docs/api.md#need-to-know): by case, not by scan.
CREATE INDEX messages_by_case ON messages(exchange_id);
)sql"},
      {8, "handling codes: permissions to pass peer cases on", R"sql(
-- The originator's permissions, received in DISSEMINATION_GRANT messages, to
-- pass one of the peer's cases under H2 on to offices of this gateway
-- (docs/api.md#handling-codes). Kept apart from the message, whose payload
-- retention may purge: a permission lasts as long as the case.
CREATE TABLE dissemination_grants (
  exchange_id TEXT NOT NULL,   -- the peer's case
  office      TEXT NOT NULL,   -- SPIFFE id of our office permitted; '*' for any office
  message_id  TEXT NOT NULL,   -- the DISSEMINATION_GRANT message that first granted it
  granted_by  TEXT NOT NULL,   -- SPIFFE id of the peer office that granted it
  received_us INTEGER NOT NULL, -- unix microseconds
  PRIMARY KEY(exchange_id, office)
) WITHOUT ROWID;
)sql"},
      {9, "handling codes: withdrawn permissions to pass peer cases on", R"sql(
-- The originator's withdrawals, received in DISSEMINATION_WITHDRAWAL
-- messages, of permissions kept in dissemination_grants
-- (docs/api.md#handling-codes). A withdrawal deletes the grant rows it
-- names (a later grant gives them anew) and is kept here, one row per office
-- it named: what was withdrawn, by whom and when.
CREATE TABLE dissemination_withdrawals (
  message_id   TEXT NOT NULL,   -- the DISSEMINATION_WITHDRAWAL message
  office       TEXT NOT NULL,   -- SPIFFE id of our office; '*' for every permission of the case
  exchange_id  TEXT NOT NULL,   -- the peer's case
  withdrawn_by TEXT NOT NULL,   -- SPIFFE id of the peer office that withdrew it
  received_us  INTEGER NOT NULL, -- unix microseconds
  PRIMARY KEY(message_id, office)
) WITHOUT ROWID;
CREATE INDEX dissemination_withdrawals_by_case
  ON dissemination_withdrawals(exchange_id);
)sql"},
      {10, "retention: the salts of refused calls' entries", R"sql(
-- Refusals of calls by offices (and by callers not known at all) whose salt
-- retention has not yet purged, by time: the requests they commit to were
-- never stored, so no purge of a message or case reaches them
-- (SqliteAuditLog::PurgeRefusalSalts). Entries whose actor is a gateway
-- (identities fixed by core/identity.h) never enter it: a refused envelope
-- kept in envelope_conflicts, a fork of the peer's log, a peer's permanent
-- refusal are evidence the log must keep provable. A purged salt leaves the
-- index; successful entries never enter it.
CREATE INDEX audit_refusal_salts ON audit_log(time_us)
  WHERE status_code != 0 AND salt IS NOT NULL AND actor NOT IN
    ('spiffe://pk.casebridge/gateway', 'spiffe://cn.casebridge/gateway');
)sql"},
      {11, "evidence: received envelopes by message", R"sql(
-- The envelope that brought a message (an evidence bundle asked for by
-- message id): one lookup instead of a scan of every received envelope.
CREATE INDEX inbound_by_message ON inbound(message_id);
)sql"},
      {12, "messages on own cases: the case shared first", R"sql(
-- SendMessage on one of our own cases asks whether the case was shared with
-- the peer (docs/api.md#sendmessage): our CASE_SHARE messages, by case.
CREATE INDEX outgoing_shares ON messages(exchange_id)
  WHERE direction = 1 AND kind = 6;
)sql"},
      {13, "inbox: copies passed on by ForwardCase", R"sql(
-- How a message reached an office's inbox: routed as its envelope addressed
-- it (NULL), or passed on with ForwardCase by the office named. Under H2 only
-- the first is the originator's addressing (docs/api.md#forwardcase). Copies
-- forwarded before this column are known only where the message named one
-- recipient office and the inbox is another's ('': forwarder unknown); a
-- copy of a message addressed to the country cannot be told apart.
ALTER TABLE inbox ADD COLUMN forwarded_by TEXT;
UPDATE inbox SET forwarded_by = '' WHERE EXISTS (
  SELECT 1 FROM messages m WHERE m.message_id = inbox.message_id
  AND m.direction = 2 AND IFNULL(m.recipient_office, '') != ''
  AND m.recipient_office != inbox.office);
)sql"},
  };
  return *migrations;
}

}  // namespace casebridge::server
