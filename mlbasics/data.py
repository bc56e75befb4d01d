"""Datasets as normalised in-memory tensors, a deterministic stratified split, batches by index.

Small image sets fit in memory many times over, so the whole split lives as one float tensor
on the run's device and a mini-batch is a gather over a seeded permutation: no per-sample PIL
transform and no DataLoader on the hot path (see `python -m mlbasics.bench` for the gain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from mlbasics.datafiles import read_dataset

SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_FEATURES, SYNTHETIC_CLASSES = 2_000, 500, 32, 4
# The training pool each dataset offers (the config's range checks read it from here).
TRAIN_POOL_SIZE = {"fashion_mnist": 60_000, "mnist": 60_000, "synthetic": SYNTHETIC_TRAIN}


@dataclass
class Splits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    image_shape: tuple[int, int] | None = None  # (height, width) of the flattened images; None if not images

    @property
    def n_features(self) -> int:
        return self.train_x.shape[1]

    @property
    def n_classes(self) -> int:
        return int(self.train_y.max()) + 1


def make_synthetic(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian clusters around random class centres: learnable in a few epochs, no files needed."""
    gen = torch.Generator().manual_seed(seed)
    centres = 0.3 * torch.randn(SYNTHETIC_CLASSES, SYNTHETIC_FEATURES, generator=gen)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % SYNTHETIC_CLASSES
        x = centres[y] + torch.randn(n, SYNTHETIC_FEATURES, generator=gen)
        return x, y

    return (*draw(SYNTHETIC_TRAIN), *draw(SYNTHETIC_TEST))


def stratified_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices; each class gets its share of val_size (largest remainders round up)."""
    gen = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    quota = counts.double() * val_size / len(labels)
    take = quota.floor().long()
    short = val_size - int(take.sum())
    take[torch.argsort(quota - take, descending=True, stable=True)[:short]] += 1
    val_parts, train_parts = [], []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        val_parts.append(members[:k])
        train_parts.append(members[k:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values


def load_splits(cfg, device: torch.device) -> Splits:
    """The config's dataset, split and normalised with the training split's statistics, on `device`."""
    name = cfg.name.value
    if name == "synthetic":
        pool_x, pool_y, test_x, test_y = make_synthetic(cfg.split_seed)
    else:
        pool_x, pool_y, test_x, test_y = read_dataset(name, cfg.root)
    if cfg.train_size is not None and cfg.train_size < len(pool_y):
        _, keep = stratified_split(pool_y, cfg.train_size, cfg.split_seed + 1)  # + 1: independent of the val draw
        pool_x, pool_y = pool_x[keep], pool_y[keep]
    train_idx, val_idx = stratified_split(pool_y, cfg.val_size, cfg.split_seed)
    normalise = normaliser(pool_x[train_idx])
    return Splits(normalise(pool_x[train_idx]).to(device), pool_y[train_idx].to(device),
                  normalise(pool_x[val_idx]).to(device), pool_y[val_idx].to(device),
                  normalise(test_x).to(device), test_y.to(device),
                  image_shape=tuple(pool_x.shape[1:]) if pool_x.dim() == 3 else None)


def normaliser(train_x: torch.Tensor):
    """Flatten and standardise with the training split's mean and std, fast.

    For uint8 images the statistics come from a 256-bin histogram (exact, in float64) and
    the conversion is done in place: float temporaries over 47 million pixels would
    otherwise dominate a short run's start-up.
    """
    if train_x.dtype == torch.uint8:
        counts = torch.bincount(train_x.flatten(), minlength=256).double()
        levels = torch.arange(256, dtype=torch.float64)
        mean = float((counts * levels).sum() / counts.sum())
        std = float(((counts * (levels - mean) ** 2).sum() / (counts.sum() - 1)).sqrt())
    else:
        mean, std = float(train_x.double().mean()), float(train_x.double().std())
    # torch's default dtype: float32, unless a caller asks for float64 (the packed-equivalence test does)
    return lambda x: x.reshape(len(x), -1).to(torch.get_default_dtype(), copy=True).sub_(mean).div_(std)


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Where each batch of an epoch over n samples starts.

    A trailing batch of a single sample is folded into the one before: BatchNorm cannot
    normalise one sample in training mode, and a run whose batch size is larger must not
    crash on the remainder of a division. With batch_size=1 every batch is one sample, and
    BatchNorm fails as PyTorch says it will (exercise 6.3 h).
    """
    starts = list(range(0, n, batch_size))
    if batch_size > 1 and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return starts


def steps_per_epoch(n: int, batch_size: int) -> int:
    return len(batch_starts(n, batch_size))


def batch_indices(n: int, batch_size: int, gen: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    """Shuffled index batches covering 0..n-1 once (see `batch_starts` for their sizes)."""
    perm = torch.randperm(n, generator=gen).to(device)
    starts = batch_starts(n, batch_size)
    for start, end in zip(starts, starts[1:] + [n]):
        yield perm[start:end]


def flip_half(x: torch.Tensor, image_shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left to right (a garment mirrored is the same garment)."""
    mirrored = x.view(-1, *image_shape).flip(2).view(len(x), -1)
    pick = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
    return torch.where(pick[:, None], mirrored, x)
