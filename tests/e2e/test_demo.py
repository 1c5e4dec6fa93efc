"""`declic demo` end to end, as `make demo` runs it on a fresh machine (embedded services)."""

from __future__ import annotations

import email
import os
import subprocess
import sys
from email import policy
from pathlib import Path

import pytest

from declic.settings import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_demo_sends_every_flow_and_writes_the_report(tmp_path: Path) -> None:
    """The demo exits 0, writes an .eml and .html per email, and an HTML report from SQS notifications."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECLIC_")}  # embedded services
    result = subprocess.run(
        [sys.executable, "-m", "declic", "demo", "--out", str(tmp_path)], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all 17 catalogue flows reached the SES stand-in" in result.stdout
    assert "received through SQS" in result.stdout
    assert "quiet hours: waits until" in result.stdout  # the night owl's onboarding
    emls = sorted(tmp_path.glob("*.eml"))
    assert len(emls) >= 17 and len(list(tmp_path.glob("*.html"))) >= len(emls)
    invoice = email.message_from_bytes(next(tmp_path.glob("invoice.*.eml")).read_bytes(), policy=policy.default)
    assert [a.get_content_type() for a in invoice.iter_attachments()] == ["application/pdf"]
    report = (tmp_path / "report.html").read_text()
    assert "<svg" in report and "password_reset" in report
    assert not (tmp_path / ".services").exists() or not any((tmp_path / ".services").iterdir())
