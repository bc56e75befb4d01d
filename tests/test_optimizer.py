"""Every optimizer and schedule key takes effect: values read back from the torch objects at every step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mlbasics import optimizer as optim

STEPS = 20


def step_through(cfg, lr: float):
    """Build from the config and take STEPS steps; the param group torch uses at each step."""
    model = nn.Linear(3, 2)
    opt, schedule = optim.build(cfg.optimizer, model, lr, total_steps=STEPS)
    seen = []
    for _ in range(STEPS):
        seen.append(dict(opt.param_groups[0]))
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        opt.zero_grad()
        schedule.step()
    return opt, schedule, seen


@pytest.mark.parametrize("schedule", ["none", "cosine", "onecycle"])
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.5, False), (0.9, True)])
def test_momentum_nesterov_and_weight_decay_hold_at_every_step(make_cfg, schedule, momentum, nesterov):
    cfg = make_cfg(f"optimizer.schedule={schedule}", f"optimizer.momentum={momentum}",
                   f"optimizer.nesterov={str(nesterov).lower()}", "optimizer.weight_decay=0.003")
    opt, _, seen = step_through(cfg, lr=0.2)
    assert [group["momentum"] for group in seen] == [momentum] * STEPS
    assert [group["nesterov"] for group in seen] == [nesterov] * STEPS
    assert [group["weight_decay"] for group in seen] == [0.003] * STEPS


def test_lr_follows_each_schedule(make_cfg):
    lr = 0.2
    _, _, none = step_through(make_cfg("optimizer.schedule=none"), lr)
    assert [g["lr"] for g in none] == [lr] * STEPS
    _, _, cosine = step_through(make_cfg("optimizer.schedule=cosine"), lr)
    expected = [lr * (1 + math.cos(math.pi * t / STEPS)) / 2 for t in range(STEPS)]
    assert [g["lr"] for g in cosine] == pytest.approx(expected, rel=1e-9)
    _, _, onecycle = step_through(make_cfg("optimizer.schedule=onecycle"), lr)
    lrs = [g["lr"] for g in onecycle]
    # torch's one-cycle: from lr/25 up to lr at 30 % of the steps, then down towards lr/(25 * 1e4)
    assert lrs[0] == pytest.approx(lr / 25) and max(lrs) == pytest.approx(lr)
    assert lrs.index(max(lrs)) == round(0.3 * STEPS) - 1
    assert lrs[-1] < lrs[-2] < max(lrs)


def test_momentum_cycles_only_when_asked(make_cfg):
    _, _, cycled = step_through(make_cfg("optimizer.cycle_momentum=true", "optimizer.momentum=0.5"), 0.2)
    momenta = [g["momentum"] for g in cycled]
    assert min(momenta) == pytest.approx(0.85) and max(momenta) == pytest.approx(0.95)  # replaces 0.5


def test_the_configured_momentum_is_the_one_applied(make_cfg):
    """Two steps on a loss with a constant gradient g: the second moves by lr_2 (1 + m) g, as heavy-ball
    momentum without dampening says; with onecycle's default cycling it would not be m."""
    for schedule in ("none", "cosine", "onecycle"):
        for momentum in (0.0, 0.5):
            cfg = make_cfg(f"optimizer.schedule={schedule}", f"optimizer.momentum={momentum}",
                           "optimizer.nesterov=false", "optimizer.weight_decay=0")
            model = nn.Linear(1, 1, bias=False)
            opt, scheduler = optim.build(cfg.optimizer, model, 0.2, total_steps=STEPS)
            moves = []
            for _ in range(2):
                before, lr = model.weight.item(), opt.param_groups[0]["lr"]
                model(torch.ones(1, 1)).sum().backward()  # gradient 1 with respect to the weight
                opt.step()
                opt.zero_grad()
                scheduler.step()
                moves.append((before - model.weight.item()) / lr)
            assert moves == pytest.approx([1.0, 1.0 + momentum], rel=1e-5), (schedule, momentum)


def test_describe_reads_back_what_torch_uses(make_cfg):
    cfg = make_cfg("optimizer.momentum=0.5", "optimizer.nesterov=false", "optimizer.weight_decay=0.01")
    opt, schedule = optim.build(cfg.optimizer, nn.Linear(2, 2), 0.3, total_steps=10)
    assert optim.describe(opt, schedule) == ("SGD(lr=0.012, momentum=0.5, nesterov=False, weight_decay=0.01) "
                                             "+ OneCycleLR(max_lr=0.3, cycle_momentum=False)")


def test_smoothness_constant_of_a_hand_made_design():
    # x = (+-1, 0), (0, +-2): X~ = [x, 1] has X~^T X~ / n = diag(1/2, 2, 1), so L = 1/2 * 2 = 1
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    assert optim.softmax_regression_smoothness(x) == pytest.approx(1.0)


def test_smoothness_constant_bounds_the_true_curvature():
    torch.manual_seed(0)
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randint(0, 4, (40,))
    bound = optim.softmax_regression_smoothness(x)
    for _ in range(5):
        theta = torch.randn(3 * 4 + 4, dtype=torch.float64)

        def loss(flat):
            w, b = flat[:12].reshape(3, 4), flat[12:]
            return nn.functional.cross_entropy(x @ w + b, y)
        hessian = torch.autograd.functional.hessian(loss, theta)
        assert torch.linalg.eigvalsh(hessian)[-1].item() <= bound + 1e-12
