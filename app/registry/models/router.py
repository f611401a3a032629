from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from corral.db import SessionDep
from corral.fields import Modality, RepoId, RepoSegment, Slug, Tag
from corral.hardware.catalog import accelerators
from corral.hardware.estimator import Precision
from corral.hardware.schemas import HardwareRequirements
from corral.pagination import PageDep
from corral.registry.licenses.schemas import LicenseCheck, UseDescription
from corral.registry.models.schemas import LineageRead, ModelRead, ModelSort, ModelUpdate
from corral.registry.models.search import ModelFilters
from corral.registry.models.service import ModelService
from corral.schemas import COMMON_ERRORS, Page, problem_responses
from corral.security.access import PUBLISH, READ
from corral.viewcache import REGISTRY, REGISTRY_AND_RUNNERS, json_view
from corral.wire.enums import ModelKind, ModelStatus

router = APIRouter(prefix="/v1/models", tags=["models"], responses=COMMON_ERRORS)


async def repo_id(owner: RepoSegment, name: RepoSegment) -> str:
    """The model's Hub repo id from the path /v1/models/{owner}/{name}."""
    return f"{owner}/{name}"


RepoIdDep = Annotated[str, Depends(repo_id)]


async def model_filters(
    family: Annotated[Slug | None, Query(description="Family slug.")] = None,
    license: Annotated[Slug | None, Query(description="Licence slug (the model's own or its family's).")] = None,
    kind: Annotated[ModelKind | None, Query()] = None,
    status: Annotated[ModelStatus | None, Query()] = None,
    modality: Annotated[Modality | None, Query()] = None,
    tag: Annotated[Tag | None, Query()] = None,
    base_model: Annotated[RepoId | None, Query(description="Direct derivatives of this repo id.")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100, description="Text in the repo id or name.")] = None,
    min_parameters: Annotated[int | None, Query(ge=0, le=10**14)] = None,
    max_parameters: Annotated[int | None, Query(ge=0, le=10**14)] = None,
    min_context: Annotated[int | None, Query(ge=0, le=10**9, description="Context length in tokens.")] = None,
    fits_accelerator: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Only models whose inference fits on this accelerator (slug).",
            json_schema_extra={"enum": list(accelerators())},
        ),
    ] = None,
    fits_count: Annotated[int, Query(ge=1, le=4096, description="How many of that accelerator.")] = 1,
    fits_precision: Annotated[Precision, Query(description="Weight precision for the fit.")] = "bf16",
    fits_context_tokens: Annotated[int, Query(ge=1, le=10**9, description="KV cache tokens for the fit.")] = 4096,
) -> ModelFilters:
    return ModelFilters(
        family=family,
        license=license,
        kind=kind,
        status=status,
        modality=modality,
        tag=tag,
        base_model=base_model,
        q=q,
        min_parameters=min_parameters,
        max_parameters=max_parameters,
        min_context=min_context,
        fits_accelerator=fits_accelerator,
        fits_count=fits_count,
        fits_precision=fits_precision,
        fits_context_tokens=fits_context_tokens,
    )


@router.get("", dependencies=[Depends(READ)], responses=problem_responses(304, 400), response_model=Page[ModelRead])
async def list_models(
    request: Request,
    session: SessionDep,
    page: PageDep,
    filters: Annotated[ModelFilters, Depends(model_filters)],
    sort: Annotated[ModelSort, Query(description="Sort key; '-' for descending. Unknown values sort first.")] = (
        "-release_date"
    ),
) -> Response:
    """Search models by family, licence, kind, modality, size, context, tag, or what hardware they fit."""

    async def build() -> Page[ModelRead]:
        items, cursor = await ModelService(session).list_page(filters, sort=sort, page=page)
        return Page(items=items, next_cursor=cursor)

    return await json_view(request, REGISTRY, build)


@router.get(
    "/{owner}/{name}", dependencies=[Depends(READ)], responses=problem_responses(304, 404), response_model=ModelRead
)
async def get_model(request: Request, model: RepoIdDep, session: SessionDep) -> Response:
    """Show a model."""

    async def build() -> ModelRead:
        return await ModelService(session).get(model)

    return await json_view(request, REGISTRY, build)


@router.patch("/{owner}/{name}", dependencies=[Depends(PUBLISH)], responses=problem_responses(404, 415))
async def update_model(model: RepoIdDep, body: ModelUpdate, session: SessionDep) -> ModelRead:
    """Change a model's record."""
    return await ModelService(session).update(model, body)


@router.get("/{owner}/{name}/lineage", dependencies=[Depends(READ)], responses=problem_responses(304, 404))
async def get_lineage(model: RepoIdDep, session: SessionDep) -> LineageRead:
    """The models this one derives from, and every model derived from it."""
    return await ModelService(session).lineage(model)


@router.post("/{owner}/{name}/license-check", dependencies=[Depends(READ)], responses=problem_responses(404, 409, 415))
async def check_model_license(model: RepoIdDep, use: UseDescription, session: SessionDep) -> LicenseCheck:
    """Check a described use against this model's licence."""
    return await ModelService(session).license_check(model, use)


@router.get(
    "/{owner}/{name}/requirements",
    dependencies=[Depends(READ)],
    responses=problem_responses(304, 404, 409),
    response_model=HardwareRequirements,
)
async def get_requirements(
    request: Request,
    model: RepoIdDep,
    session: SessionDep,
    precision: Annotated[
        Precision | None,
        Query(description="Weight precision; default the precision the release is stored in (fp8 for an FP8 one)."),
    ] = None,
    kv_precision: Annotated[Precision | None, Query(description="KV cache precision; default 16-bit.")] = None,
    context_tokens: Annotated[
        int | None, Query(ge=1, le=10**9, description="Tokens of KV cache; default the model's context length.")
    ] = None,
    batch: Annotated[int, Query(ge=1, le=4096)] = 1,
) -> Response:
    """Memory to run and fine-tune this model, computed from its architecture, and accelerators needed."""

    async def build() -> HardwareRequirements:
        return await ModelService(session).requirements(
            model, precision=precision, kv_precision=kv_precision, context_tokens=context_tokens, batch=batch
        )

    return await json_view(request, REGISTRY_AND_RUNNERS, build)
