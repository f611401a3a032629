"""The models index (search, filters, human sizes, Hub links) and a page per model (licence, hardware, scores)."""

from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import Query, Request, Response

from corral.db import SessionDep
from corral.errors import Conflict
from corral.hardware.catalog import accelerators
from corral.hardware.estimator import PRECISION_BITS
from corral.hardware.fit import DEFAULT_CONTEXT_TOKENS
from corral.hardware.schemas import HardwareRequirements
from corral.pagination import PageRequest
from corral.registry import repository as registry
from corral.registry.licenses.service import LicenseService
from corral.registry.models.router import RepoIdDep
from corral.registry.models.search import ModelFilters
from corral.registry.models.service import ModelService
from corral.registry.revisions.service import RevisionService
from corral.scores import repository as scores
from corral.scores.comparison import ComparisonService
from corral.viewcache import PAGES, REGISTRY, view
from corral.web import formatting
from corral.web.charts import Bar, bars
from corral.web.leaderboard import licence_slugs, task_tooltip
from corral.web.pages import PAGE_METHODS, page_router, render, suite_names
from corral.wire.enums import ModelKind

router = page_router()
INDEX_PAGE = 100
SORTS = {"repo_id": "name", "-release_date": "newest", "-parameter_count": "largest", "parameter_count": "smallest"}


@router.api_route("/models", methods=PAGE_METHODS)
async def models_index(
    request: Request,
    session: SessionDep,
    q: Annotated[str, Query(max_length=100)] = "",
    family: str | None = None,
    kind: str | None = None,
    license: str | None = None,
    max_parameters: Annotated[str, Query(max_length=40)] = "",
    sort: Literal["repo_id", "-release_date", "-parameter_count", "parameter_count"] = "repo_id",
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Every registered model: search by name, filter by family, type, licence and size."""

    async def build() -> Response:
        limit, meaning, problem = formatting.read_parameter_limit(max_parameters)
        problems = [problem] if problem else []  # said on the page, not silently dropped
        filters = ModelFilters(
            q=q.strip() or None,
            family=family or None,
            kind=ModelKind(kind) if kind in {k.value for k in ModelKind} else None,
            license=license or None,
            max_parameters=limit,
        )
        models, next_cursor = await ModelService(session).list_page(
            filters, sort=sort, page=PageRequest(cursor, INDEX_PAGE)
        )
        query = {key: value for key, value in request.query_params.items() if key != "cursor" and value}
        context = {
            "models": models,
            "q": q,
            "filters": filters,
            "raw_max_parameters": max_parameters,
            "limit_meaning": meaning,
            "sort": sort,
            "sorts": SORTS,
            "problems": problems,
            "next_page": "?" + urlencode({**query, "cursor": next_cursor}) if next_cursor else None,
            "families": await registry.family_slugs(session),
            "kinds": [kind.value for kind in ModelKind],
            "licences": await licence_slugs(session),
            "suites": await suite_names(session),
        }
        return render(request, "models.html", context)

    return await view(request, REGISTRY, build)


@dataclass(frozen=True)
class PrecisionRow:
    """The estimator's figures for one weight precision, at the model's full context and at a short one."""

    precision: str
    full: HardwareRequirements
    short: HardwareRequirements
    on_one: str | None  # the smallest catalog accelerator one of which holds it at the short context
    h100: int | None  # H100 80GB needed at the short context (the fit rule's count)


async def _hardware(service: ModelService, model: str) -> tuple[list[PrecisionRow], int | None]:
    """Requirements for every precision the estimator knows; nothing where the architecture is not recorded."""
    catalog = accelerators()
    rows = []
    short_tokens = None
    for precision in PRECISION_BITS:
        try:
            full = await service.requirements(
                model, precision=precision, kv_precision=None, context_tokens=None, batch=1
            )
            short = await service.requirements(
                model, precision=precision, kv_precision=None, context_tokens=DEFAULT_CONTEXT_TOKENS, batch=1
            )
        except Conflict:
            return [], None  # no architecture recorded: nothing to estimate
        short_tokens = short.context_tokens
        singles = sorted((fit for fit in short.accelerators if fit.fits_on_one), key=lambda fit: fit.memory_bytes)
        h100 = next((fit.count_needed for fit in short.accelerators if fit.accelerator == "nvidia-h100-80gb"), None)
        rows.append(
            PrecisionRow(
                precision=precision,
                full=full,
                short=short,
                on_one=catalog[singles[0].accelerator].name if singles else None,
                h100=h100,
            )
        )
    return rows, short_tokens


@router.api_route("/models/{owner}/{name}", methods=PAGE_METHODS)
async def model_page(model: RepoIdDep, request: Request, session: SessionDep) -> Response:
    """A model: release, licence terms, hardware per precision, revisions, scores with error bars and history."""

    async def build() -> Response:
        service = ModelService(session)
        record = await service.get(model)
        licence = await LicenseService(session).get(record.license) if record.license else None
        hardware, short_tokens = await _hardware(service, model)
        revisions, _ = await RevisionService(session).list_page(model, sort="-created_at", page=PageRequest(None, 50))
        history = await ComparisonService(session).history(model, None)
        latest = next((entry for entry in history if not entry.sample), None)  # a sample is not the model's score
        chart = ""
        if latest is not None:
            tasks = {task.name: task for task in (await scores.latest_suite(session, latest.suite)).tasks}
            # The suite's order, as the leaderboard's columns: the stored summary's key order is the database's.
            order = [name for name in tasks if name in latest.tasks] + sorted(set(latest.tasks) - set(tasks))
            chart = bars(
                [
                    Bar(
                        tasks[name].display_name if name in tasks else name,
                        latest.tasks[name].normalized,
                        latest.tasks[name].stderr,
                        task_tooltip(tasks[name]) if name in tasks else name,
                    )
                    for name in order
                ]
            )
        context: dict[str, object] = {
            "model": record,
            "architecture": formatting.architecture_words(record),
            "licence": licence,
            "hardware": hardware,
            "short_tokens": short_tokens,
            "revisions": revisions,
            "history": history,
            "latest": latest,
            "bars": chart,
            "suites": await suite_names(session),
        }
        return render(request, "model.html", context)

    return await view(request, PAGES, build)
