"""The MLP builder: Linear -> [BatchNorm1d] -> activation -> [Dropout] per hidden layer, then Linear."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}


def santurkar_noise(a: torch.Tensor) -> torch.Tensor:
    """Santurkar et al.'s Algorithm 1 on a batch (samples x units): a <- s * a + m.

    Per unit (drawn anew at every call, i.e. every step) mu ~ U(-0.5, 0.5) and sigma ~ U(1, 1.25);
    per sample and unit m ~ U(mu - 0.1, mu + 0.1) and s ~ N(sigma, 0.1).
    """
    units = a.shape[1]
    mu = torch.rand(units, device=a.device) - 0.5
    sigma = 1 + 0.25 * torch.rand(units, device=a.device)
    m = mu + 0.2 * torch.rand_like(a) - 0.1
    s = sigma + 0.1 * torch.randn_like(a)
    return s * a + m


class NoisyBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm followed, in training mode only, by a distribution shift that changes every step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return santurkar_noise(out) if self.training else out


def build_mlp(cfg, in_features: int, n_classes: int) -> nn.Sequential:
    """`cfg.hidden=[]` gives softmax regression: a single Linear layer (the loss applies the softmax)."""
    activation = ACTIVATIONS[cfg.activation.value]
    layers: list[nn.Module] = []
    width = in_features
    for out in cfg.hidden:
        layers.append(nn.Linear(width, out))
        if cfg.batchnorm:
            layers.append(NoisyBatchNorm1d(out) if cfg.batchnorm_noise else nn.BatchNorm1d(out))
        layers.append(activation())
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        width = out
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers in forward order: fc1 is the first, the last is the output layer."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

