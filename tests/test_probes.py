"""Probes: they never change training; their numbers against closed forms; noisy BatchNorm's statistics."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import read_metrics
from mlbasics import probes
from mlbasics.config import ModelConfig
from mlbasics.model import build_mlp, santurkar_noise
from mlbasics.train import train

SMALL = ("dataset=synthetic", "trainer.epochs=3", "model.hidden=[32,32,16]", "trainer.batch_size=64",
         "device=cpu", "model.dropout=0.1")


@pytest.mark.parametrize("noise", ["false", "true"])
def test_probes_never_change_training(make_cfg, tmp_path, noise):
    plain = make_cfg(*SMALL, f"model.batchnorm_noise={noise}")
    probed = make_cfg(*SMALL, f"model.batchnorm_noise={noise}", "probe.landscape.every=3", "probe.ics.every=4",
                      "probe.collapse=true", "probe.symmetry=true")
    a, b = train(plain, tmp_path / "plain"), train(probed, tmp_path / "probed")
    assert read_metrics(tmp_path / "plain") == read_metrics(tmp_path / "probed")
    for key in ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss"):
        assert a[key] == b[key], key
    state_a = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=False)
    state_b = torch.load(tmp_path / "probed" / "checkpoint.pt", weights_only=False)
    for name, tensor in state_a["model"].items():  # weights and BatchNorm running statistics
        assert torch.equal(tensor, state_b["model"][name]), name
    assert torch.equal(state_a["rng"]["torch"], state_b["rng"]["torch"])
    for group_a, group_b in zip(state_a["optimizer"]["state"].values(), state_b["optimizer"]["state"].values()):
        assert torch.equal(group_a["momentum_buffer"], group_b["momentum_buffer"])
    with open(tmp_path / "probed" / "landscape.csv") as f:
        rows = list(csv.DictReader(f))
    steps_per_epoch = 1600 // 64
    assert [int(r["step"]) for r in rows] == [s for s in range(3 * steps_per_epoch) if s % 3 == 0 or s % 4 == 0]
    assert list(rows[0])[:9] == ["step", "epoch", "lr", "loss", "loss_min", "loss_max", "gradpred_min",
                                 "gradpred_max", "beta_eff"]


class Quadratic(nn.Module):
    """L(w) = 1/2 w^T A w with A diagonal: gradient A w, curvature along a direction d = d^T A d / |d|^2."""

    def __init__(self, diagonal, w):
        super().__init__()
        self.register_buffer("a", torch.tensor(diagonal, dtype=torch.float64))
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self):
        return 0.5 * (self.a * self.w ** 2).sum()


def test_beta_eff_is_the_curvature_along_g_and_the_loss_band_is_exact():
    lam, c, lr = 3.0, 2.0, 0.1
    model = Quadratic([lam, 0.5, 0.25], [c, 0.0, 0.0])  # g = A w = lam c e1: an eigenvector of A
    out = probes.landscape(model, lambda m: m(), lr, points=8, low=0.5, high=4.0)
    assert out["beta_eff"] == pytest.approx(lam, rel=1e-12)
    etas = [lr * (0.5 + 3.5 * i / 7) for i in range(8)]
    losses = [0.5 * lam * (c - eta * lam * c) ** 2 for eta in etas]  # L(w - eta g) in closed form
    assert out["loss_min"] == pytest.approx(min(losses), rel=1e-12)
    assert out["loss_max"] == pytest.approx(max(losses), rel=1e-12)
    assert out["gradpred_max"] == pytest.approx(max(eta * lam * lam * c for eta in etas), rel=1e-12)
    assert out["loss"] == pytest.approx(0.5 * lam * c ** 2)
    assert model.w.tolist() == [c, 0.0, 0.0]  # the probe worked on a copy


def test_beta_eff_off_an_eigenvector():
    # A = diag(3, 1), w = (1, 1): g = A w = (3, 1); grad L(w - eta g) - grad L(w) = -eta A g for every
    # eta, so beta_eff = |A g| / |g| = |(9, 1)| / |(3, 1)| = sqrt(82 / 10)
    out = probes.landscape(Quadratic([3.0, 1.0], [1.0, 1.0]), lambda m: m(), 0.1)
    assert out["beta_eff"] == pytest.approx(math.sqrt(82 / 10), rel=1e-12)


def test_single_layer_network_has_no_internal_covariate_shift():
    torch.manual_seed(0)
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    loss_of = lambda m: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    single = build_mlp(OmegaConf.merge(OmegaConf.structured(ModelConfig), {"hidden": []}), 10, 3)
    out = probes.internal_covariate_shift(single, loss_of, lr=0.5)
    assert out == {"ics_l2_fc1": 0.0, "ics_cos_fc1": pytest.approx(1.0)}
    deep = build_mlp(OmegaConf.merge(OmegaConf.structured(ModelConfig), {"hidden": [16, 16]}), 10, 3)
    shift = probes.internal_covariate_shift(deep, loss_of, lr=0.5)
    assert shift["ics_l2_fc1"] == 0.0 and shift["ics_l2_fc2"] > 0 and shift["ics_l2_fc3"] > 0


def test_noisy_batchnorm_has_the_stated_statistics():
    samples, units = 20_000, 400
    torch.manual_seed(7)
    m = santurkar_noise(torch.zeros(samples, units))           # a = 0 leaves m alone
    torch.manual_seed(7)
    s = santurkar_noise(torch.ones(samples, units)) - m         # same draws: (s * 1 + m) - m
    mu = (m.max(0).values + m.min(0).values) / 2                # m ~ U(mu - 0.1, mu + 0.1)
    assert ((m.max(0).values - m.min(0).values) <= 0.2 + 1e-6).all()
    assert ((m.max(0).values - m.min(0).values) > 0.19).all()
    assert mu.min() >= -0.5 - 1e-3 and mu.max() <= 0.5 + 1e-3
    assert mu.var().item() == pytest.approx(1 / 12, rel=0.2)   # mu ~ U(-0.5, 0.5) across units
    sigma = s.mean(0)
    assert sigma.min() >= 1 - 0.01 and sigma.max() <= 1.25 + 0.01
    assert s.std(0).mean().item() == pytest.approx(0.1, rel=0.05)
    assert sigma.var().item() == pytest.approx(0.25 ** 2 / 12, rel=0.25)  # sigma ~ U(1, 1.25)


def test_noisy_batchnorm_is_off_in_eval_mode():
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"hidden": [8], "batchnorm_noise": True})
    model = build_mlp(cfg, 4, 2).eval()
    x = torch.randn(5, 4)
    assert torch.equal(model(x), model(x))


def trained_like(hidden, activation="relu", batchnorm=True, seed=0):
    """A small MLP with non-trivial BatchNorm statistics (a few training-mode passes), in eval mode."""
    torch.manual_seed(seed)
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig),
                          {"hidden": hidden, "activation": activation, "batchnorm": batchnorm})
    model = build_mlp(cfg, 6, 3)
    for _ in range(3):
        model(torch.randn(32, 6) * 2 + 1)
    return model.eval()


def test_permuted_twin_computes_the_same_function_with_other_weights():
    model = trained_like([8, 5])
    twin = probes.permuted_twin(model, torch.Generator().manual_seed(1)).eval()
    x = torch.randn(20, 6)
    assert torch.allclose(twin(x), model(x), atol=1e-6)
    assert not torch.equal(twin[0].weight, model[0].weight)
    assert sorted(twin[0].weight.sum(1).tolist()) == pytest.approx(sorted(model[0].weight.sum(1).tolist()))


def test_collapse_reproduces_an_identity_network_and_not_a_relu_one():
    x = torch.randn(50, 6)
    linear = probes.collapse(trained_like([8, 5], activation="identity"), x)
    assert linear["collapse_max_abs_diff"] < 1e-5 * max(1.0, linear["collapse_output_scale"])  # float32 rounding
    relu = probes.collapse(trained_like([8, 5], activation="relu"), x)
    assert relu["collapse_max_abs_diff"] > 1e-3


def test_symmetry_curve_ends_at_the_same_loss_and_starts_at_the_nets():
    model = trained_like([8, 5], batchnorm=False)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    summary, curve = probes.symmetry(model, x, y, seed=2, points=5)
    assert [point["alpha"] for point in curve] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve[0]["loss"] == pytest.approx(nn.functional.cross_entropy(model(x), y).item(), rel=1e-6)
    assert summary["symmetry_permuted_loss_diff"] < 1e-6
    ends = (curve[0]["loss"] + curve[-1]["loss"]) / 2
    assert summary["symmetry_jensen_gap"] == pytest.approx(curve[2]["loss"] - ends)
