"""The typed client (app.client) over a TestClient's application: what the CLI sends, with no server process."""

import httpx
from fastapi.testclient import TestClient

from corral.client import Corral


def typed_client(client: TestClient, headers: dict[str, str] | None = None) -> Corral:
    """Speaks for the token in `headers`, else in the TestClient's own; no retries (the app is in this process)."""
    token = (headers or client.headers).get("Authorization", "").removeprefix("Bearer ") or None

    def through_the_app(request: httpx.Request) -> httpx.Response:
        # Sent again by the TestClient (its own httpx), as the typed client built it: method, URL, headers, body.
        answer = client.request(request.method, str(request.url), headers=dict(request.headers), content=request.read())
        return httpx.Response(answer.status_code, headers=list(answer.headers.multi_items()), content=answer.content)

    return Corral(str(client.base_url), token, retries=0, transport=httpx.MockTransport(through_the_app))
