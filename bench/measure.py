"""CPU and peak memory of process trees (from ``/proc``), and latency percentiles.

Linux only, like the benchmark itself: ``/proc/<pid>/stat`` gives user and system CPU in clock
ticks, ``/proc/<pid>/status`` the peak resident set (``VmHWM``) of each process, so a peak
between two samples is not missed. A tree is a worker and what it forked (a prefork pool).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may hold spaces: split after the last ")".
    return text[text.rindex(")") + 2:].split()


def tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def pids_running(*needles: str) -> list[int]:
    """Processes whose command line holds every one of ``needles`` (a program, a directory, a port)."""
    found = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if all(needle in command for needle in needles):
                found.append(int(entry.name))
    return found


def cpu_seconds(roots: Iterable[int]) -> float:
    """User plus system CPU of the trees under ``roots``, including children already reaped."""
    total = 0
    for root in roots:
        for pid in tree(root):
            fields = _stat(pid)
            if fields is None:
                continue
            # utime, stime, cutime, cstime are fields 14-17 of stat(5); index 11-14 after the name.
            total += sum(int(v) for v in fields[11:15])
    return total / _TICK


def peak_rss_mb(roots: Iterable[int]) -> float:
    """The sum over the trees' processes of each one's peak resident set, in MiB."""
    total_kb = 0
    for root in roots:
        for pid in tree(root):
            try:
                status = (_PROC / str(pid) / "status").read_text()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0-100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
