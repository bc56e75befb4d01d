"""Shared fixtures: composed configs, a tiny IDX dataset on disk, and the CLI in a subprocess."""

from __future__ import annotations

import copy
import csv
import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from mlbasics.config import PROJECT_DIR, default_data_root, register

register()
REAL_DATA = Path(default_data_root()) / "FashionMNIST" / "raw"
real_data = pytest.mark.skipif(not (REAL_DATA / "train-images-idx3-ubyte.gz").exists()
                               and not (REAL_DATA / "train-images-idx3-ubyte").exists(),
                               reason=f"genuine FashionMNIST not in {REAL_DATA} (.ci/run copies it there)")


@pytest.fixture(scope="session")
def composed():
    """Compose conf/config.yaml with overrides, as the CLI would (Hydra's compose API), once per
    distinct set of overrides in the whole session; callers get their own copy to change."""
    cache: dict[tuple[str, ...], DictConfig] = {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_DIR / "conf")):
        def compose_with(*overrides: str) -> DictConfig:
            if overrides not in cache:
                cache[overrides] = compose(config_name="config", overrides=list(overrides))
            return copy.deepcopy(cache[overrides])
        yield compose_with
    GlobalHydra.instance().clear()


@pytest.fixture
def make_cfg(composed):
    return composed


def write_idx(path: Path, array: torch.Tensor, compress: bool = False) -> None:
    """An IDX file as LeCun's format defines it: magic (0, 0, dtype 0x08, ndim), big-endian sizes, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    payload = header + array.to(torch.uint8).contiguous().numpy().tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


@pytest.fixture(scope="session")
def idx_root(tmp_path_factory) -> Path:
    """A miniature FashionMNIST (300 training images, 30 per class; 100 test images) in IDX files.

    Labels are ordered unevenly on purpose, so a correct stratified split is not an accident
    of the ordering; each image's first pixel encodes its index so tests can track samples.
    """
    root = tmp_path_factory.mktemp("data")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    gen = torch.Generator().manual_seed(123)
    for prefix, n in (("train", 300), ("t10k", 100)):
        labels = torch.arange(n) % 10
        labels = labels[torch.randperm(n, generator=gen)]
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.int64)
        images[:, 0, 0] = torch.arange(n) % 256
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def run_cli(*args: str, cwd: Path, module: str = "mlbasics.run", timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m mlbasics.run ARGS` in a fresh process, outputs under `cwd`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


SHORT = ("dataset=synthetic", "trainer.threads=1")
# per experiment: overrides that shorten it to seconds on the synthetic set
SHORTENED = {
    "fashion_mnist": ("trainer.epochs=1", "seed=0,1"),
    "no_activation": ("trainer.epochs=2", "seed=0"),
    "activations": ("trainer.epochs=1", "seed=0"),
    "activations_tuned": ("trainer.epochs=1", "hydra.sweeper.n_trials=2", "model.activation=relu,tanh",
                          "model.hidden=[16]", "hydra.sweeper.confirm=['seed=0,1']"),
    "lr_convex": ("trainer.epochs=40", "optimizer.lr=0.5,64"),
    "batchnorm_bs1": ("trainer.epochs=1", "seed=0", "dataset.train_size=null", "dataset.val_size=400"),
    "symmetry": ("trainer.epochs=2", "seed=0"),
    "bn_landscape": ("trainer.epochs=2", "seed=0", "probe.landscape.every=5", "probe.ics.every=5",
                     "model.hidden=[32,32,32]"),
}


class ShortenedSweeps:
    """Every experiment, shortened, run once per session into root/NAME/<sweep>/ (as outputs/multirun/)."""

    def __init__(self, cwd: Path) -> None:
        self.root = cwd / "outputs" / "multirun"
        self.runs = {name: run_cli("-m", f"+experiment={name}", *SHORT, *overrides, cwd=cwd, timeout=600)
                     for name, overrides in SHORTENED.items()}


@pytest.fixture(scope="session")
def shortened_sweeps(tmp_path_factory) -> ShortenedSweeps:
    return ShortenedSweeps(tmp_path_factory.mktemp("shortened"))


FINAL_METRICS = ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss", "best_val_acc")


def read_metrics(folder: Path) -> list[dict[str, str]]:
    """metrics.csv rows without epoch_seconds, the one column that is a timing, not a result."""
    with open(folder / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def assert_same_run(folder: Path, reference: Path) -> dict:
    """The run in `folder` ended exactly like the uninterrupted one in `reference`; returns its results."""
    assert read_metrics(folder) == read_metrics(reference)
    results = json.loads((folder / "results.json").read_text())
    expected = json.loads((reference / "results.json").read_text())
    for key in FINAL_METRICS:
        assert results[key] == expected[key], key
    return results


METRICS_HEADER = "epoch,train_loss,train_acc,val_loss,val_acc,lr,epoch_seconds,grad_norm_fc1,grad_norm_fc2\n"


def make_job(sweep, name, overrides, test_acc=0.8, status="completed", config=None):
    """A job folder as a run leaves it: .hydra/, results.json, metrics.csv (two epochs)."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or {"model": {"hidden": [8, 4]}}))
    results = {"status": status, "error": None if status == "completed" else "boom", "test_acc": test_acc,
               "val_acc": test_acc, "train_acc": test_acc, "epochs_completed": 2}
    (job / "results.json").write_text(json.dumps(results))
    (job / "metrics.csv").write_text(METRICS_HEADER + "1,1.0,0.5,0.9,0.7,0.1,0.5,2.0,1.0\n"
                                     "2,0.8,0.6,0.7,0.85,0.1,0.5,1.0,4.0\n")
    return job
