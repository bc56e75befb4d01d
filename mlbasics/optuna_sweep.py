"""`hydra/sweeper=optuna`: a search instead of a grid, with today's Optuna, resumable, feeding the same tables.

The search space is written in Hydra's override syntax (`optimizer.lr=tag(log,interval(1e-3,1))`,
`model.hidden=choice([256,128],[512,256])`, `seed=range(0,3)`, `trainer.batch_size=tag(int,interval(16,256))`)
on the command line or in
`hydra.sweeper.params`; anything else is fixed. Trials run in batches of `n_jobs` through whichever
launcher is configured, each in its own folder `trial_NNNN`, and are scored from their results.json
(`objective`, default `val_acc`: never a test metric). A diverged trial is told to Optuna as pruned, a
failed one as failed, and the study goes on. The study lives in the sweep folder in Optuna's journal
file (no database server; safe on a shared file system), so the same command with the same
`hydra.sweep.dir` continues it: trials that ended are not run again, and a trial a stop cut short runs
again in its folder, resuming from its checkpoint. At the end: study.csv, best.json and two plots.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from mlbasics import records
from mlbasics.records import Status

log = logging.getLogger(__name__)
JOURNAL_FILE = "optuna-journal.log"
SAMPLERS = ("tpe", "random")
DIRECTIONS = ("maximize", "minimize")
OBJECTIVES = ("val_acc", "val_loss", "best_val_acc", "train_acc", "train_loss")  # never a test metric


class SearchSpaceError(ValueError):
    """An override Optuna cannot sample from; the message names it."""


def distribution(override: Override):
    """The Optuna distribution for one sweep override."""
    import optuna.distributions as dist

    value, key = override.value(), override.key_or_group
    if isinstance(value, ChoiceSweep):
        if value.shuffle or not value.list:
            raise SearchSpaceError(f"{key}: a choice needs at least one value (and no shuffle)")
        # a list choice (model.hidden) as the text of its override: Optuna stores plain values only
        return dist.CategoricalDistribution([list_text(v) if isinstance(v, list) else v for v in value.list])
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if not value.start < value.end or (log_scale and value.start <= 0):
            raise SearchSpaceError(f"{key}: interval({value.start},{value.end}) must have start < end"
                                   + (" and start > 0 on a log scale" if log_scale else ""))
        if "int" in value.tags:  # Hydra's interval() gives floats; tag(int, ...) asks for integers
            return dist.IntDistribution(int(value.start), int(value.end), log=log_scale)
        return dist.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    if isinstance(value, RangeSweep):
        if value.shuffle or value.step <= 0 or not value.start < value.stop:
            raise SearchSpaceError(f"{key}: range needs start < stop and a positive step")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            last = value.start + (value.stop - 1 - value.start) // value.step * value.step
            return dist.IntDistribution(value.start, last, step=value.step)
        raise SearchSpaceError(f"{key}: range() over floats is not a search space; use interval()")
    raise SearchSpaceError(f"{key}={override.input_line.split('=', 1)[1] if override.input_line else value}: "
                           f"Optuna cannot sample this; use choice(), interval(), tag(log,interval()) or range()")


def search_space(arguments: list[str]) -> tuple[list[str], dict[str, Any]]:
    """(the fixed overrides, {key: distribution}) from override strings."""
    fixed, space = [], {}
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            space[override.key_or_group] = distribution(override)
        else:
            fixed.append(override.input_line)
    if not space:
        raise SearchSpaceError("no search space: give at least one choice(), interval() or range() override")
    return fixed, space


def list_text(values: list) -> str:
    return f"[{','.join(map(str, values))}]"


def as_override(key: str, value: Any) -> str:
    """`key=value` as Hydra reads it back (floats exactly)."""
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def check(sweeper: Any) -> None:
    """One line and exit 2 for a setting that cannot work, before any trial runs."""
    from mlbasics.run import EXIT_USAGE, stop

    if not isinstance(sweeper.n_trials, int) or sweeper.n_trials < 1:
        stop(f"hydra.sweeper.n_trials={sweeper.n_trials} is not allowed: must be an integer >= 1", EXIT_USAGE)
    if not isinstance(sweeper.n_jobs, int) or sweeper.n_jobs < 1:
        stop(f"hydra.sweeper.n_jobs={sweeper.n_jobs} is not allowed: must be an integer >= 1", EXIT_USAGE)
    if sweeper.sampler not in SAMPLERS:
        stop(f"hydra.sweeper.sampler={sweeper.sampler} is not allowed: one of {', '.join(SAMPLERS)}", EXIT_USAGE)
    if sweeper.direction not in DIRECTIONS:
        stop(f"hydra.sweeper.direction={sweeper.direction} is not allowed: one of {', '.join(DIRECTIONS)}",
             EXIT_USAGE)
    if sweeper.config.hydra.launcher.get("detach"):
        stop("hydra.launcher.detach=true is not allowed with hydra/sweeper=optuna: each batch of trials is scored "
             "before the next is chosen, so the sweeper must wait", EXIT_USAGE)
    if sweeper.objective not in OBJECTIVES:
        stop(f"hydra.sweeper.objective={sweeper.objective} is not allowed: one of {', '.join(OBJECTIVES)} "
             f"(a key of results.json; the test set never chooses)", EXIT_USAGE)


def open_study(sweeper: Any, sweep_dir: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL_FILE)))
    study = optuna.create_study(study_name="mlbasics", storage=storage, direction=sweeper.direction,
                                load_if_exists=True)
    # seeded by the trials so far as well: a continued study must not draw its first trials' values again
    seed = None if sweeper.seed is None else sweeper.seed + len(study.trials)
    study.sampler = (optuna.samplers.TPESampler(seed=seed) if sweeper.sampler == "tpe"
                     else optuna.samplers.RandomSampler(seed=seed))
    return study


def sweep(sweeper: Any, arguments: list[str]) -> list:
    """Ask, launch, tell, until the study has n_trials ended trials; then the study's files."""
    from omegaconf import OmegaConf

    from mlbasics.run import EXIT_FAILED, EXIT_USAGE, stop

    check(sweeper)
    params = [f"{key}={value}" for key, value in (sweeper.params or {}).items()]
    try:
        fixed, space = search_space([*params, *arguments])
    except Exception as err:  # noqa: BLE001 - SearchSpaceError, or Hydra's parser's own errors
        stop(f"hydra/sweeper=optuna: {err}".splitlines()[0], EXIT_USAGE)
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir))
    journal = sweep_dir / JOURNAL_FILE
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(sweeper.config, sweep_dir / "multirun.yaml")
        study = open_study(sweeper, sweep_dir)
    except OSError as err:
        stop(f"could not write in {sweep_dir}: {err.strerror or err}", EXIT_FAILED)
    except Exception as err:  # noqa: BLE001 - a journal of random bytes fails inside Optuna in any way
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        stop(f"{journal} is not a study this sweeper can read ({reason}); nothing was changed: move it aside to "
             f"start a new study in this folder", EXIT_USAGE)
    try:
        return run_trials(sweeper, study, fixed, space, sweep_dir)
    except OSError as err:  # a full disk: the study and the trials so far stay as they are
        stop(f"could not write the study ({err.strerror or err}); the same command continues it from "
             f"{journal}", EXIT_FAILED)


