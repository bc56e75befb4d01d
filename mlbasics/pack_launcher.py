"""`hydra/launcher=packed`: a sweep's jobs grouped into packs that train as one stacked model each.

Jobs go into one pack when their configs agree on every key but those a stacked model carries per
member (`PER_MEMBER`): the data, the layer widths, BatchNorm, batch size, epochs, schedule type and
device fix the tensors' shapes and the step sequence, so they must be shared. A job the packer cannot
carry, or one alone in its group, runs by itself exactly as the basic launcher runs it, and the log
says why. Each member still gets its own folder with `.hydra/`, run.log and the files of a separate
run (see mlbasics.pack). Hydra finds this launcher through hydra_plugins/mlbasics_launchers.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mlbasics import records
from mlbasics.sweep_jobs import job_folder, sweep_config, task_config, task_container
from mlbasics.cores import free_cores

log = logging.getLogger(__name__)

# Keys each member of a pack may set for itself; every other key must be the same across a pack.
PER_MEMBER = frozenset({
    "seed", "optimizer.lr", "optimizer.momentum", "optimizer.nesterov", "optimizer.weight_decay",
    "optimizer.cycle_momentum", "optimizer.lr_unit", "trainer.label_smoothing", "trainer.diverge_loss",
    "model.dropout", "model.activation", "probe.collapse", "probe.symmetry",
    # change no number: where the files go, how they are shown
    "trainer.threads", "trainer.checkpoint", "trainer.start_over", "trainer.tensorboard", "report.columns",
})


def why_alone(task: dict[str, Any]) -> str | None:
    """Why a job cannot be packed (None: it can)."""
    probe = task["probe"]
    if probe["landscape"]["every"] or probe["ics"]["every"]:
        return "probe.landscape.every / probe.ics.every measure one model between its backward pass and its step"
    return None


def pack_key(task: dict[str, Any]) -> str:
    shared = {key: value for key, value in records.flatten(task).items() if key not in PER_MEMBER}
    return repr(sorted(shared.items()))


def plan(tasks: Sequence[dict[str, Any]], max_pack: int) -> tuple[list[list[int]], dict[int, str]]:
    """(packs as lists of job indices, {index: why it runs alone}) for the jobs' resolved task configs.

    A group larger than `max_pack` is cut into near-equal packs, so no pack is left with a lone member
    when that can be helped.
    """
    groups: dict[str, list[int]] = {}
    alone: dict[int, str] = {}
    for i, task in enumerate(tasks):
        reason = why_alone(task)
        if reason:
            alone[i] = reason
        else:
            groups.setdefault(pack_key(task), []).append(i)
    packs = []
    for members in groups.values():
        n_packs = -(-len(members) // max_pack)
        size, larger = divmod(len(members), n_packs)  # the first `larger` packs take one member more
        bounds = [n * size + min(n, larger) for n in range(n_packs + 1)]
        for chunk in (members[start:end] for start, end in zip(bounds, bounds[1:])):
            if len(chunk) == 1:
                alone[chunk[0]] = "no other job of the sweep shares its shapes and step sequence"
            else:
                packs.append(chunk)
    return packs, alone


def pack_name(job_numbers: Sequence[int]) -> str:
    """A pack's id in logs and results.json: its first and last job number."""
    return f"{job_numbers[0]}-{job_numbers[-1]}"


