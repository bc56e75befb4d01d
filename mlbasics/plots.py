"""PNG figures of a sweep: curves per group with a band for the spread over seeds, final metric per group."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mlbasics import records  # noqa: E402

# Fixed metadata, so that drawing the same sweep twice writes byte-identical files.
PNG_METADATA = {"Software": None}


def group_labels(table: pd.DataFrame, by: list[str]) -> pd.Series:
    if not by:
        return pd.Series("all", index=table.index)
    return table[by].astype(str).apply(lambda row: ", ".join(f"{k}={v}" for k, v in row.items()), axis=1)


def curve_band(ax, curves: pd.DataFrame, labels: dict[str, str], metric: str, x: str) -> None:
    """One line per group (mean over its jobs) with a band of one standard deviation."""
    data = curves[curves["metric"] == metric].assign(group=lambda d: d["job"].map(labels)).dropna(subset=["group"])
    for name, part in data.groupby("group", sort=False):
        stats = part.groupby(x)["value"].agg(["mean", "std"]).fillna(0.0)
        ax.plot(stats.index, stats["mean"], label=name)
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)


def save(fig, path: Path) -> None:
    fig.tight_layout()
    try:
        records.write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata=PNG_METADATA))
    finally:
        plt.close(fig)


def draw_all(table: pd.DataFrame, curves: pd.DataFrame, by: list[str], metric: str, out: Path) -> None:
    labels = dict(zip(table["job"], group_labels(table, by)))
    for name, curve_metric in (("val_acc.png", "val_acc"), ("train_loss.png", "train_loss")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        curve_band(ax, curves, labels, curve_metric, "epoch")
        if curve_metric == "train_loss" and (curves.loc[curves["metric"] == "train_loss", "value"] > 0).all():
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.set_title(f"{curve_metric} per epoch (mean ± std over seeds)")
        save(fig, out / name)

    done = table[table["status"] == "completed"].assign(group=lambda d: d["job"].map(labels),
                                                        **{metric: lambda d: pd.to_numeric(d[metric], errors="coerce")})
    stats = done.groupby("group", sort=False)[metric].agg(["mean", "std"]).fillna(0.0)
    longest = max((len(label) for label in stats.index), default=0)
    # room for the group labels beside the bars, which grow with the number of swept keys
    fig, ax = plt.subplots(figsize=(6 + 0.08 * longest, 2 + 0.4 * max(len(stats), 1)))
    ax.barh(stats.index, stats["mean"], xerr=stats["std"], capsize=3)
    if len(stats):
        low = stats["mean"].min() - 3 * stats["std"].max()
        ax.set_xlim(max(0.0, low - 0.02) if stats["mean"].max() <= 1 else None, None)
    ax.set_xlabel(f"final {metric} (completed jobs, mean ± std)")
    ax.grid(axis="x", alpha=0.3)
    save(fig, out / f"final_{metric}.png")


def draw_symmetry(table: pd.DataFrame, symmetry: pd.DataFrame, by: list[str], out: Path) -> None:
    """Loss along the straight line from the net (alpha 0) to its permuted twin (alpha 1)."""
    labels = dict(zip(table["job"], group_labels(table, by)))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    curve_band(ax, symmetry, labels, "loss", "alpha")
    ax.legend(fontsize=7)
    ax.set_title("loss between the net and its permuted twin (mean ± std over seeds)")
    save(fig, out / "symmetry.png")


def draw_landscape(table: pd.DataFrame, landscape: pd.DataFrame, by: list[str], out: Path) -> None:
    """The Santurkar et al. Figure 4 analogue: loss band, gradient-predictiveness band, beta_eff."""
    labels = dict(zip(table["job"], group_labels(table, by)))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, (low, high, title) in zip(axes[:2], (("loss_min", "loss_max", "loss landscape"),
                                                 ("gradpred_min", "gradpred_max", "gradient predictiveness"))):
        data = landscape[landscape["metric"].isin([low, high])].assign(group=lambda d: d["job"].map(labels))
        for name, part in data.dropna(subset=["group"]).groupby("group", sort=False):
            wide = part.pivot_table(index="step", columns="metric", values="value", aggfunc="mean")
            line = ax.plot(wide.index, (wide[low] + wide[high]) / 2, label=name)[0]
            ax.fill_between(wide.index, wide[low], wide[high], alpha=0.25, color=line.get_color())
        ax.set_title(f"{title}: [min, max] over the step-size grid")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    curve_band(axes[2], landscape, labels, "beta_eff", "step")
    axes[2].set_title("effective beta-smoothness")
    axes[2].set_yscale("log")
    axes[0].set_yscale("log")
    axes[2].legend(fontsize=7)
    save(fig, out / "landscape.png")
