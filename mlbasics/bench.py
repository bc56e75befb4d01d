"""`python -m mlbasics.bench`: seconds per training epoch, this project's trainer against the reference.

The reference is the PyTorch quickstart tutorial's pipeline: torchvision FashionMNIST with
ToTensor, a DataLoader with batch size 64, and its train loop. Both sides train the same
784-256-128-10 ReLU network with plain SGD at batch size 64 on the same 50,000 training
images (the validation images held out by our split), and the epochs alternate in one process
so that both see the same machine state. The first epoch of each is a warm-up and not counted.

A third line times the tutorial's loop over batches already gathered in memory: the forward,
backward and SGD step alone, with no data pipeline at all. No trainer doing the same steps can
beat it, so reference / floor is the largest speed-up any pipeline change can give.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch
from omegaconf import OmegaConf
from torch import nn

from mlbasics.config import Config, default_data_root
from mlbasics.data import load_splits, stratified_split
from mlbasics.model import build_mlp
from mlbasics import optimizer as optim
from mlbasics.train import Loop, fit_epoch

BATCH_SIZE, LR = 64, 1e-3  # the tutorial's values


def reference_epoch(model: nn.Module, loader, optimizer) -> None:
    """The tutorial's `train_loop`, minus its printing."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def time_epochs(pipelines: dict[str, Callable[[int], object]], epochs: int) -> dict[str, list[float]]:
    """Seconds per epoch of each pipeline, alternating epoch by epoch so all see the same machine state."""
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    for epoch in range(epochs + 1):
        for name, run_epoch in pipelines.items():
            start = time.perf_counter()
            run_epoch(epoch)
            if epoch > 0:  # epoch 0 warms caches and allocators on both sides
                times[name].append(time.perf_counter() - start)
            print(f"epoch {epoch} {name:<9} {time.perf_counter() - start:6.2f}s", flush=True)
    return times


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--sweep" in argv:  # the other benchmark: a sweep, basic launcher against packed (mlbasics.sweep_bench)
        from mlbasics import sweep_bench

        return sweep_bench.main([a for a in argv if a != "--sweep"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="--sweep OVERRIDES: time a sweep with the basic and the packed launcher")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per pipeline (after one warm-up)")
    parser.add_argument("--root", default=default_data_root(), help="folder holding FashionMNIST/raw")
    args = parser.parse_args(argv)

    from torchvision import datasets, transforms
    from torch.utils.data import DataLoader, Subset

    cfg = OmegaConf.merge(OmegaConf.structured(Config), {
        "dataset": {"root": args.root},
        "model": {"hidden": [256, 128], "batchnorm": False, "activation": "relu"},
        "optimizer": {"lr": LR, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "schedule": "none"},
    })
    device = torch.device("cpu")
    data = load_splits(cfg.dataset, device)
    ours = build_mlp(cfg.model, data.n_features, data.n_classes)
    ours_opt, ours_schedule = optim.build(cfg.optimizer, ours, LR, total_steps=1)
    ours_loop = Loop(ours, ours_opt, ours_schedule, data, BATCH_SIZE, torch.Generator().manual_seed(0))

    full = datasets.FashionMNIST(args.root, train=True, download=True, transform=transforms.ToTensor())
    train_idx, _ = stratified_split(full.targets, cfg.dataset.val_size, cfg.dataset.split_seed)
    loader = DataLoader(Subset(full, train_idx.tolist()), batch_size=BATCH_SIZE, shuffle=True)
    reference = nn.Sequential(nn.Flatten(), *build_mlp(cfg.model, 784, 10))
    reference_opt = torch.optim.SGD(reference.parameters(), lr=LR)

    floor = nn.Sequential(nn.Flatten(), *build_mlp(cfg.model, 784, 10))
    floor_opt = torch.optim.SGD(floor.parameters(), lr=LR)
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(1))
    gathered = [(data.train_x[i], data.train_y[i]) for i in order.split(BATCH_SIZE)]

    times = time_epochs({"reference": lambda epoch: reference_epoch(reference, loader, reference_opt),
                         "mlbasics": lambda epoch: fit_epoch(ours_loop, epoch + 1),
                         "floor": lambda epoch: reference_epoch(floor, gathered, floor_opt)}, args.epochs)
    ref, own, bare = (statistics.median(times[name]) for name in ("reference", "mlbasics", "floor"))
    print(f"\n{len(train_idx)} images per epoch, batch size {BATCH_SIZE}, {torch.get_num_threads()} threads, "
          f"median of {args.epochs} epochs")
    print(f"reference (torchvision + ToTensor + DataLoader): {ref:.2f} s/epoch")
    print(f"mlbasics (in-memory tensors, batches by index):  {own:.2f} s/epoch")
    print(f"floor (tutorial loop on pre-gathered batches): {bare:.2f} s/epoch")
    print(f"speed-up: {ref / own:.1f}x (the most any pipeline could give: {ref / bare:.1f}x)")


if __name__ == "__main__":
    main()
