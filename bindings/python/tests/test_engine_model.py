"""custard.Engine with a model: a fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import CUSTOMER_COUNT, FakeOpenAI, Reply, ShopDb, sql_reply

import custard

CITY_COUNTS = "SELECT city, count(*) AS customers FROM customers GROUP BY city ORDER BY city"


def model_engine(shop: ShopDb, fake: FakeOpenAI, **options: Any) -> custard.Engine:
    return custard.Engine(
        shop.url,
        model="fake-model",
        base_url=fake.base_url,
        api_key="test-key",
        timeout=20.0,
        **options,
    )


def test_rows_equal_the_direct_query(shop: ShopDb, fake_openai: FakeOpenAI) -> None:
    fake_openai.always_sql(CITY_COUNTS)
    engine = model_engine(shop, fake_openai)
    assert engine.engine == "fake-model"
    answer = engine.ask("how many customers live in each city")
    direct = shop.query(CITY_COUNTS)
    if shop.dialect == "postgres":
        # psql prints text: compare as text, NULL as the empty string.
        got = [["" if v is None else str(v) for v in row] for row in answer.rows]
    else:
        got = answer.rows
    assert got == [list(row) for row in direct]
    assert answer.columns == ["city", "customers"]
    assert answer.engine == "fake-model"
    assert answer.attempts == 1
    assert "customers" in answer.sql


def test_the_request_carries_the_key_the_model_and_the_schema(
    sqlite_shop: ShopDb, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always_sql("SELECT count(*) FROM customers")
    question = "how many customers do we have"
    answer = model_engine(sqlite_shop, fake_openai).ask(question)
    assert answer.rows == [[CUSTOMER_COUNT]]
    requests = fake_openai.recorded()
    assert len(requests) == 1, [r.path for r in requests]
    request = requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers.get("authorization") == "Bearer test-key"
    assert request.body["model"] == "fake-model"
    assert request.messages[0]["role"] == "system"
    assert "CREATE TABLE" in request.messages[0]["content"]
    assert "customers" in request.messages[0]["content"]
    assert question in request.last_user_message()


def test_instructions_reach_the_model(sqlite_shop: ShopDb, fake_openai: FakeOpenAI) -> None:
    fake_openai.always_sql("SELECT count(*) FROM customers")
    instructions = "A customer without a city lives abroad."
    model_engine(sqlite_shop, fake_openai, instructions=instructions).ask("how many customers")
    assert instructions in fake_openai.recorded()[0].all_text()


def test_postgres_numeric_comes_back_as_a_string(pg_shop: ShopDb, fake_openai: FakeOpenAI) -> None:
    fake_openai.always_sql("SELECT name, price FROM products ORDER BY id")
    answer = model_engine(pg_shop, fake_openai).ask("what does each product cost")
    assert answer.rows == [["Tea", "4.50"], ["Coffee", "7.25"], ["Cocoa", "9.99"]]
    assert answer.to_dicts()[0] == {"name": "Tea", "price": "4.50"}


def test_max_rows_caps_the_answer(sqlite_shop: ShopDb, fake_openai: FakeOpenAI) -> None:
    fake_openai.always_sql("SELECT name FROM customers ORDER BY id")
    answer = model_engine(sqlite_shop, fake_openai, max_rows=3).ask("list the customers")
    assert answer.rows == [["Ada"], ["Bob"], ["Chloe"]]
    assert answer.truncated is True


def test_a_model_writing_delete_gets_no_valid_query_and_nothing_changes(
    shop: ShopDb, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always_sql("DELETE FROM customers")
    engine = model_engine(shop, fake_openai)
    with pytest.raises(custard.NoValidQueryError) as raised:
        engine.ask("remove every customer")
    error = raised.value
    assert error.code == "no_valid_query", str(error)
    assert isinstance(error.attempts, list) and error.attempts
    assert all(isinstance(a, dict) for a in error.attempts)
    # One model request per attempt, each refused before it ran.
    assert len(error.attempts) == len(fake_openai.recorded())
    assert shop.count("customers") == CUSTOMER_COUNT


def test_a_model_that_says_it_cannot_answer_raises_cannot_answer(
    sqlite_shop: ShopDb, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always("-- cannot answer: the database has no weather data")
    with pytest.raises(custard.CannotAnswerError) as raised:
        model_engine(sqlite_shop, fake_openai).ask("will it rain tomorrow")
    assert "weather" in str(raised.value)


def test_a_model_failing_with_500_raises_llm_error_after_bounded_retries(
    sqlite_shop: ShopDb, fake_openai: FakeOpenAI
) -> None:
    fake_openai.respond = lambda _body: Reply(status=500, text="the fake model is down")
    engine = model_engine(sqlite_shop, fake_openai)
    with pytest.raises(custard.LlmError) as raised:
        engine.ask("how many customers")
    assert raised.value.code == "llm_unavailable", str(raised.value)
    assert "test-key" not in str(raised.value)
    # Bounded retries with backoff: a few requests, then the error.
    assert 1 <= len(fake_openai.recorded()) <= 5


def test_a_wrong_key_is_an_llm_error(sqlite_shop: ShopDb, fake_openai: FakeOpenAI) -> None:
    fake_openai.respond = lambda _body: Reply(status=401, text="invalid api key")
    with pytest.raises(custard.LlmError) as raised:
        model_engine(sqlite_shop, fake_openai).ask("how many customers")
    assert raised.value.code == "llm_unauthorized", str(raised.value)
    assert len(fake_openai.recorded()) == 1, "a 401 is not retried"


def test_a_model_that_repairs_its_sql_is_answered(
    sqlite_shop: ShopDb, fake_openai: FakeOpenAI
) -> None:
    replies = iter(
        [
            sql_reply("SELECT nmae FROM customers ORDER BY id"),
            sql_reply("SELECT name FROM customers ORDER BY id"),
        ]
    )
    fake_openai.respond = lambda _body: Reply(text=next(replies))
    answer = model_engine(sqlite_shop, fake_openai).ask("list customer names")
    assert answer.attempts == 2
    assert answer.rows[0] == ["Ada"]
    requests = fake_openai.recorded()
    assert len(requests) == 2
    # The refusal of the first attempt was fed back to the model.
    assert "nmae" in requests[1].all_text()
