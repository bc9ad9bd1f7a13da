"""custard.check_sql over the security corpora in testdata/, and its arguments."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ShopDb, read_jsonl, testdata_dir

import custard


def corpus(name: str) -> list[dict[str, Any]]:
    rows = read_jsonl(testdata_dir() / "security" / name)
    assert rows, f"security/{name} is empty"
    for row in rows:
        assert isinstance(row.get("sql"), str), f"a line of {name} has no `sql`: {row!r}"
    return rows


def test_every_attack_is_refused_with_a_code_and_a_message() -> None:
    wrong: list[str] = []
    for case in corpus("attacks.jsonl"):
        dialect = case.get("dialect", "postgres")
        try:
            checked = custard.check_sql(case["sql"], dialect)
        except custard.UnsafeSqlError as e:
            if not (isinstance(e.code, str) and e.code):
                wrong.append(f"{case['id']}: refused without a code ({e!r})")
            elif not str(e).strip():
                wrong.append(f"{case['id']}: refused ({e.code}) without a message")
            elif not isinstance(e.suggestions, list):
                wrong.append(f"{case['id']}: suggestions is {type(e.suggestions).__name__}")
        except Exception as e:  # any other exception is a finding too
            wrong.append(f"{case['id']}: raised {type(e).__name__}, not UnsafeSqlError: {e}")
        else:
            wrong.append(f"{case['id']} ({case.get('why')}): passed as {checked.sql!r}")
    assert not wrong, f"{len(wrong)} attacks were not refused properly:\n" + "\n".join(wrong)


def test_every_legit_query_passes_and_names_its_tables() -> None:
    wrong: list[str] = []
    for case in corpus("legit.jsonl"):
        dialect = case.get("dialect", "postgres")
        try:
            checked = custard.check_sql(case["sql"], dialect)
        except custard.Error as e:
            wrong.append(f"{case['id']}: refused ({e.code}): {e} -- {case['sql']}")
            continue
        if not isinstance(checked, custard.CheckedSql):
            wrong.append(f"{case['id']}: returned {type(checked).__name__}")
        elif not (isinstance(checked.sql, str) and checked.sql.strip()):
            wrong.append(f"{case['id']}: empty .sql")
        elif not (isinstance(checked.tables, list) and all(isinstance(t, str) for t in checked.tables)):
            wrong.append(f"{case['id']}: .tables is {checked.tables!r}")
        elif checked.dialect != dialect:
            wrong.append(f"{case['id']}: .dialect is {checked.dialect!r}, not {dialect!r}")
    assert not wrong, f"{len(wrong)} legit queries were refused:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("select name from users", ["public.users"]),
        (
            "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id",
            ["public.orders", "public.customers"],
        ),
        ("SELECT n FROM sales.totals", ["sales.totals"]),
        ("WITH t AS (SELECT 1 AS x) SELECT x FROM t", []),
    ],
)
def test_checked_sql_lists_the_tables_read(sql: str, tables: list[str]) -> None:
    checked = custard.check_sql(sql)
    assert sorted(checked.tables) == sorted(tables)
    assert checked.dialect == "postgres"


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("DELETE FROM users", "data_modifying"),
        ("SELECT 1; SELECT 2", "multiple_statements"),
        ("SELEC 1", "sql_parse_error"),
    ],
)
def test_refusals_carry_the_guard_code(sql: str, code: str) -> None:
    with pytest.raises(custard.UnsafeSqlError) as raised:
        custard.check_sql(sql)
    assert raised.value.code == code, str(raised.value)


def test_row_limit_wraps_the_query_but_not_sql() -> None:
    checked = custard.check_sql("SELECT name FROM users", max_rows=10)
    assert checked.row_limit == 10
    assert "limit" not in checked.sql.lower()
    assert "limit" in checked.limited_sql.lower()
    assert "users" in checked.limited_sql


def test_without_max_rows_there_is_no_limit() -> None:
    checked = custard.check_sql("SELECT name FROM users")
    assert checked.row_limit is None
    assert "limit" not in checked.limited_sql.lower()


def test_sqlite_dialect_is_accepted() -> None:
    checked = custard.check_sql("SELECT name FROM customers WHERE city LIKE 'P%'", "sqlite")
    assert checked.dialect == "sqlite"
    assert checked.tables == ["main.customers"]


def test_unknown_dialect_is_invalid_input() -> None:
    with pytest.raises(custard.InvalidInputError) as raised:
        custard.check_sql("SELECT 1", "oracle")
    assert raised.value.code
    assert "oracle" in str(raised.value)


def test_with_a_schema_unknown_tables_are_refused_with_suggestions(sqlite_shop: ShopDb) -> None:
    schema = custard.discover(sqlite_shop.url)
    assert custard.check_sql("SELECT name FROM customers", "sqlite", schema=schema).tables == [
        "main.customers"
    ]
    with pytest.raises(custard.UnsafeSqlError) as raised:
        custard.check_sql("SELECT name FROM customer", "sqlite", schema=schema)
    assert raised.value.code == "unknown_table"
    assert any("customers" in s for s in raised.value.suggestions), raised.value.suggestions


def test_wrong_argument_types_raise_type_error_not_crash() -> None:
    with pytest.raises(TypeError):
        custard.check_sql(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        custard.check_sql("SELECT 1", max_rows="ten")  # type: ignore[arg-type]


def test_the_schema_gives_the_dialect_when_none_is_named(sqlite_shop: ShopDb) -> None:
    schema = custard.discover(sqlite_shop.url)
    checked = custard.check_sql("SELECT name FROM customers", schema=schema)
    assert checked.dialect == "sqlite"
    assert custard.check_sql("SELECT 1").dialect == "postgres"
