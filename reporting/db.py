"""The reporting side's Postgres pool: dict rows, checked connections, a bounded wait."""

from __future__ import annotations

from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

Row = dict[str, Any]
Pool = ConnectionPool[Connection[Row]]


def connect_pool(database_url: str, *, max_size: int = 4) -> Pool:
    """A pool like the pipeline's (:meth:`workers.store.Store.connect`), for reporting work."""
    pool: Pool = ConnectionPool(
        database_url, min_size=1, max_size=max_size, kwargs={"row_factory": dict_row},
        check=ConnectionPool.check_connection, timeout=30, open=True,
    )
    return pool
