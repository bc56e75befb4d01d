"""`hydra/sweeper=optuna`: Hydra instantiates sweepers only from the hydra_plugins package, so this class
is the door and mlbasics.optuna_sweep does the work (with Optuna >= 4, imported when a sweep starts)."""

# no `from __future__ import annotations`: Hydra runs plugin modules outside sys.modules, where a
# dataclass cannot resolve string annotations
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mlbasics_launchers.optuna_sweeper.OptunaSweeper"
    n_trials: int = 20          # trials that end (completed, diverged or failed) in the whole study
    n_jobs: int = 1             # trials per batch, launched together by the configured launcher
    sampler: str = "tpe"        # tpe or random
    seed: Optional[int] = 0     # the sampler's seed
    direction: str = "maximize"
    objective: str = "val_acc"  # a key of each trial's results.json (never a test metric)
    params: Optional[Dict[str, str]] = field(default_factory=dict)  # the search space, as sweep overrides
    # after the search, each arm's best trial is trained again over these overrides' grid (["seed=0,1,2,3,4"])
    confirm: Optional[List[str]] = field(default_factory=list)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf(), provider="mlbasics")


class OptunaSweeper(Sweeper):
    def __init__(self, n_trials: int, n_jobs: int, sampler: str, seed: Optional[int], direction: str,
                 objective: str, params: Optional[Dict[str, str]],
                 confirm: Optional[List[str]]) -> None:
        self.n_trials, self.n_jobs, self.sampler, self.seed = n_trials, n_jobs, sampler, seed
        self.direction, self.objective, self.params = direction, objective, params
        self.confirm = confirm
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                               task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from mlbasics.optuna_sweep import sweep

        return sweep(self, arguments)
