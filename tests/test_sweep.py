"""Multiruns end to end (subprocesses on the synthetic set): outcomes, tables, resume, joblib."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from conftest import run_cli
from mlbasics import report

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


def test_report_marks_missing_and_corrupt_results_incomplete(sweep, tmp_path, capsys):
    sweep_dir, _ = sweep
    copy = tmp_path / "damaged"
    shutil.copytree(sweep_dir, copy)
    jobs = sorted(p.parent for p in copy.glob("*/results.json"))
    (jobs[0] / "results.json").unlink()
    (jobs[1] / "results.json").write_text('{"status": "compl')
    report.main([str(copy)])
    out = capsys.readouterr().out
    summary = pd.read_csv(copy / "summary.csv").set_index("job")
    assert summary.loc[jobs[0].name, "status"] == "incomplete"
    assert "no results.json" in summary.loc[jobs[0].name, "error"]
    assert summary.loc[jobs[1].name, "status"] == "incomplete"
    assert "unreadable results.json" in summary.loc[jobs[1].name, "error"]
    assert "incomplete" in out
    grouped = pd.read_csv(copy / "summary_grouped.csv")
    assert grouped["incomplete"].sum() == 2 and grouped["n"].sum() == 8


def test_report_by_and_metric_options(sweep, tmp_path):
    sweep_dir, _ = sweep
    report.main([str(sweep_dir), "--by", "trainer.batch_size", "--metric", "val_acc", "--out", str(tmp_path)])
    grouped = pd.read_csv(tmp_path / "summary_grouped.csv")
    assert list(grouped["trainer.batch_size"]) == [1, 64] and list(grouped["n"]) == [4, 4]
    assert (tmp_path / "final_val_acc.png").exists()
    with pytest.raises(SystemExit) as bad:
        report.main([str(sweep_dir), "--by", "model.depth", "--out", str(tmp_path)])
    assert str(bad.value).startswith("mlbasics.report: --by model.depth") and "\n" not in str(bad.value)


def test_joblib_launcher_gives_the_same_table(sweep, tmp_path):
    sweep_dir, _ = sweep
    parallel = tmp_path / "joblib"
    run_sweep(parallel, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    columns = ["job", "status", "test_acc", "val_acc", "train_loss", "error"]
    basic = pd.read_csv(sweep_dir / "summary.csv")[columns]
    joblib = pd.read_csv(parallel / "summary.csv")[columns]
    pd.testing.assert_frame_equal(joblib, basic)


def test_packed_launcher_gives_the_same_table(sweep, tmp_path):
    sweep_dir, _ = sweep
    packed = tmp_path / "packed"
    proc = run_sweep(packed, "hydra/launcher=packed")
    log = proc.stdout + proc.stderr
    assert "Launching 8 jobs: 8 in 2 packs, 0 alone (max_pack=16)" in log
    columns = ["job", "status", "test_acc", "val_acc", "train_loss", "error"]
    basic = pd.read_csv(sweep_dir / "summary.csv")[columns]
    pd.testing.assert_frame_equal(pd.read_csv(packed / "summary.csv")[columns], basic, rtol=1e-6)
    for results in packed.glob("*/results.json"):
        assert json.loads(results.read_text())["packed_with"]["size"] == 4
        assert (results.parent / ".hydra" / "overrides.yaml").exists() and (results.parent / "run.log").exists()


def test_packed_launcher_runs_what_it_cannot_pack_alone_and_says_why(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "dataset=synthetic", "trainer.epochs=1", "model.hidden=[16]", "trainer.threads=1",
                   "probe.landscape.every=0,20", "hydra/launcher=packed", "hydra.launcher.max_pack=3",
                   f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "(alone: probe.landscape.every / probe.ics.every measure one model" in log
    assert "(alone: no other job of the sweep shares its shapes and step sequence)" in log
    assert (pd.read_csv(sweep_dir / "summary.csv")["status"] == "completed").all()
    bad = run_cli("-m", "dataset=synthetic", "seed=0,1", "hydra/launcher=packed", "hydra.launcher.max_pack=0",
                  f"hydra.sweep.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("mlbasics: hydra.launcher.max_pack=0 is not allowed: "
                                  "must be an integer >= 1")


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


SMALL_SWEEP = ("dataset=synthetic", "trainer.epochs=1", "model.hidden=[16]", "trainer.threads=1", "seed=0,1",
               "hydra.sweep.subdir=job${hydra.job.num}")  # folders that ignore the overrides: reuse is possible


def test_sweep_job_in_a_folder_of_another_config_fails_and_the_sweep_goes_on(tmp_path):
    sweep_dir = tmp_path / "sweep"
    first = run_cli("-m", *SMALL_SWEEP, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    earlier = {job: (sweep_dir / job / "results.json").read_bytes() for job in ("job0", "job1")}
    again = run_cli("-m", *SMALL_SWEEP, "optimizer.lr=0.05", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("job")
    assert (summary["status"] == "failed").all()
    assert summary.loc["job0", "error"].startswith(f"{sweep_dir / 'job0'} holds a run of another config "
                                                   "(optimizer.lr: 0.3 -> 0.05)")
    for job, content in earlier.items():  # nothing lost: the earlier run is beside, with its config
        (aside,) = (sweep_dir / job).glob("previous-*")
        assert (aside / "results.json").read_bytes() == content
        assert "lr: 0.3" in (aside / "config.yaml").read_text()
    third = run_cli("-m", *SMALL_SWEEP, "optimizer.lr=0.05", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert (pd.read_csv(sweep_dir / "summary.csv")["status"] == "completed").all()


def test_sweep_goes_on_when_a_job_cannot_write_its_checkpoint(tmp_path):
    import resource
    import signal
    import subprocess
    import sys

    def limit_file_size():  # files past 300 KB fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "mlbasics.run", "-m", "dataset=synthetic", "trainer.epochs=1",
                           "trainer.threads=1", "model.hidden=[16],[512,512]", f"hydra.sweep.dir={sweep_dir}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("model.hidden")
    assert summary.loc["[16]", "status"] == "completed"
    assert summary.loc["[512,512]", "status"] == "failed"
    assert summary.loc["[512,512]", "error"].endswith("checkpoint.pt: File too large")
    assert not list(sweep_dir.rglob(".*.tmp"))


@pytest.mark.parametrize("launcher", ["basic", "packed"])
def test_ctrl_c_stops_a_sweep_in_one_line_and_the_report_still_works(tmp_path, launcher):
    import signal
    import subprocess
    import sys
    import time

    sweep_dir = tmp_path / "sweep"
    args = [sys.executable, "-m", "mlbasics.run", "-m", "dataset=synthetic", "trainer.epochs=50", "trainer.threads=1",
            "model.hidden=[256,256]", "trainer.batch_size=4", "seed=0,1", f"hydra.sweep.dir={sweep_dir}",
            f"hydra/launcher={launcher}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    # an epoch saved by every job that has started: a pack's members save one after the other, and a
    # Ctrl-C between two saves is (rightly) reported as before the first epoch of the pack was saved
    started = 1 if launcher == "basic" else 2
    while time.time() < deadline and len(list(sweep_dir.glob("*/checkpoint.pt"))) < started:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mlbasics: sweep interrupted after epoch ")
    assert f"hydra.sweep.dir={sweep_dir}" in lines[0] and f"python -m mlbasics.report {sweep_dir}" in lines[0]
    assert "Traceback" not in out + err
    tables = run_cli(str(sweep_dir), module="mlbasics.report", cwd=tmp_path)
    assert tables.returncode == 0, tables.stderr
    jobs = 1 if launcher == "basic" else 2  # a pack had started both of its members
    assert f"{jobs} jobs: 0 completed, 0 diverged, 0 failed, {jobs} incomplete" in tables.stdout
