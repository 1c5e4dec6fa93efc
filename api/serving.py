"""A real ``uvicorn`` API process, for the end-to-end tests and the benchmark."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from declic.processes import ManagedProcess, ProcessStartError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ApiProcess(ManagedProcess):
    """``python -m api api --host 127.0.0.1 --port P`` (the command ``declic api`` runs).

    Ready when ``/openapi.json`` answers — not ``/healthz``, which may rightly say 503.
    """

    def __init__(self, env: Mapping[str, str], log_path: Path, *, port: int | None = None,
                 workers: int = 1, argv: Sequence[str] | None = None, name: str = "api") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = list(argv) if argv else [
            sys.executable, "-m", "api", "api", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(workers),
        ]
        super().__init__(command, env, log_path, ready_line=None, name=name)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise ProcessStartError(f"{self.name} exited ({self.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/openapi.json", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ProcessStartError(f"{self.name} not ready after {timeout:g} s:\n{self.log_tail()}")
