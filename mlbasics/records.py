"""The files a run leaves in its folder: metrics.csv, results.json and checkpoint.pt.

Each is written to a temporary file and renamed into place, so a run killed at any moment
leaves either the old file or the new one, never half of one; the report and a resumed run
can always trust what they read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from mlbasics.config import PROJECT_DIR

METRICS_FILE, RESULTS_FILE, CHECKPOINT_FILE = "metrics.csv", "results.json", "checkpoint.pt"
LANDSCAPE_FILE = "landscape.csv"  # per probed step: Santurkar et al.'s measurements
METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds"]


def _replace_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    _replace_atomically(path, lambda tmp: tmp.write_text(text))


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    """One row per epoch: METRIC_COLUMNS, then one grad-norm column per Linear layer."""
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
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    _replace_atomically(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    # weights_only=False: the checkpoint holds RNG states and plain Python metrics, and it is our own file.
    return torch.load(path, map_location="cpu", weights_only=False)


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
