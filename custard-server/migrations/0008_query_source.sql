-- Where each question was asked: the web UI's Ask page, the JSON API, or an
-- AI assistant through MCP. Questions recorded before this column came
-- through the API or the web UI, which were not told apart: `api`.

ALTER TABLE queries ADD COLUMN source TEXT NOT NULL DEFAULT 'api'
    CHECK (source IN ('web', 'api', 'mcp'));
