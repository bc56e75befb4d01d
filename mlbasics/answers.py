"""Sheet 6, question by question, as Markdown: each answer's table, figures and statement are read from
the user's own sweep folders (mlbasics.sweeps) or computed by the functions `python -m mlbasics.sheet`
runs. No number is typed in here: a statement's every number comes from those files or functions,
and a question whose sweep is missing, incomplete, failed or diverged says so with its command.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from mlbasics import sheet
from mlbasics.report import STATUSES
from mlbasics.sweeps import Sweep, SweepError, command_of, read_json, read_sweep

CHANCE = 0.15  # ten classes: a test accuracy below this is a net that learned nothing


@dataclass
class Answer:
    heading: str
    markdown: str
    figures: list[Path] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # what is missing, one line each (also inside markdown)


def command(experiment: str, extra: str = "") -> str:
    return f"python -m mlbasics.run -m +experiment={experiment}{extra}"


def acc(value: float) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.4f}"


def small(value: float) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.2g}"


def depth(hidden: object) -> int:
    return len(json.loads(hidden)) if isinstance(hidden, str) else 0


def mean(sweep: Sweep, metric: str, stat: str = "mean", **where: object) -> float:
    """A group's mean (or std) of `metric` in the grouped table (where: grouping key -> value as text)."""
    rows = sweep.grouped
    for key, value in where.items():
        rows = rows[rows[key].astype(str) == str(value)]
    column = f"{metric}_{stat}"
    return float(rows[column].iloc[0]) if len(rows) and column in rows and pd.notna(rows[column].iloc[0]) else math.nan


def outcome_line(sweep: Sweep) -> tuple[str, list[str], list[str]]:
    """`Measured in FOLDER: n jobs, ...`, what failed or diverged (an outcome the answer reports), and the
    gaps (jobs without a result)."""
    counts = sweep.counts
    total = sum(counts.values())
    line = (f"Measured in `{sweep.folder}`: {total} jobs, "
            + ", ".join(f"{counts[s]} {s}" for s in counts if counts[s] or s == "completed") + ".")
    outcomes, gaps = [], []
    for status in ("failed", "diverged"):
        rows = sweep.jobs[sweep.jobs["status"] == status]
        if len(rows):
            first = rows.iloc[0]
            outcomes.append(f"{len(rows)} job(s) {status}, e.g. `{first['job']}`: {first.get('error', '')}")
    if counts["incomplete"]:
        gaps.append(f"{counts['incomplete']} of {total} jobs have no result (still running or stopped): run the "
                    f"same command with `hydra.sweep.dir={sweep.folder}` to finish them")
    return line, outcomes, gaps


def short(value: object) -> str:
    """A grouping value as a table shows it: a list of equal widths `[128,128,128]` as `3 × 128`."""
    if isinstance(value, str) and value.startswith("["):
        widths = json.loads(value)
        if len(widths) > 1 and len(set(widths)) == 1:
            return f"{len(widths)} × {widths[0]}"
    return str(value)


def number(value: float, metric: str) -> str:
    """Accuracies to 4 decimals (as summary.md has them), anything else to 4 significant digits."""
    return f"{value:.4f}" if metric.endswith("_acc") else f"{value:.4g}"


