"""Every failure is a custard.Error subclass with a code; none crashes Python."""

from __future__ import annotations

import socket
from pathlib import Path

import re

import pytest
from conftest import REPO, ShopDb

import custard
from custard._custard import ERROR_CODES

ERRORS = [
    custard.UnsafeSqlError,
    custard.DatabaseError,
    custard.LlmError,
    custard.CannotAnswerError,
    custard.NoValidQueryError,
    custard.InvalidInputError,
]


def assert_raised_as_its_code(error: custard.Error) -> None:
    """The error's class is the one its code maps to."""
    assert error.code in ERROR_CODES, f"{error.code!r} is not a code of the vocabulary: {error}"
    assert type(error) is ERROR_CODES[error.code], f"{error.code} raised as {type(error).__name__}"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
def test_every_error_is_a_custard_error(error: type[custard.Error]) -> None:
    assert issubclass(error, custard.Error)
    assert issubclass(custard.Error, Exception)
    assert error.__module__.startswith("custard")


def test_the_error_classes_are_distinct() -> None:
    assert len(set(ERRORS)) == len(ERRORS)
    for a in ERRORS:
        for b in ERRORS:
            assert a is b or not issubclass(a, b), f"{a.__name__} derives from {b.__name__}"


def test_errors_can_be_caught_as_the_base_with_a_code() -> None:
    with pytest.raises(custard.Error) as raised:
        custard.check_sql("DROP TABLE users")
    assert isinstance(raised.value, custard.UnsafeSqlError)
    assert isinstance(raised.value.code, str) and raised.value.code
    assert str(raised.value)
    assert_raised_as_its_code(raised.value)


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_code_has_an_exception_class(code: str) -> None:
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code), code
    assert ERROR_CODES[code] in ERRORS, f"{code} maps to {ERROR_CODES[code]!r}, not a specific class"


@pytest.mark.parametrize(
    ("code", "error"),
    [
        # The failures the shared vocabulary settled have these codes and classes.
        ("invalid_question", custard.InvalidInputError),
        ("llm_timeout", custard.LlmError),
        ("llm_unavailable", custard.LlmError),
        ("query_rejected", custard.UnsafeSqlError),
        ("permission_denied", custard.DatabaseError),
        ("canceled", custard.DatabaseError),
        ("agent_busy", custard.DatabaseError),
        ("privileged_role", custard.DatabaseError),
        ("cannot_answer", custard.CannotAnswerError),
        ("llm_abstained", custard.CannotAnswerError),
        ("no_valid_query", custard.NoValidQueryError),
        ("not_a_query", custard.UnsafeSqlError),
        ("invalid_database_url", custard.InvalidInputError),
        ("invalid_timeout", custard.InvalidInputError),
        ("missing_model", custard.InvalidInputError),
        ("invalid_schema", custard.InvalidInputError),
    ],
)
def test_codes_map_to_their_family(code: str, error: type[custard.Error]) -> None:
    assert ERROR_CODES[code] is error


def test_older_names_are_not_codes() -> None:
    for old in ("rejected", "busy", "validation_error"):
        assert old not in ERROR_CODES, old


def test_the_error_document_names_each_class() -> None:
    doc = (REPO / "docs" / "errors.md").read_text(encoding="utf-8").splitlines()
    for code, error in ERROR_CODES.items():
        rows = [line for line in doc if line.startswith(f"| `{code}` |")]
        assert len(rows) == 1, f"docs/errors.md has {len(rows)} rows for {code}"
        assert f"| `{error.__name__}` |" in rows[0], f"{code} is a {error.__name__}: {rows[0]}"


@pytest.mark.parametrize(
    "url",
    ["mysql://root@127.0.0.1/shop", "not a url", "", "sqlite:"],
    ids=["mysql", "words", "empty", "sqlite-no-path"],
)
def test_a_bad_database_url_is_a_clear_error(url: str) -> None:
    for attempt in (lambda: custard.discover(url), lambda: custard.Engine(url)):
        with pytest.raises((custard.DatabaseError, custard.InvalidInputError)) as raised:
            attempt()
        assert raised.value.code, str(raised.value)
        assert str(raised.value)