def pack_threads(tasks: Sequence[dict[str, Any]]) -> int:
    """The cores K jobs asked for between them, as far as this process may use cores; else the free cores."""
    asked = [task["trainer"]["threads"] for task in tasks]
    if any(t is None for t in asked):
        return free_cores()
    return max(1, min(sum(asked), len(os.sched_getaffinity(0))))


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    from mlbasics.run import EXIT_USAGE, stop

    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    if not isinstance(launcher.max_pack, int) or launcher.max_pack < 1:
        stop(f"hydra.launcher.max_pack={launcher.max_pack} is not allowed: must be an integer >= 1", EXIT_USAGE)
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    sweep_configs = [sweep_config(launcher, overrides, idx)
                     for idx, overrides in enumerate(job_overrides, start=initial_job_idx)]
    tasks = [task_container(c) for c in sweep_configs]
    packs, alone = plan(tasks, launcher.max_pack)
    log.info("Launching %d jobs: %d in %d packs, %d alone (max_pack=%d)", len(tasks),
             sum(map(len, packs)), len(packs), len(alone), launcher.max_pack)
    units = sorted([[i] for i in alone] + packs)
    returns: dict[int, JobReturn] = {}
    for unit in units:
        if len(unit) == 1:
            i = unit[0]
            log.info("\t#%d : %s  (alone: %s)", initial_job_idx + i,
                     " ".join(filter_overrides(job_overrides[i])), alone[i])
            returns[i] = run_job(hydra_context=context, task_function=launcher.task_function,
                                 config=sweep_configs[i], job_dir_key="hydra.sweep.dir",
                                 job_subdir_key="hydra.sweep.subdir")
        else:
            pack_id = pack_name([initial_job_idx + i for i in unit])
            for i in unit:
                log.info("\t#%d : %s  (pack %s)", initial_job_idx + i, " ".join(filter_overrides(job_overrides[i])),
                         pack_id)
            returns.update(zip(unit, run_pack(context, launcher.task_function, [sweep_configs[i] for i in unit],
                                              [tasks[i] for i in unit], pack_id)))
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return [returns[i] for i in range(len(tasks))]


def run_pack(context, task_function, sweep_configs: list[DictConfig], tasks: list[dict[str, Any]],
             pack_id: str, threads: int | None = None) -> list[JobReturn]:
    """Each member's folder set up as Hydra's run_job sets up a job's, then the pack trained (with `threads`
    torch threads, by default those its members asked for)."""
    import torch

    from mlbasics.pack import train_pack
    from mlbasics.run import EXIT_INTERRUPTED, interrupted_message, stop
    from mlbasics.train import Interrupted

    original = HydraConfig.instance().cfg
    returns, jobs = [], []
    try:
        for config in sweep_configs:
            ret, out_dir = prepare_job(config)
            context.callbacks.on_job_start(config=config, task_function=task_function)
            returns.append(ret)
            jobs.append((ret.cfg, out_dir, list(ret.overrides)))
    finally:
        HydraConfig.instance().cfg = original
    before = torch.get_num_threads()
    torch.set_num_threads(threads or pack_threads(tasks))
    try:
        results = train_pack(jobs, pack_id)
    except Interrupted as stopped:
        sweep_dir = Path(str(sweep_configs[0].hydra.sweep.dir))
        stop(interrupted_message(stopped, f"each packed job's {records.CHECKPOINT_FILE}", sweep_dir),
             EXIT_INTERRUPTED)
    finally:
        torch.set_num_threads(before)  # the jobs launched alone after this pack choose their own
    for config, ret, result in zip(sweep_configs, returns, results):
        ret.status, ret.return_value = JobStatus.COMPLETED, result
        level = logging.INFO if result["status"] == records.Status.completed else logging.ERROR
        log.log(level, "job %s: %s%s", config.hydra.job.num, result["status"],
                f": {result['error']}" if result.get("error") else "")
        context.callbacks.on_job_end(config=config, job_return=ret)
    return returns


def prepare_job(config: DictConfig) -> tuple[JobReturn, Path]:
    """What hydra.core.utils.run_job does before it calls the task: the job's folder and its .hydra/ files."""
    out_dir = job_folder(config)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(out_dir.resolve())
    HydraConfig.instance().set_config(config)
    task_cfg = task_config(config)
    ret = JobReturn(cfg=task_cfg, hydra_cfg=copy.deepcopy(HydraConfig.instance().cfg),
                    overrides=OmegaConf.to_container(config.hydra.overrides.task), working_dir=os.getcwd(),
                    task_name=config.hydra.job.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.hydra.output_subdir is not None:
        hydra_dir = out_dir / str(config.hydra.output_subdir)
        hydra_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(task_cfg, hydra_dir / "config.yaml")
        OmegaConf.save(ret.hydra_cfg, hydra_dir / "hydra.yaml")
        OmegaConf.save(config.hydra.overrides.task, hydra_dir / "overrides.yaml")
    return ret, out_dir
