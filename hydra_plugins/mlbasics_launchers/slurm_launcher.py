"""`hydra/launcher=slurm`: hydra-submitit-launcher's SlurmLauncher with mlbasics.slurm_launch's launch, which
splits a sweep into arrays the cluster accepts and ends the wait for a job that left the queue without a
result. Hydra instantiates launchers only from the hydra_plugins package, so this class is the door;
jobs run exactly as the parent runs them."""

# no `from __future__ import annotations`: Hydra runs plugin modules outside sys.modules, where a
# dataclass cannot resolve string annotations
from dataclasses import dataclass
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


@dataclass
class WatchfulSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.mlbasics_launchers.slurm_launcher.WatchfulSlurmLauncher"
    # jobs per SLURM array at most (null: the cluster's MaxArraySize, else 1000); a larger sweep goes out
    # as several arrays, each starting after the one before, so array_parallelism bounds the whole sweep
    max_array_size: Optional[int] = None
    # submit and return at once; a SLURM job depending on the arrays makes the tables when they end
    detach: bool = False
    # one array task per pack of jobs that share every shape (see hydra/launcher=packed), at most pack_max each
    pack: bool = False
    pack_max: int = 16


ConfigStore.instance().store(group="hydra/launcher", name="watchful_slurm", node=WatchfulSlurmConf(),
                             provider="mlbasics")


class WatchfulSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from mlbasics.slurm_launch import launch

        return launch(self, job_overrides, initial_job_idx)
