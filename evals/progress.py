"""Per-task and overall progress of a running lm-eval job, for the heartbeats.

lm-eval has no progress callback, but every backend reports each finished request to the model's cache
hook (`CacheHook.add_partial`, meant for its response cache). `ProgressHook` counts those calls, and
attributes each to its task by the request's arguments, against the totals the task objects hold once
their requests are built. The child writes the counts to `progress.json`; the agent sends them.
"""

import re
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from lm_eval.api.model import CacheHook
from lm_eval.tasks import TaskManager

from corral_runner.protocol import Progress

MAX_REPORTED_TASKS = 500  # the server takes at most this many in a heartbeat
REPORTABLE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # the task names the server accepts


def request_key(request_type: str, arguments: Any) -> tuple[str, ...]:
    # Only the string arguments: generation settings are dicts that a backend may copy on the way.
    return (request_type, *(value for value in arguments if isinstance(value, str)))


class ObservedTaskManager(TaskManager):
    """A TaskManager that keeps what it loaded, so the progress hook can see the tasks' requests."""

    loaded: dict[str, Any] | None = None

    def load(self, *args: Any, **kwargs: Any) -> Any:
        loaded = super().load(*args, **kwargs)
        self.loaded = loaded
        return loaded


class ProgressHook(CacheHook):
    """Counts finished requests per task and writes them to a JSON file, at most once an `interval`.

    Progress is reported for the job's own task names: a group (`mmlu`, `leaderboard_bbh`) sums its leaf
    tasks, which may number in the thousands, so the heartbeat stays small and speaks the suite's names."""

    def __init__(
        self, manager: ObservedTaskManager, path: Path, *, names: list[str] | None = None, interval: float = 1.0
    ) -> None:
        super().__init__(None)
        self.manager = manager
        self.path = path
        self.names = names or []
        self.interval = interval  # seconds between writes: a job may finish thousands of requests a second
        self.stage = "building requests"
        self.totals: dict[str, int] = {}  # per leaf task
        self.done: dict[str, int] = defaultdict(int)
        self.members: dict[str, list[str]] = {}  # reported name -> its leaf tasks
        self.owners: dict[tuple[str, ...], deque[str]] | None = None
        self.written_at = 0.0
        self.lock = threading.Lock()  # some backends answer from worker threads

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        with self.lock:
            if self.owners is None:
                self._index()
            owners = self.owners.get(request_key(attr, req)) if self.owners else None
            if owners:
                self.done[owners.popleft()] += 1
            if time.monotonic() - self.written_at >= self.interval:
                self.write()

    def _index(self) -> None:
        """Totals and request owners, from the tasks' requests (all built before the first one runs)."""
        self.owners = defaultdict(deque)
        loaded = self.manager.loaded or {}
        tasks, groups = loaded.get("tasks", {}), loaded.get("groups", {})
        for name, task in tasks.items():
            total = 0
            for instance in task.instances or []:
                repeats = instance.repeats or 1
                self.owners[request_key(instance.request_type, instance.args)].extend([name] * repeats)
                total += repeats
            self.totals[name] = total
        for name in self.names:
            if name in groups:
                self.members[name] = [task.task_name for task in groups[name].get_all_tasks()]
            elif name in tasks:
                self.members[name] = [name]
        covered = {leaf for leaves in self.members.values() for leaf in leaves}
        for leaf in tasks:  # a tag expands to tasks of no group: reported under their own names
            if leaf not in covered:
                self.members[leaf] = [leaf]
        self.stage = "running requests"

    def set_stage(self, stage: str, *, finished: bool = False) -> None:
        with self.lock:
            self.stage = stage
            if finished:
                self.done.update(self.totals)
            self.write()

    def snapshot(self) -> Progress:
        def finished(leaves: list[str]) -> tuple[int, int]:
            totals = [self.totals.get(leaf, 0) for leaf in leaves]
            return sum(min(self.done[leaf], total) for leaf, total in zip(leaves, totals, strict=True)), sum(totals)

        tasks = {}
        reportable = [(name, leaves) for name, leaves in self.members.items() if REPORTABLE_NAME.match(name)]
        for name, leaves in reportable[:MAX_REPORTED_TASKS]:
            done, total = finished(leaves)
            if total:
                tasks[name] = round(done / total, 4)
        done, total = finished(list(self.totals))
        return Progress(stage=self.stage[:200], tasks=tasks, overall=round(done / total, 4) if total else None)

    def write(self) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(self.snapshot().model_dump_json(exclude_none=True))
        partial.replace(self.path)  # the agent never reads half a file
        self.written_at = time.monotonic()
