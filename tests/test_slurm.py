"""Sweeps through a real SLURM cluster (hydra/launcher=slurm): aggregation, job ids, requeue and resume.

These need a reachable SLURM (`sinfo` answers). `submit/cluster-up.sh` starts a one-node cluster;
.ci/run does so and sets MLBASICS_REQUIRE_SLURM=1, which turns a missing cluster into a failure
instead of a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import assert_same_run, run_cli
from mlbasics import status


def slurm_reachable() -> bool:
    if not shutil.which("sinfo"):
        return False
    probe = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return probe.returncode == 0 and any(s.startswith(("idle", "mix", "alloc")) for s in probe.stdout.split())


REACHABLE = slurm_reachable()
REQUIRED = os.environ.get("MLBASICS_REQUIRE_SLURM") == "1"


@pytest.fixture(autouse=True)
def needs_slurm():
    if REACHABLE:
        return
    message = "no SLURM cluster reachable (sinfo found no idle node); start one with: sudo submit/cluster-up.sh"
    if REQUIRED:
        pytest.fail(message + " (MLBASICS_REQUIRE_SLURM=1: CI must run these)")
    pytest.skip(message)


SLURM = ("hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.timeout_min=10")


def release_held_jobs() -> None:
    """SLURM holds a requeued job back for a while (reason BeginTime); let such jobs start now."""
    pending = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], capture_output=True, text=True)
    for line in pending.stdout.splitlines():
        job_id, reason = line.split(maxsplit=1)
        if reason == "BeginTime":
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)


# ~12 s of training in 800-step epochs: a requeue after epoch 2 lands before the end even after
# SLURM's KillWait (5 s), which submitit waits out (it ignores the SIGTERM)
LONG_JOB = ("dataset=synthetic", "trainer.epochs=10", "model.hidden=[512,512]", "trainer.batch_size=2",
            "trainer.threads=1", "model.dropout=0.1")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: LONG_JOB run locally in one go; its folder."""
    folder = tmp_path_factory.mktemp("whole")
    if REACHABLE:
        whole = run_cli(*LONG_JOB, f"hydra.run.dir={folder}", cwd=folder.parent)
        assert whole.returncode == 0, whole.stderr
    return folder


def launch(args: tuple[str, ...], tmp_path, *extra: str) -> subprocess.Popen:
    """A one-job sweep through SLURM into tmp_path/sweep, logging to a file (a pipe nobody reads would fill)."""
    with open(tmp_path / "launcher.log", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "mlbasics.run", "-m", *args, *SLURM, *extra,
                                 f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT)


def wait_releasing_held_jobs(launcher: subprocess.Popen, tmp_path) -> None:
    deadline = time.time() + 600
    while launcher.poll() is None and time.time() < deadline:
        release_held_jobs()
        time.sleep(0.5)
    launcher.wait(timeout=60)
    assert launcher.returncode == 0, (tmp_path / "launcher.log").read_text()[-3000:]


def assert_resumed_like_uninterrupted(job_dir, reference) -> None:
    results = assert_same_run(job_dir, reference)
    assert results["status"] == "completed"
    assert results["slurm_restarts"] >= 1  # SLURM really started it again
    assert "resuming from" in (job_dir / "run.log").read_text()


