"""Entry point: `python -m mlbasics.run [overrides]`, or `-m` for a sweep.

A single run prints its final accuracies and exits non-zero with one line if it did not
complete. Inside a multirun a job always returns normally after recording its outcome in
results.json, because Hydra skips the end-of-sweep callbacks once a job has raised.
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

from mlbasics.config import PROJECT_DIR, ConfigError, register, validate
from mlbasics.train import train

log = logging.getLogger(__name__)
register()


def threads_per_job(launcher: DictConfig) -> int | None:
    """Divide the cores between the jobs a launcher runs side by side (None: leave torch's default)."""
    cores = len(os.sched_getaffinity(0))
    if "n_jobs" in launcher:  # joblib's convention: -1 = one job per core, -2 = all cores but one, ...
        n_jobs = launcher.n_jobs if launcher.n_jobs > 0 else max(1, cores + 1 + launcher.n_jobs)
        return max(1, cores // n_jobs)
    if launcher.get("cpus_per_task"):  # submitit: each job owns the CPUs it asked SLURM for
        return int(launcher.cpus_per_task)
    return None


@hydra.main(version_base="1.3", config_path=str(PROJECT_DIR / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if cfg.trainer.threads is None:
        with open_dict(cfg):
            cfg.trainer.threads = threads_per_job(hydra_cfg.launcher)
    single_run = hydra_cfg.mode == RunMode.RUN
    if single_run:  # in a multirun, train() records the error as the job's result instead
        try:
            validate(cfg)
        except ConfigError as err:
            print(f"mlbasics: {err}", file=sys.stderr)
            sys.exit(2)
    out_dir = Path(hydra_cfg.runtime.output_dir)
    results = train(cfg, out_dir, overrides=list(hydra_cfg.overrides.task))
    if not single_run:
        log.info("job %s: %s", hydra_cfg.job.num, results["status"])
        return
    if results["status"] != "completed":
        print(f"mlbasics: run {results['status']}: {results['error']} (see {out_dir})", file=sys.stderr)
        sys.exit(1)
    print(f"train_acc {results['train_acc']:.4f}  val_acc {results['val_acc']:.4f}  "
          f"test_acc {results['test_acc']:.4f}  ({results['wall_seconds']:.1f}s, {results['device']}) -> {out_dir}")


if __name__ == "__main__":
    main()
