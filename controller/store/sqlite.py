"""The embedded store: one SQLite connection, its pragmas, the write lock and migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from controller.errors import STORE_RETRY_AFTER, StoreBusy, translate
from controller.metrics.definitions import db_child
from controller.store.db import (
    BUSY_TIMEOUT,
    PING_TIMEOUT,
    Connection,
    Cursor,
    Database,
    DuplicateKey,
    Params,
    Row,
    Topic,
    split_sql,
)
from controller.store.schema import MIGRATIONS

log = logging.getLogger(__name__)

#: SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
_DUPLICATE = (1555, 2067)


class _Connection:
    """aiosqlite's connection as the repositories' ``Connection``."""

    __slots__ = ("_conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> Cursor:
        return await self._conn.execute(sql, params)

    async def executemany(self, sql: str, params: Iterable[Params]) -> Cursor:
        return await self._conn.executemany(sql, params)


class SqliteDatabase(Database):
    """One aiosqlite connection in WAL mode.

    aiosqlite runs every statement on its own thread, so the event loop never waits on
    the disk. Statements from different coroutines would interleave on the one
    connection, so every unit of work takes ``self._lock``: ``transaction()`` for writes
    (``BEGIN IMMEDIATE`` … ``COMMIT``), ``fetch*`` for single reads.

    Waiting is bounded: for the lock, and (``busy_timeout``) for another process's write
    lock, each at most ``BUSY_TIMEOUT``; beyond it a caller gets :class:`StoreBusy` (503),
    and a full disk :class:`InsufficientStorage` (507), never a bare ``sqlite3`` error.
    """

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._connection = _Connection(conn)
        self.path = path
        self.where = str(path)
        self.name = path.name
        self._lock = asyncio.Lock()
        self._probe: aiosqlite.Connection | None = None
        self._ping: asyncio.Task[float] | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # hashes and tokens live here
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it is acknowledged (NORMAL could lose the last
        # publishes and snapshots to a power loss). About 0.1 ms a commit here; no request
        # path commits more than a few times, and consume commits nothing.
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        db = cls(conn, path)
        await db.migrate()
        return db

    async def close(self) -> None:
        if self._ping is not None:
            await asyncio.wait([self._ping])  # bounded by its busy timeout
        if self._probe is not None:
            await self._probe.close()
        async with self._lock:
            await self._conn.close()

    @asynccontextmanager
    async def _locked(self, operation: str) -> AsyncIterator[None]:
        """This connection, waited for at most ``BUSY_TIMEOUT`` (a unit of work stuck on
        another process's lock holds it that long); SQLite's errors translated. The unit,
        its wait included, is timed as ``operation`` (``o16n_db_call_duration_seconds``)."""
        start = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(BUSY_TIMEOUT):
                    await self._lock.acquire()
            except TimeoutError:
                raise StoreBusy(
                    "the database is busy; try again shortly", retry_after=STORE_RETRY_AFTER
                ) from None
            try:
                yield
            except sqlite3.IntegrityError as exc:
                if getattr(exc, "sqlite_errorcode", 0) in _DUPLICATE:
                    raise DuplicateKey(str(exc)) from exc
                raise
            except sqlite3.Error as exc:
                known = translate(exc)
                if known is None:
                    raise
                raise known from exc
            finally:
                self._lock.release()
        finally:
            db_child(operation).observe(time.perf_counter() - start)

    async def migrate(self) -> None:
        """Apply every migration newer than ``PRAGMA user_version``, each in its own transaction."""
        row = await self.fetchone("PRAGMA user_version")
        current = int(row[0]) if row else 0
        latest = len(MIGRATIONS)
        if current > latest:
            raise RuntimeError(
                f"database {self.path} has schema version {current}, newer than this "
                f"controller's {latest}; upgrade o16n"
            )
        for version in range(current + 1, latest + 1):
            log.info("applying schema migration", extra={"version": version})
            async with self.transaction() as conn:
                for statement in split_sql(MIGRATIONS[version - 1]):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {version}")

    @asynccontextmanager
    async def transaction(self, operation: str = "transaction") -> AsyncIterator[Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception, cancellation
        included (even one that lands while BEGIN is on its way, which would otherwise
        leave the connection inside a transaction)."""
        async with self._locked(operation):
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                yield self._connection
                await self._conn.execute("COMMIT")  # a failed COMMIT rolls back too
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # BEGIN itself may have failed
                    await self._conn.execute("ROLLBACK")
                raise

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._locked("read"):
            cur = await self._conn.execute(sql, params)
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._locked("read"):
            cur = await self._conn.execute(sql, params)
            return list(await cur.fetchall())

    async def changes(self, topic: Topic) -> int:
        """SQLite's ``data_version``, whatever the topic: it changes when *another*
        connection commits, to any table (a reload that was not needed costs little)."""
        row = await self.fetchone("PRAGMA data_version")
        return int(row[0]) if row else 0

    async def ping(self) -> float:
        """On a connection of its own, so it never queues behind this one; concurrent
        pings share one probe."""
        if self._ping is None or self._ping.done():
            self._ping = asyncio.create_task(self._write_probe(), name="db-ping")
            self._ping.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(self._ping), PING_TIMEOUT + 0.25)
        except TimeoutError:
            raise StoreBusy(
                f"the database did not answer within {PING_TIMEOUT + 0.25:.2f} s",
                retry_after=STORE_RETRY_AFTER,
            ) from None

    async def _write_probe(self) -> float:
        start = time.perf_counter()
        try:
            if self._probe is None:
                self._probe = await aiosqlite.connect(
                    self.path, isolation_level=None, timeout=PING_TIMEOUT
                )
            await self._probe.execute("BEGIN IMMEDIATE")  # a read would pass a held write lock
            await self._probe.execute("ROLLBACK")
        except sqlite3.Error as exc:
            known = translate(exc)
            if known is None:
                raise
            raise known from exc
        return time.perf_counter() - start
