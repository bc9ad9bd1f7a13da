"""Fixtures for the Python tests: the security corpora of testdata/, a small shop in SQLite and
in a scratch PostgreSQL database, and a fake OpenAI-compatible server.

Everything talks to loopback only. PostgreSQL comes from
CUSTARD_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test);
when it or `psql` is missing the database tests fail with a message, never skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[3]
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


def testdata_dir() -> Path:
    """The repository's test data: `<repo>/testdata` (security corpora, evaluation set)."""
    return REPO / "testdata"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file, skipping blank lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# --- the shop -----------------------------------------------------------------

# The same DDL runs on SQLite and PostgreSQL.
SHOP_DDL = """
CREATE TABLE customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    city text
);
CREATE TABLE products (
    id integer PRIMARY KEY,
    name text NOT NULL,
    price numeric(10,2) NOT NULL
);
CREATE TABLE orders (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    ordered_on date NOT NULL
);
CREATE TABLE order_items (
    order_id integer NOT NULL REFERENCES orders(id),
    product_id integer NOT NULL REFERENCES products(id),
    quantity integer NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE VIEW customer_cities AS SELECT DISTINCT city FROM customers;
INSERT INTO customers (id, name, city) VALUES
    (1, 'Ada', 'Paris'), (2, 'Bob', 'Lyon'), (3, 'Chloe', 'Paris'), (4, 'Dev', 'Nice'),
    (5, 'Eve', 'Lyon'), (6, 'Farid', 'Paris'), (7, 'Gus', NULL);
INSERT INTO products (id, name, price) VALUES
    (1, 'Tea', 4.50), (2, 'Coffee', 7.25), (3, 'Cocoa', 9.99);
INSERT INTO orders (id, customer_id, ordered_on) VALUES
    (1, 1, '2024-01-05'), (2, 1, '2024-02-11'), (3, 2, '2024-02-12'),
    (4, 3, '2024-03-01'), (5, 5, '2024-03-09');
INSERT INTO order_items (order_id, product_id, quantity) VALUES
    (1, 1, 2), (1, 2, 1), (2, 3, 4), (3, 1, 1), (4, 2, 3), (5, 3, 1);
"""

# Only PostgreSQL keeps comments in its catalog.
SHOP_COMMENTS_PG = """
COMMENT ON TABLE customers IS 'people who bought something';
COMMENT ON COLUMN customers.city IS 'where the customer lives';
ANALYZE;
"""

SHOP_TABLES = {"customers", "products", "orders", "order_items", "customer_cities"}
CUSTOMER_COUNT = 7


@dataclass
class ShopDb:
    """One copy of the shop: its URL and a way to query it without Custard."""

    url: str
    dialect: str
    query: Callable[[str], list[tuple[Any, ...]]]

    def scalar(self, sql: str) -> Any:
        rows = self.query(sql)
        assert len(rows) == 1 and len(rows[0]) == 1, f"{sql!r} gave {rows!r}, not one value"
        return rows[0][0]

    def count(self, table: str) -> int:
        return int(self.scalar(f"SELECT count(*) FROM {table}"))


