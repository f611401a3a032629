"""The runner protocol over HTTP: the only way the agent talks to Corral (it never sees the database). Every
document it sends or reads is the wire's (app/wire/protocol.py)."""

import json
import logging
import re
import time
import uuid
from typing import Any, TypedDict, TypeVar

import httpx
from pydantic import BaseModel

from corral.wire.base import JsonObject
from corral.wire.protocol import LEASE_HEADER, ClaimRequest, FailureReply, LogAppended, RunnerToken
from corral_runner.protocol import (
    Accelerator,
    ClaimedJob,
    Failure,
    Heartbeat,
    HeartbeatReply,
    JobRefused,
    Progress,
    Release,
    ReportedCategory,
    ResultStored,
    RunnerRegister,
    RunnerReport,
    VerifiedRunner,
    read_claim,
)

log = logging.getLogger("corral.runner")
RETRYABLE = {429, 502, 503, 504}
LOST_LEASE = frozenset({403, 404, 409})  # the attempt is not this runner's any more (or is over)
Document = TypeVar("Document", bound=BaseModel)
JSON = "application/json"


class JsonBody(TypedDict):
    content: str | None
    headers: dict[str, str]


class ServerError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail

    @property
    def lease_lost(self) -> bool:
        return self.status in LOST_LEASE


class ServerClient:
    def __init__(
        self,
        server: str,
        token: str,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(base_url=server, headers=headers, timeout=timeout, transport=transport)
        self.retries = retries

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def register(server: str, body: RunnerRegister, transport: httpx.BaseTransport | None = None) -> str:
        """Exchange a single-use registration token for a runner of this machine; the runner's own token."""
        with httpx.Client(base_url=server, timeout=60, transport=transport) as http:
            answer = http.post("/v1/runners/register", **ServerClient._body(body))
        if answer.status_code != 201:
            ServerClient._checked(answer)
            raise ServerError(answer.status_code, answer.text[:500])
        return RunnerToken.model_validate_json(answer.content).token

    def _request(
        self, method: str, url: str, *, lease: str | None = None, retries: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Retries connection errors and 429/5xx with backoff: every call here is safe to repeat (the server
        dedupes uploads by content hash, and a repeated heartbeat only extends the lease)."""
        headers = dict(kwargs.pop("headers", {}))
        if lease is not None:
            headers[LEASE_HEADER] = lease
        retries = self.retries if retries is None else retries
        delay = 0.5
        for attempt in range(retries + 1):
            try:
                response = self.http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError:
                if attempt == retries:
                    raise
            else:
                if response.status_code not in RETRYABLE or attempt == retries:
                    return response
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServerError(response.status_code, str(detail))
        return response

    def _read(self, response: httpx.Response, document: type[Document]) -> Document:
        return document.model_validate_json(self._checked(response).content)

    @staticmethod
    def _body(document: BaseModel) -> JsonBody:
        """The document as a request body: JSON, without the fields it leaves unset."""
        return JsonBody(content=document.model_dump_json(exclude_none=True), headers={"Content-Type": JSON})

    def verify(self, report: RunnerReport) -> VerifiedRunner:
        return self._read(self._request("POST", "/v1/runner/verify", **self._body(report)), VerifiedRunner)

    def claim(self, wait: float, free: list[Accelerator] | None = None) -> ClaimedJob | None:
        """The next job for this runner, waiting up to `wait` seconds; `free`: what a cluster has free now.
        A job this runner will not run is refused to the server at once, and raised as JobRefused."""
        body = self._body(ClaimRequest(free=free)) if free is not None else JsonBody(content=None, headers={})
        response = self._request("POST", "/v1/runner/jobs/claim", params={"wait": wait}, timeout=wait + 30, **body)
        if response.status_code == 204:
            return None
        try:
            return read_claim(self._checked(response).json())
        except JobRefused as refused:
            self.refuse(refused)
            raise

    def refuse(self, refused: JobRefused) -> None:
        """Tell the server this runner will not run the job it handed over (harness_error, with the reason)."""
        attempt = refused.envelope.attempt_id
        log.warning("attempt %s refused: %s", attempt, refused.reason)
        try:
            self.fail(attempt, refused.envelope.lease_token, "harness_error", refused.reason)
        except (ServerError, httpx.TransportError) as exc:  # the lease lapses and the reaper requeues it
            log.warning("could not report the refusal of attempt %s: %s", attempt, exc)

    def rotate_token(self) -> str:
        """A new token for this runner; the one this client holds stops working at once."""
        return self._read(self._request("POST", "/v1/runner/token", retries=0), RunnerToken).token

    def heartbeat(
        self, attempt: uuid.UUID, lease: str, progress: Progress, external_ref: str | None = None
    ) -> HeartbeatReply:
        url = f"/v1/runner/attempts/{attempt}/heartbeat"
        body = self._body(Heartbeat(progress=progress, external_ref=external_ref))
        # One quick retry only: the next heartbeat is the retry, and the job must not wait on a server that is away.
        return self._read(self._request("POST", url, lease=lease, retries=1, **body), HeartbeatReply)

    def append_log(
        self, attempt: uuid.UUID, lease: str, offset: int, data: bytes, *, retries: int | None = None
    ) -> int:
        """Appends at `offset`; returns the server's log size (after a 416, where to resume from)."""
        url = f"/v1/runner/attempts/{attempt}/log"
        headers = {"Content-Range": f"bytes {offset}-{offset + len(data) - 1}", "Content-Type": "text/plain"}
        response = self._request("PATCH", url, lease=lease, retries=retries, content=data, headers=headers)
        if response.status_code == 416:
            match = re.match(r"0-(\d+)", response.headers.get("range", ""))
            return int(match.group(1)) if match else offset
        return self._read(response, LogAppended).log_bytes

    def upload_result(self, attempt: uuid.UUID, lease: str, results: JsonObject, samples: Any) -> ResultStored:
        url = f"/v1/runner/attempts/{attempt}/result"
        # lm-eval writes NaN for a standard error it could not compute; httpx's json= refuses NaN, so the body is
        # sent as Python writes it and the server decides (NaN stderr reads "N/A"; other non-finite values: 422).
        body = json.dumps({"results": results, "samples": samples}).encode()
        headers = {"Content-Type": JSON}
        return self._read(self._request("PUT", url, lease=lease, content=body, headers=headers), ResultStored)

    def fail(self, attempt: uuid.UUID, lease: str, category: ReportedCategory, message: str) -> FailureReply:
        url = f"/v1/runner/attempts/{attempt}/fail"
        body = self._body(Failure(category=category, message=message[-20_000:] or "no message"))
        return self._read(self._request("POST", url, lease=lease, **body), FailureReply)

    def release(self, attempt: uuid.UUID, lease: str, reason: str) -> FailureReply:
        """Hand the job back to the queue unfinished (no failure counted): the runner is going away."""
        url = f"/v1/runner/attempts/{attempt}/release"
        body = self._body(Release(reason=reason[:2000]))
        return self._read(self._request("POST", url, lease=lease, **body), FailureReply)
