"""The `declic` command line: flows check, preview, and their exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from declic.settings import REPO_ROOT


def declic(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "declic", *args], capture_output=True, text=True, cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=120, check=False,
    )


def test_flows_check_passes_on_the_catalogue() -> None:
    """`declic flows check` exits 0 and lists every shipped flow."""
    result = declic("flows", "check")
    assert result.returncode == 0, result.stderr
    assert "password_reset" in result.stdout and "no problems" in result.stdout


def test_flows_check_fails_naming_file_and_field(tmp_path: Path) -> None:
    """A broken flow makes `declic flows check` exit 1 with the file and the field in the message."""
    good = yaml.safe_load((REPO_ROOT / "flows/catalogue/welcome.yaml").read_text())
    (tmp_path / "welcome.yaml").write_text(yaml.safe_dump({**good, "category": "urgent"}))
    (tmp_path / "broken.yaml").write_text("name: broken\ncategory: critical\n")
    result = declic("flows", "check", "--flows-dir", str(tmp_path))
    assert result.returncode == 1
    assert "welcome.yaml: category" in result.stderr
    assert "broken.yaml: trigger" in result.stderr


def test_preview_writes_html(tmp_path: Path) -> None:
    """`declic preview` renders a flow in the asked locale into an HTML file."""
    target = tmp_path / "reset.html"
    result = declic("preview", "password_reset", "--locale", "fr", "--out", str(target))
    assert result.returncode == 0, result.stderr
    html = target.read_text()
    assert "<html" in html and 'lang="fr"' in html


def test_preview_of_an_unknown_flow_says_which_exist() -> None:
    """Asking for a flow that does not exist lists the known ones."""
    result = declic("preview", "no_such_flow")
    assert result.returncode == 2 and "password_reset" in result.stderr
