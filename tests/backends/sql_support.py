"""Helpers of the SQL backends' own tests: the database behind a spec, reached directly, as another program would."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from backend_contract import BackendSpec

from offload.backends.sqlite import database_path

#: The SQL backends these tests run against (their spec fixtures are in conftest.py).
SQL_BACKENDS = ["sqlite", "postgres"]


class Raw:
    """Plain SQL on the database of ``spec``; statements use ``?`` placeholders on both engines."""

    def __init__(self, spec: BackendSpec) -> None:
        assert spec.cache_url is not None
        self.engine = spec.name
        self.conn: Any
        if spec.name == "sqlite":
            self.conn = sqlite3.connect(database_path(spec.cache_url), isolation_level=None, timeout=10)
            return
        import psycopg
        from psycopg import sql

        from offload.backends.postgres import PostgresDatabase

        database = PostgresDatabase(spec.cache_url)
        self.conn = psycopg.connect(database.conninfo, autocommit=True)
        if database.schema:
            self.conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(database.schema)))
            self.conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(database.schema)))

    def run(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.engine != "sqlite":
            statement = statement.replace("?", "%s")
        cursor = self.conn.execute(statement, params)
        return list(cursor.fetchall()) if cursor.description else []

    def script(self, statements: str) -> None:
        for statement in statements.split(";"):
            if statement.strip():
                self.run(statement)

    def close(self) -> None:
        self.conn.close()


def open_at_and_drain(spec: BackendSpec, moment: float) -> list[str]:
    """From a process of its own: open the queue at ``moment`` (Unix time), then claim and ack until none is left."""
    time.sleep(max(0.0, moment - time.time()))
    queue = spec.open_queue()
    keys = []
    while (claim := queue.claim(lease=60, wait=0.5)) is not None:
        keys.append(claim.key)
        queue.ack(claim)
    queue.close()
    return keys
