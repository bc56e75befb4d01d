"""The optimizer and its schedule, built from `cfg.optimizer`, and read back from the torch objects.

`describe` reports what torch actually uses (lr, momentum, nesterov, weight decay, the schedule
and whether it cycles momentum), so results.json states the optimizer that produced its numbers
rather than the config's intent.
"""

from __future__ import annotations

import torch
from torch import nn

from mlbasics.config import LrUnit, Schedule


def softmax_regression_smoothness(x: torch.Tensor) -> float:
    """L for the mean cross-entropy of softmax regression in its weights and biases.

    The Hessian of cross-entropy in the logits, diag(p) - p p^T, is at most 1/2 (I - 11^T/K)
    (Böhning 1992), so the loss is L-smooth with L = 1/2 lambda_max(X~^T X~ / n), where
    X~ is the data with a column of ones for the bias. Gradient descent with step < 2/L
    converges; 2/L is sufficient, not necessary, because the bound is loose away from one-hot p.
    """
    ones = torch.ones(len(x), 1, dtype=torch.float64, device=x.device)
    design = torch.cat([x.double(), ones], dim=1)
    gram = design.T @ design / len(x)
    return 0.5 * torch.linalg.eigvalsh(gram)[-1].item()


def peak_lr(cfg, train_x: torch.Tensor) -> tuple[float, dict[str, float]]:
    """The lr in absolute units, and what it was derived from (recorded in results.json)."""
    if cfg.lr_unit == LrUnit.two_over_L:
        smoothness = softmax_regression_smoothness(train_x)
        return cfg.lr * 2 / smoothness, {"smoothness_L": smoothness}
    return cfg.lr, {}


def build(cfg, model: nn.Module, lr: float, total_steps: int):
    """(optimizer, scheduler): SGD with the config's keys, a schedule stepped once per batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay)
    if cfg.schedule == Schedule.cosine:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    elif cfg.schedule == Schedule.onecycle:
        # torch cycles momentum by default, which would overwrite optimizer.momentum at every step
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                                        cycle_momentum=cfg.cycle_momentum)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler


def describe(optimizer: torch.optim.Optimizer, scheduler) -> str:
    """What torch will use, read from its objects: `SGD(lr=..., momentum=..., ...) + OneCycleLR(...)`."""
    group = optimizer.param_groups[0]
    sgd = (f"{type(optimizer).__name__}(lr={group['lr']:.6g}, momentum={group['momentum']:.6g}, "
           f"nesterov={group['nesterov']}, weight_decay={group['weight_decay']:.6g})")
    schedule = type(scheduler).__name__
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
        schedule += f"(max_lr={group['max_lr']:.6g}, cycle_momentum={scheduler.cycle_momentum})"
    elif isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        schedule += f"(T_max={scheduler.T_max})"
    return f"{sgd} + {schedule}"
