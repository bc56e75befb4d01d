"""K MLPs of the same shape as one: each layer's weights stacked along a leading member dimension.

A training step of the stack is one batched matmul per layer instead of K small ones. Each member's
own nn.Sequential stays the owner of record: its parameters and BatchNorm buffers become views of
the stacked tensors, so the member's optimizer (a torch object of its own), its evaluation, its
state_dict and its checkpoint are those of a separate run, and the stack sees every update at once.
Members never mix: BatchNorm normalises each member's batch by itself, and what is random (dropout
masks, BatchNorm noise) is drawn from the member's own stream of torch's generator.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from mlbasics.model import NoisyBatchNorm1d, santurkar_noise


class MemberRandomness:
    """Each member's stream of torch's global generator, swapped in around whatever the member draws,
    so that its dropout masks are those of its separate run and its checkpoint holds its own state."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.states: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def _current(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.get_rng_state(), torch.cuda.get_rng_state() if self.cuda else None

    def _restore(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if self.cuda:
            torch.cuda.set_rng_state(state[1])

    def capture(self) -> None:
        """The generator's state as it is now becomes the next member's (call right after its seeded init)."""
        self.states.append(self._current())

    @contextmanager
    def of(self, member: int) -> Iterator[None]:
        outer = self._current()
        self._restore(self.states[member])
        try:
            yield
        finally:
            self.states[member] = self._current()
            self._restore(outer)


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors])


def _share_parameter(module: nn.Module, name: str, stacked: torch.Tensor, member: int,
                     transposed: bool = False) -> nn.Parameter:
    """Make `module.name` a leaf Parameter whose storage is row `member` of `stacked` (transposed if asked)."""
    row = stacked.detach()[member]
    view = nn.Parameter(row.t() if transposed else row)
    setattr(module, name, view)
    return view


@dataclass
class SharedLeaf:
    """A stacked leaf tensor and its members' views; after backward each view gets its row of the gradient."""
    stacked: torch.Tensor
    views: list[nn.Parameter]
    transposed: bool = False  # each view is its row transposed (Linear weights; see StackedLayer)


class StackedNorm:
    """BatchNorm1d of every member at once: per-member batch statistics and running statistics."""

    def __init__(self, norms: list[nn.BatchNorm1d], rng: MemberRandomness) -> None:
        self.norms, self.rng = norms, rng
        self.momentum, self.eps = norms[0].momentum, norms[0].eps
        self.noisy = isinstance(norms[0], NoisyBatchNorm1d)
        self.weight = SharedLeaf(_stack([n.weight for n in norms]).requires_grad_(), [])
        self.bias = SharedLeaf(_stack([n.bias for n in norms]).requires_grad_(), [])
        self.running_mean, self.running_var = _stack([n.running_mean for n in norms]), _stack([n.running_var for n in norms])
        self.batches_tracked = _stack([n.num_batches_tracked for n in norms])
        for k, norm in enumerate(norms):
            self.weight.views.append(_share_parameter(norm, "weight", self.weight.stacked, k))
            self.bias.views.append(_share_parameter(norm, "bias", self.bias.stacked, k))
            norm.running_mean, norm.running_var = self.running_mean[k], self.running_var[k]
            norm.num_batches_tracked = self.batches_tracked[k]

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        members, batch, width = h.shape
        if batch == 1:  # torch's own error for one sample, worded as the member's separate run would see it
            self.norms[0](h[0])
        # members side by side as channels: (batch, members * width) normalises each member's batch alone
        flat = h.transpose(0, 1).reshape(batch, members * width)
        out = F.batch_norm(flat, self.running_mean.view(-1), self.running_var.view(-1),
                           self.weight.stacked.view(-1), self.bias.stacked.view(-1), True, self.momentum, self.eps)
        self.batches_tracked.add_(1)
        out = out.view(batch, members, width).transpose(0, 1)
        if self.noisy:
            out = torch.stack([self._noise(k, part) for k, part in enumerate(out.unbind(0))])
        return out

    def _noise(self, member: int, a: torch.Tensor) -> torch.Tensor:
        with self.rng.of(member):
            return santurkar_noise(a)


class StackedLayer:
    """One Linear of every member, with what follows it in each (BatchNorm, activation, dropout)."""

    def __init__(self, blocks: list[dict[str, nn.Module]], rng: MemberRandomness) -> None:
        self.rng = rng
        linears = [block["linear"] for block in blocks]
        # stacked as (members, in, out), each member's (out, in) weight a transposed view of its row: then
        # the forward is bmm(h, W) and backward's gradient arrives in the weight's own layout, uncopied
        self.weight = SharedLeaf(_stack([lin.weight.t() for lin in linears]).requires_grad_(), [], transposed=True)
        self.bias = SharedLeaf(_stack([lin.bias for lin in linears]).requires_grad_(), [])
        for k, linear in enumerate(linears):
            self.weight.views.append(_share_parameter(linear, "weight", self.weight.stacked, k, transposed=True))
            self.bias.views.append(_share_parameter(linear, "bias", self.bias.stacked, k))
        self.norm = StackedNorm([b["norm"] for b in blocks], rng) if "norm" in blocks[0] else None
        self.activations = [b["activation"] for b in blocks] if "activation" in blocks[0] else None
        self.dropouts = [b["dropout"].p if "dropout" in b else 0.0 for b in blocks]

    def leaves(self) -> list[SharedLeaf]:
        return [self.weight, self.bias] + ([self.norm.weight, self.norm.bias] if self.norm else [])

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        h = torch.baddbmm(self.bias.stacked.unsqueeze(1), h, self.weight.stacked)
        if self.norm is not None:
            h = self.norm(h)
        # per member through unbind, never h[k]: each h[k]'s backward would fill a zero tensor of all of h
        if self.activations is not None:
            kinds = {type(a) for a in self.activations}
            h = self.activations[0](h) if len(kinds) == 1 else torch.stack(
                [act(part) for act, part in zip(self.activations, h.unbind(0))])
        if any(self.dropouts):
            h = torch.stack([self._dropout(k, part, p) if p else part
                             for k, (part, p) in enumerate(zip(h.unbind(0), self.dropouts))])
        return h

    def _dropout(self, member: int, h: torch.Tensor, p: float) -> torch.Tensor:
        with self.rng.of(member):
            return F.dropout(h, p, training=True)


