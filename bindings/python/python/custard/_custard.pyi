"""Type stubs for the native module `custard._custard` (hand-written, checked by mypy --strict and stubtest)."""

from collections.abc import Awaitable, Sequence
from typing import Any, Final, final

from typing_extensions import Self, disjoint_base

__all__ = [
    "Answer",
    "CannotAnswerError",
    "CheckedSql",
    "Column",
    "DatabaseError",
    "ERROR_CODES",
    "Engine",
    "Error",
    "InvalidInputError",
    "LlmError",
    "NoValidQueryError",
    "Schema",
    "Table",
    "UnsafeSqlError",
    "__version__",
    "build_prompt",
    "check_sql",
    "discover",
]

__version__: Final[str]

class Error(Exception):
    """The base of every error Custard raises; `code` is a stable snake_case name."""

    code: str

class UnsafeSqlError(Error):
    """The guard refused the SQL (not read-only, unknown table, too complex, ...)."""

    suggestions: list[str]

class DatabaseError(Error):
    """Connecting to, reading the schema of, or querying the database failed."""

class LlmError(Error):
    """The language model could not be reached or refused the request."""

class CannotAnswerError(Error):
    """The engine found no way to answer the question from this database."""

class NoValidQueryError(Error):
    """Every SQL the model wrote was refused by the guard or the database."""

    attempts: list[dict[str, Any]]

class InvalidInputError(Error):
    """An argument is malformed: an unknown dialect, an empty question, bad schema JSON."""

ERROR_CODES: Final[dict[str, type[Error]]]
"""Every error code of Custard's vocabulary and the exception class it is raised as."""

@final
class CheckedSql:
    """SQL that passed the read-only guard."""

    @property
    def sql(self) -> str:
        """The query as parsed and printed back (normalised), without a row limit."""
    @property
    def limited_sql(self) -> str:
        """The SQL an executor runs: `sql` wrapped in the row limit when one applies."""
    @property
    def tables(self) -> list[str]:
        """The tables and views the query reads, as `schema.table` (`public.users`)."""
    @property
    def dialect(self) -> str: ...
    @property
    def row_limit(self) -> int | None: ...

@final
class Column:
    @property
    def name(self) -> str: ...
    @property
    def data_type(self) -> str: ...
    @property
    def nullable(self) -> bool: ...
    @property
    def comment(self) -> str | None: ...
    @property
    def sample_values(self) -> list[str]: ...

@final
class Table:
    @property
    def schema(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str:
        """`table`, `view`, `materialized_view` or `foreign_table`."""
    @property
    def comment(self) -> str | None: ...
    @property
    def columns(self) -> list[Column]: ...
    @property
    def primary_key(self) -> list[str]: ...

@final
class Schema:
    """A database's tables and columns, as discovered."""

    @property
    def dialect(self) -> str:
        """`postgres` or `sqlite`."""
    @property
    def tables(self) -> list[Table]: ...
    def to_json(self) -> str: ...
    @staticmethod
    def from_json(text: str) -> Schema: ...
    def to_ddl(self) -> str:
        """Compact CREATE TABLE statements with comments, as prompts show them."""
    def fingerprint(self) -> str:
        """A stable hash of the schema: equal schemas, equal fingerprints."""
    def __len__(self) -> int: ...

@final
class Answer:
    """An answered question."""

    @property
    def text(self) -> str: ...
    @property
    def sql(self) -> str: ...
    @property
    def columns(self) -> list[str]: ...
    @property
    def column_types(self) -> list[str]: ...
    @property
    def rows(self) -> list[list[Any]]: ...
    @property
    def truncated(self) -> bool: ...
    @property
    def chart(self) -> dict[str, Any] | None:
        """`{"type": "bar" | "line", "x": column, "y": [columns]}` or None."""
    @property
    def engine(self) -> str:
        """`offline` or the model's name."""
    @property
    def attempts(self) -> int: ...
    @property
    def timings(self) -> dict[str, float]:
        """Milliseconds per step: retrieve, prompt, generate, guard, execute, answer, total."""
    def to_dicts(self) -> list[dict[str, Any]]: ...
    def to_pandas(self) -> Any:
        """A pandas DataFrame of the rows; raises ImportError when pandas is not installed."""

@disjoint_base
class Engine:
    """Questions in, answers out, over one database."""

    def __new__(
        cls,
        database_url: str,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        instructions: str | None = None,
        max_rows: int = 1000,
        timeout: float | None = None,
    ) -> Self:
        """Connects, reads the schema, and sets up the model (offline without one).

        `timeout` bounds each query's run time in seconds; `max_rows` caps the
        rows of an answer (`truncated` says when it cut).
        """
    @property
    def schema(self) -> Schema: ...
    @property
    def engine(self) -> str: ...
    def ask(self, question: str) -> Answer:
        """Answers a question; blocks (without holding the GIL) until done."""
    def _ask_future(self, question: str) -> Awaitable[Answer]:
        """An asyncio future of the answer; `custard.Engine.ask_async` awaits it."""

def check_sql(
    sql: str,
    dialect: str | None = None,
    schema: Schema | None = None,
    max_rows: int | None = None,
) -> CheckedSql: ...
def discover(database_url: str, sample_values: int = 5) -> Schema: ...
def build_prompt(
    schema: Schema,
    question: str,
    dialect: str | None = None,
    instructions: str | None = None,
    examples: Sequence[tuple[str, str]] | None = None,
) -> list[dict[str, str]]: ...
