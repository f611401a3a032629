import gzip
import json
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from corral.db import SessionDep
from corral.evaluations.imports import ImportService
from corral.evaluations.schemas import ResultsImport
from corral.fields import Slug, Tag
from corral.hardware.estimator import Precision
from corral.hub.client import HubClient
from corral.hub.errors import refuse_when_the_hub_is_full
from corral.pagination import PageDep, PageRequest
from corral.registry.models.router import RepoIdDep
from corral.routing import public_url
from corral.schemas import COMMON_ERRORS, problem_responses
from corral.scores.comparison import ComparisonService
from corral.scores.formats import decode_cursor, encode_cursor, to_csv, to_markdown
from corral.scores.hub_export import HubExportService
from corral.scores.leaderboard import LeaderboardFilters, LeaderboardService
from corral.scores.provenance import evaluation_provenance, stored_document
from corral.scores.schemas import Comparison, Leaderboard, LeaderboardFormat, Provenance, ScoreHistoryEntry
from corral.security.access import PUBLISH, READ, Principal
from corral.state import state_of
from corral.viewcache import view
from corral.wire.enums import ModelKind

router = APIRouter(prefix="/v1", tags=["scores"], responses=COMMON_ERRORS)
TABLES = {
    200: {
        "description": "The leaderboard: JSON (paginated), or the whole table as CSV or Markdown.",
        "content": {"text/csv": {}, "text/markdown": {}},
    },
    **problem_responses(304),
}


@router.get(
    "/leaderboards/{suite}",
    dependencies=[Depends(READ)],
    response_model=Leaderboard,
    responses={**TABLES, **problem_responses(404)},
)
async def get_leaderboard(
    suite: Slug,
    request: Request,
    session: SessionDep,
    page: PageDep,
    family: Annotated[Slug | None, Query()] = None,
    license: Annotated[Slug | None, Query()] = None,
    kind: Annotated[ModelKind | None, Query()] = None,
    precision: Annotated[Precision | None, Query()] = None,
    chat_template: Annotated[bool | None, Query()] = None,
    tag: Annotated[Tag | None, Query()] = None,
    min_parameters: Annotated[int | None, Query(ge=0, le=10**15)] = None,
    max_parameters: Annotated[int | None, Query(ge=0, le=10**15)] = None,
    fits_on: Annotated[
        Slug | None,
        Query(
            description="Accelerator slug: the model fits on fits_count of them at the suite's context "
            "(the fit rule of `/v1/requirements`)."
        ),
    ] = None,
    fits_count: Annotated[int, Query(ge=1, le=1024)] = 1,
    sort: Annotated[
        str, Query(pattern=r"^-?[A-Za-z0-9_.:-]{1,128}$", description="A column, `-` for descending.")
    ] = "-average",
    format: Annotated[LeaderboardFormat, Query()] = "json",
) -> Response:
    """A suite's leaderboard: the latest run per revision, precision and chat template; a column per task."""

    async def build() -> Response:
        return await _leaderboard(request, session, page, suite, filters, sort, format)

    filters = LeaderboardFilters(
        family=family,
        license=license,
        kind=kind.value if kind else None,
        precision=precision,
        chat_template=chat_template,
        tag=tag,
        min_parameters=min_parameters,
        max_parameters=max_parameters,
        fits_on=fits_on,
        fits_count=fits_count,
    )
    return await view(request, ("registry", "scores"), build)


async def _leaderboard(
    request: Request,
    session: AsyncSession,
    page: PageRequest,
    suite: str,
    filters: LeaderboardFilters,
    sort: str,
    format: LeaderboardFormat,
) -> Response:
    settings = state_of(request).settings
    offset = decode_cursor(page.cursor, sort)
    board = await LeaderboardService(session).leaderboard(suite, filters, sort, settings.leaderboard_cache_seconds)
    if format == "csv":
        return Response(to_csv(board.tasks, board.rows), media_type="text/csv; charset=utf-8")
    if format == "markdown":
        return Response(to_markdown(board.tasks, board.rows), media_type="text/markdown; charset=utf-8")
    end = offset + page.limit
    # Rows are serialized once per ranking (cached); a page joins the ones it shows.
    head = json.dumps({"suite": suite, "tasks": board.tasks})[:-1].encode()
    cursor = json.dumps(encode_cursor(sort, end) if end < len(board.rows) else None).encode()
    body = head + b', "items": [' + b",".join(board.row_json[offset:end]) + b'], "next_cursor": ' + cursor + b"}"
    return Response(body, media_type="application/json")


