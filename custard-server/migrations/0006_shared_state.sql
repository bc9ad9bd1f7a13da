-- What servers sharing a store must share: secrets the server keeps in its
-- store (the JWT signing key of a store shared by replicas; the first to
-- store one wins), and the per-account attempt limits. Applied once inside
-- a transaction by the store.

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- One row per limited key (a purpose and the SHA-256 of an account): its
-- theoretical arrival time in unix microseconds. A row whose time has
-- passed is at full allowance and may be deleted.
CREATE TABLE attempt_limits (
    key    TEXT PRIMARY KEY,
    tat_us INTEGER NOT NULL
) STRICT;

CREATE INDEX attempt_limits_by_time ON attempt_limits (tat_us);
