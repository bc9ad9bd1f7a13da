-- A question reads a connection with its schema's fingerprint and refresh
-- time, but not the schema itself. In the table row the schema's JSON
-- (megabytes for a database of thousands of tables) sits before
-- `refreshed_at`, so that read walked the JSON's overflow pages every time.
-- This index holds what the read needs, so it never touches the JSON.
-- Applied once inside a transaction by the store.

CREATE INDEX connection_schemas_summary
    ON connection_schemas (connection_id, fingerprint, refreshed_at);
