"""`hydra/launcher=packed`. Hydra instantiates launchers only from the hydra_plugins package, so this
class is the door and mlbasics.pack_launcher does the work (imported when a sweep launches, not
when Hydra scans its plugins at every start)."""

from __future__ import annotations

from typing import Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class PackedLauncher(Launcher):
    def __init__(self, max_pack: int = 16) -> None:
        self.max_pack = max_pack
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from mlbasics.pack_launcher import launch

        return launch(self, job_overrides, initial_job_idx)
