"""`hydra/launcher=slurm`: submitit's SLURM launcher, in arrays the cluster accepts, leaving out jobs an
earlier run completed, with a wait that notices jobs gone from the queue, or none at all (detach).

With `hydra.launcher.pack=true` each array task trains a pack of jobs (as `hydra/launcher=packed` packs
them), so one GPU node trains many small networks at once.

With `hydra.launcher.detach=true` the sweep is submitted and the command returns: a last SLURM job,
depending (`afterany`) on every array, runs `python -m mlbasics.report` on the sweep folder when they
have ended, so the tables are made without the user (or their SSH session).

A sweep larger than `hydra.launcher.max_array_size` (default: the cluster's MaxArraySize) goes out as
several arrays, each depending (`afterany`) on the one before, so `array_parallelism` still bounds how
many of the sweep's jobs run at once.

hydra-submitit-launcher waits for each job's result through submitit, which asks `sacct` for job
states. Where SLURM keeps no accounting (`sacct` fails, as on the one-node test cluster), a job
that was cancelled or lost never gets a state, so the sweep polled forever, warning about sacct
three times per poll. Here the wait ends for a job when its result file exists or when `squeue`
no longer lists it (twice in a row, so a requeue in progress is not mistaken for an end); a job that
left without a result is logged as gone and is `incomplete` in the tables, which are made as usual.
Results are read from the job folders by the report, never by unpickling submitit's result files.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from omegaconf import OmegaConf

from mlbasics.pack_launcher import pack_name, plan
from mlbasics.status import squeue_states
from mlbasics.sweep_jobs import completed_before, sweep_config, task_container

log = logging.getLogger(__name__)
POLL_SECONDS = 2.0
DEFAULT_MAX_ARRAY = 1000  # SLURM's own default MaxArraySize is 1001


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Submit the jobs not completed before, in arrays; then wait for them, or (detach) hand the tables to a
    SLURM job that runs when they have ended, and return."""
    from mlbasics.run import EXIT_USAGE, stop

    params = dict(launcher.params)
    detach, pack, max_pack = bool(params.pop("detach")), bool(params.pop("pack")), params.pop("pack_max")
    array_size = params.pop("max_array_size") or cluster_max_array_size()
    if array_size < 1:
        stop(f"hydra.launcher.max_array_size={array_size} is not allowed: must be >= 1 (or null)", EXIT_USAGE)
    if max_pack < 1:
        stop(f"hydra.launcher.pack_max={max_pack} is not allowed: must be >= 1", EXIT_USAGE)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info("Submitit '%s' sweep output dir : %s", launcher._EXECUTOR, sweep_dir)
    configs, todo = {}, []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        configs[idx] = sweep_config(launcher, overrides, idx)
        done = completed_before(configs[idx])
        log.info("\t#%d : %s%s", idx, " ".join(filter_overrides(overrides)),
                 "  (completed by an earlier run of this sweep: not submitted)" if done else "")
        if not done:
            todo.append(idx)
    returns = [JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)
               for overrides in job_overrides]
    if not todo:
        log.info("every job of the sweep is completed: nothing to submit")
        return returns
    state = Singleton.get_state()
    overrides_of = {idx: list(job_overrides[idx - initial_job_idx]) for idx in todo}
    alone, units = todo, []
    if pack:  # one array task per pack: on a GPU node one GPU trains all of a pack's members
        packs, reasons = plan([task_container(configs[i]) for i in todo], max_pack)
        alone, units = [todo[k] for k in sorted(reasons)], [[todo[k] for k in members] for members in packs]
        for k, reason in sorted(reasons.items()):
            log.info("\t#%d runs alone: %s", todo[k], reason)
        for unit in units:
            log.info("\tpack %s: jobs %s", pack_name(unit), ", ".join(f"#{i}" for i in unit))
    submissions = [(launcher, [(overrides_of[i], "hydra.sweep.dir", i, f"job_id_for_{i}", state) for i in alone]),
                   (PackTask(launcher), [([(overrides_of[i], i) for i in unit], pack_name(unit), state)
                                         for unit in units])]
    executor = make_executor(launcher, params)
    additional = dict(params.get("additional_parameters") or {})
    jobs: list = []
    for task, arguments in submissions:
        for start in range(0, len(arguments), array_size):  # (none for an empty list)
            if jobs:  # each further array waits for the one before: array_parallelism bounds the whole sweep
                executor.update_parameters(**{f"{launcher._EXECUTOR}_additional_parameters": {
                    **additional, "dependency": f"afterany:{array_of(jobs[-1])}"}})
            jobs += executor.map_array(task, *zip(*arguments[start:start + array_size]))
    arrays = list(dict.fromkeys(array_of(job) for job in jobs))
    submitted = f"submitted {len(jobs)} {'array tasks' if pack else 'jobs'} as SLURM array{'s' if len(arrays) > 1 else ''} {', '.join(arrays)}"
    if detach:
        report_job = submit_report(executor, launcher, sweep_dir, arrays, additional)
        log.info("%s; SLURM job %s makes the tables when they have ended (whatever their outcomes).\n"
                 "  watch:   python -m mlbasics.status %s --watch\n"
                 "  tables:  python -m mlbasics.report %s   (at any time; the job above does it at the end)\n"
                 "  resume:  the same command with hydra.sweep.dir=%s submits only the jobs not completed",
                 submitted, report_job, sweep_dir, sweep_dir, sweep_dir)
        return returns
    log.info("%s; waiting for them (Ctrl-C stops the waiting, not the jobs)", submitted)
    wait_for(jobs)
    return returns


