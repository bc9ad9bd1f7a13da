-- Accounts: users, organisations, memberships, sessions and one-time tokens.
-- Applied once inside a transaction by the store (no BEGIN/COMMIT here).
-- Times are INTEGER unix milliseconds, UTC; ids are 128-bit random hex.

CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    -- Trimmed and lowercased by the store, so UNIQUE is case-insensitive.
    email             TEXT NOT NULL UNIQUE CHECK (email <> '' AND email = lower(email)),
    password_hash     TEXT NOT NULL,
    first_name        TEXT NOT NULL,
    last_name         TEXT NOT NULL,
    email_verified_at INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT;

CREATE TABLE organizations (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL CHECK (name <> ''),
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE memberships (
    org_id     TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
) STRICT;

CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE one_time_tokens (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL
               CHECK (kind IN ('email_verification', 'password_reset', 'invitation')),
    -- SHA-256 of the secret, hex; the secret itself is never stored.
    token_hash TEXT NOT NULL UNIQUE,
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    email      TEXT NOT NULL,
    org_id     TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    role       TEXT CHECK (role IN ('owner', 'admin', 'member')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    CHECK (kind = 'invitation' OR user_id IS NOT NULL),
    CHECK (kind <> 'invitation' OR (org_id IS NOT NULL AND role IS NOT NULL))
) STRICT;

CREATE INDEX one_time_tokens_by_user ON one_time_tokens (user_id);
CREATE INDEX one_time_tokens_by_org ON one_time_tokens (org_id);
