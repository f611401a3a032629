"""Server-rendered pages (Jinja2): a leaderboard per suite and a page per model. No script, no CDN."""

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from app.db import SessionDep
from app.errors import ProblemError
from app.fields import Slug
from app.hardware.estimator import PRECISION_BITS
from app.pagination import PageRequest
from app.registry import repository as registry
from app.registry.licenses.service import LicenseService
from app.registry.models.router import RepoIdDep
from app.registry.models.service import ModelService
from app.registry.revisions.service import RevisionService
from app.scores.comparison import ComparisonService
from app.scores.leaderboard import LeaderboardFilters, LeaderboardService
from app.security import READ
from app.suites import repository as suites
from app.viewcache import PAGES, view
from app.web.charts import Point, bars, scatter

router = APIRouter(include_in_schema=False, dependencies=[Depends(READ)], default_response_class=HTMLResponse)
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))
FIXED_COLUMNS = [
    ("model", "model"),
    ("revision", "revision"),
    ("precision", "settings"),
    ("parameters", "parameters"),
    ("average", "average"),
]
SORTABLE = {"model", "parameters", "average"}


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


async def _suites(session: SessionDep) -> list[str]:
    return await suites.names(session)


@router.get("/")
async def home(session: SessionDep) -> RedirectResponse:
    """The first suite's leaderboard."""
    suites = await _suites(session)
    target = "openllm-v2" if "openllm-v2" in suites else (suites[0] if suites else None)
    return RedirectResponse(f"/leaderboards/{target}" if target else "/docs", status_code=307)


@router.get("/leaderboards/{suite}")
async def leaderboard_page(
    suite: Slug,
    request: Request,
    session: SessionDep,
    sort: Annotated[str, Query(pattern=r"^-?[A-Za-z0-9_.:-]{1,128}$")] = "-average",
    family: str | None = None,
    precision: str | None = None,
    chat_template: str | None = None,
    max_parameters: str | None = None,
) -> Response:
    """A suite's leaderboard: sortable columns, filters, and average score against size."""

    async def build() -> Response:
        filters = LeaderboardFilters(
            family=family or None,
            precision=precision if precision in PRECISION_BITS else None,
            chat_template={"true": True, "false": False}.get(chat_template or ""),
            max_parameters=_number(max_parameters),
        )
        settings = request.app.state.settings
        board = await LeaderboardService(session).leaderboard(suite, filters, sort, settings.leaderboard_cache_seconds)
        tasks, rows = board.tasks, board.rows
        query = {k: v for k, v in request.query_params.items() if k != "sort" and v}

        def link(key: str) -> str:
            # A second click on the sorted column flips its direction; a new column sorts best-first.
            target = key if sort == f"-{key}" else f"-{key}"
            if key == "model" and sort != "model":
                target = "model"
            return "?" + urlencode({**query, "sort": target})

        columns = [(key, label) for key, label in FIXED_COLUMNS] + [
            (task, task.removeprefix("leaderboard_")) for task in tasks
        ]
        families = await registry.family_slugs(session)
        chart = scatter(
            [
                Point(
                    f"{row['model']} ({row['precision']})", row["parameters"], row["average"], row["family"] or "other"
                )
                for row in rows
                if row["parameters"] and row["average"] is not None
            ]
        )
        context: dict[str, Any] = {
            "suite": suite,
            "suites": await _suites(session),
            "tasks": tasks,
            "rows": rows,
            "sort": sort,
            "columns": columns,
            "sort_links": {key: link(key) for key, _ in columns if key in SORTABLE or key in tasks},
            "filters": filters,
            "families": families,
            "precisions": list(PRECISION_BITS),
            "chart": chart,
        }
        return templates.TemplateResponse(request, "leaderboard.html", context)

    return await view(request, ("registry", "scores"), build)


@router.get("/models/{owner}/{name}")
async def model_page(model: RepoIdDep, request: Request, session: SessionDep) -> Response:
    """A model: release, licence terms, hardware, revisions, scores with error bars and history."""

    async def build() -> Response:
        record = await ModelService(session).get(model)
        licence = await LicenseService(session).get(record.license) if record.license else None
        try:
            requirements = await ModelService(session).requirements(
                model, precision="bf16", kv_precision=None, context_tokens=None, batch=1
            )
        except ProblemError:
            requirements = None  # no architecture recorded: nothing to estimate
        revisions, _ = await RevisionService(session).list_page(model, sort="-created_at", page=PageRequest(None, 50))
        history = await ComparisonService(session).history(model, None)
        latest = history[0] if history else None
        chart = bars([(task, score.normalized, score.stderr) for task, score in latest.tasks.items()]) if latest else ""
        context = {
            "model": record,
            "licence": licence,
            "requirements": requirements,
            "revisions": revisions,
            "history": history,
            "latest": latest,
            "bars": chart,
            "suites": await _suites(session),
        }
        return templates.TemplateResponse(request, "model.html", context)

    return await view(request, PAGES, build)
