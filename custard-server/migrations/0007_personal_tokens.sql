-- Personal access tokens: each lets its user act in one organisation through
-- the API, with the role the user has there when it is used. Applied once
-- inside a transaction by the store.

CREATE TABLE personal_tokens (
    id           TEXT PRIMARY KEY,
    -- A token goes with its user's account and with its organisation; the
    -- store deletes it when its user leaves the organisation.
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id       TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (name <> ''),
    -- SHA-256 of the secret, hex; the secret itself is never stored.
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    -- NULL: until deleted.
    expires_at   INTEGER,
    -- Written at most once a minute.
    last_used_at INTEGER
) STRICT;

-- A user's tokens in an organisation (listed, counted against the limit).
CREATE INDEX personal_tokens_by_user ON personal_tokens (user_id, org_id);
-- An organisation's, for deleting them with it.
CREATE INDEX personal_tokens_by_org ON personal_tokens (org_id);
