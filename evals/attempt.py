"""One attempt the runner holds, whichever engine runs it: its lease (kept in a private state file, so that a
restarted agent adopts it), its heartbeats, its log streamed as it grows, and its end told to the server."""

import logging
import time
import uuid
from pathlib import Path

import httpx
from pydantic import BaseModel

from corral_runner.client import ServerClient, ServerError
from corral_runner.executors.base import EngineJob, job_name
from corral_runner.files import write_whole
from corral_runner.jobdir import JobDirectory
from corral_runner.protocol import ClaimedJob, JobPlacement, Outcome, Progress

log = logging.getLogger("corral.runner")
LOG_TAIL_BYTES = 4000
LOG_CHUNK_BYTES = 1024 * 1024


class HeldAttempt(BaseModel):
    """What the agent keeps of an attempt it holds (its state file): enough to adopt it after a restart."""

    attempt_id: uuid.UUID
    lease_token: str
    job_id: uuid.UUID
    heartbeat_seconds: float
    placement: JobPlacement
    directory: Path  # the job's directory (on the shared storage for a cluster)
    required_memory_bytes: int = 0
    needs_hub_token: bool = True  # the weights may need the runner's Hub token
    ref: str | None = None  # the engine's id once submitted (a local job has none)
    submitted: bool = False
    pending_since: float | None = None  # wall clock: it must survive a restart

    @classmethod
    def of(cls, job: ClaimedJob, directory: Path, *, weights_here: bool) -> "HeldAttempt":
        """A claimed job, held: `weights_here`, its weights are on this runner's disk (no Hub token needed)."""
        return cls(
            attempt_id=job.attempt_id,
            lease_token=job.lease_token,
            job_id=job.job_id,
            heartbeat_seconds=job.heartbeat_seconds,
            placement=job.placement,
            directory=directory,
            required_memory_bytes=job.required_memory_bytes,
            needs_hub_token=job.settings.needs_hub_token and not weights_here,
        )

    @property
    def name(self) -> str:
        return job_name(self.attempt_id)


class StateFiles:
    """The held attempts, one private file each (they hold lease tokens)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, held: HeldAttempt) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_whole(self.folder / f"{held.attempt_id}.json", held.model_dump_json(), private=True)

    def remove(self, held: HeldAttempt) -> None:
        (self.folder / f"{held.attempt_id}.json").unlink(missing_ok=True)

    def load(self) -> list[HeldAttempt]:
        found = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.exists() else []:
            try:
                found.append(HeldAttempt.model_validate_json(path.read_text()))
            except ValueError:
                log.warning("unreadable state file %s; removed", path)
                path.unlink()
        return found


class Attempt:
    """An attempt in the runner's hands: the server hears of it through here, and only through here."""

    def __init__(self, held: HeldAttempt, client: ServerClient, states: StateFiles) -> None:
        self.held = held
        self.client = client
        self.states = states
        self.directory = JobDirectory(held.directory)
        self.next_heartbeat = 0.0  # monotonic; 0: at once
        self.log_offset = 0  # bytes of the log the server has (a restarted agent learns it from a 416)
        self.ended_at: float | None = None  # when the engine first said it was over (files may lag on NFS)
        self.last: EngineJob | None = None
        self.stage = "submitted"

    @property
    def name(self) -> str:
        return self.held.name

    @property
    def attempt_id(self) -> uuid.UUID:
        return self.held.attempt_id

    def save(self) -> None:
        self.states.save(self.held)

    def forget(self) -> None:
        """Over for the runner: its state file and its directory go."""
        self.states.remove(self.held)
        self.directory.remove()

    def heartbeat_due(self) -> bool:
        return time.monotonic() >= self.next_heartbeat

    def stream_log(self, *, final: bool = False) -> None:
        """Send what the server lacks of the log. While the job runs, one quick try, since more follows; at the end,
        until the server has it all."""
        while True:
            try:
                with self.directory.log.open("rb") as file:
                    file.seek(self.log_offset)
                    data = file.read(LOG_CHUNK_BYTES)
            except OSError:  # not written yet
                return
            if not data:
                return
            try:
                sent = self.client.append_log(
                    self.attempt_id, self.held.lease_token, self.log_offset, data, retries=None if final else 1
                )
            except (ServerError, httpx.TransportError) as exc:
                log.warning("log append refused: %s", exc)
                return
            moved, self.log_offset = sent > self.log_offset, sent
            if not final or not moved:
                return

    def heartbeat(self, stage: str, trouble: str | None = None) -> str:
        """Extend the lease with the job's progress (the engine's words while lm-eval has none), what keeps the
        runner from looking at it (`trouble`: the engine did not answer) and where it runs: "ok", "lost" (the
        lease is gone) or "cancel" (the evaluation was canceled)."""
        self.next_heartbeat = time.monotonic() + self.held.heartbeat_seconds
        self.stage = stage
        running = self.last is not None and self.last.phase == "running"
        progress = (self.directory.progress() if running else None) or Progress(stage=stage[:200])
        if trouble is not None:
            progress = progress.model_copy(update={"stage": f"{trouble}; {progress.stage or stage}"[:200]})
        try:
            try:
                reply = self.client.heartbeat(self.attempt_id, self.held.lease_token, progress, self.held.ref)
            except ServerError as exc:
                if exc.status != 422:
                    raise
                # Progress the server will not take (a task name it does not accept): the lease matters more.
                log.warning("progress refused (%s); heartbeat without it", exc.detail)
                reply = self.client.heartbeat(
                    self.attempt_id, self.held.lease_token, Progress(stage=stage[:200]), self.held.ref
                )
        except httpx.TransportError as exc:  # the server is away: keep working, the lease may survive it
            log.warning("heartbeat of %s failed (%s); the job goes on", self.attempt_id, type(exc).__name__)
            return "ok"
        except ServerError as exc:
            if exc.lease_lost:  # another runner has the job now, or it is over
                log.warning("attempt %s lost its lease (%s)", self.attempt_id, exc.detail)
                return "lost"
            # A proxy or a restarting server (5xx, 429): keep working, the next heartbeat tries again.
            log.warning("heartbeat refused (%s); the job goes on", exc)
            return "ok"
        if reply.cancel_requested:
            log.info("attempt %s canceled by the server", self.attempt_id)
            return "cancel"
        return "ok"

    def fail(self, outcome: Outcome, *, more: str = "") -> None:
        """Report the failure, with the last lines of the job's log (and what the engine adds)."""
        message = f"{outcome.message or 'lm-eval stopped without a word'}\n--- last log lines ---\n"
        message += self.directory.log_tail(LOG_TAIL_BYTES) + more
        try:
            self.client.fail(self.attempt_id, self.held.lease_token, outcome.category, message)
        except (ServerError, httpx.TransportError) as exc:
            log.warning("could not report the failure of attempt %s: %s", self.attempt_id, exc)

    def release(self, reason: str) -> None:
        """Hand the job back to the queue unfinished (nothing counted against it)."""
        try:
            self.client.release(self.attempt_id, self.held.lease_token, reason)
        except (ServerError, httpx.TransportError) as exc:  # the lease will lapse and the reaper requeues it
            log.warning("could not hand back attempt %s: %s", self.attempt_id, exc)
