"""Finished results wait in the spool until the server has them: written before the upload, so that a server
outage (or an agent restart) never loses a finished run; re-sent at every start and after every job."""

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from corral.wire.base import JsonObject
from corral_runner.client import ServerClient, ServerError
from corral_runner.files import write_whole
from corral_runner.jobdir import JobDirectory

log = logging.getLogger("corral.runner")


class Spooled(BaseModel):
    attempt_id: uuid.UUID
    lease_token: str
    results: JsonObject  # lm-eval's own: NaN among its numbers, as Python's json reads and writes it
    samples: Any = None


class Spool:
    def __init__(self, folder: Path, client: ServerClient) -> None:
        self.folder = folder
        self.client = client

    def put(self, attempt: uuid.UUID, lease: str, directory: JobDirectory) -> None:
        """The job's results, kept (mode 600: a lease token is among them) until the server has them."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        results, samples = directory.read_results()
        entry = {"attempt_id": str(attempt), "lease_token": lease, "results": results, "samples": samples}
        write_whole(self.folder / f"{attempt}.json", json.dumps(entry), private=True)

    def flush(self) -> None:
        """Upload every spooled result; keep what the server cannot take yet, drop what it never will."""
        if not self.folder.exists():
            return
        for path in sorted(self.folder.glob("*.json")):
            entry = Spooled.model_validate(json.loads(path.read_text()))
            try:
                self.client.upload_result(entry.attempt_id, entry.lease_token, entry.results, entry.samples)
            except ServerError as exc:
                if exc.status < 500:
                    log.warning("spooled result of attempt %s refused (%s); dropped", entry.attempt_id, exc)
                    self._refused(entry, exc)
                    path.unlink()
                continue
            except (httpx.TransportError, OSError) as exc:
                log.warning("server unreachable, result of attempt %s stays spooled: %s", entry.attempt_id, exc)
                return
            path.unlink()

    def _refused(self, entry: Spooled, refusal: ServerError) -> None:
        """A result the server will never take fails the attempt now, with the server's reason, instead of
        leaving the lease to lapse into "no heartbeat" and the job to run again for nothing."""
        if refusal.lease_lost:
            return  # the attempt is not ours any more (or is over): there is nothing left to report
        message = f"The server refused the results ({refusal.status}): {refusal.detail}"
        try:
            self.client.fail(entry.attempt_id, entry.lease_token, "harness_error", message[:20_000])
        except (ServerError, httpx.TransportError) as exc:
            log.warning("could not report the refused result of attempt %s: %s", entry.attempt_id, exc)
