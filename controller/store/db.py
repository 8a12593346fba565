"""What the repositories ask of a database, and the choice of one.

Two backends answer it: SQLite through aiosqlite (``sqlite.py``, the embedded default) and
PostgreSQL through psycopg's pool (``postgres.py``, ``O16N_DATABASE_URL``), for a group of
controllers sharing one database (docs/web-nodes.md). The repositories write one portable
SQL: ``?`` placeholders (or ``:name`` with a mapping), ``ON CONFLICT``, ``RETURNING``, no
``rowid``, no ``PRAGMA``, integers for booleans, ``CAST(? AS …)`` where a function needs a
typed parameter; ``dialect`` is there for the rare statement that cannot be.

Both keep SQLite's discipline: one writer at a time (``transaction``), every wait bounded,
and a busy or full database reported as :class:`~controller.errors.StoreBusy` (503) or
:class:`~controller.errors.InsufficientStorage` (507), never as a driver's own error.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from controller.settings import Settings

Params = Sequence[Any] | dict[str, Any]
Dialect = Literal["sqlite", "postgres"]
#: What ``changes`` counts: users and tokens, the published services, the compute nodes.
Topic = Literal["auth", "services", "nodes"]

#: Seconds a unit of work waits for the write lock (another controller's or process's
#: included), or for a connection, before the database counts as busy.
BUSY_TIMEOUT = 5.0
#: Seconds ``ping`` may take: ``GET /status`` must answer within a second whatever holds the lock.
PING_TIMEOUT = 0.5


class DuplicateKey(Exception):
    """A row with the same primary or unique key is there already (another controller of
    the group, say, wrote it first): the repository turns it into a 409 naming what."""


class Row(Protocol):
    """A result row: by position (``row[0]``) and by column name (``row["id"]``)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    async def fetchone(self) -> Any: ...

    async def fetchall(self) -> Iterable[Any]: ...


class Connection(Protocol):
    """The connection a transaction hands out: statements run inside it."""

    async def execute(self, sql: str, params: Params = ()) -> Cursor: ...

    async def executemany(self, sql: str, params: Iterable[Params]) -> Cursor: ...


class Database(abc.ABC):
    """A database the repositories share; see the module's docstring."""

    #: which SQL the rare dialect-specific statement is written in
    dialect: Dialect
    #: where the data is, for logs and the CLI: a path, or a URL without its password
    where: str
    #: what ``/status`` calls it: the file's or the database's name, never a host
    name: str

    @abc.abstractmethod
    def transaction(
        self, operation: str = "transaction"
    ) -> AbstractAsyncContextManager[Connection]:
        """A write transaction, exclusive across every connection and controller: it
        commits when the block ends, and rolls back on any exception, cancellation
        included. ``operation``: its name in the metrics."""

    @abc.abstractmethod
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One write statement in its own transaction; returns the row count."""
        async with self.transaction("write") as conn:
            cur = await conn.execute(sql, params)
            return cur.rowcount

    async def write_one(self, sql: str, params: Params = ()) -> int:
        """One statement that is atomic by itself (a heartbeat, a lease's compare-and-
        set), where the database allows it without queueing behind the write lock: a
        long unit of work elsewhere must not make a live controller look dead. Returns
        the row count."""
        return await self.execute(sql, params)

    @abc.abstractmethod
    async def changes(self, topic: Topic) -> int:
        """A number that changes when ``topic``'s tables were changed by another connection
        (a CLI, another controller of the group) since it was last read: a cue for what
        keeps them in memory to reload (``auth/directory.py``, the service catalogue)."""

    @abc.abstractmethod
    async def ping(self) -> float:
        """Seconds to take and give back the write lock; :class:`StoreBusy` within about
        ``PING_TIMEOUT`` whatever holds it."""

    @abc.abstractmethod
    async def close(self) -> None: ...


async def open_database(settings: Settings) -> Database:
    """The database ``settings`` name, opened and migrated: PostgreSQL when
    ``O16N_DATABASE_URL`` is set, else SQLite in the data directory."""
    if settings.database_url is not None:
        from controller.store.postgres import PostgresDatabase

        return await PostgresDatabase.open(
            settings.database_url.get_secret_value(), pool_size=settings.database_pool_size
        )
    from controller.store.sqlite import SqliteDatabase

    return await SqliteDatabase.open(settings.db_path)


def split_sql(script: str) -> Iterable[str]:
    """Split a migration script into statements: at ``;``, except inside a ``$$`` body
    (PostgreSQL's functions); our scripts hold no ``;`` inside literals."""
    statement: list[str] = []
    quoted = False
    for part in script.split("$$"):
        if quoted:
            statement.append("$$" + part + "$$")
        else:
            pieces = part.split(";")
            statement.append(pieces[0])
            for piece in pieces[1:]:
                text = "".join(statement)
                if text.strip():
                    yield text
                statement = [piece]
        quoted = not quoted
    text = "".join(statement)
    if text.strip():
        yield text


#: The app's database.
DB = web.AppKey("db", Database)
