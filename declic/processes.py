"""Real child processes for the demo and the end-to-end tests: Celery workers, beat, the API.

:class:`ManagedProcess` starts a command with its output in a log file, waits for the line
that says it is ready, and stops it — politely (SIGTERM, then SIGKILL after a grace period) or
abruptly (:meth:`ManagedProcess.kill`, for tests that kill a worker mid-task).
:class:`WorkerProcess` is a ``celery worker`` for given queues; :func:`workers` starts several
at once and stops them all on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from declic.settings import REPO_ROOT

TAIL_LINES = 40


class ProcessStartError(RuntimeError):
    """A child process exited, or did not say it was ready in time; the message has its log."""


class ManagedProcess:
    """One child process with its stdout and stderr in ``log_path``.

    ``env`` is added to this process's environment. The child leads its own process group,
    so :meth:`kill` also takes down whatever it forked (a prefork pool's children).
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        ready_line: str | None = None,
        cwd: Path = REPO_ROOT,
        name: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.ready_line = ready_line
        self.cwd = cwd
        self.name = name or Path(self.argv[0]).name
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        # Where this run's output starts, so a reused log's old "ready" line is not taken.
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has exited, else ``None``."""
        return self._process.poll() if self._process else None

    def is_running(self) -> bool:
        """Whether the child was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Spawn the child; returns at once (see :meth:`wait_ready`)."""
        if self._process is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._log_offset = self._log_file.tell()
        # Unbuffered so the ready line (and a crash's traceback) reach the log at once.
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until ``ready_line`` appears in this run's log; raise with the log if not."""
        if self._process is None:
            raise RuntimeError(f"{self.name} was not started")
        if self.ready_line is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            if self.ready_line in self._output():
                return
            if self._process.poll() is not None:
                raise ProcessStartError(
                    f"{self.name} exited with status {self._process.returncode} before it was "
                    f"ready; last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ProcessStartError(
                    f"{self.name} not ready after {timeout:g} s (waiting for "
                    f"{self.ready_line!r}); last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (a Celery warm shutdown), then SIGKILL the group after ``timeout`` seconds."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
        self._reap_group()
        self._close_log()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the child and its group at once, as a crash or an OOM kill would."""
        if self._process is None:
            return
        self._kill_group()
        self._close_log()

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines this run wrote to its log."""
        return "\n".join(self._output().splitlines()[-lines:])

    def _output(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _kill_group(self) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()

    def _reap_group(self) -> None:
        # The leader exited; children it left behind (a pool killed mid-task) go too.
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        """Start and wait until ready; stopped on exit."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class WorkerProcess(ManagedProcess):
    """A ``celery -A workers.app worker`` consuming ``queues``, started from the repo root."""

    def __init__(
        self,
        env: Mapping[str, str],
        queues: Sequence[str],
        *,
        concurrency: int = 4,
        pool: str = "threads",
        name: str = "w1",
        log_path: Path,
    ) -> None:
        self.queues = list(queues)
        argv = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-Q", ",".join(self.queues),
            "--pool", pool,
            "--concurrency", str(concurrency),
            "--hostname", f"{name}@%h",
            # Faster start and no chatter between test workers; nothing here relies on them.
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "INFO",
        ]  # fmt: skip
        # Celery logs "<name>@<host> ready." once it consumes.
        super().__init__(argv, env, log_path, ready_line=" ready.", cwd=REPO_ROOT, name=name)


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker of :func:`workers` consumes and how."""

    name: str
    queues: Sequence[str]
    concurrency: int = 4
    pool: str = "threads"


@contextlib.contextmanager
def workers(
    env: Mapping[str, str],
    log_dir: Path,
    specs: Iterable[WorkerSpec],
    *,
    ready_timeout: float = 60.0,
) -> Iterator[list[WorkerProcess]]:
    """Start one worker per spec (logs in ``log_dir/<name>.log``), all ready; stop all on exit."""
    with contextlib.ExitStack() as stack:
        started: list[WorkerProcess] = []
        for spec in specs:
            worker = WorkerProcess(
                env,
                spec.queues,
                concurrency=spec.concurrency,
                pool=spec.pool,
                name=spec.name,
                log_path=log_dir / f"{spec.name}.log",
            )
            worker.start()
            stack.callback(worker.stop)
            started.append(worker)
        # Started together, waited for together: startup costs one worker's time, not n.
        for worker in started:
            worker.wait_ready(ready_timeout)
        yield started
