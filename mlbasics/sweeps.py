"""The user's sweep folders, found and read for the write-up: which experiment each one ran, the most
recent one with tables, and its tables (summary.csv, summary_grouped.csv), read as plain files.

A sweep folder is one holding Hydra's `multirun.yaml`; its experiment is the `+experiment=NAME` it
was started with (`hydra.runtime.choices.experiment`). Nothing here trains or imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from mlbasics.report import STATUSES

MULTIRUN_FILE = "multirun.yaml"


class SweepError(ValueError):
    """A sweep folder whose files cannot be read as the report wrote them; the message names the file."""


@dataclass
class Sweep:
    experiment: str
    folder: Path
    jobs: pd.DataFrame        # summary.csv: one row per job
    grouped: pd.DataFrame     # summary_grouped.csv: one row per group, counts then mean/std of each metric
    by: list[str]             # the grouping keys (the grouped table's columns before `n`)
    config: dict = field(default_factory=dict)  # one job's resolved config (.hydra/config.yaml)
    command: str = ""         # the command line that started it

    @property
    def counts(self) -> dict[str, int]:
        return {status: int((self.jobs["status"] == status).sum()) for status in STATUSES}

    def overrides(self) -> dict[str, str]:
        """The keys every job of the sweep set alike on the command line (e.g. model.batchnorm_noise=true)."""
        same = {}
        for column in self.jobs.columns:
            if "." in column or column == "seed":
                values = self.jobs[column].dropna().astype(str).unique()
                if len(values) == 1 and self.jobs[column].notna().all():
                    same[column] = values[0]
        return same


def multirun_record(folder: Path) -> dict:
    """The sweep's `multirun.yaml` (read as data: nothing in it can execute)."""
    try:
        config = yaml.safe_load((folder / MULTIRUN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SweepError(f"{folder / MULTIRUN_FILE}: unreadable ({type(err).__name__})") from err
    if not isinstance(config, dict) or not isinstance(config.get("hydra"), dict):
        raise SweepError(f"{folder / MULTIRUN_FILE}: not a Hydra multirun record")
    return config


def experiment_of(folder: Path) -> str | None:
    """The `+experiment=NAME` a sweep folder ran, None for a sweep of no named experiment."""
    try:
        return multirun_record(folder)["hydra"]["runtime"]["choices"].get("experiment")
    except (KeyError, TypeError, AttributeError) as err:
        raise SweepError(f"{folder / MULTIRUN_FILE}: not a Hydra multirun record") from err


def command_of(folder: Path) -> str:
    """The command line the sweep was started with (its task overrides, as Hydra recorded them)."""
    try:
        task = multirun_record(folder)["hydra"]["overrides"]["task"]
    except (SweepError, KeyError, TypeError):
        return ""
    return " ".join(["python -m mlbasics.run -m", *map(str, task)])


def sweep_folders(roots: list[Path]) -> list[Path]:
    """Every sweep folder at or under each root (outputs/multirun/NAME/<sweep>/ is two levels down)."""
    found = []
    for root in roots:
        if (root / MULTIRUN_FILE).is_file():
            found.append(root)
            continue
        for depth in ("*", "*/*"):
            found.extend(path.parent for path in sorted(root.glob(f"{depth}/{MULTIRUN_FILE}")))
    return list(dict.fromkeys(found))


def by_experiment(roots: list[Path]) -> tuple[dict[str, list[Path]], list[str]]:
    """({experiment: its sweep folders, newest first}, one line per folder that was not used and why)."""
    found: dict[str, list[Path]] = {}
    skipped = []
    for folder in sweep_folders(roots):
        try:
            name = experiment_of(folder)
        except SweepError as err:
            skipped.append(str(err))
            continue
        if name is None:
            skipped.append(f"{folder}: a sweep of no named experiment (+experiment=NAME); not used")
            continue
        found.setdefault(name, []).append(folder)
    newest_first = {name: sorted(folders, key=lambda f: (f / MULTIRUN_FILE).stat().st_mtime, reverse=True)
                    for name, folders in found.items()}
    return newest_first, skipped


def read_sweep(experiment: str, folder: Path, tables: Path | None = None) -> Sweep:
    """The sweep's tables (from `tables`, default the sweep folder itself); SweepError if they are unreadable."""
    tables = tables or folder
    try:
        jobs = pd.read_csv(tables / "summary.csv")
        grouped = pd.read_csv(tables / "summary_grouped.csv")
    except FileNotFoundError as err:
        raise SweepError(f"{folder}: no tables yet (run: python -m mlbasics.report {tables})") from err
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise SweepError(f"{tables}: unreadable tables ({type(err).__name__}); remake them with: "
                         f"python -m mlbasics.report {tables}") from err
    if "status" not in jobs or "n" not in grouped or "job" not in jobs:
        raise SweepError(f"{tables}: summary.csv or summary_grouped.csv is not a report's table; remake them with: "
                         f"python -m mlbasics.report {tables}")
    by = list(grouped.columns[:list(grouped.columns).index("n")])
    return Sweep(experiment, folder, jobs, grouped, [] if by == ["all"] else by, first_config(tables, jobs),
                 command_of(folder))


def first_config(tables: Path, jobs: pd.DataFrame) -> dict:
    """A completed job's resolved config (the settings every job shares are read from it); job names in
    summary.csv are relative to the folder of the tables."""
    for job in jobs.loc[jobs["status"] == "completed", "job"]:
        path = tables / str(job) / ".hydra" / "config.yaml"
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(config, dict):
            return config
    return {}


def read_json(path: Path) -> dict | None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return content if isinstance(content, dict) else None
