"""The cluster engines a runner can submit its jobs to (`executor` in the runner config)."""

from evals.executors.base import ClusterEngine
from evals.executors.settings import KubernetesExecutor, SlurmExecutor


def engine_for(settings: SlurmExecutor | KubernetesExecutor, owner: str = "") -> ClusterEngine:
    """The engine of these settings; `owner` (the runner's id) marks its jobs apart from other runners'."""
    if isinstance(settings, SlurmExecutor):
        from evals.executors.slurm import Slurm

        return Slurm(settings, owner)
    from evals.executors.kubernetes import Kubernetes

    return Kubernetes(settings, owner)
