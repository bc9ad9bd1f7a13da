"""Custard from Python in one screen: a small SQLite shop, the read-only guard,
schema discovery, the prompt a model would read, and a question answered by
the offline engine (no model, no key, no network).

    python examples/python/ask_sqlite.py ["how many customers are there"]
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

import custard

SHOP = """
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, city text);
CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL);
CREATE TABLE orders (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    product_id integer NOT NULL REFERENCES products(id),
    quantity integer NOT NULL,
    ordered_on date NOT NULL
);
INSERT INTO customers VALUES
    (1, 'Ada', 'Paris'), (2, 'Bob', 'Lyon'), (3, 'Chloe', 'Paris'), (4, 'Dev', 'Nice');
INSERT INTO products VALUES (1, 'Tea', 4.50), (2, 'Coffee', 7.25), (3, 'Cocoa', 9.99);
INSERT INTO orders VALUES
    (1, 1, 1, 2, '2024-01-05'), (2, 1, 3, 1, '2024-02-11'), (3, 2, 2, 4, '2024-02-12'),
    (4, 3, 1, 1, '2024-03-01'), (5, 4, 2, 3, '2024-03-09');
"""


def main() -> int:
    question = sys.argv[1] if len(sys.argv) > 1 else "how many customers are there"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "shop.db"
        with sqlite3.connect(path) as conn:
            conn.executescript(SHOP)
        conn.close()
        url = f"sqlite:{path}"

        # 1. The guard: one read-only query, or a typed refusal.
        checked = custard.check_sql("SELECT name FROM customers WHERE city = 'Paris'", "sqlite")
        print(f"allowed: {checked.sql}  (reads {', '.join(checked.tables)})")
        try:
            custard.check_sql("DELETE FROM customers", "sqlite")
        except custard.UnsafeSqlError as e:
            print(f"refused: {e.code}: {e}")

        # 2. Discovery: tables, columns, keys and sample values.
        schema = custard.discover(url)
        print(f"\n{len(schema)} tables: {', '.join(t.name for t in schema.tables)}")

        # 3. The chat messages an OpenAI-compatible model would be sent.
        messages = custard.build_prompt(schema, question, instructions="Prices are in euros.")
        system = messages[0]["content"]
        print(f"prompt: {len(messages)} messages, a system prompt of {len(system)} characters")

        # 4. Ask. Engine(url, model="gpt-4o-mini", api_key=...) would use a model instead.
        engine = custard.Engine(url)
        try:
            answer = engine.ask(question)
        except custard.CannotAnswerError as e:
            print(f"\nthe offline engine cannot answer {question!r}: {e}")
            return 0
        print(f"\n{answer.text}\n\n{answer.sql}\n")
        print(" | ".join(answer.columns))
        for row in answer.rows[:20]:
            print(" | ".join("" if v is None else str(v) for v in row))
        print(f"\n(answered by {answer.engine} in {answer.timings['total']:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
