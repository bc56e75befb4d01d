"""`python -m mlbasics.sheet [x=[...]] [steps=[...]]`: the analytic parts of exercise sheet 6, measured.

Each step computes its numbers in float64 (except where float32 is the point) and returns them,
so the tests can check them; `main` prints them as a short report. Overrides use OmegaConf's
dotlist syntax, e.g. `python -m mlbasics.sheet x=[1,0,2,-1] steps=[forward]`.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mlbasics.config import Config
from mlbasics.model import build_mlp, count_parameters

F64 = torch.float64


@dataclass
class SheetConfig:
    x: List[float] = field(default_factory=lambda: [1.0, 2.0, -1.0, 0.5])
    # exercise 6.5's weights: 4 inputs x 3 hidden (ReLU), 3 hidden x 2 outputs (softmax), no biases
    # nested lists typed loosely: OmegaConf would refuse integers inside a List[List[float]]
    W1: List[Any] = field(default_factory=lambda: [[-0.2, 0.9, 0.4], [-0.1, 0.3, 0.4],
                                                           [0.2, 0.5, -0.7], [0.2, -0.5, 0.5]])
    W2: List[Any] = field(default_factory=lambda: [[0.6, -0.2], [-0.1, 0.8], [-0.5, -0.3]])
    steps: List[str] = field(default_factory=lambda: list(STEPS))
    seed: int = 0


def identities(seed: int = 0) -> dict[str, float]:
    """6.1 a-d, on 20,001 points of [-10, 10]: the largest absolute error of each identity.

    (a) sigma(-x) = 1 - sigma(x)   (b) sigma'(x) = sigma(x) (1 - sigma(x))
    (c) tanh(x) = 2 sigma(2x) - 1  (d) tanh'(x) = 1 - tanh(x)^2
    Derivatives come from autograd, not from the formulas being checked.
    """
    x = torch.linspace(-10, 10, 20_001, dtype=F64, requires_grad=True)
    sig = torch.sigmoid(x)
    (dsig,) = torch.autograd.grad(sig.sum(), x)
    th = torch.tanh(x)
    (dtanh,) = torch.autograd.grad(th.sum(), x)
    with torch.no_grad():
        return {
            "6.1a sigma(-x) = 1 - sigma(x)": (torch.sigmoid(-x) - (1 - sig)).abs().max().item(),
            "6.1b sigma' = sigma (1 - sigma)": (dsig - sig * (1 - sig)).abs().max().item(),
            "6.1c tanh(x) = 2 sigma(2x) - 1": (th - (2 * torch.sigmoid(2 * x) - 1)).abs().max().item(),
            "6.1d tanh' = 1 - tanh^2": (dtanh - (1 - th ** 2)).abs().max().item(),
        }


def mse_convexity(seed: int = 0, n: int = 50, d: int = 5, starts: int = 5) -> dict[str, float]:
    """6.2 a, b: f(w) = ||Xw - Y||^2 has Hessian 2 X^T X (PSD), obeys Jensen, and GD finds one minimum."""
    gen = torch.Generator().manual_seed(seed)
    X, Y = torch.randn(n, d, generator=gen, dtype=F64), torch.randn(n, generator=gen, dtype=F64)
    f = lambda w: ((X @ w - Y) ** 2).sum()  # noqa: E731
    hessian = torch.autograd.functional.hessian(f, torch.zeros(d, dtype=F64))
    eigenvalues = torch.linalg.eigvalsh(hessian)
    a, b = torch.randn(2, 1000, d, generator=gen, dtype=F64) * 3
    t = torch.rand(1000, 1, generator=gen, dtype=F64)
    f_rows = lambda w: ((w @ X.T - Y) ** 2).sum(dim=1)  # noqa: E731  (f for each row of w)
    jensen = f_rows(t * a + (1 - t) * b) - (t[:, 0] * f_rows(a) + (1 - t[:, 0]) * f_rows(b))
    step = 1 / eigenvalues[-1].item()  # 1/L with L = lambda_max of the Hessian: safely below 2/L
    minima = []
    for _ in range(starts):
        w = torch.randn(d, generator=gen, dtype=F64) * 10
        for _ in range(2000):
            w = w - step * 2 * X.T @ (X @ w - Y)
        minima.append(f(w).item())
    exact = f(torch.linalg.lstsq(X, Y.unsqueeze(1)).solution.squeeze(1)).item()
    return {
        "hessian_vs_2XtX_max_abs_diff": (hessian - 2 * X.T @ X).abs().max().item(),
        "hessian_min_eigenvalue": eigenvalues[0].item(),
        "jensen_max_violation": jensen.max().item(),  # <= 0 up to rounding
        "gd_minimum_spread": max(minima) - min(minima),
        "gd_minimum_vs_lstsq": max(abs(m - exact) for m in minima),
        "minimum_value": exact,
    }


def softmax_stability() -> dict[str, object]:
    """6.3 c: exp(1000) overflows float32, so the naive softmax is nan; subtracting the max is exact."""
    z = torch.tensor([1000.0, 0.0, -1000.0], dtype=torch.float32)
    naive = torch.exp(z) / torch.exp(z).sum()
    shifted = torch.exp(z - z.max()) / torch.exp(z - z.max()).sum()
    log_sum_exp = z.max() + torch.log(torch.exp(z - z.max()).sum())
    return {
        "logits": z.tolist(),
        "naive_softmax": naive.tolist(),
        "stable_softmax": shifted.tolist(),
        "stable_log_softmax": (z - log_sum_exp).tolist(),
        "torch_log_softmax": torch.log_softmax(z, dim=0).tolist(),
    }


def newton_cost(batch_size: int = 256) -> dict[str, float]:
    """6.3 d: the default network's p, the Hessian's p^2 floats, and a Newton step's cost beside SGD's."""
    cfg = OmegaConf.structured(Config)
    model = build_mlp(cfg.model, 784, 10)
    p = count_parameters(model)
    x, y = torch.randn(batch_size, 784, dtype=torch.float32), torch.randint(0, 10, (batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        runs.append(time.perf_counter() - start)
    sgd_seconds = sorted(runs)[len(runs) // 2]
    flops_rate = 6 * p * batch_size / sgd_seconds  # forward + backward ~ 6 flops per weight per sample
    newton_flops = p ** 3 / 3  # a Cholesky solve of the p x p system, ignoring building the Hessian
    return {
        "parameters_p": p,
        "hessian_entries": p ** 2,
        "hessian_gib_float32": p ** 2 * 4 / 2 ** 30,
        "sgd_step_seconds": sgd_seconds,
        "newton_solve_flops": newton_flops,
        "newton_step_seconds_at_sgd_flop_rate": newton_flops / flops_rate,
        "newton_over_sgd": newton_flops / flops_rate / sgd_seconds,
    }


def newton_vs_gd(seed: int = 0, d: int = 20, condition: float = 100.0, tol: float = 1e-6) -> dict[str, float]:
    """6.3 g: f(w) = 1/2 w^T A w - b^T w. Newton lands on A^-1 b in one step; GD needs k steps."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    eigenvalues = torch.logspace(0, math.log10(condition), d, dtype=F64)
    A, b = q @ torch.diag(eigenvalues) @ q.T, torch.randn(d, generator=gen, dtype=F64)
    w_star = torch.linalg.solve(A, b)
    w0 = torch.zeros(d, dtype=F64)
    newton = w0 - torch.linalg.solve(A, A @ w0 - b)  # one step: w - H^-1 grad
    step = 2 / (eigenvalues[0] + eigenvalues[-1])  # the best fixed step for GD on a quadratic
    w, k = w0.clone(), 0
    while torch.linalg.vector_norm(w - w_star) > tol * torch.linalg.vector_norm(w_star):
        w, k = w - step * (A @ w - b), k + 1
    rate = (condition - 1) / (condition + 1)
    return {
        "condition_number": (eigenvalues[-1] / eigenvalues[0]).item(),
        "newton_error_after_1_step": torch.linalg.vector_norm(newton - w_star).item(),
        "gd_steps_to_tol": k,
        "gd_steps_predicted": math.ceil(math.log(tol) / math.log(rate)),
        "tolerance_relative": tol,
    }


