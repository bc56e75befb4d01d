"""The files a run leaves in its folder (metrics.csv, results.json), written so that none is ever half.

Each file is written to a temporary file and renamed into place, so a run killed at any moment
leaves either the old file or the new one; a write that fails (a full disk) removes its
temporary file and raises `OutputError` naming the path. This module knows nothing of torch:
the report reads the same files through it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import time
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from mlbasics.config import PROJECT_DIR

METRICS_FILE, RESULTS_FILE, CHECKPOINT_FILE = "metrics.csv", "results.json", "checkpoint.pt"
LANDSCAPE_FILE = "landscape.csv"  # per probed step: Santurkar et al.'s measurements
SYMMETRY_FILE = "symmetry.csv"
RUN_FILES = (RESULTS_FILE, CHECKPOINT_FILE, METRICS_FILE, LANDSCAPE_FILE, SYMMETRY_FILE)
# Keys that never change a run's numbers, so a folder may be resumed with them changed.
NOT_FINGERPRINTED = ("dataset.root", "device", "trainer.threads", "trainer.checkpoint", "trainer.start_over",
                     "trainer.tensorboard", "report.columns")
# `.checkpoint.pt.1234.tmp`: what `write_atomically` leaves if its process is killed mid-write
TEMP_FILE = re.compile(r"^\.(.+)\.(\d+)\.tmp$")


class Status(str, Enum):
    """A job's outcome as results.json records it; `incomplete` is the report's word for no outcome yet."""
    completed = "completed"
    diverged = "diverged"
    failed = "failed"
    incomplete = "incomplete"


class OutputError(OSError):
    """A run's file could not be written (disk full, folder not writable); the message names it."""


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(f"could not write {path}: {err.strerror or err}") from None
    finally:  # also on Ctrl-C: a temporary file must not keep a full disk full
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    """One row per epoch (or probed step); columns in the order the rows first name them."""
    buffer = io.StringIO()
    if rows:
        columns = list(dict.fromkeys(key for row in rows for key in row))  # rows may differ (probe schedules)
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buffer.getvalue())


def write_results(path: Path, results: dict[str, Any]) -> None:
    write_text(path, json.dumps(results, indent=2) + "\n")


def read_results(path: Path) -> dict[str, Any] | None:
    """The results of an earlier run in this folder, or None if there are none readable."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Temporary files of writes that a kill interrupted (their process is gone); returns those removed."""
    removed = []
    for path in folder.glob(".*.tmp"):
        match = TEMP_FILE.match(path.name)
        if match and match.group(1) in RUN_FILES and not _process_alive(int(match.group(2))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():  # a leftover with our own (reused) process id: we are not writing it
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def move_aside(folder: Path, names: tuple[str, ...] = RUN_FILES, label: str = "previous") -> Path | None:
    """Move the named files of `folder` into `folder/<label>-<time>/` (never deleting); None if none exist."""
    present = [folder / name for name in names if (folder / name).exists()]
    if not present:
        return None
    target = folder / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}"
    try:
        target.mkdir()
        for path in present:
            shutil.move(str(path), str(target / path.name))
    except OSError as err:  # what was moved stays moved: nothing is lost either way
        raise OutputError(f"could not move the earlier run's files in {folder} aside: {err.strerror or err}") from None
    return target


def write_hydra_record(folder: Path, config: Mapping[str, Any], overrides: list[str]) -> None:
    """config.yaml and overrides.yaml as Hydra writes them into .hydra/, from a run's own record."""
    write_text(folder / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))
    write_text(folder / "overrides.yaml", yaml.safe_dump(list(overrides)))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"hidden": [1, 2]}} -> {"model.hidden": [1, 2]}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def fingerprint(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(digest, the training-relevant keys): every key that can change a run's numbers."""
    relevant = {key: value for key, value in flatten(config).items() if key not in NOT_FINGERPRINTED}
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return digest, relevant


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key: old -> new` for every training-relevant key whose value differs (or exists on one side only)."""
    missing = "(unset)"
    return [f"{key}: {old.get(key, missing)} -> {new.get(key, missing)}"
            for key in sorted(set(old) | set(new)) if old.get(key, missing) != new.get(key, missing)]


def slurm_identity() -> dict[str, Any]:
    """The SLURM job this run is (array jobs as ARRAY_INDEX, as squeue shows them), and its restarts."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return {}
    job = (f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}" if "SLURM_ARRAY_TASK_ID" in env
           else env["SLURM_JOB_ID"])
    return {"slurm_job_id": job, "slurm_restarts": int(env.get("SLURM_RESTART_COUNT", 0))}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("mlbasics", "torch", "torchvision", "hydra-core", "omegaconf"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
