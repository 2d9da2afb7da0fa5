"""Read-only access to a deployment's Airflow metadata DB, SQLite or PostgreSQL, with one query syntax.

Tests write their SQL once, with ``?`` placeholders (SQLite's), and read plain values: on PostgreSQL
the placeholders become ``%s``, JSON columns come back as their JSON text (psycopg2 would decode them)
and ``bytea`` as ``bytes``, as SQLite returns them. Timestamps stay each driver's own (text on SQLite,
``datetime`` on PostgreSQL); compare them only with values read from the same database.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: The metadata tables a secret could leak into.
SCANNED_TABLES = (
    "xcom",
    "trigger",
    "rendered_task_instance_fields",
    "task_instance",
    "task_instance_history",
    "dag_run",
    "log",
    "import_error",
    "connection",
    "variable",
)


class SqliteDatabase:
    """The metadata DB of the SQLite harness: a file, read through short-lived read-only connections."""

    dialect = "sqlite"
    #: What a failed query raises (a sampler swallows these and samples again).
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def sqlalchemy_url(self) -> str:
        return f"sqlite:///{self.path}"

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (retried while the DB is locked or not migrated yet)."""
        return query_db(self.path, sql, params)

    def close(self) -> None:
        """Nothing held open."""


class PostgresDatabase:
    """The metadata DB of the production-shaped harness: PostgreSQL, one autocommit connection per thread."""

    dialect = "postgresql"

    def __init__(self, host: str, port: int, user: str, dbname: str) -> None:
        import psycopg2
        import psycopg2.extras

        self.host, self.port, self.user, self.dbname = host, port, user, dbname
        self.errors: tuple[type[BaseException], ...] = (psycopg2.Error,)
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    @property
    def sqlalchemy_url(self) -> str:
        # psycopg2 named explicitly: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3.
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def _connection(self) -> Any:
        import psycopg2

        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(
                host=self.host, port=self.port, user=self.user, dbname=self.dbname, connect_timeout=5
            )
            conn.autocommit = True  # every read sees the latest commit; no transaction left open
            # JSON columns as their text, as SQLite hands them back (a JSON string stays '"..."').
            psycopg2.extras.register_default_json(conn, loads=lambda text: text)
            psycopg2.extras.register_default_jsonb(conn, loads=lambda text: text)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query written with ``?`` placeholders; values as SQLite would hand them back."""
        import psycopg2

        text = sql.replace("%", "%%").replace("?", "%s")
        for attempt in range(3):
            try:
                with self._connection().cursor() as cursor:
                    cursor.execute(text, tuple(params))
                    rows = cursor.fetchall() if cursor.description else []
                return [tuple(_plain(v) for v in row) for row in rows]
            except psycopg2.errors.UndefinedTable:
                return []  # not migrated yet, as query_db answers for SQLite
            except psycopg2.OperationalError:
                self._local.conn = None  # a dropped connection: open another
                if attempt == 2:
                    raise
                time.sleep(0.2)
        return []

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all.clear()


def _plain(value: Any) -> Any:
    if isinstance(value, memoryview):
        return value.tobytes()
    return value


def query_db(db_path: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Run a read-only query on a SQLite DB (a short-lived connection; retried when locked)."""
    if not db_path.exists():
        return []
    for attempt in range(20):
        try:
            conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
            try:
                return conn.execute(sql, tuple(params)).fetchall()
            finally:
                conn.close()
        except sqlite3.OperationalError as error:
            if ("locked" not in str(error) and "no such table" not in str(error)) or attempt == 19:
                raise
            time.sleep(0.1)
    return []


#: Tables scanned without a column: a stored connection's ``password`` is where its key belongs (readable here:
#: the deployments run without a Fernet key); every other column, ``extra`` included, is scanned.
SCAN_QUERIES = {
    "connection": "SELECT conn_id, conn_type, description, host, schema, login, port, extra FROM connection",
}


def db_dump_text(
    database: SqliteDatabase | PostgresDatabase | Path, sampled_trigger_rows: Mapping[Any, str] | None = None
) -> str:
    """Text of the tables a secret could leak into (:data:`SCANNED_TABLES`), one line per row.

    Trigger rows are deleted when their task resumes, so the rows a sampler saw are included too
    (``trigger (sampled)``). The deployments run without a Fernet key, so trigger kwargs and
    connections are stored readable and the scan sees what they really hold. Scanned with
    ``tests.support.logs.find_leaks``; tests/chaos/test_secret_scans.py plants a key to prove it is found.
    """
    db = SqliteDatabase(database) if isinstance(database, Path) else database
    sampled = sorted((sampled_trigger_rows or {}).items())
    parts = [f"trigger (sampled): {tid[0] if isinstance(tid, tuple) else tid} | {text}" for tid, text in sampled]
    for table in SCANNED_TABLES:
        with contextlib.suppress(*db.errors):
            for row in db.query(SCAN_QUERIES.get(table, f"SELECT * FROM {table}")):
                parts.append(f"{table}: " + " | ".join(text_of(v) for v in row))
    return "\n".join(parts)


def text_of(value: Any) -> str:
    """A DB value as text (bytes decoded)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
