"""Choosing torch's threads from the cores no other process keeps busy (/proc/stat sampled twice)."""

from __future__ import annotations

import os

from mlbasics import cores

HEADER = "cpu  0 0 0 0 0 0 0 0 0 0\n"


def stat(*cpus: tuple[int, int]) -> str:
    """/proc/stat text with (busy ticks, idle ticks) per cpu: user, nice, system, idle, iowait, irq, softirq, steal."""
    return HEADER + "".join(f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0\n" for i, (busy, idle) in enumerate(cpus))


def test_cpu_times_reads_idle_and_total_ticks():
    text = HEADER + "cpu0 10 1 2 100 5 0 3 0 0 0\nintr 123\n"
    assert cores.cpu_times(text) == {0: (105, 121)}


def test_a_core_busy_most_of_the_sample_is_left_alone(tmp_path, monkeypatch):
    stat_file = tmp_path / "stat"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    stat_file.write_text(stat((0, 0), (0, 0), (0, 0), (0, 0)))
    # cpu0 80 % busy, cpu1 20 % busy, cpu2 idle, cpu3 (not ours) busy
    monkeypatch.setattr(cores.time, "sleep", lambda s: stat_file.write_text(stat((80, 20), (20, 80), (0, 100),
                                                                                  (100, 0))))
    assert cores.free_cores(stat_file=stat_file) == 2
    monkeypatch.setattr(cores.time, "sleep", lambda s: stat_file.write_text(stat((90, 10), (95, 5), (99, 1))))
    stat_file.write_text(stat((0, 0), (0, 0), (0, 0)))
    assert cores.free_cores(stat_file=stat_file) == 1  # never fewer than one


def test_without_proc_stat_every_allowed_core_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert cores.free_cores(stat_file=tmp_path / "missing") == 4
