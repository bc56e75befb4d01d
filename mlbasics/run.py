"""Entry point: `python -m mlbasics.run [overrides]`, or `-m` for a sweep.

A single run prints its final accuracies, or one line saying why it did not complete, and
exits non-zero then: 1 for a run that diverged or failed, 2 for a config or folder that
cannot work, 130 for Ctrl-C. Inside a multirun a job always returns normally after recording
its outcome in results.json, because Hydra skips the end-of-sweep callbacks once a job has raised.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from mlbasics import records
from mlbasics.config import PROJECT_DIR, ConfigError, register, validate
from mlbasics.cores import free_cores
from mlbasics.train import FolderHoldsAnotherRun, Interrupted, Job, set_aside_refused, train

log = logging.getLogger(__name__)
register()
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def threads_per_job(launcher: DictConfig) -> int:
    """Divide the cores between the jobs a launcher runs side by side; one job alone gets the free cores."""
    cores = len(os.sched_getaffinity(0))
    if "n_jobs" in launcher:  # joblib's convention: -1 = one job per core, -2 = all cores but one, ...
        n_jobs = launcher.n_jobs if launcher.n_jobs > 0 else max(1, cores + 1 + launcher.n_jobs)
        return max(1, cores // n_jobs)
    if launcher.get("cpus_per_task"):  # submitit: each job owns the CPUs it asked SLURM for
        return int(launcher.cpus_per_task)
    return free_cores()


def stop(message: str, code: int) -> None:
    print(f"mlbasics: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=str(PROJECT_DIR / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if cfg.trainer.threads is None:
        with open_dict(cfg):
            cfg.trainer.threads = threads_per_job(hydra_cfg.launcher)
    single_run = hydra_cfg.mode == RunMode.RUN
    out_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    if single_run:  # in a multirun, train() records the error as the job's result instead
        try:
            validate(cfg)
        except ConfigError as err:
            stop(str(err), EXIT_USAGE)
    results = run_job(cfg, out_dir, overrides, single_run)
    if results is None:
        return
    if not single_run:
        level = logging.INFO if results["status"] == records.Status.completed else logging.ERROR
        log.log(level, "job %s: %s%s", hydra_cfg.job.num, results["status"],
                f": {results['error']}" if results.get("error") else "")
        return
    if results["status"] != records.Status.completed:
        stop(f"run {results['status']}: {results['error']} (see {out_dir})", EXIT_FAILED)
    print(f"train_acc {results['train_acc']:.4f}  val_acc {results['val_acc']:.4f}  "
          f"test_acc {results['test_acc']:.4f}  ({results['wall_seconds']:.1f}s, {results['device']}) -> {out_dir}")


def run_job(cfg: DictConfig, out_dir: Path, overrides: list[str], single_run: bool) -> dict | None:
    """train(), with each way it can stop turned into one line and an exit status (a single run) or a
    logged job outcome (a sweep goes on); None where a sweep's job could record nothing."""
    job_num = None if single_run else HydraConfig.get().job.num  # a single run has none
    try:
        return train(cfg, out_dir, overrides=overrides)
    except FolderHoldsAnotherRun as refusal:
        if single_run:  # Hydra has already written this invocation's config into .hydra/: put the run's back
            earlier = refusal.earlier
            if isinstance(earlier.get("config"), dict):
                records.write_hydra_record(out_dir / ".hydra", earlier["config"], earlier.get("overrides", []))
            stop(str(refusal), EXIT_USAGE)
        try:
            return set_aside_refused(Job.of(cfg, out_dir, overrides), refusal)
        except records.OutputError as err:
            log.error("job %s: %s (its refusal could not be recorded)", job_num, err)
    except records.OutputError as err:
        if single_run:
            stop(f"run failed: {err}; earlier files in {out_dir} are as they were", EXIT_FAILED)
        log.error("job %s: %s (its results could not be recorded)", job_num, err)
    except Interrupted as stopped:
        sweep_dir = None if single_run else Path(HydraConfig.get().sweep.dir)
        stop(interrupted_message(stopped, str(out_dir / records.CHECKPOINT_FILE), sweep_dir), EXIT_INTERRUPTED)
    return None


def interrupted_message(stopped: Interrupted, checkpoints: str, sweep_dir: Path | None) -> str:
    done, saved = stopped.epochs_done, stopped.epochs_saved
    if saved:
        held = "" if saved == done else f" (checkpoint.pt holds {saved})"
        where = f"interrupted after epoch {done}{held}; the same command resumes from {checkpoints}"
    elif done and not stopped.checkpointing:
        where = f"interrupted after epoch {done} (trainer.checkpoint=false: nothing saved to resume from)"
    else:
        where = "interrupted before the first epoch was saved; the same command starts it again"
    if sweep_dir is None:
        return where
    return (f"sweep {where.replace('the same command', f'the same command with hydra.sweep.dir={sweep_dir}')}"
            f"; tables of the jobs so far: python -m mlbasics.report {sweep_dir}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # before or after a run (imports, Hydra's start): nothing to resume
        stop("interrupted", EXIT_INTERRUPTED)