def table(sweep: Sweep, metrics: list[str]) -> str:
    """The grouped table, narrow enough for a page: the keys, the jobs and their outcomes, mean ± std of each
    metric over the completed jobs, exactly as summary_grouped.csv has them."""
    shown = [m for m in metrics if f"{m}_mean" in sweep.grouped]
    keys = sweep.by or ["all"]
    lines = ["| " + " | ".join([*(k.split(".")[-1] for k in keys), "jobs", *shown]) + " |",
             "|" + "---|" * (len(keys) + 1 + len(shown))]
    for _, row in sweep.grouped.iterrows():
        outcomes = [f"{int(row[s])} {s}" for s in STATUSES if s != "completed" and row.get(s, 0)]
        cells = [short(row[k]) for k in keys] + [f"{int(row['n'])}" + (f" ({', '.join(outcomes)})" if outcomes else "")]
        for metric in shown:
            mean_value, std = row[f"{metric}_mean"], row.get(f"{metric}_std")
            cells.append("–" if pd.isna(mean_value) else number(mean_value, metric)
                         + ("" if pd.isna(std) else f" ± {number(std, metric)}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def job_table(jobs: pd.DataFrame, columns: list[str]) -> str:
    """One row per job: the given columns, numbers to 4 significant digits."""
    columns = [c for c in columns if c in jobs]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in jobs.iterrows():
        cells = [("–" if pd.isna(row[c]) else f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]))
                 for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- the analytic questions: numbers from the functions `python -m mlbasics.sheet` runs ---

def numbers_list(numbers: dict) -> str:
    return "\n".join(f"- {key}: {sheet.fmt(value)}" for key, value in numbers.items()) + "\n"


def sheet_answer(heading: str, step: str, setting: str, numbers: dict, statement: str) -> Answer:
    """An analytic answer: the sheet step's command, every number it returned, and what they show."""
    return Answer(heading, f"Command: `python -m mlbasics.sheet steps=[{step}]`{setting}\n\n"
                           + numbers_list(numbers) + f"\n{statement}\n")


def identities_answer() -> Answer:
    n = sheet.identities()
    return sheet_answer("6.1 a-d: identities of sigmoid and tanh", "identities",
                        ". Each identity is checked on 20,001 points of [−10, 10] in float64, derivatives by "
                        "autograd; largest absolute error:", n,
                        f"All four hold to float64 rounding (largest error {max(n.values()):.1e}).")


def convexity_answer() -> Answer:
    n = sheet.mse_convexity()
    verdict = "convex" if n["hessian_min_eigenvalue"] >= 0 and n["jensen_max_violation"] <= 1e-9 else "NOT shown convex"
    return sheet_answer(
        "6.2 a-b: the squared error is convex", "mse_convexity",
        ", for f(w) = ‖Xw − Y‖² with random X (50 × 5).", n,
        f"The autograd Hessian equals 2XᵀX (difference {n['hessian_vs_2XtX_max_abs_diff']:.1e}), its smallest "
        f"eigenvalue is {n['hessian_min_eigenvalue']:.4g} ≥ 0, Jensen's inequality holds on 1,000 random pairs "
        f"(largest violation {n['jensen_max_violation']:.3g}), and gradient descent from 5 starts reaches the "
        f"least-squares minimum {n['minimum_value']:.6g} to {n['gd_minimum_vs_lstsq']:.1e}: f is {verdict}.")


def softmax_answer() -> Answer:
    n = sheet.softmax_stability()
    return sheet_answer(
        "6.3 c: a numerically stable softmax", "softmax", ".", n,
        f"In float32 the naive softmax of {sheet.fmt(n['logits'])} is {sheet.fmt(n['naive_softmax'])} (exp "
        f"overflows); subtracting the maximum first gives {sheet.fmt(n['stable_softmax'])}, and the log-softmax "
        f"{sheet.fmt(n['stable_log_softmax'])} equals torch's {sheet.fmt(n['torch_log_softmax'])}.")


def newton_cost_answer() -> Answer:
    n = sheet.newton_cost()
    return sheet_answer(
        "6.3 d: the cost of Newton's method", "newton_cost", ", for the default network.", n,
        f"With p = {n['parameters_p']:,} parameters the Hessian has p² = {n['hessian_entries']:.2g} entries "
        f"({n['hessian_gib_float32']:,.0f} GiB in float32); solving one Newton system costs about p³/3 = "
        f"{n['newton_solve_flops']:.2g} flops, {n['newton_over_sgd']:.1g} times one SGD step on this machine.")


def newton_vs_gd_answer() -> Answer:
    n = sheet.newton_vs_gd()
    return sheet_answer(
        "6.3 g: Newton against gradient descent", "newton_vs_gd", ", on f(w) = ½wᵀAw − bᵀw in 20 dimensions.", n,
        f"With condition number {n['condition_number']:.0f}, one Newton step lands on the minimum (error "
        f"{n['newton_error_after_1_step']:.1e}); gradient descent with the best fixed step needs {n['gd_steps_to_tol']} "
        f"steps to a relative error of {n['tolerance_relative']:.0e} (the bound says at most "
        f"{n['gd_steps_predicted']}).")


def forward_answer(x: list[float]) -> Answer:
    defaults = sheet.SheetConfig()
    n = sheet.forward_pass(x, defaults.W1, defaults.W2)
    return Answer("6.5: a forward pass by hand", (
        f"Command: `python -m mlbasics.sheet x=[{','.join(sheet.fmt(v) for v in x)}] steps=[forward]`, with the "
        f"sheet's weights W1 = {sheet.fmt(defaults.W1)}, W2 = {sheet.fmt(defaults.W2)} and no biases.\n\n"
        f"- x = {sheet.fmt(x)}\n- z1 = xW1 = {sheet.fmt(n['z1'])}\n- h = ReLU(z1) = {sheet.fmt(n['h'])}\n"
        f"- z2 = hW2 = {sheet.fmt(n['z2'])}\n- o = softmax(z2) = {sheet.fmt(n['softmax'])}\n"))


# --- the training questions: numbers from the sweep folders ---

def fashion_mnist_statement(sweep: Sweep) -> str:
    c = sweep.config
    model, opt, trainer = c.get("model", {}), c.get("optimizer", {}), c.get("trainer", {})
    done = sweep.jobs[sweep.jobs["status"] == "completed"]
    setup = (f"The network: {model.get('hidden')} hidden units, {model.get('activation')}, BatchNorm "
             f"{'on' if model.get('batchnorm') else 'off'}; SGD (momentum {opt.get('momentum')}, Nesterov "
             f"{opt.get('nesterov')}), {opt.get('schedule')} schedule to lr {opt.get('lr')}, batch size "
             f"{trainer.get('batch_size')}, {trainer.get('epochs')} epochs.")
    if not len(done):
        return setup + "\n"
    test, val, train = (done[m].mean() for m in ("test_acc", "val_acc", "train_acc"))
    gap, agreement = (train - val) * 100, abs(val - test) * 100
    return (setup + f" Over {len(done)} seeds the test accuracy is {acc(test)}"
            + ("" if len(done) < 2 else f" ± {acc(done['test_acc'].std())}")
            + f" (per seed: {', '.join(acc(v) for v in done['test_acc'])}). Training accuracy is {gap:.1f} points "
            f"{'above' if gap >= 0 else 'below'} validation accuracy"
            + (": the net starts to overfit" if gap > 1 else "") + f"; validation and test differ by {agreement:.1f} "
            f"points" + (", so the held-out split stands in for the test set" if agreement < 1 else "") + ".\n")


def no_activation_statement(sweep: Sweep) -> str:
    g = sweep.grouped.assign(depth=sweep.grouped["model.hidden"].map(depth))
    parts = []
    for activation, rows in g[g["depth"] > 0].groupby("model.activation", sort=False):
        misses, scale = rows["collapse_max_abs_diff_mean"], rows["collapse_output_scale_mean"]
        parts.append(f"{activation} with {', '.join(map(str, rows['depth']))} hidden layers: the folded map misses "
                     f"the net's outputs by {small(misses.min())} to {small(misses.max())} (outputs of size "
                     f"{small(scale.min())} to {small(scale.max())}), test accuracy {acc(rows['test_acc_mean'].min())} "
                     f"to {acc(rows['test_acc_mean'].max())}")
    alone = g[g["depth"] == 0]["test_acc_mean"]
    return ("Every Linear layer and BatchNorm (eval mode) is multiplied into one map x ↦ xW + b and compared with the "
            "net on the test set. " + "; ".join(parts) + (f"; softmax regression (no hidden layer) "
                                                         f"{acc(alone.iloc[0])}" if len(alone) else "")
            + ". Where the folded map matches to rounding, depth adds no function the single affine map lacks; "
              "where it misses by more than the outputs' size, it does.\n")


def activations_statement(sweep: Sweep) -> str:
    g = sweep.grouped.assign(depth=sweep.grouped["model.hidden"].map(depth))
    lines = []
    for activation, rows in g.groupby("model.activation", sort=False):
        ratios = ", ".join(f"{small(r['grad_ratio_first_last_epoch1_mean'])} (depth {r['depth']})"
                           for _, r in rows.iterrows())
        lines.append(f"{activation} {ratios}")
    chance = g[g["test_acc_mean"].isna() | (g["test_acc_mean"] < CHANCE)]
    stuck = ", ".join(f"{r['model.activation']} at depth {r['depth']}" for _, r in chance.iterrows()) or "none"
    diverged = g[g["diverged"] > 0]
    div = ", ".join(f"{r['model.activation']} depth {r['depth']} ({r['diverged']} of {r['n']})"
                    for _, r in diverged.iterrows()) or "none"
    return ("The first layer's gradient norm over the output layer's in epoch 1 (vanishing gradients when it is "
            "far below 1): " + "; ".join(lines) + f". At chance level (test accuracy below {CHANCE}): {stuck}. "
            f"Diverged: {div}.\n")


def tuned_answer(sweep_folder: Path, fixed: Sweep | None) -> tuple[str, list[str]]:
    """The activations_tuned sweep: each arm's tuned lr and its confirmed test accuracy, beside the fixed-lr grid."""
    confirmed = read_sweep("activations_tuned", sweep_folder, sweep_folder / "confirm")
    best = (read_json(sweep_folder / "best.json") or {}).get("arms", {})
    g = confirmed.grouped.copy()
    if "model.hidden" not in g:  # one depth for every arm: it is in the config, not a key
        g["model.hidden"] = json.dumps(confirmed.config.get("model", {}).get("hidden"), separators=(",", ":"))
    g["depth"] = g["model.hidden"].map(depth)
    lines = ["| activation | depth | tuned lr | best val_acc | jobs | test_acc (seeds) | test_acc at the fixed lr |",
             "|---|---|---|---|---|---|---|"]
    for _, r in g.iterrows():
        arm = best.get(",".join(f"{k}={r[k]}" for k in confirmed.by), {})
        lr = arm.get("params", {}).get("optimizer.lr")
        fixed_acc = mean(fixed, "test_acc", **{"model.activation": r["model.activation"],
                                                "model.hidden": r["model.hidden"]}) if fixed else math.nan
        std = r.get("test_acc_std")
        lines.append(f"| {r['model.activation']} | {r['depth']} | {small(lr) if lr else '–'} | "
                     f"{acc(arm.get('value'))} | {r['n']} ({r['completed']} completed) | {acc(r.get('test_acc_mean'))}"
                     f"{'' if pd.isna(std) else ' ± ' + acc(std)} | {acc(fixed_acc)} |")
    statement = []
    for d, rows in g.groupby("depth"):
        tuned_order = ranking(rows)
        text = f"depth {d}: tuned {tuned_order}"
        fixed_rows = fixed.grouped[fixed.grouped["model.hidden"].map(depth) == d] if fixed else []
        if len(fixed_rows):
            fixed_order = ranking(fixed_rows)
            text += f", fixed lr {fixed_order} ({'same ranking' if fixed_order == tuned_order else 'ranking changed'})"
        statement.append(text)
    return "\n".join(lines) + "\n", statement


def ranking(rows: pd.DataFrame) -> str:
    """`relu > tanh = sigmoid`: activations by mean test accuracy, `=` where the table shows the same number."""
    ordered = rows.assign(shown=rows["test_acc_mean"].round(4)).sort_values("shown", ascending=False)
    text, previous = "", None
    for _, row in ordered.iterrows():
        if previous is not None:
            text += " = " if row["shown"] == previous or (pd.isna(row["shown"]) and pd.isna(previous)) else " > "
        text, previous = text + str(row["model.activation"]), row["shown"]
    return text


def lr_convex_statement(sweep: Sweep) -> str:
    g = sweep.grouped.assign(unit=pd.to_numeric(sweep.grouped["optimizer.lr"]))
    two_over_l = (g["lr_effective_mean"] / g["unit"]).dropna()
    below = g[g["unit"] < 1]
    rose = g[g["train_loss_increases_mean"] > 0]
    diverged = g[g["diverged"] > 0]
    return (f"The learning rate is given in units of 2/L (2/L = {two_over_l.iloc[0]:.5f} on this data). Below 2/L "
            f"the training loss rose on {int(below['train_loss_increases_mean'].max()) if len(below) else '–'} of the "
            f"steps (the theory for L-smooth convex functions guarantees 0). "
            + (f"It first rose at {sheet.fmt(rose['unit'].min())} × 2/L. " if len(rose) else
               "It rose at none of the completed step sizes. ")
            + (f"Training diverged from {sheet.fmt(diverged['unit'].min())} × 2/L on." if len(diverged) else
               "No step size diverged.") + "\n")


def batchnorm_bs1_statement(sweep: Sweep) -> str:
    jobs = sweep.jobs
    bn1 = jobs[(jobs["model.batchnorm"].astype(str) == "True") & (jobs["trainer.batch_size"] == 1)]
    failed = bn1[bn1["status"] == "failed"]
    single = sheet.batchnorm_single_sample()
    text = (f"With BatchNorm and batch size 1, {len(failed)} of {len(bn1)} jobs failed"
            + (f": {failed['error'].iloc[0]}" if len(failed) else "") + ". Without BatchNorm, batch size 1 reaches "
            f"test accuracy {acc(mean(sweep, 'test_acc', **{'model.batchnorm': False, 'trainer.batch_size': 1}))}; "
            f"with BatchNorm, batch size 2 reaches "
            f"{acc(mean(sweep, 'test_acc', **{'model.batchnorm': True, 'trainer.batch_size': 2}))} and 16 reaches "
            f"{acc(mean(sweep, 'test_acc', **{'model.batchnorm': True, 'trainer.batch_size': 16}))}. In eval mode "
            f"(`python -m mlbasics.sheet steps=[batchnorm_eval]`) a single sample goes through a trained BatchNorm net "
            f"with its running statistics (training mode: \"{single['train_mode_single_sample']}\"); its output "
            f"equals its row of a batched pass to {single['eval_single_vs_batched_max_abs_diff']:.1e}.\n")
    return text


def symmetry_statement(sweep: Sweep) -> str:
    done = sweep.jobs[sweep.jobs["status"] == "completed"]
    if not len(done):
        return ""
    ratio = done["symmetry_midpoint_loss"] / done["symmetry_loss"]
    gaps = done["symmetry_jensen_gap"]
    verdict = ("a convex function never lies above its chord, so the training loss is not convex in the weights"
               if (gaps > 0).all() else "in some seeds the midpoint is not above the chord: this run does not show "
               "non-convexity")
    return (f"Permuting the hidden units gives another network with the same loss (largest |L(θ_perm) − L(θ)| = "
            f"{done['symmetry_permuted_loss_diff'].abs().max():.1e}), yet halfway between the two the loss is "
            f"{ratio.min():.1f} to {ratio.max():.1f} times higher, {gaps.min():.3f} to {gaps.max():.3f} above the "
            f"chord: {verdict}.\n")


CLAIM = ("**The paper's claim** (Santurkar, Tsipras, Ilyas, Madry, \"How Does Batch Normalization Help "
         "Optimization?\", NeurIPS 2018): BatchNorm's benefit does not come from reducing internal covariate shift "
         "(ICS): noisy BatchNorm, with a shifting distribution injected after every BatchNorm, trains about as well, "
         "and BatchNorm may even increase ICS. It makes the loss landscape smoother: the loss and its gradient vary "
         "less along the gradient direction (loss range, gradient predictiveness, effective β-smoothness).\n")


def landscape_verdict(sweep: Sweep, noisy: Sweep | None) -> str:
    """Each of the paper's claims against our numbers, per learning rate: agrees, does not, or too close to call
    (means within the sum of their standard deviations over seeds)."""
    def verdict(better: float, worse: float, spread: float) -> str:
        if abs(better - worse) <= spread:
            return "too close to call (within one std of each)"
        return "agrees" if better > worse else "does not agree"

    lines = []
    for lr in sorted(sweep.grouped["optimizer.lr"].unique()):
        def pair(metric: str, stat: str = "mean") -> tuple[float, float]:
            return (mean(sweep, metric, stat, **{"model.batchnorm": True, "optimizer.lr": lr}),
                    mean(sweep, metric, stat, **{"model.batchnorm": False, "optimizer.lr": lr}))
        checks = [("trains better (test accuracy)", "test_acc", 1)]
        for epoch in ("first", "last"):
            checks += [(f"smaller loss range along −g, {epoch} epoch", f"landscape_loss_range_{epoch}", -1),
                       (f"more predictive gradients (smaller), {epoch} epoch", f"landscape_gradpred_{epoch}", -1),
                       (f"smaller effective β-smoothness, {epoch} epoch", f"landscape_beta_eff_{epoch}", -1)]
        for claim, metric, sign in checks:
            bn, plain = pair(metric)
            if pd.isna(bn) or pd.isna(plain):
                continue
            spread = sum(0.0 if pd.isna(v) else v for v in pair(metric, "std"))
            lines.append(f"- lr {sheet.fmt(lr)}, BatchNorm {claim}: {bn:.4g} against {plain:.4g} without: "
                         f"{verdict(sign * bn, sign * plain, spread)}.")
        ics = [c[:-5] for c in sweep.grouped.columns if c.startswith("ics_l2_fc") and c.endswith("_mean")]
        ics = [c for c in ics if not pd.isna(pair(c)[1]) and pair(c)[1] > 0]  # fc1 has no layer below: 0
        if ics:
            bn_ics = sum(pair(c)[0] for c in ics) / len(ics)
            plain_ics = sum(pair(c)[1] for c in ics) / len(ics)
            lines.append(f"- lr {sheet.fmt(lr)}, BatchNorm does not reduce ICS (‖G − G′‖, mean over layers): "
                         f"{bn_ics:.3g} against {plain_ics:.3g} without: "
                         f"{'agrees' if bn_ics >= plain_ics else 'does not agree (BatchNorm reduced it)'}.")
    if noisy is not None:
        for lr in sorted(noisy.grouped["optimizer.lr"].unique()):
            noisy_acc = mean(noisy, "test_acc", **{"optimizer.lr": lr})
            bn = mean(sweep, "test_acc", **{"model.batchnorm": True, "optimizer.lr": lr})
            plain = mean(sweep, "test_acc", **{"model.batchnorm": False, "optimizer.lr": lr})
            lines.append(f"- lr {sheet.fmt(lr)}, noisy BatchNorm trains about as well as BatchNorm (better than "
                         f"without): {acc(noisy_acc)} against {acc(bn)} with BatchNorm and {acc(plain)} without: "
                         f"{'agrees' if noisy_acc > plain else 'does not agree'}.")
    return "**Where our measurement agrees and where not:**\n\n" + "\n".join(lines) + "\n"


def tuned_section(chosen: Sweep, sweeps: dict[str, list[Path]]) -> tuple[str, list[Path], list[str]]:
    """6.3 b's second half: the activations_tuned sweep beside the fixed-lr one (`chosen`)."""
    usable = [f for f in sweeps.get("activations_tuned", []) if (f / "confirm" / "summary_grouped.csv").is_file()]
    if not usable:
        gap = "the fair comparison (each arm's learning rate tuned) not measured; run: " \
              f"`{command('activations_tuned')}`"
        return f"**Gap:** {gap}.\n", [], [gap]
    try:
        rows, order = tuned_answer(usable[0], chosen)
    except SweepError as err:
        return f"**Gap:** {err}.\n", [], [str(err)]
    return (f"**Tuned learning rates** (`{command_of(usable[0]) or command('activations_tuned')}`, in "
            f"`{usable[0]}`): each arm's learning rate searched on validation accuracy with the same budget, then "
            f"its best trial trained again with each seed of `hydra.sweeper.confirm`.\n\n"
            + rows + "\nRanking by test accuracy: " + "; ".join(order) + ".\n"), [], []


def noisy_section(chosen: Sweep, sweeps: dict[str, list[Path]]) -> tuple[str, list[Path], list[str]]:
    """6.4's second half: the noisy BatchNorm sweep, then each of the paper's claims against the numbers."""
    noisy, note = pick("bn_landscape", sweeps, noisy=True)
    if noisy is None:
        gap = f"noisy BatchNorm not measured ({note or 'no sweep'}); run: `{command('bn_landscape', NOISY)}`"
        return f"**Gap:** {gap}.\n\n{landscape_verdict(chosen, None)}", [], [gap]
    figure = noisy.folder / "landscape.png"
    text = (f"Noisy BatchNorm: `{noisy.command or command('bn_landscape', NOISY)}`. {outcome_line(noisy)[0]}\n\n"
            + table(noisy, EXPERIMENTAL["bn_landscape"].metrics) + "\n" + landscape_verdict(chosen, noisy))
    return text, [figure] if figure.is_file() else [], []


FollowUp = Callable[[Sweep, dict[str, list[Path]]], tuple[str, list[Path], list[str]]]


@dataclass
class Experimental:
    heading: str
    experiment: str
    metrics: list[str]
    statement: Callable[[Sweep], str] | None = None
    figures: tuple[str, ...] = ()
    per_job: list[str] | None = None  # one row per job instead of the grouped table
    preface: str = ""                 # before the table
    follow_up: FollowUp | None = None  # after the statement: (text, figures, gaps) from other sweeps


ACCURACY = ["test_acc", "val_acc", "train_acc"]
EXPERIMENTAL = {
    "symmetry": Experimental("6.2 c and 6.3 f: permutation symmetry, and why the loss is not convex", "symmetry",
                             [], symmetry_statement, ("symmetry.png",),
                             per_job=["seed", "status", "test_acc", "symmetry_loss", "symmetry_permuted_loss_diff",
                                      "symmetry_midpoint_loss", "symmetry_jensen_gap"]),
    "no_activation": Experimental("6.3 a: a network without activation functions", "no_activation",
                                  ["collapse_max_abs_diff", "collapse_output_scale", "test_acc"],
                                  no_activation_statement),
    "activations": Experimental("6.3 b: ReLU, sigmoid and tanh", "activations",
                                ["test_acc", "first_epoch_val_acc_0.80", "grad_ratio_first_last_epoch1"],
                                activations_statement, ("val_acc.png",), follow_up=tuned_section),
    "lr_convex": Experimental("6.3 e: the learning rate on a convex problem", "lr_convex",
                              ["lr_effective", "train_loss_increases", "train_loss", "test_acc"],
                              lr_convex_statement, ("train_loss.png",)),
    "batchnorm_bs1": Experimental("6.3 h: BatchNorm with batch size 1", "batchnorm_bs1", ["test_acc", "val_acc"],
                                  batchnorm_bs1_statement),
    "bn_landscape": Experimental("6.4: BatchNorm and the loss landscape (Santurkar et al. 2018)", "bn_landscape",
                                 ["test_acc", "landscape_loss_range_first", "landscape_loss_range_last",
                                  "landscape_gradpred_last", "landscape_beta_eff_last"],
                                 figures=("landscape.png",), preface=CLAIM, follow_up=noisy_section),
    "fashion_mnist": Experimental("6.6 b-c: a feed-forward network on FashionMNIST", "fashion_mnist", ACCURACY,
                                  fashion_mnist_statement, ("val_acc.png", "train_loss.png")),
}
NOISY = " model.batchnorm=true model.batchnorm_noise=true"


def missing(spec: Experimental, why: str, extra: str = "") -> Answer:
    gap = f"{why}; run: `{command(spec.experiment, extra)}`"
    return Answer(spec.heading, f"**Not measured yet.** {gap}.\n", gaps=[gap])


def experimental_answer(spec: Experimental, sweeps: dict[str, list[Path]]) -> Answer:
    """The most recent sweep with tables of this experiment: command, outcomes, table, statement, figures."""
    chosen, notes = pick(spec.experiment, sweeps, noisy=False)
    if chosen is None:
        return missing(spec, notes or f"no sweep of `{spec.experiment}` found")
    line, outcomes, gaps = outcome_line(chosen)
    body = [f"Command: `{chosen.command or command(spec.experiment)}`. {line}\n"]
    body += [f"**Failed or diverged:** {outcome}.\n" for outcome in outcomes]
    body += [f"**Gap:** {gap}.\n" for gap in gaps]
    body += [spec.preface] if spec.preface else []
    body.append(job_table(chosen.jobs, spec.per_job) if spec.per_job else table(chosen, spec.metrics))
    body += [spec.statement(chosen)] if spec.statement else []
    figures = [chosen.folder / name for name in spec.figures if (chosen.folder / name).is_file()]
    if spec.follow_up:
        text, more_figures, more_gaps = spec.follow_up(chosen, sweeps)
        body.append(text)
        figures += more_figures
        gaps += more_gaps
    return Answer(spec.heading, "\n".join(body), figures, gaps)


def pick(experiment: str, sweeps: dict[str, list[Path]], noisy: bool) -> tuple[Sweep | None, str]:
    """The most recent readable sweep of the experiment (noisy: of noisy BatchNorm), and why none if none."""
    notes = []
    for folder in sweeps.get(experiment, []):
        try:
            sweep = read_sweep(experiment, folder)
        except SweepError as err:
            notes.append(str(err))
            continue
        if (sweep.overrides().get("model.batchnorm_noise") == "True") == noisy:
            return sweep, ""
    return None, "; ".join(notes)


def all_answers(sweeps: dict[str, list[Path]], x: list[float]) -> list[Answer]:
    """Every question of the sheet, in the sheet's order."""
    def training(name: str) -> Callable[[], Answer]:
        return lambda: experimental_answer(EXPERIMENTAL[name], sweeps)

    builders = [identities_answer, convexity_answer, training("symmetry"), training("no_activation"),
                training("activations"), softmax_answer, newton_cost_answer, training("lr_convex"),
                newton_vs_gd_answer, training("batchnorm_bs1"), training("bn_landscape"), lambda: forward_answer(x),
                training("fashion_mnist")]
    return [guarded(build, heading) for build, heading in zip(builders, HEADINGS)]


HEADINGS = ["6.1 a-d", "6.2 a-b", "6.2 c and 6.3 f", "6.3 a", "6.3 b", "6.3 c", "6.3 d", "6.3 e", "6.3 g", "6.3 h",
            "6.4", "6.5", "6.6 b-c"]


def guarded(build: Callable[[], Answer], heading: str) -> Answer:
    """The answer, or, where its files hold something this code did not foresee, a gap saying so."""
    try:
        return build()
    except (SweepError, KeyError, ValueError, TypeError, IndexError) as err:
        gap = f"could not be built from the files found ({type(err).__name__}: {err})"
        return Answer(f"{heading}: (not built)", f"**Gap:** {gap}.\n", gaps=[gap])


def measured_table(name: str, sweeps: dict[str, list[Path]]) -> str | None:
    """The table experiments/README.md shows for NAME (`bn_landscape noisy`: noisy BatchNorm), from the most
    recent sweep, with the line naming it; None when there is none."""
    if name == "activations_tuned":
        usable = [f for f in sweeps.get(name, []) if (f / "confirm" / "summary_grouped.csv").is_file()]
        if not usable:
            return None
        fixed, _ = pick("activations", sweeps, noisy=False)
        rows, ranking = tuned_answer(usable[0], fixed)
        return f"Measured in `{usable[0]}`.\n\n{rows}\nRanking by test accuracy: {'; '.join(ranking)}.\n"
    experiment, _, variant = name.partition(" ")
    spec = EXPERIMENTAL[experiment]
    sweep, _ = pick(experiment, sweeps, noisy=variant == "noisy")
    if sweep is None:
        return None
    shown = job_table(sweep.jobs, spec.per_job) if spec.per_job else table(sweep, spec.metrics)
    return f"{outcome_line(sweep)[0]}\n\n{shown}"
