"""The fault run's results: one row per scenario, printed as a table and written to ``out/faults.json``.

A scenario hands its :class:`Result` to :class:`Results`, which attaches it to the test's
report; this module, a pytest plugin of the whole suite (``tests/conftest.py``), gathers the
reports and prints the table. Reports are what ``pytest -n`` carries from the test processes
to the one that prints, so the table is whole however the scenarios were spread.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from declic.settings import REPO_ROOT
from tests.faults.harness import Result

OUT = REPO_ROOT / "out" / "faults.json"
_PROPERTY = "fault_scenario"


class Results:
    """A scenario test's way to report its figures: ``results.add(result)``."""

    def __init__(self, node: pytest.Item) -> None:
        self._node = node

    def add(self, result: Result) -> None:
        self._node.user_properties.append((_PROPERTY, json.dumps(asdict(result), default=str)))


class Table:
    """Each scenario's :class:`Result`, one row per scenario and broker; one run again replaces its row."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Result] = {}

    def add(self, result: Result) -> None:
        self.rows[(result.scenario, result.broker)] = result

    def text(self) -> str:
        header = ["scenario", "broker", "events", "emails", "lost", "duplicated", "recover (s)", "time (s)"]
        lines = [[r.scenario, r.broker, str(r.events), str(r.emails), str(r.lost), str(r.duplicated),
                  "-" if r.recover_s is None else f"{r.recover_s:.1f}", f"{r.elapsed_s:.1f}"]
                 for r in self.rows.values()]
        widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
        out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        out += [fmt.format(*line) for line in lines]
        for r in self.rows.values():
            if r.notes:
                out.append(f"  {r.scenario} ({r.broker}): " + ", ".join(f"{k}={v}" for k, v in r.notes.items()))
        return "\n".join(out)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "scenarios": [asdict(r) for r in self.rows.values()]}
        path.write_text(json.dumps(body, indent=2, default=str) + "\n")


TABLE = Table()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        for name, value in report.user_properties:
            if name == _PROPERTY:
                TABLE.add(Result(**json.loads(value)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if not TABLE.rows or hasattr(config, "workerinput"):  # printed by the controlling process only
        return
    TABLE.write(OUT)
    terminalreporter.section("fault harness")
    terminalreporter.write_line(TABLE.text())
    terminalreporter.write_line(f"(written to {OUT.relative_to(REPO_ROOT)})")
