"""The runners page: every registered runner's state, whether it is online, and what hardware it offers.

Not kept in the view cache: `online` is a matter of time since the last contact, which no change notice marks."""

from dataclasses import dataclass

from fastapi import Request, Response

from corral.db import SessionDep
from corral.documents import AcceleratorRecord
from corral.evaluations import repository as evaluations
from corral.runners.repository import registered_runners
from corral.runners.schemas import ONLINE_WITHIN_SECONDS, RunnerRead
from corral.runners.service import to_read
from corral.web import formatting
from corral.web.pages import PAGE_METHODS, page_router, render, suite_names

router = page_router()


@dataclass(frozen=True)
class RunnerRow:
    runner: RunnerRead
    shapes: list[str]  # one per node shape: "2 nodes x 8 x nvidia-h100-80gb (80.0 GiB each)"
    running: int


def node_shapes(accelerators: list[AcceleratorRecord]) -> list[str]:
    """A runner's accelerators as node shapes, as the matcher offers them: each shape on its own."""
    shapes = []
    for item in accelerators:
        nodes = item.get("nodes", 1)
        where = f"{nodes} nodes x " if nodes != 1 else ""
        shapes.append(f"{where}{item.get('count', 1)} x {item['kind']} ({formatting.gib(item['memory_bytes'])} each)")
    return shapes


@router.api_route("/runners", methods=PAGE_METHODS)
async def runners_page(request: Request, session: SessionDep) -> Response:
    """Registered runners: state, online, accelerators and node shapes, backends, jobs running."""
    busy = await evaluations.running_by_runner(session)
    rows = [
        RunnerRow(to_read(runner), node_shapes(runner.accelerators), busy.get(runner.id, 0))
        for runner in await registered_runners(session)
    ]
    context = {"rows": rows, "online_seconds": ONLINE_WITHIN_SECONDS, "suites": await suite_names(session)}
    return render(request, "runners.html", context)
