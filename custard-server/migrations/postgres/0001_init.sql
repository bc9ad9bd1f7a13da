-- The PostgreSQL store's schema: the same tables and rules as the SQLite
-- store's migrations 1-5, written for PostgreSQL.
-- Applied once inside a transaction by the store (no BEGIN/COMMIT here),
-- under an advisory lock, so replicas starting at once apply it once.
-- Times are timestamptz at millisecond precision; ids are 128-bit random hex.

CREATE TABLE users (
    id                text PRIMARY KEY,
    -- Trimmed and lowercased by the store, so UNIQUE is case-insensitive.
    email             text NOT NULL CHECK (email <> '' AND email = lower(email)),
    password_hash     text NOT NULL,
    first_name        text NOT NULL,
    last_name         text NOT NULL,
    email_verified_at timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CONSTRAINT users_email_unique UNIQUE (email)
);

CREATE TABLE organizations (
    id         text PRIMARY KEY,
    name       text NOT NULL CHECK (name <> ''),
    created_at timestamptz NOT NULL
);

CREATE TABLE memberships (
    org_id     text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at timestamptz NOT NULL,
    CONSTRAINT memberships_unique PRIMARY KEY (org_id, user_id)
);

CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE sessions (
    id         text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);

CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE one_time_tokens (
    id         text PRIMARY KEY,
    -- Orders tokens created in the same millisecond, as SQLite's rowid does.
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    kind       text NOT NULL
               CHECK (kind IN ('email_verification', 'password_reset', 'invitation')),
    -- SHA-256 of the secret, hex; the secret itself is never stored.
    token_hash text NOT NULL UNIQUE,
    user_id    text REFERENCES users (id) ON DELETE CASCADE,
    email      text NOT NULL,
    org_id     text REFERENCES organizations (id) ON DELETE CASCADE,
    role       text CHECK (role IN ('owner', 'admin', 'member')),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    -- When the token was ended unused (a newer reset link was used, the
    -- password changed, the invitation was revoked or its sender may no
    -- longer send it). An ended token is never accepted again.
    revoked_at timestamptz,
    -- Who sent an invitation; an invitation goes with its sender's account.
    invited_by text REFERENCES users (id) ON DELETE CASCADE,
    CHECK (kind = 'invitation' OR user_id IS NOT NULL),
    CHECK (kind <> 'invitation' OR (org_id IS NOT NULL AND role IS NOT NULL))
);

CREATE INDEX one_time_tokens_by_user ON one_time_tokens (user_id);
CREATE INDEX one_time_tokens_by_org ON one_time_tokens (org_id);
CREATE INDEX one_time_tokens_by_inviter ON one_time_tokens (invited_by);

CREATE TABLE connections (
    id            text PRIMARY KEY,
    -- Orders connections created in the same millisecond, as SQLite's rowid does.
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    org_id        text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (name <> ''),
    -- `Dialect::as_str`; no CHECK, so a new dialect needs no table change.
    dialect       text NOT NULL,
    -- SHA-256 of the agent's API key, hex; the key itself is never stored.
    key_hash      text NOT NULL,
    key_prefix    text NOT NULL,
    instructions  text NOT NULL DEFAULT '',
    agent_version text,
    last_seen_at  timestamptz,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT connections_key_unique UNIQUE (key_hash),
    -- The target of the history's (org_id, connection_id) key below.
    UNIQUE (org_id, id)
);

CREATE INDEX connections_by_org ON connections (org_id, created_at, seq);
-- A connection's name is unique within its organisation, compared trimmed
-- and case-insensitively: ASCII case here, whatever the database's locale
-- (as SQLite's lower() folds it); the store also compares Unicode lowercase
-- inside its write transaction.
CREATE UNIQUE INDEX connections_name_unique
    ON connections (org_id, lower(btrim(name) COLLATE "C"));

CREATE TABLE connection_schemas (
    connection_id text PRIMARY KEY REFERENCES connections (id) ON DELETE CASCADE,
    -- `Schema::fingerprint`; agents compare it to skip unchanged uploads.
    fingerprint   text NOT NULL,
    -- `custard_core::wire::schema_to_json`.
    json          text NOT NULL,
    refreshed_at  timestamptz NOT NULL
);

CREATE TABLE queries (
    id              text PRIMARY KEY,
    -- Orders questions recorded in the same millisecond, as SQLite's rowid does.
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    org_id          text NOT NULL
                    CONSTRAINT queries_org_fk REFERENCES organizations (id) ON DELETE CASCADE,
    connection_id   text NOT NULL,
    -- Removing a member keeps the user row, so the history stays; deleting the
    -- account deletes the questions it asked.
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    conversation_id text NOT NULL,
    question        text NOT NULL,
    sql             text,
    -- `ok`, or the error code the question ended with.
    outcome         text NOT NULL CHECK (outcome <> ''),
    error_message   text,
    answer          text,
    row_count       bigint CHECK (row_count >= 0),
    truncated       boolean NOT NULL,
    engine          text NOT NULL,
    attempts        integer NOT NULL CHECK (attempts >= 0),
    timings_json    text NOT NULL,
    result_json     text,
    -- NULL until the asker says; true when marked correct, false when wrong.
    feedback        boolean,
    created_at      timestamptz NOT NULL,
    -- A question can only be about a connection of its own organisation.
    CONSTRAINT queries_connection_fk FOREIGN KEY (org_id, connection_id)
        REFERENCES connections (org_id, id) ON DELETE CASCADE
);

CREATE INDEX queries_by_org ON queries (org_id, created_at, seq);
CREATE INDEX queries_by_connection ON queries (org_id, connection_id, created_at, seq);
CREATE INDEX queries_by_conversation ON queries (org_id, conversation_id, created_at, seq);
CREATE INDEX queries_by_user ON queries (user_id);
-- Few rows: the examples the prompt learns from.
CREATE INDEX queries_approved ON queries (connection_id, created_at)
    WHERE feedback AND outcome = 'ok' AND sql IS NOT NULL;

-- Secrets every replica must share (the JWT signing key when none is
-- configured): the first replica to store one wins.
CREATE TABLE server_secrets (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    created_at timestamptz NOT NULL
);

-- Per-account attempt limits every replica shares: one row per limited key
-- (a purpose and the SHA-256 of an account), its theoretical arrival time in
-- unix microseconds. A row whose time has passed is at full allowance and
-- may be deleted.
CREATE TABLE attempt_limits (
    key    text PRIMARY KEY,
    tat_us bigint NOT NULL
);

CREATE INDEX attempt_limits_by_time ON attempt_limits (tat_us);
