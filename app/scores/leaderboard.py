"""Leaderboards: the latest complete successful run per revision, precision and chat template, ranked, from a
cache."""

import json
import uuid
from dataclasses import dataclass
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncSession

from corral import changes
from corral.documents import is_sample
from corral.errors import UnprocessableEntity
from corral.hardware import fit
from corral.hardware.catalog import accelerators
from corral.hardware.estimator import architecture_of
from corral.scores import cache, repository
from corral.scores.repository import LeaderboardQuery

FIXED_SORTS = {"average", "parameters", "model", "evaluated_at"}


class TaskCell(TypedDict):
    raw: float
    raw_stderr: float | None
    normalized: float
    stderr: float | None


class RowLinks(TypedDict):
    evaluation: str
    provenance: str


class RankedRow(TypedDict):
    """One leaderboard row as the API, the pages and the exports show it (schemas.LeaderboardRow documents it)."""

    rank: int
    model: str
    revision: str
    family: str | None
    license: str | None
    kind: str
    parameters: int | None
    precision: str
    chat_template: bool
    average: float | None
    average_stderr: float | None
    tasks: dict[str, TaskCell]
    evaluation_id: str
    harness_version: str
    suite_version: str
    evaluated_at: str | None
    links: RowLinks


@dataclass(frozen=True)
class Board:
    """A ranked leaderboard: its rows (pages and exports) and each row's JSON, serialized once (the API)."""

    tasks: list[str]
    rows: list[RankedRow]
    row_json: list[bytes]


@dataclass(frozen=True)
class LeaderboardFilters:
    family: str | None = None
    license: str | None = None
    kind: str | None = None
    precision: str | None = None
    chat_template: bool | None = None
    tag: str | None = None
    min_parameters: int | None = None
    max_parameters: int | None = None
    fits_on: str | None = None
    fits_count: int = 1


class LeaderboardService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def leaderboard(self, suite: str, filters: LeaderboardFilters, sort: str, cache_seconds: float) -> Board:
        """The ranked leaderboard, from the per-process cache when fresh (see app/scores/cache.py)."""
        bind = self.session.get_bind()
        key = (str(bind.engine.url), suite, filters, sort)
        board: Board | None = cache.cached(key)
        if board is not None:
            return board
        async with cache.building(key):
            board = cache.cached(key)  # built by the request we waited for
            if board is None:
                seen = changes.generation("scores")
                definition = await repository.latest_suite(self.session, suite)
                tasks = [task.name for task in definition.tasks]
                rows = await self._ranked_rows(suite, tasks, definition.context_tokens, filters, sort)
                row_json = [json.dumps(row, allow_nan=False).encode() for row in rows]
                board = Board(tasks=tasks, rows=rows, row_json=row_json)
                cache.keep(key, board, cache_seconds, seen)
        return board

    async def _ranked_rows(
        self, suite: str, tasks: list[str], context_tokens: int, filters: LeaderboardFilters, sort: str
    ) -> list[RankedRow]:
        descending = sort.startswith("-")
        key = sort.lstrip("-")
        if key not in FIXED_SORTS and key not in tasks:
            raise UnprocessableEntity(
                f"cannot sort by {key!r}: use {', '.join(sorted(FIXED_SORTS))} or a task of {suite}",
                field="sort",
                location="query",
            )
        devices = None
        if filters.fits_on is not None:
            device = accelerators().get(filters.fits_on)
            if device is None:
                raise UnprocessableEntity(f"no accelerator {filters.fits_on!r}", field="fits_on", location="query")
            devices = fit.Devices(device.memory_bytes, filters.fits_count)
        query = LeaderboardQuery(
            suite=suite,
            family=filters.family,
            kind=filters.kind,
            tag=filters.tag,
            min_parameters=filters.min_parameters,
            max_parameters=filters.max_parameters,
        )
        rows: list[RankedRow] = []
        seen: set[tuple[uuid.UUID, str, bool]] = set()
        for scored in await repository.scored_runs(self.session, query):
            config = scored.config
            if is_sample(config):
                continue  # a sample's numbers are not the model's: it never takes (or hides) a row
            chat = bool(config["apply_chat_template"])
            settings_class = (scored.revision_id, config["precision"], chat)
            if settings_class in seen:
                continue  # an older run of the same revision and settings: the latest one stands
            seen.add(settings_class)
            licence = scored.own_license or scored.inherited_license
            if filters.license is not None and licence != filters.license:
                continue
            if filters.precision is not None and config["precision"] != filters.precision:
                continue
            if filters.chat_template is not None and chat != filters.chat_template:
                continue
            if devices is not None:
                if scored.parameter_count is None:
                    continue
                need = fit.inference_need(
                    architecture_of(scored),
                    scored.parameter_count,
                    precision=config["precision"],
                    context_tokens=fit.context_for(context_tokens, scored.context_length),
                    stored=fit.stored_release(scored.default_dtype, scored.stored_weight_bytes),
                )
                if not fit.holds(need, devices):
                    continue
            summary = scored.summary
            rows.append(
                RankedRow(
                    rank=0,
                    model=scored.repo_id,
                    revision=scored.sha,
                    family=scored.family,
                    license=licence,
                    kind=scored.kind.value,
                    parameters=scored.parameter_count,
                    precision=config["precision"],
                    chat_template=chat,
                    average=scored.average,
                    average_stderr=summary["average_stderr"] if summary else None,
                    tasks={
                        name: TaskCell(
                            raw=values["raw"],
                            raw_stderr=values["raw_stderr"],
                            normalized=values["normalized"],
                            stderr=values["stderr"],
                        )
                        for name, values in (summary["tasks"] if summary else {}).items()
                    },
                    evaluation_id=str(scored.evaluation_id),
                    harness_version=config["harness_version"],
                    suite_version=scored.suite_version,
                    evaluated_at=scored.finished_at.isoformat() if scored.finished_at else None,
                    links=RowLinks(
                        evaluation=f"/v1/evaluations/{scored.evaluation_id}",
                        provenance=f"/v1/evaluations/{scored.evaluation_id}/provenance",
                    ),
                )
            )
        return _ranked(rows, key, descending)


def _ranked(rows: list[RankedRow], key: str, descending: bool) -> list[RankedRow]:
    def value(row: RankedRow) -> str | int | float | None:
        if key == "model":
            return row["model"].lower()
        if key == "average":
            return row["average"]
        if key == "parameters":
            return row["parameters"]
        if key == "evaluated_at":
            return row["evaluated_at"]
        task = row["tasks"].get(key)
        return task["normalized"] if task else None

    present = [row for row in rows if value(row) is not None]
    missing = [row for row in rows if value(row) is None]
    present.sort(key=value, reverse=descending)  # type: ignore[arg-type]  # one type per key
    ranked = present + missing  # rows without the sorted value go last, whatever the direction; ties newest first
    for position, row in enumerate(ranked, start=1):
        row["rank"] = position
    return ranked
