"""Where a benchmark's CPU went: processes' CPU seconds read from /proc (Linux).

On two shared cores a rate is bounded by the CPU every participant spends per
operation, the database's and the load generator's included; the benches print
these figures beside their rates so that a reader can see which share moved.
Everywhere ``/proc`` is missing the figures are 0.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    try:
        text = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    name, _, rest = text.rpartition(")")
    return name.partition("(")[2], rest.split()


def _seconds(fields: list[str], *, reaped: bool = False) -> float:
    # utime and stime: the 14th and 15th fields, the 12th and 13th after the name;
    # then cutime and cstime, the CPU of children waited for.
    used = int(fields[11]) + int(fields[12])
    if reaped:
        used += int(fields[13]) + int(fields[14])
    return used / _TICKS


def postgres_seconds() -> float:
    """CPU of every process named ``postgres`` on this machine (server, backends,
    background workers), and of the backends that have ended: the server has
    waited for them, so their CPU is its children's."""
    total = 0.0
    for entry in Path("/proc").glob("[0-9]*"):
        found = _stat(entry.name)
        if found is not None and found[0] == "postgres":
            total += _seconds(found[1], reaped=True)
    return total


def tree_seconds(root: int) -> float:
    """CPU of a live process and of its live descendants (a server's workers)."""
    children: dict[int, list[int]] = {}
    spent: dict[int, float] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        found = _stat(entry.name)
        if found is None:
            continue
        pid = int(entry.name)
        children.setdefault(int(found[1][1]), []).append(pid)
        spent[pid] = _seconds(found[1])
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        total += spent.get(pid, 0.0)
        pending.extend(children.get(pid, ()))
    return total
