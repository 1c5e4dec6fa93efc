"""API keys: made with :mod:`secrets`, shown once, stored only as a SHA-256 hash.

A key looks like ``dk_3hVx…`` (``dk_`` then 43 URL-safe characters: 256 random bits). Why a
plain, fast SHA-256 rather than bcrypt or argon2: slow hashes exist to make guessing *low
entropy* passwords expensive; a 256-bit random key cannot be guessed however fast the hash
is, and a fast hash lets every request be checked in microseconds and looked up by an index.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

SCOPES = ("events:write", "integrations")
"""``events:write`` may post events; ``integrations`` may list integrations and preview mappings."""

KEY_PREFIX = "dk_"
_SHOWN_PREFIX_CHARS = 10


class KeyError_(ValueError):
    """A key could not be created or revoked as asked (bad scope, unknown key)."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, never with its secret."""

    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    rate_per_minute: int | None
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def new_key() -> str:
    """A fresh key: 32 random bytes from the OS, URL-safe, with a recognisable prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Hex SHA-256 of the key, as stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Compare two hashes in constant time, so timing says nothing about how much matched."""
    return hmac.compare_digest(a.encode(), b.encode())


def check_scopes(scopes: list[str]) -> tuple[str, ...]:
    """The scopes, each known, deduplicated; raises :class:`KeyError_` naming a bad one."""
    if not scopes:
        raise KeyError_(f"give at least one scope: {', '.join(SCOPES)}")
    for scope in scopes:
        if scope not in SCOPES:
            raise KeyError_(f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")
    return tuple(dict.fromkeys(scopes))


def _row_key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"], name=row["name"], prefix=row["prefix"], scopes=tuple(row["scopes"]),
        rate_per_minute=row["rate_per_minute"], created_at=row["created_at"], revoked_at=row["revoked_at"],
    )


_COLUMNS = "id, name, prefix, scopes, rate_per_minute, created_at, revoked_at"


Pool = ConnectionPool[psycopg.Connection[dict[str, Any]]]


def open_pool(database_url: str, *, max_size: int = 4, timeout_s: float = 5.0) -> Pool:
    """A small autocommit pool; it opens lazily, so a process starts even with Postgres down."""
    return ConnectionPool(
        database_url, min_size=0, max_size=max_size, timeout=timeout_s, open=True,
        kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": int(max(1, timeout_s))},
        check=ConnectionPool.check_connection,
    )


class KeyStore:
    """The ``api_keys`` table, through a connection pool shared with the health check."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with self.pool.connection() as conn:
            yield conn

    def create(self, name: str, scopes: list[str], rate_per_minute: int | None = None) -> tuple[str, ApiKey]:
        """Store a new key; return the key itself (shown once) and its record."""
        checked = check_scopes(scopes)
        if not name.strip():
            raise KeyError_("give the key a name")
        if rate_per_minute is not None and rate_per_minute < 1:
            raise KeyError_("the rate must be at least 1 request a minute")
        key = new_key()
        with self._connect() as conn:
            row = conn.execute(
                f"INSERT INTO api_keys (name, prefix, key_hash, scopes, rate_per_minute)"
                f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (name.strip(), key[:_SHOWN_PREFIX_CHARS], hash_key(key), list(checked), rate_per_minute),
            ).fetchone()
        assert row is not None
        return key, _row_key(row)

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY id").fetchall()
        return [_row_key(r) for r in rows]

    def revoke(self, ref: str) -> ApiKey:
        """Revoke by id, by the shown prefix or by the key itself; raises when nothing matched."""
        with self._connect() as conn:
            rows = conn.execute(
                f"UPDATE api_keys SET revoked_at = now() WHERE revoked_at IS NULL AND"
                f" (id::text = %s OR prefix = %s OR key_hash = %s) RETURNING {_COLUMNS}",
                (ref, ref, hash_key(ref)),
            ).fetchall()
        if not rows:
            raise KeyError_(f"no active key matches {ref!r}")
        if len(rows) > 1:  # pragma: no cover - prefixes carry 40+ random bits
            raise KeyError_(f"{ref!r} matched several keys; revoke by id")
        return _row_key(rows[0])

    def find(self, key: str) -> ApiKey | None:
        """The active key with this secret, or None (unknown or revoked)."""
        digest = hash_key(key)
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
                (digest,),
            ).fetchone()
        # The index lookup already matched; comparing again in constant time keeps the check
        # honest should the lookup ever become a prefix or range query.
        if row is None or not same_hash(row["key_hash"], digest):
            return None
        return _row_key(row)
