"""`python -m mlbasics.status`: each job's state from its files (and squeue), never a crash, nothing written."""

from __future__ import annotations

import os
import time

import pytest

from conftest import make_job
from mlbasics import status


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    make_job(root, "seed=0", ["seed=0"], 0.8)
    make_job(root, "seed=1", ["seed=1"], None, status="failed")
    running = make_job(root, "seed=2", ["seed=2"], None)
    (running / "results.json").unlink()  # two epochs written just now, no results: running
    stale = make_job(root, "seed=3", ["seed=3"], None)
    (stale / "results.json").unlink()
    old = time.time() - 3600
    for path in stale.iterdir():
        os.utime(path, (old, old))
    broken = make_job(root, "seed=4", ["seed=4"], 0.7)
    (broken / "results.json").write_text('{"status": ')
    for job in (running, stale):
        (job / ".hydra" / "config.yaml").write_text("trainer:\n  epochs: 10\n")
    return root


def snapshot_files(root):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def test_each_job_gets_its_state_and_a_count_line(sweep, capsys, monkeypatch):
    monkeypatch.setattr(status, "squeue_states", lambda: None)  # no SLURM here
    before = snapshot_files(sweep)
    status.main([str(sweep)])
    lines = capsys.readouterr().out.splitlines()
    by_job = {line.split()[1]: line for line in lines[:-1]}
    assert by_job["seed=0"].startswith("completed ")
    assert by_job["seed=1"].startswith("failed ") and by_job["seed=1"].endswith("boom")
    assert by_job["seed=2"].startswith("running ") and by_job["seed=2"].endswith("epoch 2/10")
    assert by_job["seed=3"].startswith("incomplete ") and "epoch 2/10, no file written for 5 min" in by_job["seed=3"]
    assert by_job["seed=4"].startswith("incomplete ") and "unreadable results.json" in by_job["seed=4"]
    assert lines[-1] == "5 jobs: 1 running, 1 completed, 1 failed, 2 incomplete"
    assert snapshot_files(sweep) == before  # it never writes


def test_slurm_state_comes_from_squeue(sweep, capsys, monkeypatch):
    for num, job in enumerate(["seed=2", "seed=3"]):
        (sweep / job / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num + 2}\n")
        (sweep / ".submitit" / f"41_{num + 2}").mkdir(parents=True)
    monkeypatch.setattr(status, "squeue_states", lambda: {"41_2": "RUNNING"})
    status.main([str(sweep)])
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[:-1]}
    assert lines["seed=2"].startswith("running ") and lines["seed=2"].endswith("[slurm 41_2 RUNNING]")
    assert lines["seed=3"].startswith("incomplete ") and "not in squeue  [slurm 41_3 gone]" in lines["seed=3"]


def test_watch_stops_when_every_job_has_ended(sweep, capsys, monkeypatch):
    monkeypatch.setattr(status, "squeue_states", lambda: None)
    (sweep / "seed=2" / "results.json").write_text('{"status": "completed", "test_acc": 0.9}')
    status.main([str(sweep), "--watch", "0.01"])  # returns: nothing is running
    assert capsys.readouterr().out.count(" jobs: ") == 1


def test_not_a_sweep_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as stop:
        status.main([str(tmp_path)])
    assert str(stop.value).startswith("mlbasics.status: no job folders") and "\n" not in str(stop.value)
