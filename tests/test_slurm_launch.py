"""The SLURM launcher's wait and array size, without a cluster (squeue and scontrol answered by fakes)."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlbasics import slurm_launch


@dataclass
class Paths:
    result_pickle: Path


@dataclass
class FakeJob:
    job_id: str
    paths: Paths


def test_the_wait_ends_for_results_and_for_jobs_gone_from_the_queue(tmp_path, monkeypatch, caplog):
    finished, cancelled, requeued = (FakeJob(f"7_{i}", Paths(tmp_path / f"{i}_result.pkl")) for i in range(3))
    # what squeue lists at each poll: 7_1 is cancelled after the first; 7_2 vanishes for one poll (a requeue)
    listings = iter([{"7_0", "7_1", "7_2"}, {"7_0", "7_2"}, {"7_0"}, {"7_0", "7_2"}, {"7_2"}, {"7_2"}, set()])
    polls = []

    def squeue():
        listing = next(listings)
        polls.append(listing)
        if len(polls) == 5:  # the first job wrote its result and left
            finished.paths.result_pickle.write_bytes(b"done")
        if len(polls) == 6:
            requeued.paths.result_pickle.write_bytes(b"done")
        return {job_id: "RUNNING" for job_id in listing}

    monkeypatch.setattr(slurm_launch, "squeue_states", squeue)
    caplog.set_level(logging.INFO)
    slurm_launch.wait_for([finished, cancelled, requeued], poll_seconds=0)
    gone = [r.getMessage() for r in caplog.records if "left the queue without a result" in r.getMessage()]
    assert len(gone) == 1 and gone[0].startswith("SLURM job 7_1 left the queue")  # 7_2's gap was a requeue
    assert len(polls) == 6


def test_the_wait_keeps_going_while_squeue_does_not_answer(tmp_path, monkeypatch):
    job = FakeJob("8_0", Paths(tmp_path / "result.pkl"))
    answers = iter([None, None, None])

    def squeue():
        answer = next(answers, None)
        job.paths.result_pickle.write_bytes(b"done")  # written after three unanswered polls at the latest
        return answer

    monkeypatch.setattr(slurm_launch, "squeue_states", squeue)
    slurm_launch.wait_for([job], poll_seconds=0)  # returns: the result file ended it, not an absence


def test_array_size_comes_from_the_cluster_when_it_answers(monkeypatch):
    shown = "Configuration data as of 2026-11-26\nMaxArraySize            = 101\nMaxJobCount = 10000\n"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, shown, ""))
    assert slurm_launch.cluster_max_array_size() == 101

    def no_slurm(*args, **kwargs):
        raise FileNotFoundError("scontrol")

    monkeypatch.setattr(subprocess, "run", no_slurm)
    assert slurm_launch.cluster_max_array_size() == slurm_launch.DEFAULT_MAX_ARRAY
