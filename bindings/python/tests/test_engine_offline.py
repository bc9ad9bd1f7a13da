"""custard.Engine with the offline engine (no model) over SQLite and PostgreSQL."""

from __future__ import annotations

import sys

import pytest
from conftest import CUSTOMER_COUNT, ShopDb

import custard


def test_a_count_question_equals_the_direct_count(shop: ShopDb) -> None:
    expected = shop.count("customers")
    assert expected == CUSTOMER_COUNT
    engine = custard.Engine(shop.url)
    assert engine.engine == "offline"
    answer = engine.ask("how many customers are there")
    assert isinstance(answer, custard.Answer)
    assert answer.rows == [[expected]]
    assert len(answer.columns) == 1 and len(answer.column_types) == 1
    assert "count" in answer.sql.lower() and "customers" in answer.sql.lower()
    assert answer.engine == "offline"
    assert answer.attempts == 1
    assert answer.truncated is False
    assert str(expected) in answer.text


def test_to_dicts_maps_columns_to_values(shop: ShopDb) -> None:
    answer = custard.Engine(shop.url).ask("how many customers are there")
    assert answer.to_dicts() == [{answer.columns[0]: CUSTOMER_COUNT}]


def test_answers_carry_timings_in_milliseconds(shop: ShopDb) -> None:
    answer = custard.Engine(shop.url).ask("how many products are there")
    assert answer.rows == [[shop.count("products")]]
    assert "total" in answer.timings
    assert all(isinstance(v, float) and v >= 0.0 for v in answer.timings.values()), answer.timings
    assert answer.chart is None or isinstance(answer.chart, dict)


def test_the_engine_exposes_the_discovered_schema(shop: ShopDb) -> None:
    engine = custard.Engine(shop.url)
    assert isinstance(engine.schema, custard.Schema)
    assert engine.schema.dialect == shop.dialect
    assert "customers" in {t.name for t in engine.schema.tables}
    assert engine.schema.fingerprint() == custard.discover(shop.url).fingerprint()


def test_an_unanswerable_question_raises_cannot_answer(shop: ShopDb) -> None:
    engine = custard.Engine(shop.url)
    with pytest.raises(custard.CannotAnswerError) as raised:
        engine.ask("write me a poem about the weather")
    assert raised.value.code
    assert str(raised.value)
    # The engine still answers after a refusal.
    assert engine.ask("how many customers are there").rows == [[CUSTOMER_COUNT]]


def test_an_empty_question_is_invalid_input(sqlite_shop: ShopDb) -> None:
    engine = custard.Engine(sqlite_shop.url)
    for question in ("", "   "):
        with pytest.raises(custard.InvalidInputError) as raised:
            engine.ask(question)
        assert raised.value.code == "invalid_question", str(raised.value)


def test_to_pandas_raises_import_error_without_pandas(
    sqlite_shop: ShopDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = custard.Engine(sqlite_shop.url).ask("how many customers are there")
    # None in sys.modules makes `import pandas` fail, installed or not.
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError) as raised:
        answer.to_pandas()
    assert "pandas" in str(raised.value)


def test_answer_values_are_plain_python_objects(sqlite_shop: ShopDb) -> None:
    answer = custard.Engine(sqlite_shop.url).ask("how many customers are there")
    assert type(answer.rows[0][0]) is int
    assert isinstance(answer.columns[0], str)
    assert isinstance(answer.column_types[0], str)
