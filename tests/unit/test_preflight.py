"""A worker refuses to start on a setting no retry can fix, naming what to set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from declic.settings import REPO_ROOT, Settings
from workers.app import EX_CONFIG
from workers.runtime import preflight

GOOD_KEY = "a-long-random-secret-for-tests"


@pytest.fixture
def aws_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No region, no credentials, no config files, no instance metadata to ask."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def test_a_configured_worker_may_start(aws_unset: pytest.MonkeyPatch) -> None:
    aws_unset.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    aws_unset.setenv("AWS_ACCESS_KEY_ID", "testing")
    aws_unset.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert preflight(Settings(secret_key=GOOD_KEY)) == []


def test_every_missing_setting_is_named_with_what_to_set(aws_unset: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key, no region, an empty catalogue folder and no templates: four problems, each actionable."""
    problems = preflight(Settings(secret_key=None, flows_dir=tmp_path / "flows", templates_dir=tmp_path / "tpl"))
    assert len(problems) == 4, problems
    key, catalogue, templates, ses = problems
    assert key.startswith("DECLIC_SECRET_KEY is not set")
    assert "DECLIC_FLOWS_DIR" in catalogue and "no such directory" in catalogue
    assert "DECLIC_TEMPLATES_DIR" in templates
    assert "region" in ses and "AWS_DEFAULT_REGION" in ses


def test_missing_credentials_are_named(aws_unset: pytest.MonkeyPatch) -> None:
    aws_unset.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    [problem] = preflight(Settings(secret_key=GOOD_KEY))
    assert problem.startswith("no AWS credentials found") and "AWS_ACCESS_KEY_ID" in problem


def test_the_worker_process_exits_with_a_configuration_error(tmp_path: Path) -> None:
    """`celery worker` stops before consuming anything, exit status 78, the problems in its log;
    the secret's value never appears."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DECLIC_"))}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               DECLIC_SECRET_KEY="short", DECLIC_LOG_FORMAT="json",
               # A broker nobody listens on: the worker must stop before it ever connects.
               DECLIC_BROKER_URL="redis://127.0.0.1:9/0")
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "threads", "-c", "1",
         "--without-gossip", "--without-mingle", "-l", "INFO"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == EX_CONFIG, output[-3000:]
    [line] = [x for x in output.splitlines() if "worker_cannot_start" in x]
    assert "DECLIC_SECRET_KEY" in line and "AWS_DEFAULT_REGION" in line
    assert '"short"' not in line
