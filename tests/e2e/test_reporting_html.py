"""The HTML report opened in headless Chromium: the screenshot shows a chart per flow."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from declic.services import Services
from declic.settings import REPO_ROOT
from reporting.aggregate import aggregate
from reporting.db import Pool
from reporting.html import COLOUR_CLICKS, COLOUR_HUMAN, COLOUR_RAW, COLOUR_SENT, render_report
from reporting.ingest import Received, ingest
from reporting.insights import recent
from reporting.simulator import Behaviour, history, notifications
from reporting.testing import RESET_REPORTING
from reporting.trend import trend_rows
from workers.store import Store

pytestmark = pytest.mark.e2e

FLOWS = {"order_confirmation": ("a",), "welcome": ("a", "b")}


@pytest.fixture
def report_data(pool: Pool, store: Store) -> Pool:
    """Five weeks of simulated engagement for two flows, ingested and aggregated."""
    with pool.connection() as conn:
        conn.execute(RESET_REPORTING)
    messages = history(FLOWS, days=35, per_day=12, end=datetime.now(UTC), seed=2)
    bodies = notifications(messages, behaviour=Behaviour(open_by_flow={"welcome": 0.6}))
    for start in range(0, len(bodies), 500):
        ingest(pool, [Received(b) for b in bodies[start:start + 500]], "test")
    aggregate(pool)
    return pool


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed, and this test needs it to look at the HTML report: "
                    "run `make tools` (or `sudo apt-get install chromium`)")
    return path


def screenshot(html: Path, png: Path) -> Image.Image:
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1280,2600", f"--screenshot={png}", html.as_uri()],
        check=True, capture_output=True, timeout=120, env={**os.environ, "HOME": str(png.parent)},
    )
    return Image.open(png).convert("RGB")


def pixels_near(image: Image.Image, colour: str, tolerance: int = 24) -> int:
    target = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    colours: list[tuple[int, tuple[int, int, int]]] = image.getcolors(maxcolors=1 << 24) or []  # type: ignore[assignment]
    return sum(
        count for count, rgb in colours
        if all(abs(c - t) <= tolerance for c, t in zip(rgb, target, strict=True))
    )


def test_the_report_shows_a_chart_per_flow(report_data: Pool, tmp_path: Path) -> None:
    """One self-contained file; in Chromium its charts draw the volume bars and the three rate lines."""
    with report_data.connection() as conn:
        rows = trend_rows(conn, days=35)
        insights = recent(conn)
    document = render_report(rows, insights, datetime.now(UTC))
    assert document.count("<svg") == len(FLOWS)
    # Self-contained: nothing for the browser to fetch.
    assert not re.search(r"""(src|href)=["']?(https?:)?//|<link|<script|url\((?!#)""", document)
    page = tmp_path / "report.html"
    page.write_text(document, encoding="utf-8")
    image = screenshot(page, tmp_path / "report.png")
    assert pixels_near(image, COLOUR_SENT) > 2000, "no volume bars drawn"
    for colour in (COLOUR_HUMAN, COLOUR_RAW, COLOUR_CLICKS):
        assert pixels_near(image, colour) > 300, f"no {colour} rate line drawn"


def test_declic_report_html_writes_the_file(report_data: Pool, services: Services, tmp_path: Path) -> None:
    """`declic report html --out FILE` and `declic report trend` work from the command line."""
    from typer import Typer
    from typer.testing import CliRunner

    from reporting.cli import register

    app = Typer()
    register(app)
    env = {"DECLIC_DATABASE_URL": services.database_url}
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", "html", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert out.read_text().count("<svg") == len(FLOWS)
    trend = subprocess.run(
        [sys.executable, "-c", "import typer; from reporting.cli import register; app = typer.Typer();"
         " register(app); app()", "report", "trend", "--flow", "welcome", "--days", "3"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False,
        env={**os.environ, **env, "COLUMNS": "200"},
    )
    assert trend.returncode == 0, trend.stderr
    assert "welcome" in trend.stdout and "opens 7d human" in trend.stdout