def make_sqlite_shop(path: Path) -> ShopDb:
    """Writes the shop to a new SQLite file at `path`."""
    with sqlite3.connect(path) as conn:
        conn.executescript(SHOP_DDL)
    conn.close()

    def query(sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    return ShopDb(url=f"sqlite:{path}", dialect="sqlite", query=query)


@pytest.fixture
def sqlite_shop(tmp_path: Path) -> ShopDb:
    return make_sqlite_shop(tmp_path / "shop.db")


def database_url() -> str:
    return os.environ.get("CUSTARD_TEST_DATABASE_URL") or DEFAULT_DATABASE_URL


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead (query string kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def psql(url: str, sql: str, *, tuples: bool = False) -> str:
    """Runs `sql` with the psql CLI; fails the test with psql's message on error."""
    if shutil.which("psql") is None:
        pytest.fail(
            "the PostgreSQL tests need the `psql` client on PATH "
            "(Debian: apt-get install postgresql-client; scripts/ensure-postgres.sh installs the server)",
            pytrace=False,
        )
    args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]
    if tuples:
        args += ["-A", "-t", "-F", "\t"]
    try:
        done = subprocess.run(
            args + ["-f", "-"], input=sql, capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"psql did not finish within 60 s at {redact(url)}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(
            f"psql failed at {redact(url)} (is PostgreSQL running? scripts/ensure-postgres.sh "
            f"starts it; CUSTARD_TEST_DATABASE_URL picks another): {done.stderr.strip()}",
            pytrace=False,
        )
    return done.stdout


def redact(url: str) -> str:
    """`url` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_shop() -> Iterator[ShopDb]:
    """The shop in a scratch PostgreSQL database, dropped at the end of the session."""
    admin = database_url()
    name = f"custard_py_{os.getpid()}_{secrets.token_hex(4)}"
    psql(admin, f'CREATE DATABASE "{name}"')
    url = with_database(admin, name)
    try:
        psql(url, SHOP_DDL + SHOP_COMMENTS_PG)

        def query(sql: str) -> list[tuple[Any, ...]]:
            out = psql(url, sql, tuples=True)
            return [tuple(line.split("\t")) for line in out.splitlines() if line]

        yield ShopDb(url=url, dialect="postgres", query=query)
    finally:
        psql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def shop(request: pytest.FixtureRequest) -> ShopDb:
    """The shop in each database Custard supports."""
    db: ShopDb = request.getfixturevalue("sqlite_shop" if request.param == "sqlite" else "pg_shop")
    return db


# --- a fake OpenAI-compatible server ------------------------------------------


@dataclass
class Reply:
    """How the fake model answers one request."""

    text: str = ""
    status: int = 200
    delay: float = 0.0


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body.get("messages", [])
        return messages

    def last_user_message(self) -> str:
        users = [m for m in self.messages if m.get("role") == "user"]
        return str(users[-1].get("content", "")) if users else ""

    def all_text(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages)


def sql_reply(sql: str) -> str:
    return f"```sql\n{sql}\n```"


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops connections when many threads ask at
    # once, and the kernel retries the SYN only after a second.
    request_queue_size = 128
    daemon_threads = True


class FakeOpenAI:
    """A chat-completions server on 127.0.0.1 whose replies a test decides.

    `respond` sees each request's JSON body and returns a `Reply`; replies are
    one JSON document, or server-sent events when the body asks for `stream`.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.respond: Callable[[dict[str, Any]], Reply] = lambda _body: Reply(
            status=500, text="the test set no reply"
        )
        self._lock = threading.Lock()
        self._waiting = 0
        self.peak_waiting = 0
        """The most requests held in a reply delay at the same moment."""
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def always(self, text: str, *, delay: float = 0.0) -> None:
        """Answers every request with `text` after `delay` seconds."""
        self.respond = lambda _body: Reply(text=text, delay=delay)

    def always_sql(self, sql: str, *, delay: float = 0.0) -> None:
        self.always(sql_reply(sql), delay=delay)

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Counts a request as waiting while inside, keeping the peak."""
        with self._lock:
            self._waiting += 1
            self.peak_waiting = max(self.peak_waiting, self._waiting)
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1

    @property
    def waiting(self) -> int:
        """Requests held in a reply delay right now."""
        with self._lock:
            return self._waiting

    def recorded(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _completion(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _chunks(text: str, model: str) -> list[str]:
    """A streamed reply as SSE events: role, content in pieces, finish, [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None) -> str:
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return f"data: {json.dumps(body)}\n\n"

    events = [chunk({"role": "assistant", "content": ""}, None)]
    events += [chunk({"content": text[i : i + 7]}, None) for i in range(0, len(text), 7)]
    events += [chunk({}, "stop"), "data: [DONE]\n\n"]
    return events


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: every response ends the connection, so SSE needs no chunking.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            kind = "server_error" if status >= 500 else "invalid_request_error"
            error = {"error": {"message": message, "type": kind, "param": None, "code": None}}
            self._send(status, "application/json", json.dumps(error).encode())

        def do_POST(self) -> None:  # noqa: N802
            raw = self._read_body()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            headers = {name.lower(): value for name, value in self.headers.items()}
            fake.record(RecordedRequest(self.path, headers, body if isinstance(body, dict) else {}))
            if not self.path.split("?")[0].endswith("/chat/completions"):
                self._error(404, f"no route for POST {self.path}")
                return
            if not isinstance(body, dict):
                self._error(400, "the body is not a chat completion request")
                return
            reply = fake.respond(body)
            if reply.delay:
                with fake.in_flight():
                    time.sleep(reply.delay)
            if reply.status != 200:
                self._error(reply.status, reply.text or "fake failure")
                return
            model = str(body.get("model", "fake"))
            if body.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                for event in _chunks(reply.text, model):
                    self.wfile.write(event.encode())
                    self.wfile.flush()
            else:
                self._send(200, "application/json", json.dumps(_completion(reply.text, model)).encode())

        def do_GET(self) -> None:  # noqa: N802
            self._error(404, f"no route for GET {self.path}")

    return Handler


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    try:
        yield server
    finally:
        server.close()