def blocks_of(model: nn.Sequential) -> list[dict[str, nn.Module]]:
    """The model's modules grouped by the Linear that starts each block (see model.build_mlp)."""
    blocks: list[dict[str, nn.Module]] = []
    for module in model:
        if isinstance(module, nn.Linear):
            blocks.append({"linear": module})
        elif isinstance(module, nn.BatchNorm1d):
            blocks[-1]["norm"] = module
        elif isinstance(module, nn.Dropout):
            blocks[-1]["dropout"] = module
        else:
            blocks[-1]["activation"] = module
    return blocks


class StackedMLP:
    """The members' models as one, for training steps: input (members, batch, features)."""

    def __init__(self, models: list[nn.Sequential], rng: MemberRandomness) -> None:
        self.models = models
        per_member = [blocks_of(m) for m in models]
        self.layers = [StackedLayer([blocks[i] for blocks in per_member], rng) for i in range(len(per_member[0]))]
        self.shared = [leaf for layer in self.layers for leaf in layer.leaves()]

    def train(self) -> None:
        for model in self.models:
            model.train()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def zero_grad(self) -> None:
        for leaf in self.shared:
            leaf.stacked.grad = None

    def weight_grad_norms(self) -> torch.Tensor:
        """(members, layers): the norm of each Linear weight's gradient, as train.fit_epoch records it."""
        return torch.stack([torch.linalg.vector_norm(layer.weight.stacked.grad, dim=(1, 2)) for layer in self.layers],
                           dim=1)


def _row(leaf: SharedLeaf, stacked: torch.Tensor, member: int) -> torch.Tensor:
    """Row `member` of a tensor shaped like `leaf.stacked`, in the layout of the member's parameter."""
    return stacked[member].t() if leaf.transposed else stacked[member]


class StackedSGD:
    """The members' SGD steps as one, with each member's own lr, momentum, weight decay and Nesterov.

    Each member keeps its torch SGD (and the scheduler that drives it) as the owner of record: its
    param group gives this step's lr and momentum, its state's momentum buffers are views of the
    stacked buffers (so its state_dict is a separate run's), and `describe` reads it as usual. The
    update is torch's SGD (dampening 0): g = grad + wd p; buf = m buf + g (buf = g at the first step);
    d = g + m buf with Nesterov, else buf; p = p - lr d.
    """

    def __init__(self, stack: StackedMLP, optimizers: list[torch.optim.Optimizer]) -> None:
        self.leaves, self.optimizers = stack.shared, optimizers
        self.groups = [opt.param_groups[0] for opt in optimizers]
        reference = self.leaves[0].stacked
        self.weight_decay = torch.tensor([g["weight_decay"] for g in self.groups], dtype=reference.dtype,
                                         device=reference.device)
        nesterov = [bool(g["nesterov"]) for g in self.groups]  # fixed for a run: decided here, not every step
        self.nesterov = torch.tensor(nesterov, device=reference.device)
        self.nesterov_any, self.nesterov_all = any(nesterov), all(nesterov)
        self.buffers = [torch.zeros_like(leaf.stacked) for leaf in self.leaves]
        for leaf, buffer in zip(self.leaves, self.buffers):
            for k, view in enumerate(leaf.views):
                state = optimizers[k].state[view]
                if state.get("momentum_buffer") is not None:  # resumed: the saved buffer, into the stack
                    _row(leaf, buffer, k).copy_(state["momentum_buffer"])
                state["momentum_buffer"] = _row(leaf, buffer, k)
        for optimizer in optimizers:  # their schedulers step optimizers that never step themselves:
            optimizer._opt_called = True  # what torch's step wrapper sets, so it warns of no wrong order

    @torch.no_grad()
    def step(self, live: list[int]) -> None:
        """One step for the `live` members; the others (diverged) keep their parameters."""
        reference = self.leaves[0].stacked
        lr = torch.zeros(len(self.groups), dtype=reference.dtype, device=reference.device)
        lr[live] = torch.tensor([self.groups[k]["lr"] for k in live], dtype=reference.dtype).to(reference.device)
        momentum = torch.tensor([g["momentum"] for g in self.groups], dtype=reference.dtype).to(reference.device)
        for leaf, buffer in zip(self.leaves, self.buffers):
            shape = (-1,) + (1,) * (leaf.stacked.dim() - 1)
            param, m = leaf.stacked, momentum.view(shape)
            grad = torch.addcmul(leaf.stacked.grad, param, self.weight_decay.view(shape))
            buffer.mul_(m).add_(grad)
            if self.nesterov_any:
                ahead = torch.addcmul(grad, buffer, m)
                direction = ahead if self.nesterov_all else torch.where(self.nesterov.view(shape), ahead, buffer)
            else:
                direction = buffer
            param.addcmul_(direction, lr.view(shape), value=-1)
