-- Personal access tokens: each lets its user act in one organisation through
-- the API, with the role the user has there when it is used; the same table
-- as the SQLite store's migration 7. Applied once inside a transaction by
-- the store, under its advisory lock.

CREATE TABLE personal_tokens (
    id           text PRIMARY KEY,
    -- Orders tokens created in the same millisecond, as SQLite's rowid does.
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    -- A token goes with its user's account and with its organisation; the
    -- store deletes it when its user leaves the organisation.
    user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id       text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name <> ''),
    -- SHA-256 of the secret, hex; the secret itself is never stored.
    token_hash   text NOT NULL,
    created_at   timestamptz NOT NULL,
    -- NULL: until deleted.
    expires_at   timestamptz,
    -- Written at most once a minute.
    last_used_at timestamptz,
    CONSTRAINT personal_tokens_hash_unique UNIQUE (token_hash)
);

-- A user's tokens in an organisation (listed, counted against the limit).
CREATE INDEX personal_tokens_by_user ON personal_tokens (user_id, org_id);
-- An organisation's, for deleting them with it.
CREATE INDEX personal_tokens_by_org ON personal_tokens (org_id);
