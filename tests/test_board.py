"""trainer.tensorboard=true: event files per job with every epoch's metrics and the final hparams."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import run_cli
from mlbasics import board
from mlbasics.config import ConfigError, validate


def test_tensorboard_event_files_hold_every_epoch_and_the_final_metrics(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (CI installs it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "dataset=synthetic", "trainer.epochs=2", "model.hidden=[16]", "seed=0,1",
                   "trainer.tensorboard=true", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.csv"))
    assert len(jobs) == 2 and not any("tensorboard" in job.name for job in jobs)  # it changes no number: no folder name
    for job in jobs:
        events = EventAccumulator(str(job / board.FOLDER))
        events.Reload()
        metrics = pd.read_csv(job / "metrics.csv")
        assert {"train_loss", "val_acc", "lr", "grad_norm_fc1", "final/test_acc"} <= set(events.Tags()["scalars"])
        scalars = events.Scalars("val_acc")
        assert [e.step for e in scalars] == list(metrics["epoch"])
        assert [e.value for e in scalars] == pytest.approx(list(metrics["val_acc"]), rel=1e-6)  # stored as float32


def test_without_the_extra_asking_for_it_is_one_line(make_cfg, monkeypatch):
    monkeypatch.setattr(board, "available", lambda: False)
    with pytest.raises(ConfigError) as refused:
        validate(make_cfg("dataset=synthetic", "trainer.tensorboard=true"))
    assert str(refused.value) == ('trainer.tensorboard=true is not allowed: needs the tensorboard extra: '
                                  'pip install -e ".[tensorboard]"')
