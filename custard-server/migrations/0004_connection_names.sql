-- A connection's name is unique within its organisation, compared trimmed
-- and case-insensitively (SQLite's lower() folds ASCII; the store also
-- compares Unicode lowercase inside its write transaction). Applied once
-- inside a transaction by the store.
--
-- Older databases may hold duplicates. They are renamed deterministically
-- rather than refused: in each organisation the oldest connection (by
-- created_at, then rowid) keeps the name, the later ones get " (2)", " (3)",
-- ... appended; should such a name be taken already, the connection's id is
-- appended as well, which no other name can hold. Agents are unaffected:
-- they authenticate by key, not by name.

CREATE TEMP TABLE connection_renames AS
SELECT id, name || ' (' || n || ')' AS new_name
FROM (
    SELECT id, name,
           row_number() OVER (
               PARTITION BY org_id, lower(trim(name)) ORDER BY created_at, rowid
           ) AS n
    FROM connections
)
WHERE n > 1;

UPDATE connections
SET name = (SELECT new_name FROM connection_renames r WHERE r.id = connections.id)
WHERE id IN (SELECT id FROM connection_renames);

-- A new name can meet an existing one ("shop (2)" was taken): the renamed
-- connection gives way and gets its id appended too.
CREATE TEMP TABLE connection_renames_again AS
SELECT id, name || ' (' || id || ')' AS new_name
FROM (
    SELECT id, name,
           row_number() OVER (
               PARTITION BY org_id, lower(trim(name))
               ORDER BY id IN (SELECT id FROM connection_renames), created_at, rowid
           ) AS n
    FROM connections
)
WHERE n > 1;

UPDATE connections
SET name = (SELECT new_name FROM connection_renames_again r WHERE r.id = connections.id)
WHERE id IN (SELECT id FROM connection_renames_again);

DROP TABLE connection_renames;
DROP TABLE connection_renames_again;

CREATE UNIQUE INDEX connections_name_per_org ON connections (org_id, lower(trim(name)));
