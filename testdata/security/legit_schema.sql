-- A PostgreSQL schema naming every table and column of legit.jsonl, with a
-- few rows each, so the legit corpus can run (the MCP server's test,
-- custard-server/tests/platform/mcp.rs). Every timestamp is fixed: only the
-- queries that read the clock (now(), CURRENT_DATE) change with the day.

CREATE TABLE users (
    id integer PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    role text NOT NULL,
    created_at timestamp NOT NULL
);
INSERT INTO users VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 'admin', '2024-01-05 09:30:00'),
    (2, 'alan turing', 'alan@example.org', 'member', '2024-02-11 14:00:00'),
    (3, ' Grace Hopper ', 'grace@navy.example', 'member', '2024-03-20 08:15:00');

CREATE TABLE orders (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES users (id),
    amount numeric(10, 2) NOT NULL,
    total numeric(10, 2) NOT NULL,
    note text,
    created_at timestamp NOT NULL,
    updated_at timestamp,
    is_deleted boolean NOT NULL DEFAULT false
);
INSERT INTO orders VALUES
    (1, 1, 10.50, 12.60, 'first order', '2024-01-10 10:00:00', NULL, false),
    (2, 1, 99.99, 119.99, 'please UPDATE the address', '2024-01-28 16:45:00', '2024-01-29 09:00:00', false),
    (3, 2, 5.00, 6.00, NULL, '2024-02-14 12:00:00', NULL, true),
    (4, 3, 42.00, 50.40, 'gift', '2024-03-01 18:30:00', '2024-03-02 08:00:00', false),
    (5, 2, 7.25, 8.70, 'update pending', '2024-03-15 11:11:00', NULL, false);

CREATE TABLE refunds (
    id integer PRIMARY KEY,
    order_id integer NOT NULL REFERENCES orders (id)
);
INSERT INTO refunds VALUES (1, 3), (2, 5);

-- `t` holds the columns of the generic queries: `x` and `y` are numbers
-- (averaged, ranked, rounded), `a`, `b`, `c` integers.
CREATE TABLE t (
    id integer PRIMARY KEY,
    "delete" text,
    "update" text,
    status text,
    x numeric,
    y numeric,
    a integer,
    b integer,
    c integer,
    name text,
    data jsonb,
    tags text[],
    ts timestamp,
    flag boolean
);
INSERT INTO t VALUES
    (1, 'd1', 'u1', 'x', 1.5, 10, 1, NULL, 0, 'anaz', '{"a": "one", "b": {"c": "deep"}}', ARRAY['x', 'y'], '2024-01-15 00:00:00', true),
    (2, 'd2', 'u2', 'y', -2.25, 20, NULL, 2, 3, 'Abcz', '{"a": "two"}', ARRAY['y'], '2024-03-01 00:00:00', false),
    (3, NULL, 'u3', 'x', 4, 5, 1, 5, NULL, 'bob', NULL, ARRAY['x'], '2024-01-31 23:59:59', true),
    (4, 'd4', NULL, NULL, 9.75, 20, 3, 3, 7, 'ZED', '{"b": {"c": "only"}}', '{}', NULL, NULL),
    (5, 'd5', 'u5', 'x', 0, NULL, 3, 1, 2, 'amz', '{}', ARRAY['x', 'z'], '2024-01-01 00:00:00', true),
    (6, 'd6', 'u6', 'z', 16, 1, 2, 2, 0, 'eve', '{"a": null}', NULL, '2024-02-01 00:00:00', false),
    (7, 'd7', 'u7', 'x', 2.5, 3, 2, 4, 1, 'al', '{"a": "seven"}', ARRAY['x'], '2024-01-20 12:00:00', true);

CREATE TABLE u (id integer PRIMARY KEY);
INSERT INTO u VALUES (1), (2), (3), (4), (9);
CREATE TABLE v (id integer PRIMARY KEY);
INSERT INTO v VALUES (5), (6), (9);
CREATE TABLE w (id integer PRIMARY KEY);
INSERT INTO w VALUES (2), (6);

CREATE TABLE b (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO b VALUES (1, 'bee'), (2, 'bumble');
CREATE TABLE a (id integer PRIMARY KEY, b_id integer REFERENCES b (id));
INSERT INTO a VALUES (1, 1), (2, 2), (3, NULL);
CREATE TABLE c (id integer PRIMARY KEY);
INSERT INTO c VALUES (1), (3), (4);
CREATE TABLE d (id integer PRIMARY KEY);
INSERT INTO d VALUES (1), (2);

ANALYZE;
