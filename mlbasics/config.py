"""Config schemas, registered in Hydra's ConfigStore, and the checks Hydra cannot express.

Closed choices are Enums, so a wrong value fails while Hydra composes the config, with
Hydra's own message naming the key and the allowed values. Range checks (lr > 0, ...) live
in `validate`, which raises `ConfigError` naming the key before any work starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

PROJECT_DIR = Path(__file__).resolve().parent.parent


class DatasetName(str, Enum):
    fashion_mnist = "fashion_mnist"
    mnist = "mnist"
    synthetic = "synthetic"


class Activation(str, Enum):
    relu = "relu"
    sigmoid = "sigmoid"
    tanh = "tanh"
    identity = "identity"
    leaky_relu = "leaky_relu"
    gelu = "gelu"


class Schedule(str, Enum):
    none = "none"
    cosine = "cosine"
    onecycle = "onecycle"


class LrUnit(str, Enum):
    absolute = "absolute"
    two_over_L = "two_over_L"  # lr is a multiple of 2/L, L the smoothness constant of softmax regression


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def default_data_root() -> str:
    """`MLBASICS_DATA` if set, else `data/` beside the project (or the working directory when installed)."""
    if os.environ.get("MLBASICS_DATA"):
        return os.environ["MLBASICS_DATA"]
    base = PROJECT_DIR if (PROJECT_DIR / "pyproject.toml").exists() else Path.cwd()
    return str(base / "data")


@dataclass
class DatasetConfig:
    name: DatasetName = DatasetName.fashion_mnist
    root: str = "${mlbasics.data_root:}"
    val_size: int = 10_000
    split_seed: int = 0
    # Optional stratified subsample of the training pool before the split (None = all of it).
    train_size: Optional[int] = None
    # Mirror a random half of every training batch left to right (data augmentation for images).
    hflip: bool = False


@dataclass
class ModelConfig:
    hidden: List[int] = field(default_factory=lambda: [512, 256])
    activation: Activation = Activation.relu
    batchnorm: bool = True
    # Santurkar et al.'s noisy BatchNorm: a random shift and scale after every BatchNorm (training only)
    batchnorm_noise: bool = False
    dropout: float = 0.0


@dataclass
class OptimizerConfig:
    lr: float = 0.3
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: Schedule = Schedule.onecycle
    # onecycle only: also cycle momentum inversely to the lr (between 0.85 and 0.95, torch's
    # OneCycleLR default), which replaces optimizer.momentum. Off, so the momentum asked for is the one used.
    cycle_momentum: bool = False
    # two_over_L: optimizer.lr=0.5 means half of 2/L, L computed from the training data (needs model.hidden=[])
    lr_unit: LrUnit = LrUnit.absolute


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 256
    # Training targets (1 - s) one-hot + s uniform; reported losses are always plain cross-entropy.
    label_smoothing: float = 0.1
    # torch intra-op threads; None = the cores no other process keeps busy (a parallel launcher divides them).
    threads: Optional[int] = None
    # Write checkpoint.pt after every epoch so a stopped run resumes where it left off.
    checkpoint: bool = True
    # A training loss above this also ends the run as `diverged` (None: only inf/nan do). Cross-entropy
    # has bounded gradients, so gradient descent past its step-size limit oscillates upwards without overflowing.
    diverge_loss: Optional[float] = None
    # Move this folder's earlier run (of any config) aside into previous-<time>/ and train from scratch.
    start_over: bool = False
    # TensorBoard event files in the job's tensorboard/ folder (needs the extra: pip install -e ".[tensorboard]")
    tensorboard: bool = False


@dataclass
class LandscapeProbeConfig:
    every: int = 0       # probe every N training steps (0 = off); rows go to landscape.csv
    points: int = 8      # step sizes eta on the grid
    low: float = 0.5     # the grid spans [low * lr, high * lr]
    high: float = 4.0


@dataclass
class IcsProbeConfig:
    every: int = 0       # internal covariate shift every N training steps (0 = off)


@dataclass
class ProbeConfig:
    """Measurements that never change training: at the end (collapse, symmetry) or every N steps."""
    collapse: bool = False   # fold the layers into one affine map and compare outputs (6.3 a)
    symmetry: bool = False   # loss along the line to a hidden-unit-permuted twin (6.2 c, 6.3 f)
    landscape: LandscapeProbeConfig = field(default_factory=LandscapeProbeConfig)
    ics: IcsProbeConfig = field(default_factory=IcsProbeConfig)


@dataclass
class ReportConfig:
    """How a sweep's tables present it; never changes a number."""
    # columns the printed table and summary.md lead with (an experiment names what it is about)
    columns: List[str] = field(default_factory=list)


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    seed: int = 0
    device: Device = Device.auto


class ConfigError(ValueError):
    """A config value that is well-typed but out of range; the message names the key."""


# Floats meet float32 tensors: anything beyond float32's range overflows there rather than training.
FLOAT32_MAX = 3.4028234663852886e38
# torch's generators take 64-bit seeds; split_seed + 1 also seeds the training subsample.
SEED_MAX = 2 ** 63 - 2
LANDSCAPE_POINTS_MAX = 64  # each point costs two forward-backward passes at every probed step
WIDTH_MAX = 65_536         # a wider Linear layer on 784 inputs holds over 200 MB of weights
FLOAT_KEYS = ("model.dropout", "optimizer.lr", "optimizer.momentum", "optimizer.weight_decay",
              "trainer.label_smoothing", "trainer.diverge_loss", "probe.landscape.low", "probe.landscape.high")


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} is not allowed: {allowed}")


