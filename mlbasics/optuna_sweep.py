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

A fair comparison of arms: a plain list (`model.activation=relu,tanh`, a grid as the basic sweeper
would run it) makes each of its values an arm, searched in a study of its own with the same budget
(`n_trials`), its trials in `<arm>/trial_NNNN`, a batch holding `n_jobs` trials of every arm. Then
(`hydra.sweeper.confirm`, overrides such as `[seed=0,1,2,3,4]`) each arm's best trial is trained again
over that grid in `confirm/<arm>/`, and `confirm/summary.md` compares the arms on the test set, which
chose nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from mlbasics import records
from mlbasics.records import Status

log = logging.getLogger(__name__)
JOURNAL_FILE = "optuna-journal.log"
CONFIRM_FOLDER = "confirm"
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


def search_space(arguments: list[str]) -> tuple[list[str], dict[str, Any], list[str]]:
    """(the fixed overrides, {key: distribution}, the arms' overrides) from override strings.

    `choice(a,b)`, `interval(...)` and `range(...)` are searched; a plain list `a,b` is a grid of arms,
    as the basic sweeper would run it, each arm searched in a study of its own.
    """
    fixed, space, arms = [], {}, []
    for override in OverridesParser.create().parse_overrides(arguments):
        value = override.value()
        if isinstance(value, ChoiceSweep) and value.simple_form:
            arms.append(override.input_line)
        elif override.is_sweep_override():
            space[override.key_or_group] = distribution(override)
        else:
            fixed.append(override.input_line)
    if not space:
        raise SearchSpaceError("no search space: give at least one choice(), interval() or range() override")
    return fixed, space, arms


def list_text(values: list) -> str:
    return f"[{','.join(map(str, values))}]"


