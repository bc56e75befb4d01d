"""Hydra callback: aggregate every multirun into tables as soon as its last job ends.

Hydra skips `on_multirun_end` when a job raised, which is why jobs in a multirun record their
own failure and return (see run.py); this callback therefore always runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mlbasics.report import report

log = logging.getLogger(__name__)


class ReportOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        if config.hydra.launcher.get("detach"):  # the jobs are still queued: a SLURM job makes the tables
            return
        try:
            report([sweep_dir], sweep_dir)
        except Exception as err:  # noqa: BLE001 - the jobs' own files are safe; say how to retry
            log.error("could not aggregate %s (%s: %s); retry with: python -m mlbasics.report %s",
                      sweep_dir, type(err).__name__, err, sweep_dir)