def batchnorm_single_sample(seed: int = 0) -> dict[str, object]:
    """6.3 h: one sample cannot be batch-normalised in training mode, but eval mode uses running statistics.

    A BatchNorm MLP takes 50 SGD steps on random batches of 16 (so its running statistics are
    real), then one sample goes through it in training mode (PyTorch refuses) and in eval mode,
    where the output must equal that sample's row of a batched eval-mode forward pass.
    """
    torch.manual_seed(seed)
    cfg = OmegaConf.merge(OmegaConf.structured(Config).model, {"hidden": [32, 16], "batchnorm": True})
    model = build_mlp(cfg, 8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(50):
        x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    batch = torch.randn(10, 8)
    try:
        model.train()(batch[:1])
        train_mode = "no error"
    except ValueError as err:
        train_mode = str(err)
    model.eval()
    with torch.no_grad():
        single, batched = model(batch[:1]), model(batch)
    return {"train_mode_single_sample": train_mode,
            "eval_mode_single_sample_output": single[0].tolist(),
            "eval_single_vs_batched_max_abs_diff": (single[0] - batched[0]).abs().max().item()}


def forward_pass(x: list[float], W1: list[list[float]], W2: list[list[float]]) -> dict[str, list[float]]:
    """6.5: z1 = x W1, h = ReLU(z1), z2 = h W2, o = softmax(z2), no biases."""
    try:
        x_t, W1_t, W2_t = (torch.tensor(v, dtype=F64) for v in (x, W1, W2))
    except (TypeError, ValueError) as err:
        raise ValueError(f"x, W1 and W2 must be numbers, a list and two matrices (lists of equal rows): {err}")
    if x_t.dim() != 1 or W1_t.dim() != 2 or W2_t.dim() != 2:
        raise ValueError("x must be a list of numbers, W1 and W2 lists of rows")
    if x_t.shape != (W1_t.shape[0],) or W1_t.shape[1] != W2_t.shape[0]:
        raise ValueError(f"x has {len(x)} numbers, W1 is {list(W1_t.shape)} and W2 is {list(W2_t.shape)}: "
                         "need len(x) = rows of W1 and columns of W1 = rows of W2")
    z1 = x_t @ W1_t
    h = torch.relu(z1)
    z2 = h @ W2_t
    o = torch.softmax(z2, dim=0)
    return {"z1": z1.tolist(), "h": h.tolist(), "z2": z2.tolist(), "softmax": o.tolist()}


def fmt(values) -> str:
    if isinstance(values, str):
        return values
    if isinstance(values, (int, float)):
        return f"{values:.6g}"
    return "[" + ", ".join(fmt(v) for v in values) + "]"


def print_forward(cfg: SheetConfig) -> None:
    out = forward_pass(list(cfg.x), [list(r) for r in cfg.W1], [list(r) for r in cfg.W2])
    print("6.5 forward pass (no biases)")
    print(f"  x = {fmt(list(cfg.x))}")
    print(f"  z1 = x W1 = {fmt(out['z1'])}")
    print(f"  h = ReLU(z1) = {fmt(out['h'])}")
    print(f"  z2 = h W2 = {fmt(out['z2'])}")
    print("  o = softmax(z2) = exp(z2) / sum(exp(z2))")
    print(f"softmax = {fmt(out['softmax'])}")


def print_numbers(title: str, numbers: dict) -> None:
    print(title)
    for key, value in numbers.items():
        print(f"  {key}: {fmt(value)}")


STEPS: dict[str, Callable[[SheetConfig], None]] = {
    "identities": lambda c: print_numbers("6.1 identities, max |error| on 20,001 points in [-10, 10]",
                                          identities(c.seed)),
    "mse_convexity": lambda c: print_numbers("6.2 a, b: ||Xw - Y||^2 is convex", mse_convexity(c.seed)),
    "softmax": lambda c: print_numbers("6.3 c: softmax of large logits in float32", softmax_stability()),
    "newton_cost": lambda c: print_numbers("6.3 d: Newton's method on the default network", newton_cost()),
    "batchnorm_eval": lambda c: print_numbers("6.3 h: BatchNorm and a single sample",
                                              batchnorm_single_sample(c.seed)),
    "newton_vs_gd": lambda c: print_numbers("6.3 g: Newton vs gradient descent on a quadratic",
                                            newton_vs_gd(c.seed)),
    "forward": print_forward,
}


def main(argv: list[str] | None = None) -> None:
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(SheetConfig), OmegaConf.from_dotlist(
            sys.argv[1:] if argv is None else argv))
    except OmegaConfBaseException as err:
        sys.exit(f"mlbasics.sheet: {str(err).splitlines()[0]} (keys: x, W1, W2, steps, seed)")
    unknown = [s for s in cfg.steps if s not in STEPS]
    if unknown:
        sys.exit(f"mlbasics.sheet: steps={unknown} not known; allowed: {', '.join(STEPS)}")
    for name in cfg.steps:
        try:
            STEPS[name](cfg)
        except ValueError as err:
            sys.exit(f"mlbasics.sheet: {err}")
        print()


if __name__ == "__main__":
    main()
