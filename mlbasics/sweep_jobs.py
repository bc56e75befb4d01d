"""What a launcher of ours knows of a sweep's job before running it: its config and its folder.

Hydra composes a job's config (`load_sweep_config`) and names its folder (`hydra.sweep.subdir`) only
when the job runs; the packed launcher needs both to group jobs, and the SLURM launcher to leave out
jobs that an earlier run of the same sweep completed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mlbasics import records
from mlbasics.records import Status


def sweep_config(launcher: Any, overrides: Sequence[str], idx: int) -> DictConfig:
    """The job's whole config (with its `hydra` node), as Hydra's launchers compose it."""
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(config):
        config.hydra.job.id = config.hydra.job.num = idx
    return config


def task_config(config: DictConfig) -> DictConfig:
    """The config the task function gets: without the `hydra` node."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def task_container(config: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(task_config(config), resolve=True, enum_to_str=True)


def job_folder(config: DictConfig) -> Path:
    """`hydra.sweep.dir/hydra.sweep.subdir` (resolved as Hydra resolves them, with the job's HydraConfig)."""
    original = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(config)
        return Path(str(config.hydra.sweep.dir)) / str(OmegaConf.select(config, "hydra.sweep.subdir"))
    finally:
        HydraConfig.instance().cfg = original


def completed_before(config: DictConfig) -> bool:
    """Whether the job's folder holds a completed run of this very config (the job would only skip)."""
    results = records.read_results(job_folder(config) / records.RESULTS_FILE)
    return bool(results) and results.get("status") == Status.completed and \
        results.get("fingerprint") == records.fingerprint(task_container(config))[0]
