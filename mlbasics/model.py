"""The MLP builder: Linear -> [BatchNorm1d] -> activation -> [Dropout] per hidden layer, then Linear."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}


def build_mlp(cfg, in_features: int, n_classes: int) -> nn.Sequential:
    """`cfg.hidden=[]` gives softmax regression: a single Linear layer (the loss applies the softmax)."""
    activation = ACTIVATIONS[cfg.activation.value if hasattr(cfg.activation, "value") else cfg.activation]
    layers: list[nn.Module] = []
    width = in_features
    for out in cfg.hidden:
        layers.append(nn.Linear(width, out))
        if cfg.batchnorm:
            layers.append(nn.BatchNorm1d(out))
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