def _finite(cfg: Any) -> None:
    """Every float key holds a number that float32 tensors can carry: no NaN, no infinity, no 1e308."""
    for key in FLOAT_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            _check(math.isfinite(value) and abs(value) <= FLOAT32_MAX, key, value,
                   f"must be a finite number of at most {FLOAT32_MAX:.4g} in size")


def validate(cfg: Any) -> None:
    """Raise ConfigError for the first value Hydra's types cannot rule out."""
    _finite(cfg)
    hidden = list(cfg.model.hidden)
    _check(all(1 <= w <= WIDTH_MAX for w in hidden), "model.hidden", hidden,
           f"every width must be in [1, {WIDTH_MAX}]")
    _check(0 <= cfg.model.dropout < 1, "model.dropout", cfg.model.dropout, "must be in [0, 1)")
    opt = cfg.optimizer
    _check(opt.lr > 0, "optimizer.lr", opt.lr, "must be > 0")
    _check(0 <= opt.momentum < 1, "optimizer.momentum", opt.momentum, "must be in [0, 1)")
    _check(opt.weight_decay >= 0, "optimizer.weight_decay", opt.weight_decay, "must be >= 0")
    _check(not opt.nesterov or opt.momentum > 0, "optimizer.nesterov", opt.nesterov,
           "needs optimizer.momentum > 0")
    _check(not opt.cycle_momentum or opt.schedule == Schedule.onecycle, "optimizer.cycle_momentum",
           opt.cycle_momentum, "needs optimizer.schedule=onecycle")
    _check(cfg.trainer.epochs >= 1, "trainer.epochs", cfg.trainer.epochs, "must be >= 1")
    _check(cfg.trainer.batch_size >= 1, "trainer.batch_size", cfg.trainer.batch_size, "must be >= 1")
    smoothing = cfg.trainer.label_smoothing
    _check(0 <= smoothing < 1, "trainer.label_smoothing", smoothing, "must be in [0, 1)")
    _check(opt.lr_unit != LrUnit.two_over_L or not hidden, "optimizer.lr_unit", opt.lr_unit.value,
           "two_over_L needs model.hidden=[] (L is derived for softmax regression)")
    limit_loss = cfg.trainer.diverge_loss
    _check(limit_loss is None or limit_loss > 0, "trainer.diverge_loss", limit_loss, "must be > 0 or null")
    land = cfg.probe.landscape
    _check(land.every >= 0, "probe.landscape.every", land.every, "must be >= 0 (0 = off)")
    _check(2 <= land.points <= LANDSCAPE_POINTS_MAX, "probe.landscape.points", land.points,
           f"must be in [2, {LANDSCAPE_POINTS_MAX}]")
    _check(0 < land.low < land.high, "probe.landscape.low", land.low, "need 0 < low < probe.landscape.high")
    _check(land.high * opt.lr <= FLOAT32_MAX, "probe.landscape.high", land.high,
           "times optimizer.lr must stay within float32's range")
    _check(cfg.probe.ics.every >= 0, "probe.ics.every", cfg.probe.ics.every, "must be >= 0 (0 = off)")
    if cfg.trainer.tensorboard:
        from mlbasics.board import available

        _check(available(), "trainer.tensorboard", "true",
               'needs the tensorboard extra: pip install -e ".[tensorboard]"')
    threads = cfg.trainer.threads
    _check(threads is None or threads >= 1, "trainer.threads", threads, "must be >= 1 or null")
    for key, seed in (("seed", cfg.seed), ("dataset.split_seed", cfg.dataset.split_seed)):
        _check(0 <= seed <= SEED_MAX, key, seed, f"must be in [0, {SEED_MAX}]")
    from mlbasics.data import TRAIN_POOL_SIZE  # here, not at the top: the report imports this module without torch

    ds = cfg.dataset
    limit = TRAIN_POOL_SIZE[ds.name.value]
    if ds.train_size is not None:
        _check(2 <= ds.train_size <= limit, "dataset.train_size", ds.train_size, f"must be in [2, {limit}]")
    pool = limit if ds.train_size is None else ds.train_size
    _check(1 <= ds.val_size < pool, "dataset.val_size", ds.val_size,
           f"must be in [1, {pool - 1}] (the training set has {pool} images)")


EXPERIMENTS_DIR = PROJECT_DIR / "experiments"


def register() -> None:
    """Store the schema, the experiments and the resolvers that conf/config.yaml refers to (idempotent).

    Each experiments/NAME.yaml becomes `+experiment=NAME`: stored in the ConfigStore rather than
    found on a search path, so it works from any working directory.
    """
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    # each group option starts from its schema, so its file holds only what differs
    store.store(group="dataset", name="base_dataset", node=DatasetConfig)
    store.store(group="model", name="base_mlp", node=ModelConfig)
    store.store(group="optimizer", name="base_sgd", node=OptimizerConfig)
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        store.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")
    if not OmegaConf.has_resolver("mlbasics.data_root"):
        OmegaConf.register_new_resolver("mlbasics.data_root", default_data_root)
    if not OmegaConf.has_resolver("mlbasics.pid"):
        # cached, so that a parallel launcher's workers resolve the sweep folder to the parent's value
        OmegaConf.register_new_resolver("mlbasics.pid", os.getpid, use_cache=True)
    if not OmegaConf.has_resolver("mlbasics.lines"):
        # $MLBASICS_SLURM_SETUP: a SLURM job's set-up lines, one per line (conf/hydra/launcher/slurm.yaml)
        OmegaConf.register_new_resolver(
            "mlbasics.lines", lambda text: [line.strip() for line in str(text).splitlines() if line.strip()] or None)
    if not OmegaConf.has_resolver("mlbasics.job_folder"):
        # a multirun without swept keys still gets a job folder of its own
        OmegaConf.register_new_resolver("mlbasics.job_folder", lambda name: name or "defaults")
