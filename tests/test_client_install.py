"""The client and the HTTP commands need only httpx, pydantic, typer and rich: imported, and run, in a process where
every server and runner package is made unimportable."""

import subprocess
import sys

from corral.cli import SERVER_PACKAGES
from tests.support.server import ROOT

SERVER_ONLY = (*sorted(SERVER_PACKAGES), "lm_eval", "torch", "transformers")
SCRIPT = f"""
import sys
for name in {SERVER_ONLY!r}:
    sys.modules[name] = None  # `import name` now raises ImportError
import json, httpx
import corral.client, corral.console.commands, corral.wire.protocol
from corral.cli import cli
from corral.client import Corral

def answer(request):
    return httpx.Response(200, json={{"id": "0b6f5a0e-7c44-4a51-9f67-2d8f3f1b9c11", "name": "ci", "scope": "read",
        "key_id": "k", "runner_id": None, "created_at": "2026-01-01T00:00:00Z", "expires_at": None,
        "revoked_at": None, "last_used_at": None, "active": True}})
with Corral("http://corral.test", "t", transport=httpx.MockTransport(answer)) as client:
    assert client.whoami().scope.value == "read"
for argv in (["--help"], ["--version"], ["models", "list", "--help"], ["eval", "request", "--help"]):
    try:
        cli(argv, standalone_mode=False)
    except SystemExit:
        pass
print("ok")
"""


def test_client_and_http_commands_need_no_server_package() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
