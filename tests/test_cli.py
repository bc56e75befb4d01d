"""`python -m mlbasics.run` as a user runs it, in a subprocess."""

from __future__ import annotations

import csv
import json
import re
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

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
    assert (proc.stdout + proc.stderr).count("could not be") + (proc.stdout + proc.stderr).count("failed (") == 1
    reason = re.search(r"failed \((.*?)\);", last)
    assert reason and reason.group(1).strip(": ") and not reason.group(1).endswith(":"), last


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

    # 800 steps an epoch: long enough to kill it after its second epoch and before its last
    args = ["dataset=synthetic", "trainer.epochs=4", "model.hidden=[512,512]", "trainer.batch_size=2",
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


SMALL = ("dataset=synthetic", "trainer.epochs=2", "model.hidden=[16]", "trainer.threads=1")


def test_folder_of_another_config_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "run"
    first = run_cli(*SMALL, f"hydra.run.dir={folder}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    results = (folder / "results.json").read_bytes()
    overrides = (folder / ".hydra" / "overrides.yaml").read_text()
    again = run_cli(*SMALL, "optimizer.lr=0.05", f"hydra.run.dir={folder}", cwd=tmp_path)
    assert again.returncode == 2
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"mlbasics: {folder} holds a run of another config")
    assert "optimizer.lr: 0.3 -> 0.05" in lines[0] and "trainer.start_over=true" in lines[0]
    assert (folder / "results.json").read_bytes() == results
    assert (folder / ".hydra" / "overrides.yaml").read_text() == overrides  # Hydra's rewrite undone
    assert "optimizer.lr: 0.3" in (folder / ".hydra" / "config.yaml").read_text().replace("lr: 0.3", "optimizer.lr: 0.3")
    fresh = run_cli(*SMALL, "optimizer.lr=0.05", "trainer.start_over=true", f"hydra.run.dir={folder}", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    (aside,) = folder.glob("previous-*")
    assert (aside / "results.json").read_bytes() == results
    assert json.loads((folder / "results.json").read_text())["config"]["optimizer"]["lr"] == 0.05


def limit_file_size():
    """Files may grow to 300 KB, and writing past that fails with EFBIG instead of killing the process:
    a disk that fills up during the checkpoint, without needing a small filesystem."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))


def test_output_that_cannot_be_written_is_one_line_and_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "mlbasics.run", *SMALL, "model.hidden=[512,512]",
                           f"hydra.run.dir={folder}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, preexec_fn=limit_file_size)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"mlbasics: run failed: could not write {folder / 'checkpoint.pt'}: File too large (see {folder})"]
    assert not list(folder.glob(".*.tmp")) and not (folder / "checkpoint.pt").exists()
    assert json.loads((folder / "results.json").read_text())["status"] == "failed"


def wait_for_checkpoint(folder, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (folder / "checkpoint.pt").exists():  # renamed into place whole: an epoch is saved
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint in {folder} in time")


SLOW = ("dataset=synthetic", "trainer.epochs=50", "model.hidden=[256,256]", "trainer.batch_size=4",
        "trainer.threads=1")


def test_ctrl_c_is_one_line_and_the_same_command_resumes(tmp_path):
    folder = tmp_path / "run"
    args = [sys.executable, "-m", "mlbasics.run", *SLOW, f"hydra.run.dir={folder}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(folder, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    done = len((folder / "metrics.csv").read_text().splitlines()) - 1
    saved = len(torch.load(folder / "checkpoint.pt", weights_only=True)["state"]["rows"])
    held = "" if saved == done else f" (checkpoint.pt holds {saved})"  # Ctrl-C between metrics and checkpoint
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"mlbasics: interrupted after epoch {done}{held}; the same command resumes from "
                     f"{folder / 'checkpoint.pt'}"], err
    assert "Traceback" not in out + err and not list(folder.glob(".*.tmp"))
    resumed = run_cli(*SLOW, "trainer.epochs=3", f"hydra.run.dir={folder}", "trainer.start_over=false", cwd=tmp_path)
    assert resumed.returncode == 2 and "trainer.epochs: 50 -> 3" in resumed.stderr  # another config: refused
