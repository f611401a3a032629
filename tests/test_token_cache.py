"""Verified tokens are cached per process (app/tokens/cache.py); a revoke reaches every worker at once.

`corral serve --workers 2` on PostgreSQL, a token cached by both workers (each of many keep-alive connections is
served by one worker, found through /proc), then revoked through the API: every connection, whichever worker it
talks to, is refused from the next request on, long before the cache's own bound (set to five minutes here).
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.wire.enums import Scope
from tests.conftest import IssueToken
from tests.support.databases import offline_environment
from tests.support.server import wait_until_ready
from tests.test_ops import free_port, worker_pids

CONNECTIONS = 24


def serving_pid(connection: http.client.HTTPConnection, candidates: list[int]) -> int:
    """The worker holding the server end of this connection: the process with a socket whose peer is ours."""
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == client_port:
            inodes.add(fields[9])
    for pid in candidates:
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return pid
    raise AssertionError(f"no worker holds the connection from port {client_port}")


def get(connection: http.client.HTTPConnection, path: str, token: str) -> tuple[int, dict[str, object]]:
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"{}")


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_revoked_token_is_refused_by_every_worker_at_once(
    database_url: str, issue_token: IssueToken, tmp_path: Path
) -> None:
    admin = issue_token(Scope.ADMIN, name="admin")
    reader = issue_token(Scope.READ, name="reader")
    port = free_port()
    environment = offline_environment(
        CORRAL_DATABASE_URL=database_url, CORRAL_PORT=str(port), CORRAL_TOKEN_CACHE_SECONDS="300"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "corral", "serve", "--workers", "2"],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    connections: list[http.client.HTTPConnection] = []
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", server, timeout=120)
        workers = worker_pids(server.pid)
        assert len(workers) == 2
        served_by: dict[int, list[http.client.HTTPConnection]] = {pid: [] for pid in workers}
        while min(len(held) for held in served_by.values()) < 2:  # every worker has cached the token
            assert len(connections) < 400, "the workers never shared the connections"
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            status, body = get(connection, "/v1/tokens/current", reader.token)
            assert (status, body["name"]) == (200, "reader")
            connections.append(connection)
            served_by[serving_pid(connection, workers)].append(connection)
        for connection in connections[:CONNECTIONS]:  # served from the cache now
            assert get(connection, "/v1/tokens/current", reader.token)[0] == 200

        revoker = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connections.append(revoker)
        revoker.request("DELETE", f"/v1/tokens/{reader.id}", headers={"Authorization": f"Bearer {admin.token}"})
        answer = revoker.getresponse()
        answer.read()
        assert answer.status == 204
        revoked_at = time.monotonic()
        refused_after: list[float] = []
        for held in served_by.values():
            for connection in held:
                while True:
                    status, body = get(connection, "/v1/tokens/current", reader.token)
                    if status == 401:
                        assert body["detail"] == "The token has been revoked."
                        refused_after.append(time.monotonic() - revoked_at)
                        break
                    assert status == 200
                    assert time.monotonic() - revoked_at < 5, "a worker kept accepting the revoked token"
                    time.sleep(0.01)
        assert len(refused_after) >= 4
        assert max(refused_after) < 5  # NOTIFY, not the five-minute bound of the cache
    finally:
        for connection in connections:
            connection.close()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
