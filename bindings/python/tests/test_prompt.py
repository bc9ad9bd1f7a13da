"""custard.build_prompt: the chat messages a model would read."""

from __future__ import annotations

import pytest
from conftest import ShopDb

import custard

QUESTION = "how many customers live in Paris"


@pytest.fixture
def schema(sqlite_shop: ShopDb) -> custard.Schema:
    return custard.discover(sqlite_shop.url)


def test_messages_are_role_content_dicts_system_first_question_last(schema: custard.Schema) -> None:
    messages = custard.build_prompt(schema, QUESTION)
    assert isinstance(messages, list) and len(messages) >= 2
    for m in messages:
        assert isinstance(m, dict) and set(m) == {"role", "content"}, m
        assert m["role"] in {"system", "user", "assistant"}
        assert isinstance(m["content"], str) and m["content"]
    assert messages[0]["role"] == "system"
    assert messages[-1]["role"] == "user"
    assert QUESTION in messages[-1]["content"]


def test_the_relevant_table_ddl_is_in_the_prompt(schema: custard.Schema) -> None:
    text = "\n".join(m["content"] for m in custard.build_prompt(schema, QUESTION))
    assert "CREATE TABLE" in text
    assert "customers" in text
    assert "city" in text


def test_the_dialect_defaults_to_the_schema_and_can_be_named(schema: custard.Schema) -> None:
    assert "SQLite" in custard.build_prompt(schema, QUESTION)[0]["content"]
    assert "SQLite" in custard.build_prompt(schema, QUESTION, dialect="sqlite")[0]["content"]
    postgres = custard.build_prompt(schema, QUESTION, dialect="postgres")[0]["content"]
    assert "PostgreSQL" in postgres and "SQLite" not in postgres


def test_instructions_are_included(schema: custard.Schema) -> None:
    instructions = "Prices are in euros; a customer without a city lives abroad."
    without = "\n".join(m["content"] for m in custard.build_prompt(schema, QUESTION))
    assert instructions not in without
    messages = custard.build_prompt(schema, QUESTION, instructions=instructions)
    assert any(instructions in m["content"] for m in messages), messages
    assert messages[-1]["role"] == "user" and QUESTION in messages[-1]["content"]


def test_examples_are_included_as_question_and_sql(schema: custard.Schema) -> None:
    examples = [
        ("How many products are there?", "SELECT count(*) FROM products"),
        (
            "Which city has most customers?",
            "SELECT city FROM customers GROUP BY city ORDER BY count(*) DESC LIMIT 1",
        ),
    ]
    messages = custard.build_prompt(schema, QUESTION, examples=examples)
    for question, sql in examples:
        assert any(question in m["content"] for m in messages if m["role"] == "user"), question
        assert any(sql in m["content"] for m in messages if m["role"] != "user"), sql
    assert messages[0]["role"] == "system"
    assert messages[-1]["role"] == "user" and QUESTION in messages[-1]["content"]


def test_examples_may_be_any_sequence_of_pairs(schema: custard.Schema) -> None:
    examples = (("How many orders?", "SELECT count(*) FROM orders"),)
    messages = custard.build_prompt(schema, QUESTION, examples=examples)
    assert any("SELECT count(*) FROM orders" in m["content"] for m in messages)


def test_an_unknown_dialect_is_invalid_input(schema: custard.Schema) -> None:
    with pytest.raises(custard.InvalidInputError) as raised:
        custard.build_prompt(schema, QUESTION, dialect="oracle")
    assert raised.value.code
    assert "oracle" in str(raised.value)


def test_a_schema_from_json_builds_the_same_prompt(schema: custard.Schema) -> None:
    again = custard.Schema.from_json(schema.to_json())
    assert custard.build_prompt(again, QUESTION) == custard.build_prompt(schema, QUESTION)


def test_an_empty_question_is_invalid_input(schema: custard.Schema) -> None:
    with pytest.raises(custard.InvalidInputError) as raised:
        custard.build_prompt(schema, "  ")
    assert raised.value.code
