"""How many cores a run may use: those it is allowed on (affinity) that no other process keeps busy.

torch's default of one thread per core is right on an idle machine and bad on a shared one: its
threads meet at a barrier after every operation, so one thread that competes with another busy
process holds back the rest (measured on 2 cores beside one busy process: an epoch 3x as long with
2 threads, 1.4x with 1). A short look at /proc/stat before training tells which cores are free.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SAMPLE_SECONDS = 0.1
BUSY = 0.5  # a core busy more than half of the sample is taken


def cpu_times(stat: str) -> dict[int, tuple[int, int]]:
    """{cpu: (idle ticks, total ticks)} from the text of /proc/stat (idle includes iowait)."""
    times = {}
    for line in stat.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(f) for f in fields[:8]]
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return times


def free_cores(sample_seconds: float = SAMPLE_SECONDS, stat_file: Path = Path("/proc/stat")) -> int:
    """Cores of this process's affinity that were idle at least half of a short sample (at least 1)."""
    allowed = os.sched_getaffinity(0)
    try:
        before = cpu_times(stat_file.read_text())
        time.sleep(sample_seconds)
        after = cpu_times(stat_file.read_text())
    except OSError:  # no /proc (not Linux): every allowed core
        return len(allowed)
    free = 0
    for cpu in allowed:
        if cpu in before and cpu in after:
            idle, total = (a - b for a, b in zip(after[cpu], before[cpu]))
            free += total <= 0 or idle / total >= 1 - BUSY
    return max(1, free)
