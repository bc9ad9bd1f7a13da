"""Every failure is a custard.Error subclass with a code; none crashes Python."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import ShopDb

import custard

ERRORS = [
    custard.UnsafeSqlError,
    custard.DatabaseError,
    custard.LlmError,
    custard.CannotAnswerError,
    custard.NoValidQueryError,
    custard.InvalidInputError,
]


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


def test_an_unreachable_postgres_is_a_database_error() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    with pytest.raises(custard.DatabaseError) as raised:
        custard.discover(url)
    assert raised.value.code == "database_unavailable", str(raised.value)
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


def test_an_empty_question_is_invalid_input(sqlite_shop: ShopDb) -> None:
    with pytest.raises(custard.InvalidInputError) as raised:
        custard.Engine(sqlite_shop.url).ask("")
    assert raised.value.code


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


def test_a_negative_max_rows_is_refused(sqlite_shop: ShopDb) -> None:
    with pytest.raises((custard.InvalidInputError, OverflowError, ValueError)):
        custard.Engine(sqlite_shop.url, max_rows=-1)


def test_an_out_of_range_timeout_is_invalid_input_not_a_panic(sqlite_shop: ShopDb) -> None:
    for timeout in (1e30, 0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(custard.InvalidInputError) as raised:
            custard.Engine(sqlite_shop.url, timeout=timeout)
        assert raised.value.code == "invalid_timeout", timeout


def test_an_api_key_without_a_model_is_refused(sqlite_shop: ShopDb) -> None:
    with pytest.raises(custard.InvalidInputError) as raised:
        custard.Engine(sqlite_shop.url, api_key="sk-test")
    assert raised.value.code == "missing_model"
    assert "sk-test" not in str(raised.value)
