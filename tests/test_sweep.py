"""Multiruns end to end (subprocesses on the synthetic set): outcomes, tables, resume, joblib."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from conftest import run_cli

# 2 batch sizes x 2 learning rates x 2 seeds, BatchNorm on: batch size 1 fails as PyTorch says,
# lr 1e6 at batch size 64 diverges (weight decay times lr > 2 makes the weights explode), lr 0.1 trains.
SWEEP = ("dataset=synthetic", "trainer.epochs=2", "model.hidden=[16]", "trainer.threads=1",
         "trainer.batch_size=1,64", "optimizer.lr=0.1,1e6", "seed=0,1")
EXPECTED = {("1", "0.1"): "failed", ("1", "1000000.0"): "failed",
            ("64", "0.1"): "completed", ("64", "1000000.0"): "diverged"}


def run_sweep(sweep_dir, *extra):
    proc = run_cli("-m", *SWEEP, f"hydra.sweep.dir={sweep_dir}", *extra, cwd=sweep_dir.parent, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def results_mtimes(sweep_dir):
    return {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/results.json")}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep") / "basic"
    proc = run_sweep(sweep_dir)
    return sweep_dir, proc


def test_every_outcome_is_a_row(sweep):
    sweep_dir, proc = sweep
    summary = pd.read_csv(sweep_dir / "summary.csv", dtype=str)
    assert len(summary) == 8
    for column in ("job", "trainer.batch_size", "optimizer.lr", "seed", "status", "error", "test_acc",
                   "wall_seconds", "model.activation", "dataset.name"):
        assert column in summary.columns, column
    for _, row in summary.iterrows():
        lr = str(float(row["optimizer.lr"]))
        assert row["status"] == EXPECTED[(row["trainer.batch_size"], lr)], row["job"]
    failed = summary[summary["status"] == "failed"]
    assert failed["error"].str.contains("Expected more than 1 value per channel when training").all()
    assert "8 jobs: 2 completed, 2 diverged, 4 failed -> " in proc.stdout + proc.stderr


def test_grouped_table_has_counts_and_spread(sweep):
    sweep_dir, _ = sweep
    grouped = pd.read_csv(sweep_dir / "summary_grouped.csv")
    assert sorted(grouped.columns[:2]) == ["optimizer.lr", "trainer.batch_size"]
    assert len(grouped) == 4 and (grouped["n"] == 2).all()
    ok = grouped[grouped["completed"] == 2]
    assert len(ok) == 1
    summary = pd.read_csv(sweep_dir / "summary.csv")
    accs = summary.loc[summary["status"] == "completed", "test_acc"]
    assert ok["test_acc_mean"].iloc[0] == pytest.approx(accs.mean())
    assert ok["test_acc_std"].iloc[0] == pytest.approx(accs.std(ddof=1))
    assert grouped[grouped["completed"] == 0]["test_acc_mean"].isna().all()


def test_markdown_curves_and_plots_exist(sweep):
    sweep_dir, proc = sweep
    markdown = (sweep_dir / "summary.md").read_text()
    assert markdown.startswith("| optimizer.lr | trainer.batch_size | n |")
    assert " ± " in markdown
    assert markdown.splitlines()[0] in proc.stdout  # the grouped table is printed at the end of the sweep
    curves = pd.read_csv(sweep_dir / "curves.csv")
    assert list(curves.columns) == ["job", "epoch", "metric", "value"]
    assert set(curves["metric"]) >= {"train_loss", "val_acc", "grad_norm_fc1"}
    for name in ("val_acc.png", "train_loss.png", "final_test_acc.png"):
        assert (sweep_dir / name).read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_completed_and_reproduces_tables(sweep, tmp_path):
    sweep_dir, _ = sweep
    copy = tmp_path / "again"
    shutil.copytree(sweep_dir, copy)
    before = pd.read_csv(copy / "summary.csv")
    tables = {name: (copy / name).read_bytes() for name in ("summary.csv", "summary_grouped.csv", "summary.md")}
    mtimes = results_mtimes(copy)
    run_sweep(copy)
    after = results_mtimes(copy)
    rerun = {job for job in mtimes if after[job] != mtimes[job]}
    completed = set(before.loc[before["status"] == "completed", "job"])
    assert len(completed) == 2 and not rerun & completed
    assert len(rerun) == 6  # the failed and diverged jobs ran again (and end the same way)
    for name in ("summary_grouped.csv", "summary.md"):
        assert (copy / name).read_bytes() == tables[name], name
    columns = ["job", "status", "test_acc", "val_acc", "error"]
    pd.testing.assert_frame_equal(pd.read_csv(copy / "summary.csv")[columns], before[columns])


def test_report_marks_missing_and_corrupt_results_incomplete(sweep, tmp_path):
    sweep_dir, _ = sweep
    copy = tmp_path / "damaged"
    shutil.copytree(sweep_dir, copy)
    jobs = sorted(p.parent for p in copy.glob("*/results.json"))
    (jobs[0] / "results.json").unlink()
    (jobs[1] / "results.json").write_text('{"status": "compl')
    proc = run_cli(str(copy), module="mlbasics.report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_csv(copy / "summary.csv").set_index("job")
    assert summary.loc[jobs[0].name, "status"] == "incomplete"
    assert "no results.json" in summary.loc[jobs[0].name, "error"]
    assert summary.loc[jobs[1].name, "status"] == "incomplete"
    assert "unreadable results.json" in summary.loc[jobs[1].name, "error"]
    assert "incomplete" in proc.stdout
    grouped = pd.read_csv(copy / "summary_grouped.csv")
    assert grouped["incomplete"].sum() == 2 and grouped["n"].sum() == 8


def test_report_by_and_metric_options(sweep, tmp_path):
    sweep_dir, _ = sweep
    proc = run_cli(str(sweep_dir), "--by", "trainer.batch_size", "--metric", "val_acc",
                   "--out", str(tmp_path), module="mlbasics.report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    grouped = pd.read_csv(tmp_path / "summary_grouped.csv")
    assert list(grouped["trainer.batch_size"]) == [1, 64] and list(grouped["n"]) == [4, 4]
    assert (tmp_path / "final_val_acc.png").exists()
    bad = run_cli(str(sweep_dir), "--by", "model.depth", "--out", str(tmp_path), module="mlbasics.report",
                  cwd=tmp_path)
    assert bad.returncode != 0 and "model.depth" in bad.stderr and "Traceback" not in bad.stderr


def test_joblib_launcher_gives_the_same_table(sweep, tmp_path):
    sweep_dir, _ = sweep
    parallel = tmp_path / "joblib"
    run_sweep(parallel, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    columns = ["job", "status", "test_acc", "val_acc", "train_loss", "error"]
    basic = pd.read_csv(sweep_dir / "summary.csv")[columns]
    joblib = pd.read_csv(parallel / "summary.csv")[columns]
    pd.testing.assert_frame_equal(joblib, basic)


def test_sweep_folders_never_collide(tmp_path):
    import subprocess
    import sys
    command = [sys.executable, "-m", "mlbasics.run", "-m", "dataset=synthetic", "trainer.epochs=1", "seed=0"]
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    sweeps = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(sweeps) == 2
    for folder in sweeps:
        (results,) = folder.glob("*/results.json")
        assert json.loads(results.read_text())["status"] == "completed"
