"""Process accounting for the benchmark, without psutil.

Linux only (``/proc/<pid>/stat``, ``/proc/<pid>/status``, ``sched_setaffinity``);
everywhere else each function returns None or False and the report shows a dash.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["busy_seconds", "cpu_count", "cpu_seconds", "memory_kib", "pin", "thread_count"]


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` (all its threads), in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14, 15
    except (IndexError, ValueError):
        return None


def busy_seconds() -> float | None:
    """CPU time the whole machine spent busy (every CPU, every process) since boot."""
    try:
        fields = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]
        ticks = os.sysconf("SC_CLK_TCK")
        values = [int(v) for v in fields]
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle and iowait
    return (sum(values[:8]) - idle) / ticks  # guest time is already in user


def memory_kib(pid: int, field: str = "VmRSS") -> int | None:
    """A memory figure of ``/proc/<pid>/status`` in KiB: VmRSS now, VmHWM the peak."""
    return _status_number(pid, field)


def thread_count(pid: int) -> int | None:
    """How many threads process ``pid`` has now (``Threads`` of ``/proc/<pid>/status``)."""
    return _status_number(pid, "Threads")


def _status_number(pid: int, field: str) -> int | None:
    try:
        lines = Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field + ":"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pin(pid: int, cpu: int) -> bool:
    """Keep process ``pid`` on one CPU; False where the system cannot."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        return False
    return True
