from fastapi import APIRouter, Depends, Request, Response

from corral.hardware.catalog import accelerators
from corral.hardware.estimator import Architecture
from corral.hardware.parameters import dense_parameter_count
from corral.hardware.schemas import AcceleratorRead, ArchitectureInput, HardwareRequirements
from corral.hardware.service import requirements_report
from corral.schemas import COMMON_ERRORS, problem_responses
from corral.security.access import READ
from corral.viewcache import json_view

router = APIRouter(prefix="/v1", tags=["hardware"], responses=COMMON_ERRORS)


@router.get(
    "/accelerators",
    dependencies=[Depends(READ)],
    responses=problem_responses(304),
    response_model=list[AcceleratorRead],
)
async def list_accelerators(
    request: Request,
) -> Response:
    """The accelerator catalog, with memory in bytes."""

    async def build() -> list[AcceleratorRead]:
        return [AcceleratorRead.model_validate(device, from_attributes=True) for device in accelerators().values()]

    return await json_view(request, (), build)


@router.post("/requirements", dependencies=[Depends(READ)], responses=problem_responses(415))
async def estimate_requirements(body: ArchitectureInput) -> HardwareRequirements:
    """Memory needed by an ad-hoc architecture: weights, KV cache, inference, training, accelerators."""
    arch = Architecture(
        hidden_size=body.hidden_size,
        num_layers=body.num_layers,
        num_attention_heads=body.num_attention_heads,
        num_kv_heads=body.num_kv_heads,
        intermediate_size=body.intermediate_size,
        vocab_size=body.vocab_size,
        head_dim=body.head_dim,
        tied_embeddings=body.tied_embeddings,
    )
    recorded = body.parameter_count is not None
    return requirements_report(
        model=None,
        arch=arch,
        parameters=body.parameter_count if body.parameter_count is not None else dense_parameter_count(arch),
        parameters_source="recorded" if recorded else "computed",
        precision=body.precision,
        kv_precision=body.kv_precision,
        context_tokens=body.context_tokens,
        batch=body.batch,
        lora_rank=body.lora_rank,
    )
