"""The whole public API of `custard` with full annotations, for `mypy --strict`.

Type-checked by scripts/test-python.sh, never run (it would need a database):
a wrong stub in `_custard.pyi` or `__init__.py` shows up here as a type error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import custard
from custard import (
    Answer,
    CannotAnswerError,
    CheckedSql,
    Column,
    DatabaseError,
    Engine,
    Error,
    InvalidInputError,
    LlmError,
    NoValidQueryError,
    Schema,
    Table,
    UnsafeSqlError,
)

VERSION: str = custard.__version__


def check(sql: str, schema: Schema | None) -> CheckedSql | None:
    try:
        checked: CheckedSql = custard.check_sql(sql, "postgres", schema=schema, max_rows=100)
    except UnsafeSqlError as e:
        code: str = e.code
        suggestions: list[str] = e.suggestions
        print(code, suggestions, str(e))
        return None
    text: str = checked.sql
    limited: str = checked.limited_sql
    tables: list[str] = checked.tables
    dialect: str = checked.dialect
    limit: int | None = checked.row_limit
    print(text, limited, tables, dialect, limit)
    return checked


def describe(schema: Schema) -> dict[str, list[str]]:
    dialect: str = schema.dialect
    count: int = len(schema)
    ddl: str = schema.to_ddl()
    fingerprint: str = schema.fingerprint()
    again: Schema = Schema.from_json(schema.to_json())
    assert again.fingerprint() == fingerprint
    print(dialect, count, ddl)
    out: dict[str, list[str]] = {}
    for table in schema.tables:
        t: Table = table
        name: str = f"{t.schema}.{t.name}"
        kind: str = t.kind
        comment: str | None = t.comment
        key: list[str] = t.primary_key
        print(kind, comment, key)
        columns: list[Column] = t.columns
        out[name] = []
        for c in columns:
            nullable: bool = c.nullable
            samples: list[str] = c.sample_values
            column_comment: str | None = c.comment
            print(nullable, samples, column_comment)
            out[name].append(f"{c.name} {c.data_type}")
    return out


def discover(url: str) -> Schema:
    return custard.discover(url, sample_values=3)


def prompt(schema: Schema, question: str) -> list[dict[str, str]]:
    examples: Sequence[tuple[str, str]] = [("How many orders?", "SELECT count(*) FROM orders")]
    messages: list[dict[str, str]] = custard.build_prompt(
        schema, question, dialect="sqlite", instructions="Prices are in euros.", examples=examples
    )
    return messages + custard.build_prompt(schema, question)


def show(answer: Answer) -> None:
    text: str = answer.text
    sql: str = answer.sql
    columns: list[str] = answer.columns
    types: list[str] = answer.column_types
    rows: list[list[Any]] = answer.rows
    truncated: bool = answer.truncated
    chart: dict[str, Any] | None = answer.chart
    engine: str = answer.engine
    attempts: int = answer.attempts
    timings: dict[str, float] = answer.timings
    dicts: list[dict[str, Any]] = answer.to_dicts()
    frame: object = answer.to_pandas()
    print(text, sql, columns, types, rows, truncated, chart, engine, attempts, timings, dicts, frame)


def engines(url: str) -> list[Engine]:
    offline = Engine(url)
    model = Engine(
        url,
        "gpt-4o-mini",
        "http://127.0.0.1:11434/v1",
        "key",
        instructions="Amounts are in euros.",
        max_rows=500,
        timeout=30.0,
    )
    by_name = Engine(url, model="qwen2.5-coder", base_url="http://127.0.0.1:8000/v1", api_key=None)
    schema: Schema = offline.schema
    name: str = model.engine
    print(schema, name)
    return [offline, model, by_name]


def ask(engine: Engine, question: str) -> Answer | None:
    try:
        return engine.ask(question)
    except InvalidInputError as e:
        print("bad question:", e.code)
    except CannotAnswerError as e:
        print("cannot answer:", e)
    except NoValidQueryError as e:
        failures: list[dict[str, Any]] = e.attempts
        print(e.code, failures)
    except LlmError as e:
        print("model:", e.code)
    except DatabaseError as e:
        print("database:", e.code)
    except Error as e:
        code: str = e.code
        print(code)
    return None


async def ask_many(engine: Engine, questions: list[str]) -> list[Answer]:
    answers: list[Answer] = list(await asyncio.gather(*(engine.ask_async(q) for q in questions)))
    one: Answer = await engine.ask_async(questions[0])
    return [*answers, one]


def main(url: str) -> None:
    schema = discover(url)
    check("SELECT 1", schema)
    describe(schema)
    prompt(schema, "how many customers")
    engine = engines(url)[0]
    answer = ask(engine, "how many customers")
    if answer is not None:
        show(answer)
    answers: list[Answer] = asyncio.run(ask_many(engine, ["how many customers"]))
    print(len(answers))
    error: type[Exception] = custard.Error
    print(error)