def as_override(key: str, value: Any) -> str:
    """`key=value` as Hydra reads it back (floats exactly)."""
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def grid(overrides: list[str], setting: str) -> list[list[str]]:
    """Every combination of these overrides' lists, as override lists ([[]] for none)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    for override in parsed:
        if override.is_sweep_override() and not isinstance(override.value(), (ChoiceSweep, RangeSweep)):
            raise SearchSpaceError(f"{setting}: {override.input_line}: give a value or a list of values (a,b,c)")
    return BasicSweeper.split_arguments(parsed, None)[0] if parsed else [[]]


def subdir(folder: str) -> str:
    """The override that puts a job in `folder`, quoted: arm folders hold `=`, `,` and brackets."""
    return "hydra.sweep.subdir='" + folder.replace("'", "\\'") + "'"  # a quoted value unescapes \' alone


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


@dataclass
class Arm:
    """One arm: its overrides, its study, and the folder its trials go in (the sweep folder without arms)."""
    overrides: list[str]
    study: Any
    folder: str

    @property
    def label(self) -> str:
        return ",".join(self.overrides)

    def trial_folder(self, number: int) -> str:
        return f"{self.folder}/{trial_folder(number)}" if self.folder else trial_folder(number)


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


def open_study(sweeper: Any, storage, name: str):
    import optuna

    study = optuna.create_study(study_name=name, storage=storage, direction=sweeper.direction, load_if_exists=True)
    # seeded by the trials so far as well: a continued study must not draw its first trials' values again
    seed = None if sweeper.seed is None else sweeper.seed + len(study.trials)
    study.sampler = (optuna.samplers.TPESampler(seed=seed) if sweeper.sampler == "tpe"
                     else optuna.samplers.RandomSampler(seed=seed))
    return study


def sweep(sweeper: Any, arguments: list[str]) -> list:
    """Ask, launch, tell, until every arm's study has n_trials ended trials; the study's files; the confirmation."""
    import optuna
    from omegaconf import OmegaConf
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from mlbasics.run import EXIT_FAILED, EXIT_USAGE, stop

    check(sweeper)
    lines = {key: f"{key}={value}" for key, value in (sweeper.params or {}).items()}
    lines.update({key_of(line): line for line in arguments})  # the command line wins over hydra.sweeper.params
    try:
        fixed, space, arm_lines = search_space(list(lines.values()))
        arm_grid, confirm_grid = grid(arm_lines, "arms"), grid(list(sweeper.confirm or []), "hydra.sweeper.confirm")
    except Exception as err:  # noqa: BLE001 - SearchSpaceError, or Hydra's parser's own errors
        stop(f"hydra/sweeper=optuna: {err}".splitlines()[0], EXIT_USAGE)
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir))
    journal = sweep_dir / JOURNAL_FILE
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(sweeper.config, sweep_dir / "multirun.yaml")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = JournalStorage(JournalFileBackend(str(journal)))
        # without arms the one study keeps the name (and its trials the folders) it always had
        arms = [Arm(overrides, open_study(sweeper, storage, ",".join(overrides) or "mlbasics"), ",".join(overrides))
                for overrides in arm_grid]
    except OSError as err:
        stop(f"could not write in {sweep_dir}: {err.strerror or err}", EXIT_FAILED)
    except Exception as err:  # noqa: BLE001 - a journal of random bytes fails inside Optuna in any way
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        stop(f"{journal} is not a study this sweeper can read ({reason}); nothing was changed: move it aside to "
             f"start a new study in this folder", EXIT_USAGE)
    try:
        returns = run_trials(sweeper, arms, fixed, space, sweep_dir)
        write_study_files(arms, sweep_dir, sweeper.objective)
        if sweeper.confirm:
            returns.extend(confirm(sweeper, arms, fixed, confirm_grid, sweep_dir))
        return returns
    except OSError as err:  # a full disk: the study and the trials so far stay as they are
        stop(f"could not write the study ({err.strerror or err}); the same command continues it from "
             f"{journal}", EXIT_FAILED)


def run_trials(sweeper: Any, arms: list[Arm], fixed: list[str], space: dict[str, Any], sweep_dir: Path) -> list:
    from optuna.trial import TrialState

    returns, job_number = [], sum(len(arm.study.trials) for arm in arms)
    # trials a stop cut short run again first, in their own folders (they resume or skip)
    pending = {id(arm): [t for t in arm.study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
               for arm in arms}
    while True:
        batch = []
        for arm in arms:
            ended = [t for t in arm.study.get_trials(deepcopy=False) if t.state.is_finished()]
            running = pending.pop(id(arm), [])
            room = sweeper.n_trials - len(ended) - len(running)
            asked = [arm.study.ask(space) for _ in range(max(min(sweeper.n_jobs - len(running), room), 0))]
            batch += [(arm, trial) for trial in running + asked]
        if not batch:
            return returns
        jobs = [[*fixed, *arm.overrides, *(as_override(k, v) for k, v in trial.params.items()),
                 subdir(arm.trial_folder(trial.number))] for arm, trial in batch]
        log.info("trials %s", ", ".join(arm.trial_folder(trial.number) for arm, trial in batch))
        returns.append(sweeper.launcher.launch(jobs, initial_job_idx=job_number))
        job_number += len(jobs)
        for arm, trial in batch:
            tell(arm, trial.number, sweep_dir / arm.trial_folder(trial.number), sweeper.objective)


def trial_folder(number: int) -> str:
    return f"trial_{number:04d}"


def tell(arm: Arm, number: int, folder: Path, objective: str) -> None:
    from optuna.trial import TrialState

    study, name = arm.study, arm.trial_folder(number)
    results = records.read_results(folder / records.RESULTS_FILE) or {}
    status, value = results.get("status"), results.get(objective)
    if status == Status.completed and isinstance(value, (int, float)):
        study.tell(number, float(value))
    elif status == Status.diverged:
        study.tell(number, state=TrialState.PRUNED)
    else:
        log.warning("trial %s %s: told to Optuna as failed", name,
                    f"ended {status}: {results.get('error')}" if status else "left no results.json")
        study.tell(number, state=TrialState.FAIL)
    log.info("trial %s: %s", name, study.trials[number].state.name.lower()
             + (f", {objective} {study.trials[number].value:.4f}" if study.trials[number].value is not None else ""))


def best_trial(arm: Arm):
    """The arm's best trial, or None when none completed."""
    return arm.study.best_trial if any(t.value is not None for t in arm.study.trials) else None