class PackTask:
    """An array task that trains a pack of the sweep's jobs on its node (pack_launcher.run_pack); like the
    launcher's own jobs, it is requeued on a time limit or preemption and its members resume."""

    def __init__(self, launcher: Any) -> None:
        self.hydra_context, self.config, self.task_function = launcher.hydra_context, launcher.config, \
            launcher.task_function
        self.threads = launcher.params.get("cpus_per_task")

    def __call__(self, members: list[tuple[list[str], int]], pack_id: str, singleton_state: dict) -> list[JobReturn]:
        from mlbasics.pack_launcher import run_pack

        Singleton.set_state(singleton_state)
        setup_globals()
        configs = [sweep_config(self, overrides, idx) for overrides, idx in members]
        return run_pack(self.hydra_context, self.task_function, configs, [task_container(c) for c in configs],
                        pack_id, threads=self.threads)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def make_executor(launcher: Any, params: dict[str, Any]):
    """submitit's executor with the launcher's settings, mapped as hydra-submitit-launcher maps them."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(params)
    executor = submitit.AutoExecutor(cluster=launcher._EXECUTOR, folder=params.pop("submitit_folder"),
                                     **{f"{launcher._EXECUTOR}_max_num_timeout": params.pop("max_num_timeout")})
    queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in queue_keys else f"{launcher._EXECUTOR}_{key}": value
                                  for key, value in params.items()})
    return executor


def submit_report(executor, launcher: Any, sweep_dir: Path, arrays: list[str], additional: dict) -> str:
    """A small job, after every array has ended, that runs `python -m mlbasics.report SWEEP_DIR`; its id."""
    from mlbasics import report

    executor.update_parameters(name="report", gpus_per_node=0, **{
        f"{launcher._EXECUTOR}_additional_parameters": {**additional, "dependency": f"afterany:{':'.join(arrays)}"}})
    return executor.submit(report.main, [str(sweep_dir)]).job_id


def array_of(job) -> str:
    return job.job_id.split("_")[0]


def cluster_max_array_size() -> int:
    """The cluster's MaxArraySize (`scontrol show config`), or DEFAULT_MAX_ARRAY where it does not answer."""
    try:
        shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", shown.stdout, re.MULTILINE)
    return int(found.group(1)) if found and int(found.group(1)) > 0 else DEFAULT_MAX_ARRAY


def wait_for(jobs: list, poll_seconds: float = POLL_SECONDS) -> None:
    """Until every job has a result file or has left the queue; the gone ones are logged."""
    waiting = {job.job_id: job for job in jobs}
    absent_once: set[str] = set()
    while waiting:
        for job_id, job in list(waiting.items()):
            if job.paths.result_pickle.exists():
                del waiting[job_id]
        queued = squeue_states() if waiting else None
        if queued is not None:
            for job_id in list(waiting):
                if job_id in queued:
                    absent_once.discard(job_id)
                elif job_id not in absent_once:
                    absent_once.add(job_id)
                elif not waiting[job_id].paths.result_pickle.exists():
                    log.error("SLURM job %s left the queue without a result (cancelled, or its node was lost); "
                              "it is incomplete in the tables, and running the sweep again retrains it", job_id)
                    del waiting[job_id]
        if waiting:
            time.sleep(poll_seconds)
