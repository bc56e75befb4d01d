"""TensorBoard curves while a job trains (`trainer.tensorboard=true`; the optional `tensorboard` extra).

Each job writes event files into its own `tensorboard/` folder: every metrics.csv column per epoch
as a scalar, and at the end its config with its final metrics as hparams, so that
`tensorboard --logdir <sweep dir>` shows every job's curves and its HParams view compares the sweep.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mlbasics import records

FOLDER = "tensorboard"
FINAL = ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss", "best_val_acc")


def available() -> bool:
    """Whether the `tensorboard` package, which torch's SummaryWriter needs, is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class Board:
    def __init__(self, out_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out_dir / FOLDER))

    def epoch(self, row: dict[str, float]) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def finish(self, config: dict[str, Any], results: dict[str, Any]) -> None:
        """The job's config keys (plain values) against its final metrics, for TensorBoard's HParams view."""
        hparams = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
                   for key, value in records.flatten(config).items() if value is not None}
        metrics = {f"final/{key}": results[key] for key in FINAL if isinstance(results.get(key), (int, float))}
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.writer.close()
