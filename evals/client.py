"""The runner protocol over HTTP: the only way the agent talks to Corral (it never sees the database)."""

import json
import logging
import re
import time
from typing import Any

import httpx

from evals.protocol import ClaimedJob, JobRefused, read_claim

log = logging.getLogger("corral.runner")

RETRYABLE = {429, 502, 503, 504}


class ServerError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class ServerClient:
    def __init__(self, server: str, token: str, *, timeout: float = 60.0, retries: int = 5) -> None:
        self.http = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        self.retries = retries

    def close(self) -> None:
        self.http.close()

    def _request(
        self, method: str, url: str, *, lease: str | None = None, retries: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Retries connection errors and 429/5xx with backoff: every call here is safe to repeat (the server
        dedupes uploads by content hash, and a repeated heartbeat only extends the lease)."""
        headers = dict(kwargs.pop("headers", {}))
        if lease is not None:
            headers["Corral-Lease-Token"] = lease
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
    def _json(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServerError(response.status_code, str(detail))
        return response.json() if response.content else None

    def verify(self, report: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json(self._request("POST", "/v1/runner/verify", json=report)))

    def claim(self, wait: float, free: list[dict[str, str | int]] | None = None) -> ClaimedJob | None:
        """The next job for this runner, waiting up to `wait` seconds; `free`: what a cluster has free now."""
        body = {"free": free} if free is not None else None
        response = self._request("POST", "/v1/runner/jobs/claim", params={"wait": wait}, json=body, timeout=wait + 30)
        if response.status_code == 204:
            return None
        try:
            return read_claim(self._json(response))
        except JobRefused as refused:
            self.refuse(refused)
            raise

    def refuse(self, refused: JobRefused) -> None:
        """Tell the server this runner will not run the job it handed over (harness_error, with the reason)."""
        log.warning("attempt %s refused: %s", refused.envelope.attempt_id, refused.reason)
        try:
            self.fail(refused.envelope.attempt_id, refused.envelope.lease_token, "harness_error", refused.reason)
        except (ServerError, httpx.TransportError) as exc:  # the lease lapses and the reaper requeues it
            log.warning("could not report the refusal of attempt %s: %s", refused.envelope.attempt_id, exc)

    def heartbeat(
        self, attempt: str, lease: str, progress: dict[str, Any], external_ref: str | None = None
    ) -> dict[str, Any]:
        url = f"/v1/runner/attempts/{attempt}/heartbeat"
        body: dict[str, Any] = {"progress": progress}
        if external_ref is not None:
            body["external_ref"] = external_ref
        # One quick retry only: the next heartbeat is the retry, and the job must not wait on a server that is away.
        answer = self._request("POST", url, lease=lease, retries=1, json=body)
        return dict(self._json(answer))

    def append_log(self, attempt: str, lease: str, offset: int, data: bytes, *, retries: int | None = None) -> int:
        """Appends at `offset`; returns the server's log size (after a 416, where to resume from)."""
        url = f"/v1/runner/attempts/{attempt}/log"
        headers = {"Content-Range": f"bytes {offset}-{offset + len(data) - 1}", "Content-Type": "text/plain"}
        response = self._request("PATCH", url, lease=lease, retries=retries, content=data, headers=headers)
        if response.status_code == 416:
            match = re.match(r"0-(\d+)", response.headers.get("range", ""))
            return int(match.group(1)) if match else offset
        self._json(response)
        return offset + len(data)

    def upload_result(self, attempt: str, lease: str, results: dict[str, Any], samples: Any) -> dict[str, Any]:
        url = f"/v1/runner/attempts/{attempt}/result"
        # lm-eval writes NaN for a standard error it could not compute; httpx's json= refuses NaN, so the body is
        # sent as Python writes it and the server decides (NaN stderr reads "N/A"; other non-finite values: 422).
        body = json.dumps({"results": results, "samples": samples}).encode()
        headers = {"Content-Type": "application/json"}
        return dict(self._json(self._request("PUT", url, lease=lease, content=body, headers=headers)))

    def fail(self, attempt: str, lease: str, category: str, message: str) -> dict[str, Any]:
        url = f"/v1/runner/attempts/{attempt}/fail"
        body = {"category": category, "message": message[-20_000:]}
        return dict(self._json(self._request("POST", url, lease=lease, json=body)))

    def release(self, attempt: str, lease: str, reason: str) -> dict[str, Any]:
        """Hand the job back to the queue unfinished (no failure counted): the runner is going away."""
        url = f"/v1/runner/attempts/{attempt}/release"
        return dict(self._json(self._request("POST", url, lease=lease, json={"reason": reason[:2000]})))