def test_an_unsupported_scheme_says_which_ones_are(tmp_path: Path) -> None:
    with pytest.raises(custard.Error) as raised:
        custard.discover("mysql://root@127.0.0.1/shop")
    assert raised.value.code == "invalid_database_url", str(raised.value)
    assert "postgres" in str(raised.value)
    assert_raised_as_its_code(raised.value)


def test_an_unreachable_postgres_is_a_database_error() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    with pytest.raises(custard.DatabaseError) as raised:
        custard.discover(url)
    assert raised.value.code == "database_unavailable", str(raised.value)
    assert_raised_as_its_code(raised.value)
    with pytest.raises(custard.DatabaseError):
        custard.Engine(url).ask("how many customers")


def test_a_password_is_not_echoed_in_errors() -> None:
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{free_port()}/test"
    with pytest.raises(custard.DatabaseError) as raised:
        custard.discover(url)
    assert "s3cret-pw" not in str(raised.value)
    assert "s3cret-pw" not in repr(raised.value)


def test_a_missing_sqlite_file_is_a_database_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(custard.DatabaseError) as raised:
        custard.discover(f"sqlite:{missing}")
    assert raised.value.code == "database_unavailable", str(raised.value)
    assert not missing.exists(), "discover must not create the file"


def test_a_file_that_is_not_sqlite_is_a_database_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, just text" * 100)
    with pytest.raises(custard.DatabaseError):
        custard.discover(f"sqlite:{junk}")


def test_bad_schema_json_is_invalid_input() -> None:
    with pytest.raises(custard.InvalidInputError) as raised:
        custard.Schema.from_json("not json")
    assert raised.value.code
    assert_raised_as_its_code(raised.value)


def test_an_empty_question_is_invalid_input(sqlite_shop: ShopDb) -> None:
    with pytest.raises(custard.InvalidInputError) as raised:
        custard.Engine(sqlite_shop.url).ask("")
    assert raised.value.code == "invalid_question"
    assert_raised_as_its_code(raised.value)


def test_a_bad_model_configuration_is_an_error_not_a_crash(sqlite_shop: ShopDb) -> None:
    with pytest.raises(custard.Error) as raised:
        custard.Engine(sqlite_shop.url, model="fake-model", base_url="ftp://127.0.0.1/v1")
    assert isinstance(raised.value, (custard.LlmError, custard.InvalidInputError)), repr(raised.value)
    assert raised.value.code


def test_an_unreachable_model_is_an_llm_error(sqlite_shop: ShopDb) -> None:
    engine = custard.Engine(
        sqlite_shop.url,
        model="fake-model",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        api_key="test-key",
        timeout=5.0,
    )
    with pytest.raises(custard.LlmError) as raised:
        engine.ask("how many customers")
    assert raised.value.code == "llm_unavailable", str(raised.value)
    assert_raised_as_its_code(raised.value)


def test_a_negative_max_rows_is_refused(sqlite_shop: ShopDb) -> None:
    with pytest.raises((custard.InvalidInputError, OverflowError, ValueError)):
        custard.Engine(sqlite_shop.url, max_rows=-1)


def test_an_out_of_range_timeout_is_invalid_input_not_a_panic(sqlite_shop: ShopDb) -> None:
    for timeout in (1e30, 0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(custard.InvalidInputError) as raised:
            custard.Engine(sqlite_shop.url, timeout=timeout)
        assert raised.value.code == "invalid_timeout", timeout
        assert_raised_as_its_code(raised.value)


def test_an_api_key_without_a_model_is_refused(sqlite_shop: ShopDb) -> None:
    with pytest.raises(custard.InvalidInputError) as raised:
        custard.Engine(sqlite_shop.url, api_key="sk-test")
    assert raised.value.code == "missing_model"
    assert_raised_as_its_code(raised.value)
    assert "sk-test" not in str(raised.value)
