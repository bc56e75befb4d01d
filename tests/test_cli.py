"""`python -m mlbasics.run` as a user runs it, in a subprocess."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import REAL_DATA, assert_same_run, real_data, run_cli


def test_synthetic_run_leaves_its_files(tmp_path):
    proc = run_cli("dataset=synthetic", "trainer.epochs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["epochs_completed"] == 2
    assert results["overrides"] == ["dataset=synthetic", "trainer.epochs=2"]
    with open(run_dir / "metrics.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "checkpoint.pt").exists()
    log = (run_dir / "run.log").read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log
    assert f"test_acc {results['test_acc']:.4f}" in proc.stdout


def test_two_runs_in_the_same_second_get_separate_folders(tmp_path):
    import subprocess
    import sys
    procs = [subprocess.Popen([sys.executable, "-m", "mlbasics.run", "dataset=synthetic", "trainer.epochs=1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(list((tmp_path / "outputs" / "runs").glob("*/*/results.json"))) == 2


def test_divergence_exits_nonzero_with_one_line(tmp_path):
    proc = run_cli("dataset=synthetic", "optimizer.lr=1e6", "model.batchnorm=false", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("mlbasics: run diverged: training loss is")
    assert "Traceback" not in proc.stderr


def test_batchnorm_batch_of_one_fails_with_pytorch_message(tmp_path):
    proc = run_cli("dataset=synthetic", "trainer.batch_size=1", "trainer.epochs=1", cwd=tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mlbasics: run failed: ValueError: Expected more than 1 value per channel when training")
    assert "Traceback" not in proc.stderr
    (results,) = (tmp_path / "outputs" / "runs").glob("*/*/results.json")
    assert json.loads(results.read_text())["status"] == "failed"


def test_missing_data_is_one_line(tmp_path):
    proc = run_cli(f"dataset.root={tmp_path}/nowhere", cwd=tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert f"{tmp_path}/nowhere/FashionMNIST/raw" in last and "train-images-idx3-ubyte.gz" in last
    assert "Traceback" not in proc.stderr


@real_data
@pytest.mark.slow
def test_one_epoch_on_real_fashion_mnist(tmp_path):
    proc = run_cli("trainer.epochs=1", f"dataset.root={REAL_DATA.parent.parent}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (results,) = (tmp_path / "outputs" / "runs").glob("*/*/results.json")
    results = json.loads(results.read_text())
    assert results["val_acc"] >= 0.80
    assert results["n_params"] > 0 and results["status"] == "completed"


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    """SIGKILL mid-run, start the same command again in the same folder: same metrics as a whole run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["dataset=synthetic", "trainer.epochs=12", "model.hidden=[512,512]", "trainer.batch_size=2",
            "trainer.threads=1", "model.dropout=0.1"]
    whole = run_cli(*args, f"hydra.run.dir={tmp_path}/whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr

    folder = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mlbasics.run", *args, f"hydra.run.dir={folder}"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = folder / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (folder / "results.json").exists(), "the run finished before it could be killed"
    resumed = run_cli(*args, f"hydra.run.dir={folder}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in (folder / "run.log").read_text()

    assert_same_run(folder, tmp_path / "whole")
