"""Measurements on a network that must not disturb it: each works on a copy, in eval mode.

- `collapse`: fold a network into one affine map x -> x W + b (exercise 6.3 a). For an identity
  activation the map reproduces the network's outputs; for a non-linear one the gap is large.
- `symmetry`: permute hidden units (the loss is unchanged) and walk the straight line between
  the network and its permuted twin (the loss rises in the middle: Jensen's inequality fails,
  so the loss is not convex in the weights; exercises 6.2 c and 6.3 f).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


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


def affine_layers(model: nn.Sequential) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The network as a chain of affine maps (Linear, and BatchNorm in eval mode), or None if it is not one."""
    chain = []
    for layer in model:
        if isinstance(layer, nn.Linear):
            chain.append((layer.weight.T.double(), layer.bias.double()))
        elif isinstance(layer, nn.BatchNorm1d):  # eval mode: y = (x - mean) / sqrt(var + eps) * gamma + beta
            scale = layer.weight.double() / torch.sqrt(layer.running_var.double() + layer.eps)
            chain.append((torch.diag(scale), layer.bias.double() - layer.running_mean.double() * scale))
        elif not isinstance(layer, (nn.Identity, nn.Dropout)):
            return None
    return chain


@torch.no_grad()
def collapse(model: nn.Sequential, x: torch.Tensor) -> dict[str, float]:
    """Multiply the layers' matrices (biases folded in) into one map; compare its outputs with the net's.

    Every layer is folded as if it were affine; activations are skipped. The gap is rounding for
    an identity network and the size of the non-linearity otherwise.
    """
    model = copy.deepcopy(model).eval()
    weight, bias = torch.eye(x.shape[1], dtype=torch.float64, device=x.device), torch.zeros(
        x.shape[1], dtype=torch.float64, device=x.device)
    linear_only = nn.Sequential(*[m for m in model if isinstance(m, (nn.Linear, nn.BatchNorm1d))])
    for w, b in affine_layers(linear_only):
        weight, bias = weight @ w, bias @ w + b
    folded = x.double() @ weight + bias
    outputs = model(x).double()
    return {"collapse_max_abs_diff": (folded - outputs).abs().max().item(),
            "collapse_output_scale": outputs.abs().max().item()}


def permuted_twin(model: nn.Sequential, gen: torch.Generator) -> nn.Sequential:
    """The same function with the units of every hidden layer shuffled.

    Permuting the outputs of a Linear layer (and its BatchNorm's parameters and statistics) and
    the inputs of the next Linear layer in the same way changes no output.
    """
    twin = copy.deepcopy(model)
    linears = [i for i, m in enumerate(twin) if isinstance(m, nn.Linear)]
    for here, after in zip(linears, linears[1:]):
        perm = torch.randperm(twin[here].out_features, generator=gen).to(twin[here].weight.device)
        twin[here].weight.data = twin[here].weight.data[perm]
        twin[here].bias.data = twin[here].bias.data[perm]
        for layer in twin[here + 1:after]:
            if isinstance(layer, nn.BatchNorm1d):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(layer, name).data = getattr(layer, name).data[perm]
        twin[after].weight.data = twin[after].weight.data[:, perm]
    return twin


@torch.no_grad()
def symmetry(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
             points: int = 11) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Loss at alpha in [0, 1] along theta(alpha) = (1 - alpha) theta + alpha theta_permuted."""
    model = copy.deepcopy(model).eval()
    twin = permuted_twin(model, torch.Generator().manual_seed(seed)).eval()
    mixed = copy.deepcopy(model).eval()
    curve = []
    for alpha in (i / (points - 1) for i in range(points)):
        for target, a, b in zip(mixed.state_dict().values(), model.state_dict().values(), twin.state_dict().values()):
            if target.is_floating_point():
                target.copy_((1 - alpha) * a + alpha * b)
        loss = nn.functional.cross_entropy(mixed(x), y).item()
        curve.append({"alpha": alpha, "loss": loss})
    ends = (curve[0]["loss"] + curve[-1]["loss"]) / 2
    middle = max(curve, key=lambda point: point["loss"])
    return {
        "symmetry_loss": curve[0]["loss"],
        "symmetry_permuted_loss_diff": abs(curve[-1]["loss"] - curve[0]["loss"]),
        "symmetry_midpoint_loss": curve[points // 2]["loss"],
        "symmetry_max_loss": middle["loss"],
        # > 0: the loss on the segment lies above the chord, which a convex function never does
        "symmetry_jensen_gap": curve[points // 2]["loss"] - ends,
    }, curve
