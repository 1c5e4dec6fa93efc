"""The store's connection pool: a connection whose session Postgres ended is never handed out."""

from __future__ import annotations

import psycopg

from declic.services import Services
from workers.store import Store


def _backend_pid(store: Store) -> int:
    with store.pool.connection() as conn:
        row = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
    assert row is not None
    return int(row["pid"])


def test_a_terminated_session_is_replaced_not_handed_out(services: Services) -> None:
    """After Postgres ends the pooled idle connection's session, the next checkout works on a new one."""
    store = Store.connect(services.database_url, max_size=1)
    try:
        pid = _backend_pid(store)
        with psycopg.connect(services.database_url, autocommit=True) as admin:
            # With a timeout, pg_terminate_backend returns once the session is gone.
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        assert _backend_pid(store) != pid
    finally:
        store.close()


def test_writes_of_one_statement_commit_on_their_own(store: Store) -> None:
    """Autocommit pool: a statement run through _statement is visible to another connection at once."""
    with store._statement() as conn:
        conn.execute("INSERT INTO dead_letters (kind, ref, reason) VALUES ('send', 'x', 'test')")
    with store.pool.connection() as conn:
        row = conn.execute("SELECT count(*) AS n FROM dead_letters WHERE ref = 'x'").fetchone()
    assert row is not None and row["n"] == 1
