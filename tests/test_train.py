"""The training loop in-process: outcomes as results, determinism, resume from a checkpoint."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from conftest import assert_same_run, read_metrics
from mlbasics import records
from mlbasics.data import steps_per_epoch
from mlbasics.train import Interrupted, Job, train

SMALL = ("dataset=synthetic", "trainer.epochs=3", "model.hidden=[32,16]", "trainer.batch_size=64", "device=cpu")


def read_rows(folder):
    """metrics.csv as written, timing column included."""
    with open(folder / records.METRICS_FILE) as f:
        return list(csv.DictReader(f))


def test_completed_run_writes_metrics_and_results(make_cfg, tmp_path):
    results = train(make_cfg(*SMALL), tmp_path, overrides=list(SMALL))
    assert results["status"] == "completed" and results["error"] is None
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    for key in ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss", "best_val_acc",
                "best_epoch", "epochs_completed", "n_params", "wall_seconds", "seed", "device", "overrides",
                "git_commit", "versions"):
        assert key in on_disk, key
    assert on_disk["epochs_completed"] == 3 and on_disk["device"] == "cpu"
    assert on_disk["n_params"] == (32 * 32 + 32) + 2 * 32 + (32 * 16 + 16) + 2 * 16 + (16 * 4 + 4)
    assert on_disk["test_acc"] > 0.6  # four separable clusters: well above chance (0.25)
    rows = read_rows(tmp_path)
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds",
                             "grad_norm_fc1", "grad_norm_fc2", "grad_norm_fc3"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert max(float(r["val_acc"]) for r in rows) == pytest.approx(on_disk["best_val_acc"])
    assert float(rows[-1]["val_acc"]) == pytest.approx(on_disk["val_acc"])
    assert all(float(r["grad_norm_fc1"]) > 0 for r in rows)


def test_same_seed_same_metrics(make_cfg, tmp_path):
    train(make_cfg(*SMALL, "model.dropout=0.2"), tmp_path / "a")
    train(make_cfg(*SMALL, "model.dropout=0.2"), tmp_path / "b")
    train(make_cfg(*SMALL, "model.dropout=0.2", "seed=1"), tmp_path / "c")
    a, b, c = (read_metrics(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


def test_value_out_of_range_is_a_failed_job_not_a_run(make_cfg, tmp_path):
    results = train(make_cfg(*SMALL, "optimizer.lr=-1"), tmp_path)
    assert results["status"] == "failed" and results["error"] == "optimizer.lr=-1.0 is not allowed: must be > 0"
    assert results["epochs_completed"] == 0 and not (tmp_path / "metrics.csv").exists()


def test_huge_lr_diverges(make_cfg, tmp_path):
    results = train(make_cfg(*SMALL, "optimizer.lr=1e6", "model.batchnorm=false"), tmp_path)
    assert results["status"] == "diverged"
    assert "training loss is" in results["error"]
    assert results["test_acc"] is None


def test_batchnorm_with_batch_of_one_fails_with_pytorch_message(make_cfg, tmp_path):
    results = train(make_cfg(*SMALL, "trainer.batch_size=1", "model.batchnorm=true"), tmp_path)
    assert results["status"] == "failed"
    assert "Expected more than 1 value per channel when training" in results["error"]
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_trailing_single_sample_does_not_break_batchnorm(make_cfg, tmp_path):
    # 1600 training points, batch size 41: 39 full batches and a remainder of one
    assert 1600 % 41 == 1 and steps_per_epoch(1600, 41) == 39
    results = train(make_cfg(*SMALL, "trainer.batch_size=41", "model.batchnorm=true"), tmp_path)
    assert results["status"] == "completed"


def test_completed_run_started_again_does_nothing(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL)
    job = Job.of(cfg, tmp_path, ())
    stub = {"status": "completed", "test_acc": 0.123, "fingerprint": job.fingerprint, "config": job.config}
    records.write_results(tmp_path / "results.json", stub)
    assert train(cfg, tmp_path) == stub
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # nothing trained, nothing written


def test_resume_from_checkpoint_matches_uninterrupted_run(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(*SMALL, "model.dropout=0.1", "optimizer.schedule=cosine")
    train(cfg, tmp_path / "whole")

    # Interrupt the second run in epoch 3 (after epoch 2's checkpoint), as a kill would.
    import mlbasics.train as train_module
    real_epoch = train_module.fit_epoch

    def interrupted(loop, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return real_epoch(loop, epoch)

    monkeypatch.setattr(train_module, "fit_epoch", interrupted)
    with pytest.raises(Interrupted) as stopped:
        train(cfg, tmp_path / "resumed")
    assert (stopped.value.epochs_done, stopped.value.epochs_saved, stopped.value.checkpointing) == (2, 2, True)
    assert len(read_metrics(tmp_path / "resumed")) == 2
    assert not (tmp_path / "resumed" / "results.json").exists()
    monkeypatch.setattr(train_module, "fit_epoch", real_epoch)

    train(cfg, tmp_path / "resumed")
    assert_same_run(tmp_path / "resumed", tmp_path / "whole")
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert len(checkpoint["state"]["rows"]) == 3
