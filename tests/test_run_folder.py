"""A run folder holds one config's run: fingerprints, starting over, bad checkpoints, full disks."""

from __future__ import annotations

import errno
import json
import os
import pickle

import pytest
import torch

from conftest import assert_same_run, read_metrics
from mlbasics import checkpoint, records
from mlbasics.train import FolderHoldsAnotherRun, Interrupted, train

SMALL = ("dataset=synthetic", "trainer.epochs=3", "model.hidden=[32,16]", "trainer.batch_size=64", "device=cpu")


def interrupt_in_epoch(monkeypatch, epoch: int) -> None:
    import mlbasics.train as train_module
    real_epoch = train_module.fit_epoch

    def interrupted(loop, at):
        if at == epoch:
            raise KeyboardInterrupt
        return real_epoch(loop, at)

    monkeypatch.setattr(train_module, "fit_epoch", interrupted)


def test_results_and_checkpoint_carry_the_fingerprint(make_cfg, tmp_path):
    results = train(make_cfg(*SMALL), tmp_path)
    digest, relevant = records.fingerprint(results["config"])
    assert results["fingerprint"] == digest and len(digest) == 16
    assert relevant["optimizer.lr"] == 0.3 and "dataset.root" not in relevant and "trainer.threads" not in relevant
    assert checkpoint.load(tmp_path / "checkpoint.pt")["fingerprint"] == digest


def test_keys_that_do_not_change_numbers_do_not_change_the_fingerprint(make_cfg, tmp_path):
    first = train(make_cfg(*SMALL), tmp_path)
    mtime = (tmp_path / "metrics.csv").stat().st_mtime_ns
    again = train(make_cfg(*SMALL, f"dataset.root={tmp_path}/elsewhere", "trainer.threads=1",
                           "trainer.checkpoint=false"), tmp_path)
    assert again == json.loads(json.dumps(first))  # completed: returned as it was, nothing trained
    assert (tmp_path / "metrics.csv").stat().st_mtime_ns == mtime


