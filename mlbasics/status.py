"""`python -m mlbasics.status DIR [DIR ...]`: where each job of a sweep stands, read from its files.

One line per job: its overrides, its state (`pending`, `running` with `epoch k/N`, `completed`,
`diverged`, `failed` with the first line of its error, `incomplete`), and its SLURM job id and
state where there is one (from `squeue` when it answers; the files alone otherwise); then a count
line. A job folder appears when its job starts, so jobs still waiting in SLURM's queue show up in
`squeue`, not here. `--watch` refreshes until every job has ended. It reads files and never writes one, and a
malformed file makes its job `incomplete` with the reason, as in the report.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mlbasics import records, report
from mlbasics.records import Status

# A job with no results.json whose files changed this recently is taken to be running (without
# SLURM nothing else can tell a live local process from one that was killed).
RUNNING_WITHIN_S = 300
ENDED = {Status.completed.value, Status.diverged.value, Status.failed.value}


@dataclass
class JobState:
    name: str
    state: str
    detail: str = ""
    slurm: str = ""

    def line(self) -> str:
        parts = [f"{self.state:<10}", self.name]
        if self.detail:
            parts.append(self.detail)
        if self.slurm:
            parts.append(f"[slurm {self.slurm}]")
        return "  ".join(parts)


def squeue_states() -> dict[str, str] | None:
    """{job id as squeue shows it (array jobs as ARRAY_INDEX): state}; None if SLURM does not answer."""
    if not shutil.which("squeue"):
        return None
    try:
        listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if listed.returncode != 0:
        return None
    return dict(line.split(maxsplit=1) for line in listed.stdout.splitlines() if len(line.split()) == 2)


def slurm_id(job: Path, results: dict) -> str | None:
    """The job's SLURM id: from results.json, else from submitit's folder for its array index."""
    if isinstance(results.get("slurm_job_id"), str):
        return results["slurm_job_id"]
    try:
        num = report.read_yaml(job / ".hydra" / "hydra.yaml", dict)["hydra"]["job"]["num"]
    except (report.Malformed, KeyError, TypeError):
        return None
    submitted = job.parent / ".submitit"
    arrays = sorted(p.name for p in submitted.glob(f"*_{num}") if p.is_dir()) if submitted.is_dir() else []
    return arrays[-1] if arrays else None  # the newest submission of this index


def job_state(job: Path, root: Path, queue: dict[str, str] | None, now: float) -> JobState:
    name = report.display_name(job.relative_to(root)) if job != root else "."
    try:
        results = report.read_results(job)
        config = report.read_config(job)
        epochs = report.read_table(job / records.METRICS_FILE, ("epoch",))
    except report.Malformed as err:
        return JobState(name, Status.incomplete.value, str(err))
    job_id = slurm_id(job, results)
    queued = queue.get(job_id) if queue is not None and job_id else None
    slurm = f"{job_id} {queued or ('gone' if queue is not None else '?')}" if job_id else ""
    status = results.get("status")
    if status in ENDED:  # its SLURM job has ended too, unless SLURM is still tidying up
        error = str(results.get("error") or "").splitlines()
        detail = error[0][:160] if error and status != Status.completed.value else ""
        return JobState(name, status, detail, f"{job_id} {queued}" if queued else job_id or "")
    done = len(epochs) if epochs is not None else 0
    progress = f"epoch {done}/{(config.get('trainer') or {}).get('epochs', '?')}"
    if queued == "PENDING":
        return JobState(name, "pending", "", slurm)
    if queued is not None:  # RUNNING, or on its way in or out (CONFIGURING, COMPLETING, ...)
        return JobState(name, "running", progress, slurm)
    if not job_id and touched_within(job, now):
        return JobState(name, "running", progress, slurm)
    why = "not in squeue" if job_id and queue is not None else f"no file written for {RUNNING_WITHIN_S // 60} min"
    return JobState(name, Status.incomplete.value, f"{progress}, {why}", slurm)


def touched_within(job: Path, now: float) -> bool:
    """Whether the run wrote any of its files within RUNNING_WITHIN_S."""
    stamps = [p.stat().st_mtime for p in (job / records.METRICS_FILE, job / "run.log",
                                          job / records.CHECKPOINT_FILE) if p.exists()]
    return bool(stamps) and now - max(stamps) < RUNNING_WITHIN_S


def snapshot(folders: list[Path]) -> list[JobState]:
    queue, now = squeue_states(), time.time()
    states = []
    for folder in folders:
        root = folder if len(folders) == 1 else folder.parent
        states.extend(job_state(job, root, queue, now) for job in report.find_jobs(folder))
    return states


def show(states: list[JobState]) -> str:
    counts = Counter(s.state for s in states)
    order = ["pending", "running", *report.STATUSES]
    summary = ", ".join(f"{counts[state]} {state}" for state in order if counts[state])
    return "\n".join([*(s.line() for s in states), f"{len(states)} jobs: {summary}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlbasics.status", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep folders (or job folders)")
    parser.add_argument("--watch", nargs="?", type=float, const=10.0, metavar="SECONDS",
                        help="refresh every SECONDS (default 10) until every job has ended")
    args = parser.parse_args(argv)
    for folder in args.dirs:
        if not folder.is_dir():
            sys.exit(f"mlbasics.status: {folder} is not a folder")
    folders = [d.resolve() for d in args.dirs]
    while True:
        states = snapshot(folders)
        if not states:
            sys.exit(f"mlbasics.status: no job folders (with .hydra/overrides.yaml) under "
                     f"{', '.join(map(str, args.dirs))}")
        print(show(states), flush=True)
        if args.watch is None or all(s.state in ENDED or s.state == Status.incomplete.value for s in states):
            return
        time.sleep(args.watch)
        print(flush=True)


if __name__ == "__main__":
    main()