@router.get("/compare", dependencies=[Depends(READ)], responses=problem_responses(304, 404))
async def compare_evaluations(
    session: SessionDep,
    base: Annotated[uuid.UUID, Query(description="Evaluation id of the reference run.")],
    candidate: Annotated[uuid.UUID, Query(description="Evaluation id of the run compared with it.")],
) -> Comparison:
    """Per-task deltas of two runs of one suite, with combined stderr, significance and differing settings."""
    return await ComparisonService(session).compare(base, candidate)


@router.get("/models/{owner}/{name}/scores", dependencies=[Depends(READ)], responses=problem_responses(304, 404))
async def model_score_history(
    model: RepoIdDep, session: SessionDep, suite: Annotated[Slug | None, Query()] = None
) -> list[ScoreHistoryEntry]:
    """A model's scores across its revisions and settings, newest first."""
    return await ComparisonService(session).history(model, suite)


@router.post(
    "/results/import",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "Imported already."}, **problem_responses(415)},
)
async def import_results(
    body: ResultsImport,
    response: Response,
    session: SessionDep,
    principal: Annotated[Principal | None, Depends(PUBLISH)],
) -> dict[str, uuid.UUID]:
    """Import lm-eval output produced elsewhere as a finished evaluation of a recorded revision."""
    evaluation_id, created = await ImportService(session).import_results(body, principal.name if principal else None)
    if not created:
        response.status_code = status.HTTP_200_OK
    return {"evaluation_id": evaluation_id}


@router.get(
    "/evaluations/{evaluation_id:uuid}/hub-export",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses={
        200: {"description": "YAML for the Hub.", "content": {"application/yaml": {}}},
        **problem_responses(404, 409),
    },
)
async def export_for_hub(
    evaluation_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    format: Annotated[Literal["eval-results", "model-index"], Query()] = "eval-results",
) -> Response:
    """An evaluation's scores as Hub `.eval_results` entries or a model card's `model-index`."""
    exported = await HubExportService(session).hub_export(evaluation_id, format, public_url(request))
    return Response(exported, media_type="application/yaml")


@router.post(
    "/evaluations/{evaluation_id:uuid}/hub-export/pull-request", responses=problem_responses(404, 409, 502, 503)
)
async def open_hub_pull_request(
    evaluation_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal | None, Depends(PUBLISH)],
) -> dict[str, str]:
    """Open a pull request on the model's Hub repo adding the scores as `.eval_results` (needs a Hub token)."""
    refuse_when_the_hub_is_full(state_of(request).part(HubClient))
    settings = state_of(request).settings
    url = await HubExportService(session).hub_pull_request(
        evaluation_id,
        state_of(request).part(HubClient),
        has_token=settings.hub_token is not None,
        base_url=public_url(request),
        deadline_seconds=settings.hub_request_deadline_seconds,
    )
    return {"pull_request_url": url}


@router.get(
    "/evaluations/{evaluation_id:uuid}/provenance", dependencies=[Depends(READ)], responses=problem_responses(304, 404)
)
async def get_provenance(evaluation_id: uuid.UUID, session: SessionDep) -> Provenance:
    """What produced an evaluation's scores: lm-eval version and commit, task versions, seeds, model, hardware."""
    return await evaluation_provenance(session, evaluation_id)


async def _stored_json(request: Request, compressed: bytes) -> Response:
    # Stored compressed: passed through as it is to a client that takes gzip, inflated for one that does not.
    headers = {"Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(compressed, media_type="application/json", headers={**headers, "Content-Encoding": "gzip"})
    return Response(gzip.decompress(compressed), media_type="application/json", headers=headers)


@router.get(
    "/evaluations/{evaluation_id:uuid}/jobs/{shard_index}/{part}",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses={
        200: {"description": "lm-eval's results document or logged samples.", "content": {"application/json": {}}},
        **problem_responses(304, 404),
    },
)
async def get_job_document(
    evaluation_id: uuid.UUID,
    shard_index: Annotated[int, Path(ge=0, le=1000)],
    part: Literal["results", "samples"],
    request: Request,
    session: SessionDep,
) -> Response:
    """One job's raw lm-eval results document or its logged samples, as uploaded (gzip where accepted)."""
    return await _stored_json(request, await stored_document(session, evaluation_id, shard_index, part))