def test_completed_folder_refuses_another_config_naming_each_key(make_cfg, tmp_path):
    train(make_cfg(*SMALL), tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("results.json", "metrics.csv", "checkpoint.pt")}
    with pytest.raises(FolderHoldsAnotherRun) as refused:
        train(make_cfg(*SMALL, "optimizer.lr=0.05", "seed=4"), tmp_path)
    message = str(refused.value)
    assert str(tmp_path) in message and "\n" not in message
    assert "optimizer.lr: 0.3 -> 0.05" in message and "seed: 0 -> 4" in message
    assert "trainer.start_over=true" in message
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_partial_folder_refuses_another_config(make_cfg, tmp_path, monkeypatch):
    interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(Interrupted):
        train(make_cfg(*SMALL), tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(FolderHoldsAnotherRun, match="optimizer.momentum: 0.9 -> 0.5"):
        train(make_cfg(*SMALL, "optimizer.momentum=0.5"), tmp_path)
    assert len(read_metrics(tmp_path)) == 1


def test_folder_of_an_older_version_is_refused(make_cfg, tmp_path):
    records.write_results(tmp_path / "results.json", {"status": "completed", "test_acc": 0.5})
    with pytest.raises(FolderHoldsAnotherRun, match="records no config"):
        train(make_cfg(*SMALL), tmp_path)


def test_start_over_moves_the_old_run_aside_and_trains_afresh(make_cfg, tmp_path):
    train(make_cfg(*SMALL), tmp_path / "reference")
    train(make_cfg(*SMALL, "seed=4"), tmp_path / "run")
    old = {name: (tmp_path / "run" / name).read_bytes() for name in ("results.json", "metrics.csv", "checkpoint.pt")}
    results = train(make_cfg(*SMALL, "trainer.start_over=true"), tmp_path / "run")
    assert results["status"] == "completed" and results["seed"] == 0
    (aside,) = (tmp_path / "run").glob("previous-*")
    assert {name: (aside / name).read_bytes() for name in old} == old
    assert_same_run(tmp_path / "run", tmp_path / "reference")


class WritesAMarker:
    """A pickle that runs code when loaded without weights_only: it creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_crafted_checkpoint_executes_nothing_and_is_moved_aside(make_cfg, tmp_path, caplog, writer):
    folder, marker = tmp_path / "run", tmp_path / "pwned"
    folder.mkdir()
    crafted = {"model": WritesAMarker(marker)}
    if writer == "torch":
        torch.save(crafted, folder / "checkpoint.pt")
    else:
        with open(folder / "checkpoint.pt", "wb") as f:
            pickle.dump(crafted, f)
    assert not marker.exists()
    results = train(make_cfg(*SMALL), folder)
    assert not marker.exists()
    assert results["status"] == "completed" and results["epochs_completed"] == 3
    (aside,) = folder.glob("checkpoint.pt.corrupt-*")
    assert "more than tensors and plain values" in caplog.text and aside.name in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not_ours"])
def test_unreadable_checkpoint_is_moved_aside_and_training_starts_over(make_cfg, tmp_path, monkeypatch, damage):
    train(make_cfg(*SMALL), tmp_path / "whole")
    folder = tmp_path / "run"
    interrupt_in_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        train(make_cfg(*SMALL), folder)
    monkeypatch.undo()
    saved = (folder / "checkpoint.pt").read_bytes()
    broken = {"truncated": saved[: len(saved) // 2], "garbage": os.urandom(5000), "not_ours": None}[damage]
    if broken is None:
        torch.save({"weights": torch.zeros(3)}, folder / "checkpoint.pt")
    else:
        (folder / "checkpoint.pt").write_bytes(broken)
    results = train(make_cfg(*SMALL), folder)
    assert results["status"] == "completed"
    assert len(list(folder.glob("checkpoint.pt.corrupt-*"))) == 1
    assert_same_run(folder, tmp_path / "whole")  # trained from the start, not from a half-read state


def test_any_bytes_in_checkpoint_pt_are_moved_aside_never_raised(tmp_path):
    import random
    rng = random.Random(7)
    real = tmp_path / "real.pt"
    checkpoint.save(real, {"model": {"w": torch.ones(3)}, "optimizer": {}, "scheduler": {}, "rng": {}, "state": {},
                           "fingerprint": "x", "config": {}, "overrides": []})
    saved = real.read_bytes()
    for trial in range(60):
        path = tmp_path / f"t{trial}" / "checkpoint.pt"
        path.parent.mkdir()
        cut = rng.randrange(len(saved))
        path.write_bytes(rng.choice([rng.randbytes(rng.randrange(1, 3000)), saved[:cut],
                                     saved[:cut] + rng.randbytes(50) + saved[cut + 50:]]))
        loaded = checkpoint.load(path)  # never raises: a checkpoint, or None with the file moved aside
        moved = list(path.parent.glob("checkpoint.pt.corrupt-*"))
        assert (isinstance(loaded, dict), path.exists(), len(moved)) in {(True, True, 0), (False, False, 1)}


def test_temporary_files_of_a_killed_write_are_removed(make_cfg, tmp_path):
    tmp_path.joinpath(".checkpoint.pt.999999999.tmp").write_bytes(b"x" * 1000)  # no such process
    tmp_path.joinpath(".notes.txt.999999999.tmp").write_bytes(b"mine")  # not a run file: kept
    train(make_cfg(*SMALL), tmp_path)
    assert not (tmp_path / ".checkpoint.pt.999999999.tmp").exists()
    assert (tmp_path / ".notes.txt.999999999.tmp").exists()


def test_real_checkpoints_of_every_schedule_load_weights_only(make_cfg, tmp_path):
    for schedule in ("none", "cosine", "onecycle"):
        train(make_cfg(*SMALL, "trainer.epochs=1", f"optimizer.schedule={schedule}"), tmp_path / schedule)
        saved = torch.load(tmp_path / schedule / "checkpoint.pt", weights_only=True)
        assert saved["state"]["rows"][0]["epoch"] == 1, schedule


def test_full_disk_fails_the_run_leaving_earlier_files_intact(make_cfg, tmp_path, monkeypatch):
    train(make_cfg(*SMALL, "trainer.epochs=1"), tmp_path / "run")
    results_before = (tmp_path / "run" / "results.json").read_bytes()
    import pathlib

    def fills_the_disk(path, data):
        with open(path, "wb") as handle:
            handle.write(bytes(data)[:1000])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", fills_the_disk)
    results = train(make_cfg(*SMALL, "trainer.epochs=2", "trainer.start_over=true"), tmp_path / "run")
    monkeypatch.undo()
    assert results["status"] == "failed"
    assert results["error"] == f"could not write {tmp_path / 'run' / 'checkpoint.pt'}: No space left on device"
    assert not list((tmp_path / "run").glob(".*.tmp"))
    (aside,) = (tmp_path / "run").glob("previous-*")
    assert (aside / "results.json").read_bytes() == results_before


def test_full_disk_for_results_too_raises_one_error_and_leaves_no_temp_files(make_cfg, tmp_path, monkeypatch):
    import pathlib

    def full(path, text, *args, **kwargs):
        with open(path, "w") as handle:
            handle.write(text[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(records.OutputError, match="results.json: No space left on device"):
        train(make_cfg(*SMALL), tmp_path)
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "results.json").exists()
