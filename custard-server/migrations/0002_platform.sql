-- Platform: database connections, their cached schemas and the history of questions.
-- Applied once inside a transaction by the store (no BEGIN/COMMIT here).
-- Times are INTEGER unix milliseconds, UTC; ids are 128-bit random hex.

CREATE TABLE connections (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name          TEXT NOT NULL CHECK (name <> ''),
    -- `Dialect::as_str`; no CHECK, so a new dialect needs no table rebuild.
    dialect       TEXT NOT NULL,
    -- SHA-256 of the agent's API key, hex; the key itself is never stored.
    key_hash      TEXT NOT NULL UNIQUE,
    key_prefix    TEXT NOT NULL,
    instructions  TEXT NOT NULL DEFAULT '',
    agent_version TEXT,
    last_seen_at  INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    -- The target of the history's (org_id, connection_id) key below.
    UNIQUE (org_id, id)
) STRICT;

CREATE INDEX connections_by_org ON connections (org_id, created_at);

CREATE TABLE connection_schemas (
    connection_id TEXT PRIMARY KEY REFERENCES connections (id) ON DELETE CASCADE,
    -- `Schema::fingerprint`; agents compare it to skip unchanged uploads.
    fingerprint   TEXT NOT NULL,
    -- `custard_core::wire::schema_to_json`.
    json          TEXT NOT NULL,
    refreshed_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE queries (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    connection_id   TEXT NOT NULL,
    -- Removing a member keeps the user row, so the history stays; deleting the
    -- account deletes the questions it asked.
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL,
    question        TEXT NOT NULL,
    sql             TEXT,
    -- `ok`, or the error code the question ended with.
    outcome         TEXT NOT NULL CHECK (outcome <> ''),
    error_message   TEXT,
    answer          TEXT,
    row_count       INTEGER CHECK (row_count >= 0),
    truncated       INTEGER NOT NULL CHECK (truncated IN (0, 1)),
    engine          TEXT NOT NULL,
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    timings_json    TEXT NOT NULL,
    result_json     TEXT,
    -- NULL until the asker says; 1 when marked correct, 0 when marked wrong.
    feedback        INTEGER CHECK (feedback IN (0, 1)),
    created_at      INTEGER NOT NULL,
    -- A question can only be about a connection of its own organisation.
    FOREIGN KEY (org_id, connection_id) REFERENCES connections (org_id, id) ON DELETE CASCADE
) STRICT;

-- Pages are read newest first by scanning these backwards; the implicit rowid
-- at the end of each entry orders questions asked in the same millisecond.
CREATE INDEX queries_by_org ON queries (org_id, created_at);
CREATE INDEX queries_by_connection ON queries (org_id, connection_id, created_at);
CREATE INDEX queries_by_conversation ON queries (org_id, conversation_id, created_at);
CREATE INDEX queries_by_user ON queries (user_id);
-- Few rows: the examples the prompt learns from.
CREATE INDEX queries_approved ON queries (connection_id, created_at)
    WHERE feedback = 1 AND outcome = 'ok' AND sql IS NOT NULL;
