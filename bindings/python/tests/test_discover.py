"""custard.discover over SQLite and PostgreSQL, and the Schema it returns."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import SHOP_TABLES, ShopDb

import custard

DEFAULT_SCHEMA = {"sqlite": "main", "postgres": "public"}


def table(schema: custard.Schema, name: str) -> custard.Table:
    found = [t for t in schema.tables if t.name == name]
    assert len(found) == 1, f"expected one table {name!r}, got {[t.name for t in schema.tables]}"
    return found[0]


def column(t: custard.Table, name: str) -> custard.Column:
    found = [c for c in t.columns if c.name == name]
    assert len(found) == 1, f"expected one column {name!r} in {t.name}, got {[c.name for c in t.columns]}"
    return found[0]


def test_discover_finds_every_table_and_view(shop: ShopDb) -> None:
    schema = custard.discover(shop.url)
    assert isinstance(schema, custard.Schema)
    assert schema.dialect == shop.dialect
    assert {t.name for t in schema.tables} == SHOP_TABLES
    assert all(isinstance(t, custard.Table) for t in schema.tables)
    assert {t.schema for t in schema.tables} == {DEFAULT_SCHEMA[shop.dialect]}
    kinds = {t.name: t.kind for t in schema.tables}
    assert kinds == {name: "view" if name == "customer_cities" else "table" for name in SHOP_TABLES}
    assert len(schema) == len(schema.tables) == len(SHOP_TABLES)


def test_discover_reads_columns_in_order_with_types_and_nullability(shop: ShopDb) -> None:
    schema = custard.discover(shop.url)
    customers = table(schema, "customers")
    assert [c.name for c in customers.columns] == ["id", "name", "city"]
    assert all(isinstance(c, custard.Column) for c in customers.columns)
    types = {c.name: c.data_type.lower() for c in table(schema, "products").columns}
    assert types == {"id": "integer", "name": "text", "price": "numeric(10,2)"}
    assert column(customers, "name").nullable is False
    assert column(customers, "city").nullable is True
    assert [c.name for c in table(schema, "orders").columns] == ["id", "customer_id", "ordered_on"]
    assert column(table(schema, "orders"), "ordered_on").data_type.lower() == "date"


def test_discover_reads_primary_keys_in_key_order(shop: ShopDb) -> None:
    schema = custard.discover(shop.url)
    assert table(schema, "customers").primary_key == ["id"]
    assert table(schema, "order_items").primary_key == ["order_id", "product_id"]
    assert table(schema, "customer_cities").primary_key == []


def test_discover_reads_postgres_comments(pg_shop: ShopDb) -> None:
    schema = custard.discover(pg_shop.url)
    customers = table(schema, "customers")
    assert customers.comment == "people who bought something"
    assert column(customers, "city").comment == "where the customer lives"
    assert column(customers, "name").comment is None
    assert table(schema, "products").comment is None
    assert "where the customer lives" in schema.to_ddl()


def test_sqlite_has_no_comments(sqlite_shop: ShopDb) -> None:
    schema = custard.discover(sqlite_shop.url)
    assert all(t.comment is None for t in schema.tables)
    assert all(c.comment is None for t in schema.tables for c in t.columns)


def test_discover_samples_text_values(shop: ShopDb) -> None:
    schema = custard.discover(shop.url, sample_values=5)
    samples = column(table(schema, "customers"), "city").sample_values
    assert all(isinstance(s, str) for s in samples)
    assert "Paris" in samples, samples
    assert len(samples) <= 5


def test_sample_values_zero_takes_no_samples(shop: ShopDb) -> None:
    schema = custard.discover(shop.url, sample_values=0)
    assert all(c.sample_values == [] for t in schema.tables for c in t.columns)


def test_schema_json_round_trip_keeps_the_fingerprint(shop: ShopDb) -> None:
    schema = custard.discover(shop.url)
    text = schema.to_json()
    assert isinstance(json.loads(text), dict)
    again = custard.Schema.from_json(text)
    assert again.fingerprint() == schema.fingerprint()
    assert again.dialect == schema.dialect
    assert [t.name for t in again.tables] == [t.name for t in schema.tables]
    assert again.to_ddl() == schema.to_ddl()
    assert len(again) == len(schema)


def test_to_ddl_shows_create_table_statements(shop: ShopDb) -> None:
    ddl = custard.discover(shop.url).to_ddl()
    assert "CREATE TABLE" in ddl
    for name in ("customers", "products", "orders", "order_items"):
        assert name in ddl


def test_fingerprint_is_stable_and_follows_the_structure(tmp_path: Path) -> None:
    from conftest import make_sqlite_shop

    db = make_sqlite_shop(tmp_path / "shop.db")
    first = custard.discover(db.url).fingerprint()
    assert isinstance(first, str) and first
    assert custard.discover(db.url).fingerprint() == first
    with sqlite3.connect(tmp_path / "shop.db") as conn:
        conn.execute("ALTER TABLE customers ADD COLUMN email text")
    conn.close()
    changed = custard.discover(db.url)
    assert [c.name for c in table(changed, "customers").columns][-1] == "email"
    assert changed.fingerprint() != first


@pytest.mark.parametrize("text", ["not json", "", "[]", '{"dialect": "oracle", "tables": []}'])
def test_from_json_refuses_what_is_not_a_schema(text: str) -> None:
    with pytest.raises(custard.InvalidInputError) as raised:
        custard.Schema.from_json(text)
    assert raised.value.code
