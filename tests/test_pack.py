"""Packed training (synthetic data, in process): which jobs share a pack, and that a member's numbers
are its separate run's numbers, through divergence, failure, interruption and resume."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import FINAL_METRICS
from mlbasics import pack
from mlbasics.pack_launcher import plan
from mlbasics.train import Interrupted, train

BASE = ("dataset=synthetic", "trainer.epochs=3", "model.hidden=[32,16]", "trainer.batch_size=64")
# one pack: every key a member may set for itself differs somewhere
MEMBERS = (
    ("seed=0", "optimizer.lr=0.05"),
    ("seed=1", "optimizer.lr=0.2", "model.activation=tanh", "optimizer.momentum=0.5", "optimizer.nesterov=false"),
    ("seed=2", "optimizer.lr=0.1", "optimizer.momentum=0", "optimizer.nesterov=false", "optimizer.weight_decay=0",
     "trainer.label_smoothing=0", "model.activation=sigmoid"),
    ("seed=3", "model.dropout=0.2", "model.activation=gelu", "optimizer.schedule=onecycle",
     "optimizer.cycle_momentum=true"),
)
TOLERANCE = 1e-9


@pytest.fixture
def float64():
    """The separate runs and the pack in float64, where agreement to 1e-9 means the same arithmetic."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def metrics(folder: Path) -> list[dict[str, float]]:
    import csv

    with open(folder / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def assert_close_runs(folder: Path, reference: Path) -> dict:
    got, expected = metrics(folder), metrics(reference)
    assert len(got) == len(expected) and got[0].keys() == expected[0].keys()
    for row, ref in zip(got, expected):
        for key in ref:
            assert row[key] == pytest.approx(ref[key], abs=TOLERANCE, rel=0), (folder.name, row["epoch"], key)
    results = json.loads((folder / "results.json").read_text())
    reference_results = json.loads((reference / "results.json").read_text())
    for key in (*FINAL_METRICS, "best_epoch", "epochs_completed", "n_params", "optimizer_used", "status"):
        if isinstance(reference_results[key], float):
            assert results[key] == pytest.approx(reference_results[key], abs=TOLERANCE, rel=0), key
        else:
            assert results[key] == reference_results[key], key
    return results


def jobs_of(make_cfg, root: Path, members, *base: str) -> list:
    jobs = []
    for i, member in enumerate(members):
        overrides = [*(base or BASE), *member]
        jobs.append((make_cfg(*overrides), root / f"job{i}", overrides))
    return jobs


def separately(jobs) -> list[Path]:
    folders = []
    for cfg, folder, overrides in jobs:
        alone = folder.parent.parent / "separate" / folder.name
        train(cfg, alone, overrides)
        folders.append(alone)
    return folders


def tasks(make_cfg, *override_sets):
    return [OmegaConf.to_container(make_cfg(*o), resolve=True, enum_to_str=True) for o in override_sets]


def test_plan_packs_exactly_the_jobs_that_share_shapes_and_steps(make_cfg):
    sets = [
        ("seed=0",), ("seed=1", "optimizer.lr=0.1"), ("model.activation=tanh", "model.dropout=0.1"),
        ("trainer.label_smoothing=0", "optimizer.momentum=0", "optimizer.nesterov=false", "trainer.threads=1"),
        ("model.hidden=[64]",), ("model.hidden=[64]", "seed=1"),            # their own pack
        ("trainer.batch_size=32",),                                          # alone: its step sequence differs
        ("model.batchnorm=false",), ("trainer.epochs=3",), ("optimizer.schedule=none",),
        ("dataset.train_size=5000",),
        ("probe.landscape.every=10",), ("probe.landscape.every=10", "seed=1"),  # step probes: never packed
    ]
    packs, alone = plan(tasks(make_cfg, *sets), max_pack=16)
    assert sorted(packs) == [[0, 1, 2, 3], [4, 5]]
    assert sorted(alone) == [6, 7, 8, 9, 10, 11, 12]
    assert "shares its shapes" in alone[6]
    assert "probe.landscape.every" in alone[11] and "probe.landscape.every" in alone[12]


def test_plan_cuts_large_groups_into_near_equal_packs(make_cfg):
    seeds = [(f"seed={s}",) for s in range(7)]
    packs, alone = plan(tasks(make_cfg, *seeds), max_pack=3)
    assert [len(p) for p in packs] == [3, 2, 2] and not alone
    packs, alone = plan(tasks(make_cfg, *seeds[:3]), max_pack=2)
    assert packs == [[0, 1]] and list(alone) == [2]


def test_packed_members_equal_their_separate_runs(make_cfg, tmp_path, float64, caplog):
    caplog.set_level(logging.INFO)  # as Hydra sets it: each member's run.log gets its epoch lines
    jobs = jobs_of(make_cfg, tmp_path / "packed", MEMBERS)
    references = separately(jobs)
    results = pack.train_pack(jobs, "p0")
    for (cfg, folder, _), reference, result in zip(jobs, references, results):
        assert result["status"] == "completed"
        assert result["packed_with"] == {"size": len(MEMBERS), "id": "p0"}
        assert_close_runs(folder, reference)
        assert (folder / "checkpoint.pt").exists()
        assert "epoch 3/3" in (folder / "run.log").read_text()
    again = pack.train_pack(jobs, "p0")
    assert [r["status"] for r in again] == ["completed"] * len(MEMBERS)  # completed jobs are skipped


def test_a_diverging_member_is_frozen_and_the_rest_train_on(make_cfg, tmp_path, float64):
    members = (("optimizer.lr=0.1",), ("optimizer.lr=1e6",), ("optimizer.lr=0.1", "seed=1"))
    jobs = jobs_of(make_cfg, tmp_path / "packed", members)
    references = separately(jobs)
    results = pack.train_pack(jobs, "p")
    assert [r["status"] for r in results] == ["completed", "diverged", "completed"]
    diverged = json.loads((jobs[1][1] / "results.json").read_text())
    expected = json.loads((references[1] / "results.json").read_text())
    assert diverged["error"] == expected["error"] and diverged["error"].startswith("training loss is ")
    assert diverged["epochs_completed"] == expected["epochs_completed"]
    for (_, folder, _), reference in zip(jobs[::2], references[::2]):
        assert_close_runs(folder, reference)


def test_batchnorm_at_batch_size_one_fails_the_whole_pack(make_cfg, tmp_path):
    jobs = jobs_of(make_cfg, tmp_path / "packed", (("seed=0",), ("seed=1",)),
                   "dataset=synthetic", "trainer.epochs=1", "model.hidden=[16]", "trainer.batch_size=1")
    results = pack.train_pack(jobs, "p")
    for result in results:
        assert result["status"] == "failed"
        # the message a separate run gets, naming one member's shape
        assert result["error"] == ("ValueError: Expected more than 1 value per channel when training, "
                                   "got input size torch.Size([1, 16])")
        assert result["packed_with"]["size"] == 2


def test_an_interrupted_pack_resumes_each_member_and_a_basic_run_resumes_a_packed_folder(
        make_cfg, tmp_path, float64, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    jobs = jobs_of(make_cfg, tmp_path / "packed", MEMBERS[:3])
    references = separately(jobs)
    real_close = pack.close_epoch
    closed = []

    def stop_midway(job, *args):  # Ctrl-C in epoch 2, after the first member saved it and before the others
        if len(closed) == len(jobs) + 1:
            raise KeyboardInterrupt
        real_close(job, *args)
        closed.append(job.out_dir.name)

    monkeypatch.setattr(pack, "close_epoch", stop_midway)
    with pytest.raises(Interrupted) as stopped:
        pack.train_pack(jobs, "p")
    assert (stopped.value.epochs_done, stopped.value.epochs_saved) == (1, 1)
    monkeypatch.setattr(pack, "close_epoch", real_close)
    assert [len(metrics(folder)) for _, folder, _ in jobs] == [2, 1, 1]
    assert not any((folder / "results.json").exists() for _, folder, _ in jobs)

    basic_copy = tmp_path / "basic-resume" / "job2"
    shutil.copytree(jobs[2][1], basic_copy)
    results = pack.train_pack(jobs, "p")  # members at different epochs: each resumes from its own checkpoint
    assert [r["status"] for r in results] == ["completed"] * 3
    for (_, folder, _), reference in zip(jobs, references):
        assert "resuming from" in (folder / "run.log").read_text()
        assert_close_runs(folder, reference)
    train(jobs[2][0], basic_copy, jobs[2][2])  # the basic launcher continues a folder a pack wrote
    assert_close_runs(basic_copy, references[2])


def test_a_member_in_a_folder_of_another_config_fails_alone(make_cfg, tmp_path):
    jobs = jobs_of(make_cfg, tmp_path / "packed", (("seed=0",), ("seed=1",)),
                   "dataset=synthetic", "trainer.epochs=1", "model.hidden=[16]")
    train(make_cfg("dataset=synthetic", "trainer.epochs=1", "model.hidden=[8]"), jobs[0][1], ["model.hidden=[8]"])
    results = pack.train_pack(jobs, "p")
    assert results[0]["status"] == "failed" and "holds a run of another config" in results[0]["error"]
    assert results[1]["status"] == "completed"
    assert list(jobs[0][1].glob("previous-*"))  # the other config's files are kept beside


def test_a_member_whose_files_cannot_be_written_fails_alone(make_cfg, tmp_path, monkeypatch):
    from mlbasics import records

    jobs = jobs_of(make_cfg, tmp_path / "packed", (("seed=0",), ("seed=1",)),
                   "dataset=synthetic", "trainer.epochs=2", "model.hidden=[16]")
    real_write = records.write_metrics

    def disk_full_for_job0(path, rows):  # as ENOSPC on job0's disk: its write fails, its results still land
        if path.parent == jobs[0][1]:
            raise records.OutputError(f"could not write {path}: No space left on device")
        real_write(path, rows)

    monkeypatch.setattr(records, "write_metrics", disk_full_for_job0)
    results = pack.train_pack(jobs, "p")
    assert results[0]["status"] == "failed"
    assert results[0]["error"] == f"could not write {jobs[0][1] / 'metrics.csv'}: No space left on device"
    assert results[1]["status"] == "completed" and results[1]["epochs_completed"] == 2
    assert json.loads((jobs[0][1] / "results.json").read_text())["status"] == "failed"
