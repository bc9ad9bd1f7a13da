-- Where each question was asked: the web UI's Ask page, the JSON API, or an
-- AI assistant through MCP; the same column as the SQLite store's migration
-- 8. Questions recorded before it: `api`.

ALTER TABLE queries ADD COLUMN source text NOT NULL DEFAULT 'api'
    CONSTRAINT queries_source_known CHECK (source IN ('web', 'api', 'mcp'));
