"""Custard: ask your database questions in plain language.

The same core as the Custard server (`custard-core`, in Rust): schema
discovery, a read-only SQL guard, prompt building, an OpenAI-compatible client
and an offline engine that needs no model.

>>> import custard
>>> custard.check_sql("select name from users").tables
['public.users']
"""

from __future__ import annotations

from custard._custard import (
    Answer,
    CannotAnswerError,
    CheckedSql,
    Column,
    DatabaseError,
    Error,
    InvalidInputError,
    LlmError,
    NoValidQueryError,
    Schema,
    Table,
    UnsafeSqlError,
    __version__,
    build_prompt,
    check_sql,
    discover,
)
from custard._custard import Engine as _NativeEngine

__all__ = [
    "Answer",
    "CannotAnswerError",
    "CheckedSql",
    "Column",
    "DatabaseError",
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


class Engine(_NativeEngine):
    """Questions in, answers out, over one database.

    `Engine(database_url)` answers with the offline engine (rules, no model);
    `Engine(database_url, model="gpt-4o-mini", api_key=...)` with an
    OpenAI-compatible model (`base_url` for Azure, Ollama, vLLM, ...).
    """

    async def ask_async(self, question: str) -> Answer:
        """Answers a question without blocking the event loop."""
        return await self._ask_future(question)
