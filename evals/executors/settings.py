"""Where the agent runs its jobs, as the runner config names it (`executor`): on this machine (`local`, the warm
worker), through Slurm (`slurm`) or as Kubernetes Jobs (`kubernetes`). The engine schedules; the agent keeps
the leases, reports and results."""

import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.wire.generation import Backend

__all__ = ["Backend"]


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalExecutor(Settings):
    kind: Literal["local"] = "local"


class AcceleratorKind(Settings):
    """What a site's name for a device is in Corral's accelerator catalog."""

    kind: str = Field(min_length=1, max_length=64, examples=["nvidia-h100-80gb"])
    memory_bytes: int = Field(ge=1, description="Per device.")


class ClusterExecutor(Settings):
    """What Slurm and Kubernetes share: a directory both the agent and the compute nodes see, and limits."""

    work_dir: Path = Field(
        description="On storage shared with the compute nodes (the same path on both): one directory per job "
        "with its spec, log, progress and results. It never holds a lease token or a Corral credential."
    )
    time_limit_minutes: int = Field(default=720, ge=1, description="Always passed: the engine stops a job past it.")
    max_pending: int = Field(
        default=1,
        ge=0,
        description="Jobs this runner keeps waiting in the engine's queue at once. 0: claim only what fits the "
        "devices free now (the claim carries them).",
    )
    release_pending_after_seconds: float = Field(
        default=1800, gt=0, description="A job waiting in the engine's queue longer is handed back for another runner."
    )
    poll_seconds: float = Field(default=2.0, gt=0, le=60, description="How often the engine is asked how jobs stand.")
    settle_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long after the engine says a job ended its files may take to show on the shared storage "
        "(NFS attribute caching) before a job without them counts as died.",
    )
    max_nodes_per_job: int = Field(default=1, ge=1, le=1024, description="Nodes one job may span (vLLM over Ray).")
    backends: list[Backend] = Field(
        default_factory=lambda: list[Backend](["hf"]),
        min_length=1,
        description="The lm-eval backends the compute nodes have.",
    )

    @field_validator("work_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()


class SlurmExecutor(ClusterExecutor):
    kind: Literal["slurm"] = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    extra_args: list[str] = Field(default_factory=list, description="More sbatch arguments, as given.")
    python: str = Field(
        default=sys.executable,
        description="The Python with corral[runner] on the compute nodes (a virtual environment on shared "
        "storage); the agent's own by default.",
    )
    container_image: str | None = Field(
        default=None, description="Run the job in this image through pyxis/enroot (`srun --container-image`)."
    )
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines the batch script runs first (`module load cuda`, `source /shared/venv/bin/activate`).",
    )
    gres_kinds: dict[str, AcceleratorKind] = Field(
        default_factory=dict,
        description="Site GRES name (`gpu:a100`, or `gpu` for untyped) -> catalog kind and memory per device.",
    )


class Toleration(Settings):
    """A taint the job's pods tolerate (GPU nodes are often tainted `nvidia.com/gpu:NoSchedule`)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class KubernetesExecutor(ClusterExecutor):
    kind: Literal["kubernetes"] = "kubernetes"
    namespace: str = "default"
    image: str = Field(description="An image with corral[runner] (and vLLM for the vllm backend) installed.")
    volume_claim: str = Field(description="The PersistentVolumeClaim mounted at `work_dir` in every job's pod.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    queue: str | None = Field(default=None, description="A Kueue LocalQueue: the Job waits suspended until admitted.")
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product_label: str = Field(
        default="nvidia.com/gpu.product",
        description="The node label naming its GPU (set by NVIDIA's feature discovery).",
    )
    gpu_kinds: dict[str, AcceleratorKind] = Field(
        default_factory=dict, description="Node GPU label value (`NVIDIA-H100-80GB-HBM3`) -> catalog kind and memory."
    )
    service_account: str | None = None
    hf_token_secret: str | None = Field(
        default=None, description="A Secret with key HF_TOKEN for gated weights: referenced, never copied."
    )
    shm_size: str = Field(default="16Gi", description="/dev/shm as memory (vLLM and PyTorch data loaders need it).")
    kubeconfig: Path | None = Field(default=None, description="Else in-cluster credentials, else ~/.kube/config.")
    run_as_user: int | None = Field(
        default=None, ge=1, description="The uid lm-eval runs as in the pod (non-root); else the image's user."
    )
    python: str = Field(default="python", description="The image's Python with corral[runner].")

    @field_validator("max_nodes_per_job")
    @classmethod
    def _one_node(cls, value: int) -> int:
        # A job over several pods needs a gang (LeaderWorkerSet or KubeRay) this executor does not create yet.
        if value != 1:
            raise ValueError("a Kubernetes runner runs each job in one pod on one node: max_nodes_per_job must be 1")
        return value


Executor = Annotated[LocalExecutor | SlurmExecutor | KubernetesExecutor, Field(discriminator="kind")]
