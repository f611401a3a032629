"""The engines a runner hands its jobs to (`executor` in the runner config): this machine, Slurm, Kubernetes."""

from corral_runner.config import RunnerConfig
from corral_runner.executors.base import Engine
from corral_runner.executors.settings import KubernetesExecutor, SlurmExecutor


def engine_for(config: RunnerConfig) -> Engine:
    """The engine the config names; its `owner` (the runner's id) is set once the server has said who it is."""
    settings = config.executor
    if isinstance(settings, SlurmExecutor):
        from corral_runner.executors.slurm import Slurm

        return Slurm(settings)
    if isinstance(settings, KubernetesExecutor):
        from corral_runner.executors.kubernetes import Kubernetes

        return Kubernetes(settings)
    from corral_runner import hardware
    from corral_runner.executors.local import Local

    hidden = config.private_paths() if config.sandbox else []
    # Made now, before the worker's sandbox closes over them: one made later would be out of its reach the other
    # way round (nothing new can be made in a folder on the way to a hidden path).
    config.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Local(config, hardware.detect(), hidden)