def test_sweep_runs_through_slurm_and_aggregates(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "dataset=synthetic", "trainer.epochs=2", "model.batchnorm=true,false", "seed=0,1",
                   *SLURM, f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 4 and (summary["status"] == "completed").all()
    assert summary["slurm_job_id"].notna().all()
    for job in summary["job"]:
        results = json.loads((sweep / job / "results.json").read_text())
        array_id, index = results["slurm_job_id"].split("_")
        assert array_id.isdigit() and index.isdigit()
        assert (sweep / ".submitit" / results["slurm_job_id"]).is_dir()  # submitit's own log folder
    assert len({job_id.split("_")[0] for job_id in summary["slurm_job_id"]}) == 1  # one job array
    assert "4 jobs: 4 completed" in proc.stdout + proc.stderr


def wait_for_epochs(sweep, epochs: int):
    """metrics.csv of the sweep's one job once it holds `epochs` epochs (the run not finished)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        found = list(sweep.glob("*/metrics.csv"))
        if found and len(found[0].read_text().splitlines()) >= epochs + 1:  # header + epochs
            return found[0]
        time.sleep(0.05)
    raise AssertionError("the job never got going")


def test_requeued_job_resumes_to_the_same_metrics(tmp_path, uninterrupted):
    launcher = launch(LONG_JOB, tmp_path)
    sweep = tmp_path / "sweep"
    metrics = wait_for_epochs(sweep, 2)
    (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()]
    requeue = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    wait_releasing_held_jobs(launcher, tmp_path)
    assert_resumed_like_uninterrupted(metrics.parent, uninterrupted)


def test_time_limit_warning_requeues_through_submitit_and_resumes(tmp_path, uninterrupted):
    """The signal SLURM sends ahead of a job's time limit (USR2, `signal_delay_s` before it): submitit's
    checkpoint hook requeues the job into the same folder, and it resumes from checkpoint.pt.

    The test sends USR2 itself after two epochs: SLURM may deliver a time-limit warning up to a minute
    early, so with the shortest limit it can arrive before submitit has set up its handler."""
    launcher = launch(LONG_JOB, tmp_path)
    sweep = tmp_path / "sweep"
    metrics = wait_for_epochs(sweep, 2)
    (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()]
    script = (sweep / ".submitit" / job_id / f"{job_id}_submission.sh").read_text()
    assert "#SBATCH --signal=USR2@60" in script  # the profile's signal_delay_s reaches sbatch
    warn = subprocess.run(["scancel", "--signal=USR2", job_id], capture_output=True, text=True)
    assert warn.returncode == 0, warn.stderr
    wait_releasing_held_jobs(launcher, tmp_path)
    assert_resumed_like_uninterrupted(metrics.parent, uninterrupted)


def test_a_cancelled_job_ends_the_wait_and_the_tables_are_made(tmp_path):
    """Without accounting (no sacct, as on the one-node cluster) a job cancelled with scancel never gets
    a final state from submitit; the launcher sees it leave the queue, stops waiting and makes the tables."""
    launcher = launch(LONG_JOB, tmp_path)
    sweep = tmp_path / "sweep"
    metrics = wait_for_epochs(sweep, 1)
    (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()]
    cancel = subprocess.run(["scancel", job_id], capture_output=True, text=True)
    assert cancel.returncode == 0, cancel.stderr
    cancelled = time.time()
    launcher.wait(timeout=120)  # it used to poll until killed by hand
    assert time.time() - cancelled < 60
    log = (tmp_path / "launcher.log").read_text()
    assert launcher.returncode == 0, log[-3000:]
    assert f"SLURM job {job_id} left the queue without a result" in log
    assert log.count("Bypassing sacct error") <= 1
    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary["status"]) == ["incomplete"]
    assert "1 jobs: 0 completed, 0 diverged, 0 failed, 1 incomplete" in log
    assert not (metrics.parent / "results.json").exists()


def test_a_sweep_larger_than_an_array_goes_out_as_several_and_is_one_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    env = dict(os.environ, MLBASICS_SLURM_SETUP="export MLBASICS_SITE=1\necho site set-up done")
    proc = subprocess.run([sys.executable, "-m", "mlbasics.run", "-m", "dataset=synthetic", "trainer.epochs=1",
                           "model.hidden=[16]", f"seed={','.join(map(str, range(12)))}", *SLURM,
                           "hydra.launcher.max_array_size=5", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    summary = pd.read_csv(sweep / "summary.csv", dtype={"slurm_job_id": str})
    assert len(summary) == 12 and (summary["status"] == "completed").all()
    arrays = summary["slurm_job_id"].str.split("_").str[0]
    assert sorted(arrays.value_counts()) == [2, 5, 5]
    first, second, third = sorted(set(arrays), key=int)
    assert f"submitted 12 jobs as SLURM arrays {first}, {second}, {third}" in log
    scripts = {p.parent.name: p.read_text() for p in (sweep / ".submitit").glob("*/*_submission.sh")}
    assert sorted(scripts) == sorted([first, second, third])  # one script per array
    assert "dependency" not in scripts[first]
    assert f"#SBATCH --dependency=afterany:{first}" in scripts[second]
    assert f"#SBATCH --dependency=afterany:{second}" in scripts[third]
    for script in scripts.values():  # the site's set-up lines, before Python starts
        assert "export MLBASICS_SITE=1\necho site set-up done\n" in script
    assert "12 jobs: 12 completed" in log


def test_a_detached_sweep_returns_and_a_slurm_job_makes_the_tables_then_resume_submits_the_rest(tmp_path):
    sweep = tmp_path / "sweep"
    common = ("dataset=synthetic", "trainer.epochs=3", "model.hidden=[256,256]", "trainer.batch_size=8", *SLURM,
              "hydra.launcher.detach=true", f"hydra.sweep.dir={sweep}")
    started = time.time()
    proc = run_cli("-m", "seed=0,1", *common, cwd=tmp_path, timeout=120)
    submitting = time.time() - started
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "submitted 2 jobs as SLURM array " in log and "makes the tables when they have ended" in log
    assert f"python -m mlbasics.status {sweep} --watch" in log
    assert len(list(sweep.glob("*/results.json"))) < 2  # it returned before the jobs had ended
    seen = set()  # what status shows while the jobs run (a job's folder appears when it starts)
    while time.time() - started < 300 and not (sweep / "summary.csv").exists():
        if list(sweep.glob("*/.hydra/overrides.yaml")):
            seen |= {state.state for state in status.snapshot([sweep])}
        time.sleep(0.2)
    assert submitting < 30
    assert "running" in seen, seen

    def report_job_printed(count_line):  # the report job's output, in submitit's folder for it
        return [p for p in (sweep / ".submitit").glob("*/*_log.out") if count_line in p.read_text()]

    deadline = time.time() + 600
    while time.time() < deadline and not report_job_printed("2 jobs: 2 completed"):
        time.sleep(0.5)
    assert report_job_printed("2 jobs: 2 completed")
    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 2 and (summary["status"] == "completed").all()
    again = run_cli("-m", "seed=0,1,2", *common, cwd=tmp_path, timeout=120)  # one job more: only it goes out
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    assert log.count("(completed by an earlier run of this sweep: not submitted)") == 2
    assert "submitted 1 jobs as SLURM array " in log
    deadline = time.time() + 600
    while time.time() < deadline and not report_job_printed("3 jobs: 3 completed"):
        time.sleep(0.5)
    assert report_job_printed("3 jobs: 3 completed")
    assert len(pd.read_csv(sweep / "summary.csv")) == 3


def test_packs_go_to_slurm_as_one_array_task_each_and_give_the_basic_table(tmp_path):
    sweep = "dataset=synthetic", "trainer.epochs=2", "seed=0,1", "optimizer.lr=0.1,0.2"
    local = run_cli("-m", *sweep, "model.hidden=[16]", f"hydra.sweep.dir={tmp_path / 'basic'}", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-3000:]
    packed = run_cli("-m", *sweep, "model.hidden=[16],[8]", *SLURM, "hydra.launcher.pack=true",
                     f"hydra.sweep.dir={tmp_path / 'slurm'}", cwd=tmp_path, timeout=600)
    log = packed.stdout + packed.stderr
    assert packed.returncode == 0, log[-3000:]
    assert "submitted 2 array tasks as SLURM array " in log  # two packs of four, by width
    columns = ["job", "status", "test_acc", "val_acc", "train_loss"]
    slurm = pd.read_csv(tmp_path / "slurm" / "summary.csv", dtype={"slurm_job_id": str})
    wide = slurm[slurm["model.hidden"] == "[16]"].reset_index(drop=True)
    basic = pd.read_csv(tmp_path / "basic" / "summary.csv")
    pd.testing.assert_frame_equal(wide[columns], basic[columns], rtol=1e-6)
    assert (slurm["status"] == "completed").all() and slurm["slurm_job_id"].nunique() == 2
    for results in (tmp_path / "slurm").glob("*/results.json"):
        assert json.loads(results.read_text())["packed_with"]["size"] == 4
