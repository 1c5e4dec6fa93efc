"""The fault run's results: one row per scenario, printed as a table and written to ``out/faults.json``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from tests.faults.harness import Result


class Results:
    """Collects each scenario's :class:`Result`, one row per scenario and broker; one run again replaces its row."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Result] = {}

    def add(self, result: Result) -> None:
        self.rows[(result.scenario, result.broker)] = result

    def table(self) -> str:
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