def run_trials(sweeper: Any, study, fixed: list[str], space: dict[str, Any], sweep_dir: Path) -> list:
    from optuna.trial import TrialState

    returns = []
    # trials a stop cut short run again first, in their own folders (they resume or skip)
    pending = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    while True:
        ended = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        room = sweeper.n_trials - len(ended) - len(pending)
        batch = pending + [study.ask(space) for _ in range(max(min(sweeper.n_jobs - len(pending), room), 0))]
        pending = []
        if not batch:
            break
        jobs = [[*fixed, *(as_override(k, v) for k, v in trial.params.items()),
                 f"hydra.sweep.subdir={trial_folder(trial.number)}"] for trial in batch]
        log.info("trials %s", ", ".join(str(t.number) for t in batch))
        returns.append(sweeper.launcher.launch(jobs, initial_job_idx=batch[0].number))
        for trial in batch:
            tell(study, trial.number, sweep_dir / trial_folder(trial.number), sweeper.objective)
    write_study_files(study, sweep_dir, sweeper.objective)
    return returns


def trial_folder(number: int) -> str:
    return f"trial_{number:04d}"


def tell(study, number: int, folder: Path, objective: str) -> None:
    from optuna.trial import TrialState

    results = records.read_results(folder / records.RESULTS_FILE) or {}
    status, value = results.get("status"), results.get(objective)
    if status == Status.completed and isinstance(value, (int, float)):
        study.tell(number, float(value))
    elif status == Status.diverged:
        study.tell(number, state=TrialState.PRUNED)
    else:
        log.warning("trial %d %s: told to Optuna as failed", number,
                    f"ended {status}: {results.get('error')}" if status else "left no results.json")
        study.tell(number, state=TrialState.FAIL)
    log.info("trial %d: %s", number, study.trials[number].state.name.lower()
             + (f", {objective} {study.trials[number].value:.4f}" if study.trials[number].value is not None else ""))


def write_study_files(study, sweep_dir: Path, objective: str) -> None:
    """study.csv (every trial), best.json (the best trial's params, value and folder) and two plots."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    frame.insert(1, "folder", [trial_folder(n) for n in frame["number"]])
    records.write_text(sweep_dir / "study.csv", frame.to_csv(index=False))
    completed = [t for t in study.trials if t.value is not None]
    if not completed:
        log.warning("no trial completed: no best.json")
        return
    best = study.best_trial
    records.write_text(sweep_dir / "best.json", json.dumps(
        {"number": best.number, "objective": objective, "value": best.value,
         "params": best.params, "folder": str(sweep_dir / trial_folder(best.number))}, indent=2, default=list) + "\n")
    log.info("best: trial %d, %s %.4f, %s", best.number, objective, best.value, best.params)
    save_plots(study, sweep_dir)


def save_plots(study, sweep_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    from optuna.visualization import matplotlib as optuna_plots

    from mlbasics.plots import save

    with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
        warnings.simplefilter("ignore")
        save(optuna_plots.plot_optimization_history(study).figure, sweep_dir / "optimization_history.png")
        if len({t.number for t in study.trials if t.value is not None}) >= 2 and len(study.best_trial.params) > 1:
            try:
                axes = optuna_plots.plot_param_importances(study)
                save(axes.figure, sweep_dir / "param_importances.png")
            except (RuntimeError, ValueError) as err:  # too few or identical trials to rank parameters
                log.info("no param_importances.png: %s", err)
