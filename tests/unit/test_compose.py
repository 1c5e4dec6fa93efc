"""docker-compose.yml is a valid Compose file with every service the design names."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from declic.settings import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
EXPECTED_SERVICES = {
    "redis", "postgres", "moto", "aws-init", "migrate",
    "worker-events", "worker-send", "beat", "dispatcher", "api",
}  # fmt: skip


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail("docker-compose is not installed; `make test` installs it (make tools)")
    return subprocess.run(
        [executable, "-f", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_is_valid() -> None:
    """`docker-compose config -q` accepts the file."""
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_file_has_every_service() -> None:
    """The file defines Redis, Postgres, moto, the AWS setup, migrations, workers, beat and API."""
    result = _compose("config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == EXPECTED_SERVICES