def write_study_files(arms: list[Arm], sweep_dir: Path, objective: str) -> None:
    """study.csv (every trial), best.json (each best trial's params, value and folder) and two plots."""
    import pandas as pd

    frames = []
    for arm in arms:
        frame = arm.study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
        frame.insert(1, "folder", [arm.trial_folder(n) for n in frame["number"]])
        if arm.overrides:
            frame.insert(0, "arm", arm.label)
        frames.append(frame)
    records.write_text(sweep_dir / "study.csv", pd.concat(frames, ignore_index=True).to_csv(index=False))
    best = {}
    for arm in arms:
        trial = best_trial(arm)
        if trial is None:
            log.warning("%sno trial completed", f"{arm.label}: " if arm.label else "")
            continue
        best[arm.label] = {"number": trial.number, "objective": objective, "value": trial.value,
                           "params": trial.params, "folder": str(sweep_dir / arm.trial_folder(trial.number))}
        log.info("best%s: trial %d, %s %.4f, %s", f" of {arm.label}" if arm.label else "", trial.number, objective,
                 trial.value, trial.params)
    if not best:
        log.warning("no trial completed: no best.json")
        return
    # one study: its best trial; arms: {"objective": ..., "arms": {label: its best trial}}
    content = {"objective": objective, "arms": best} if arms[0].overrides else best[""]
    records.write_text(sweep_dir / "best.json", json.dumps(content, indent=2, default=list) + "\n")
    save_plots(arms, sweep_dir)


def confirm(sweeper: Any, arms: list[Arm], fixed: list[str], confirm_grid: list[list[str]], sweep_dir: Path) -> list:
    """Each arm's best trial trained again over the confirm grid, in confirm/<arm>/; their table by arm."""
    from mlbasics.report import report

    jobs, folders = [], []
    for arm in arms:
        trial = best_trial(arm)
        if trial is None:
            log.warning("%s: no completed trial to confirm", arm.label or "the study")
            continue
        for extra in confirm_grid:
            replaced = {key_of(o) for o in extra}  # the confirm grid's keys win over fixed and searched ones
            params = [as_override(k, v) for k, v in trial.params.items() if k not in replaced]
            name = ",".join([trial_folder(trial.number), *extra])
            folder = f"{CONFIRM_FOLDER}/{arm.folder}/{name}" if arm.folder else f"{CONFIRM_FOLDER}/{name}"
            jobs.append([*(o for o in fixed if key_of(o) not in replaced), *arm.overrides, *params, *extra,
                         subdir(folder)])
            folders.append(sweep_dir / folder)
    if not jobs:
        return []
    log.info("confirming each arm's best trial: %d jobs", len(jobs))
    returns = [sweeper.launcher.launch(jobs, initial_job_idx=sum(len(arm.study.trials) for arm in arms))]
    # this round's folders only: where a continued study found another best, the earlier confirmation stays beside
    report(folders, sweep_dir / CONFIRM_FOLDER, by=[key_of(o) for o in arms[0].overrides] or None)
    return returns


def save_plots(arms: list[Arm], sweep_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    from optuna.visualization import matplotlib as optuna_plots

    from mlbasics.plots import save

    studies = [arm.study for arm in arms if best_trial(arm) is not None]
    with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
        warnings.simplefilter("ignore")
        history = optuna_plots.plot_optimization_history(studies[0] if len(studies) == 1 else studies)
        save(history.figure, sweep_dir / "optimization_history.png")
        study = studies[0]
        if len(studies) == 1 and sum(t.value is not None for t in study.trials) >= 2 \
                and len(study.best_trial.params) > 1:
            try:
                axes = optuna_plots.plot_param_importances(study)
                save(axes.figure, sweep_dir / "param_importances.png")
            except (RuntimeError, ValueError) as err:  # too few or identical trials to rank parameters
                log.info("no param_importances.png: %s", err)
