"""The docs render in a real headless Chromium against a real `corral serve`, with the network cut off.

Every request the page makes is recorded; any that is not to the server itself fails the test, so a CDN
link sneaking back into the docs pages is caught.
"""

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.databases import offline_environment
from tests.support.server import wait_until_ready

CHROMIUM = os.environ.get("CORRAL_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("CORRAL_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(os.environ.get("CORRAL_TEST_ARTIFACTS", "test-artifacts"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("serve")
    environment = offline_environment(CORRAL_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'corral.db'}")
    return {**environment, "CORRAL_WORKDIR": str(workdir)}


@pytest.fixture(scope="module")
def server(server_settings: dict[str, str]) -> Iterator[str]:
    if not shutil.which(CHROMIUM):
        message = f"BROWSER MISSING: no chromium at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(message + "; CORRAL_REQUIRE_BROWSER=1 makes this a failure")
        pytest.skip(message)
    workdir = server_settings["CORRAL_WORKDIR"]
    port = _free_port()
    environment = server_settings
    process = subprocess.Popen(
        [sys.executable, "-m", "corral", "serve", "--port", str(port)],
        cwd=workdir,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ready(base, process)
        except RuntimeError as exc:  # its output says why
            output = process.stdout.read().decode() if process.stdout else ""
            pytest.fail(f"{exc}:\n{output}")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()


def _open(server: str, path: str, ready_selector: str, screenshot: str) -> tuple[str, list[str]]:
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    blocked: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            # Stopped in the browser by our Content-Security-Policy: never reached the network.
            page.on(
                "requestfailed",
                lambda request: (
                    blocked.append(request.url)
                    if (request.failure or "").lower() in ("csp", "net::err_blocked_by_csp")
                    else None
                ),
            )
            page.goto(server + path)
            page.wait_for_selector(ready_selector, timeout=30_000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=False)
            text = page.inner_text("body")
        finally:
            browser.close()
    return text, [url for url in requested if url not in blocked]


def _foreign(server: str, urls: list[str]) -> list[str]:
    own = urlsplit(server).netloc
    return [url for url in urls if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc != own]


def test_swagger_ui_renders_operations_offline(server: str) -> None:
    text, requested = _open(server, "/docs", ".opblock-summary-path", "docs.png")
    for operation in ("/v1/tokens", "/v1/tokens/current", "/v1/tokens/{token_id}", "/healthz", "/readyz"):
        assert operation in text
    assert "tokens" in text
    assert "operations" in text
    assert _foreign(server, requested) == []
    assert any(url.endswith("swagger-ui-bundle.js") for url in requested)


def test_redoc_renders_offline(server: str) -> None:
    text, requested = _open(server, "/redoc", "[data-section-id]", "redoc.png")
    assert "Issue a token; the secret is in this response only." in text
    assert _foreign(server, requested) == []


def test_html_pages_forbid_other_origins(server: str) -> None:
    for path in ("/docs", "/redoc"):
        policy = httpx.get(server + path).headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "https:" not in policy
        assert "*" not in policy


@pytest.fixture(scope="module")
def seeded(server: str, server_settings: dict[str, str]) -> str:
    """Two catalog models with imported openllm-v2 results, written through the API with a real token."""
    from tests.test_scores import openllm_results

    token = subprocess.run(
        [sys.executable, "-m", "corral", "token", "create", "--scope", "publish", "--name", "browser-test"],
        env=server_settings,
        cwd=server_settings["CORRAL_WORKDIR"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    for repo, level in (("meta-llama/Llama-3.1-8B-Instruct", 0.45), ("meta-llama/Llama-3.1-70B-Instruct", 0.7)):
        sha = f"{abs(hash(repo)):040d}"[:40]
        recorded = httpx.post(f"{server}/v1/models/{repo}/revisions", json={"sha": sha}, headers=headers)
        assert recorded.status_code == 201, recorded.text
        body = {"model": repo, "revision": sha, "suite": "openllm-v2", "results": openllm_results(level)}
        imported = httpx.post(f"{server}/v1/results/import", json=body, headers=headers)
        assert imported.status_code == 201, imported.text
    return server


def test_leaderboard_page_sorts_filters_and_draws_offline(seeded: str) -> None:
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.goto(seeded + "/leaderboards/openllm-v2")
            page.wait_for_selector("#leaderboard tbody tr")
            first = page.locator("#leaderboard tbody tr td.model").all_inner_texts()
            assert first == ["meta-llama/Llama-3.1-70B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"]
            assert page.locator("svg.chart circle").count() >= 2
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)

            page.click("#leaderboard th >> text=average")  # sorted best-first already: this flips it
            page.wait_for_url("**sort=average**")
            flipped = page.locator("#leaderboard tbody tr td.model").all_inner_texts()
            assert flipped == list(reversed(first))

            page.fill("input[name=max_parameters]", "10000000000")
            page.click("#filters button")
            page.wait_for_url("**max_parameters=10000000000**")
            assert page.locator("#leaderboard tbody tr td.model").all_inner_texts() == [
                "meta-llama/Llama-3.1-8B-Instruct"
            ]

            page.click("#leaderboard td.model a")
            page.wait_for_selector("#history tbody tr")
            assert page.locator("svg.chart line.whisker").count() >= 1
            assert "Llama 3.1" in page.inner_text("#licence")
            page.screenshot(path=str(ARTIFACTS / "model.png"), full_page=True)
        finally:
            browser.close()
    assert _foreign(seeded, requested) == []
