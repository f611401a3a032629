"""The leaderboard page: a suite's table with its benchmarks' names, filters that exports carry, and a chart."""

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Query, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession

from corral.db import SessionDep
from corral.fields import Slug
from corral.hardware.estimator import PRECISION_BITS
from corral.registry import repository as registry
from corral.scores import repository as scores
from corral.scores.leaderboard import LeaderboardFilters, LeaderboardService, RankedRow
from corral.state import state_of
from corral.suites.schemas import SuiteTask
from corral.viewcache import view
from corral.web import formatting
from corral.web.charts import Point, scatter
from corral.web.pages import PAGE_METHODS, page_router, render, suite_names
from corral.wire.enums import ModelKind

router = page_router()
FIXED_COLUMNS = [
    ("model", "model", "Hub repo id; the link opens Corral's page of the model"),
    ("hub", "Hub", "The model's page on the Hugging Face Hub"),
    ("kind", "type", "base, instruct, code, vision or guard"),
    ("license", "licence", "The model's licence, or its family's"),
    ("revision", "revision", "The commit the scores are for"),
    ("precision", "settings", "Weight precision, and whether the chat template was applied"),
    ("parameters", "parameters", "Parameter count (B = 10^9)"),
    ("average", "average", "Mean of the normalized task scores (0-100)"),
]
SORTABLE = {"model", "parameters", "average"}
KINDS = [kind.value for kind in ModelKind]


def task_tooltip(task: SuiteTask) -> str:
    """What a column header's tooltip says of its benchmark: lm-eval's name for it, shots, metrics, dataset."""
    parts = [task.hub.name if task.hub else task.display_name, f"lm-eval task {task.name}"]
    parts.append(f"{task.num_fewshot}-shot, metric {' + '.join(task.metrics)}")
    if task.dataset:
        parts.append(f"dataset {task.dataset}")
    return " · ".join(parts)


async def licence_slugs(session: AsyncSession) -> list[str]:
    return sorted(licence.slug for licence in (await session.execute(registry.licenses(None, None))).scalars())


@router.api_route("/", methods=PAGE_METHODS)
async def home(session: SessionDep) -> RedirectResponse:
    """The first suite's leaderboard."""
    names = await suite_names(session)
    target = "openllm-v2" if "openllm-v2" in names else (names[0] if names else None)
    return RedirectResponse(f"/leaderboards/{target}" if target else "/models", status_code=307)


@router.api_route("/leaderboards/{suite}", methods=PAGE_METHODS)
async def leaderboard_page(
    suite: Slug,
    request: Request,
    session: SessionDep,
    sort: Annotated[str, Query(pattern=r"^-?[A-Za-z0-9_.:-]{1,128}$")] = "-average",
    q: Annotated[str, Query(max_length=100)] = "",
    family: str | None = None,
    license: str | None = None,
    kind: str | None = None,
    precision: str | None = None,
    chat_template: str | None = None,
    max_parameters: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    """A suite's leaderboard: sortable columns, filters, and average score against size."""

    async def build() -> Response:
        limit, meaning, problem = formatting.read_parameter_limit(max_parameters)
        problems = [problem] if problem else []  # said on the page, not silently dropped
        filters = LeaderboardFilters(
            family=family or None,
            license=license or None,
            kind=kind if kind in KINDS else None,
            precision=precision if precision in PRECISION_BITS else None,
            chat_template={"true": True, "false": False}.get(chat_template or ""),
            max_parameters=limit,
        )
        definition = await scores.latest_suite(session, suite)  # 404 names the known suites
        settings = state_of(request).settings
        board = await LeaderboardService(session).leaderboard(suite, filters, sort, settings.leaderboard_cache_seconds)
        needle = q.strip().lower()
        rows: list[RankedRow] = [row for row in board.rows if needle in row["model"].lower()]
        context = _context(request, definition.tasks, board.tasks, rows, filters, sort, q)
        context |= {
            "suite": suite,
            "definition": definition,
            "suites": await suite_names(session),
            "families": await registry.family_slugs(session),
            "licences": await licence_slugs(session),
            "kinds": KINDS,
            "precisions": list(PRECISION_BITS),
            "problems": problems,
            "raw_max_parameters": max_parameters,
            "limit_meaning": meaning,
        }
        return render(request, "leaderboard.html", context)

    return await view(request, ("registry", "scores"), build)


def _context(
    request: Request,
    definitions: list[SuiteTask],
    tasks: list[str],
    rows: list[RankedRow],
    filters: LeaderboardFilters,
    sort: str,
    q: str,
) -> dict[str, object]:
    query = {key: value for key, value in request.query_params.items() if key != "sort" and value}

    def link(key: str) -> str:
        # A second click on the sorted column flips its direction; a new column sorts best-first.
        target = key if sort == f"-{key}" else f"-{key}"
        if key == "model" and sort != "model":
            target = "model"
        return "?" + urlencode({**query, "sort": target})

    by_name = {task.name: task for task in definitions}
    columns = list(FIXED_COLUMNS)
    for name in tasks:
        task = by_name.get(name)
        columns.append((name, task.display_name, task_tooltip(task)) if task else (name, name, name))
    # The API's own names for the filters, so an export is the table on the screen (the name search aside:
    # the leaderboard API has no such filter).
    exported: dict[str, str | int] = {
        key: value
        for key, value in (
            ("family", filters.family),
            ("license", filters.license),
            ("kind", filters.kind),
            ("precision", filters.precision),
            ("chat_template", None if filters.chat_template is None else str(filters.chat_template).lower()),
            ("max_parameters", filters.max_parameters),
        )
        if value is not None
    } | {"sort": sort}
    chart = scatter(
        [
            Point(
                f"{row['model']} ({row['precision']}{', chat' if row['chat_template'] else ''})",
                row["parameters"],
                row["average"],
                row["family"] or "other",
            )
            for row in rows
            if row["parameters"] and row["average"] is not None
        ]
    )
    return {
        "tasks": tasks,
        "rows": rows,
        "sort": sort,
        "q": q,
        "columns": columns,
        "sort_links": {key: link(key) for key, _, _ in columns if key in SORTABLE or key in tasks},
        "filters": filters,
        "chart": chart,
        "exports": {name: "?" + urlencode({**exported, "format": name}) for name in ("csv", "markdown", "json")},
    }
