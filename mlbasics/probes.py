"""Measurements on a network that must not disturb it: each works on a copy, in eval mode.

- `collapse`: fold a network into one affine map x -> x W + b (exercise 6.3 a). For an identity
  activation the map reproduces the network's outputs; for a non-linear one the gap is large.
- `landscape` and `internal_covariate_shift`: Santurkar et al.'s measurements during training.
- `symmetry`: permute hidden units (the loss is unchanged) and walk the straight line between
  the network and its permuted twin (the loss rises in the middle: Jensen's inequality fails,
  so the loss is not convex in the weights; exercises 6.2 c and 6.3 f).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


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


# --- Santurkar et al. (2018), "How Does Batch Normalization Help Optimization?" -------------------
# Both probes below run at a training step, after backward() and before optimizer.step(). They work
# on a deep copy of the model (so parameters, gradients and BatchNorm running statistics of the real
# one are untouched) inside torch.random.fork_rng (so no random number generator advances), and
# every forward pass of a probe replays the same random stream, so dropout masks and noisy
# BatchNorm draws are the same for all the points it compares.

def _grads(model: nn.Module, loss_of, params: list[torch.Tensor], seed: int) -> tuple[float, list[torch.Tensor]]:
    torch.manual_seed(seed)
    loss = loss_of(model)
    return loss.item(), list(torch.autograd.grad(loss, params))


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def landscape(model: nn.Module, loss_of, lr: float, points: int = 8, low: float = 0.5,
              high: float = 4.0) -> dict[str, float]:
    """Loss variation, gradient predictiveness and effective beta-smoothness along -g.

    g = grad L(theta) on the batch `loss_of` evaluates; for eta on `points` values spread evenly
    over [low lr, high lr]: L(theta - eta g) and ||grad L(theta - eta g) - g||. beta_eff is the
    largest ||grad L(theta - eta g) - g|| / ||eta g||: the gradient's Lipschitz constant seen along g.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        seed = int(torch.randint(0, 2 ** 62, ()).item())  # one stream, replayed by every forward
        twin = copy.deepcopy(model)
        params = [p for p in twin.parameters() if p.requires_grad]
        loss, g = _grads(twin, loss_of, params, seed)
        g_flat = _flat(g)
        start = [p.detach().clone() for p in params]
        losses, gaps, betas = [], [], []
        for i in range(points):
            eta = lr * (low + (high - low) * i / max(points - 1, 1))
            with torch.no_grad():
                for p, p0, gi in zip(params, start, g):
                    p.copy_(p0 - eta * gi)
            moved_loss, moved_g = _grads(twin, loss_of, params, seed)
            gap = torch.linalg.vector_norm(_flat(moved_g) - g_flat).item()
            losses.append(moved_loss)
            gaps.append(gap)
            betas.append(gap / (eta * torch.linalg.vector_norm(g_flat).item()))
    return {"loss": loss, "loss_min": min(losses), "loss_max": max(losses), "gradpred_min": min(gaps),
            "gradpred_max": max(gaps), "beta_eff": max(betas)}


def layer_blocks(model: nn.Sequential) -> list[list[nn.Parameter]]:
    """Parameters per layer: a Linear layer and the BatchNorm that follows it form one block."""
    blocks: list[list[nn.Parameter]] = []
    for module in model:
        if isinstance(module, nn.Linear):
            blocks.append(list(module.parameters()))
        elif blocks and any(True for _ in module.parameters(recurse=False)):
            blocks[-1].extend(module.parameters())
    return blocks


def internal_covariate_shift(model: nn.Sequential, loss_of, lr: float) -> dict[str, float]:
    """Santurkar et al.'s Definition 2.1, per layer i (fc1 first).

    G = grad of the loss in layer i's weights; G' = the same gradient after every layer before i
    has taken its plain SGD step (lr times its gradient) on the same batch. Records ||G - G'||_2
    and cos(G, G'). The first layer has no layers before it, so its shift is exactly zero.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    out: dict[str, float] = {}
    with torch.random.fork_rng(devices=devices):
        seed = int(torch.randint(0, 2 ** 62, ()).item())
        base = copy.deepcopy(model)
        params = [p for p in base.parameters() if p.requires_grad]
        _, grads = _grads(base, loss_of, params, seed)
        grad_of = {id(p): g for p, g in zip(params, grads)}
        blocks = layer_blocks(base)
        for i, block in enumerate(blocks):
            weight = block[0]
            G = grad_of[id(weight)]
            if i == 0:
                G_after = G
            else:
                shifted = copy.deepcopy(base)
                shifted_blocks = layer_blocks(shifted)
                with torch.no_grad():
                    for earlier, original in zip(shifted_blocks[:i], blocks[:i]):
                        for p, p0 in zip(earlier, original):
                            p.copy_(p0 - lr * grad_of[id(p0)])
                _, (G_after,) = _grads(shifted, loss_of, [shifted_blocks[i][0]], seed)
            out[f"ics_l2_fc{i + 1}"] = torch.linalg.vector_norm(G - G_after).item()
            out[f"ics_cos_fc{i + 1}"] = nn.functional.cosine_similarity(
                G.reshape(1, -1), G_after.reshape(1, -1)).item()
    return out


class StepProbes:
    """The per-step probes a config asks for; `measure` returns one landscape.csv row."""

    def __init__(self, cfg, label_smoothing: float) -> None:
        self.cfg, self.label_smoothing = cfg, label_smoothing

    @property
    def active(self) -> bool:
        return self.cfg.landscape.every > 0 or self.cfg.ics.every > 0

    def due(self, step: int) -> bool:
        return any(every > 0 and step % every == 0 for every in (self.cfg.landscape.every, self.cfg.ics.every))

    def measure(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, step: int,
                epoch: int) -> dict[str, float]:
        def loss_of(net: nn.Module) -> torch.Tensor:  # the training loss on this step's batch
            return nn.functional.cross_entropy(net(x), y, label_smoothing=self.label_smoothing)

        row: dict[str, float] = {"step": step, "epoch": epoch, "lr": lr}
        land = self.cfg.landscape
        if land.every > 0 and step % land.every == 0:
            row.update(landscape(model, loss_of, lr, points=land.points, low=land.low, high=land.high))
        if self.cfg.ics.every > 0 and step % self.cfg.ics.every == 0:
            row.update(internal_covariate_shift(model, loss_of, lr))
        return row
