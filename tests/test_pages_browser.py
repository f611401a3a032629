"""Every page in a real headless Chromium against a real `corral serve`, at desktop and phone width, offline.

Each page must fit its width (no sideways scrolling of the document: wide tables scroll in their own box),
make no request to another origin, and log no console error (a Content-Security-Policy violation is one).
Screenshots go to CORRAL_SCREENSHOT_DIR when set, else to the test's tmp_path.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.databases import offline_environment
from tests.support.server import wait_until_ready
from tests.test_docs_browser import CHROMIUM, CHROMIUM_ARGS, REQUIRE_BROWSER, _foreign, _free_port
from tests.test_scores import openllm_results

pytestmark = pytest.mark.browser
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A served Corral with scores, a runner, and an evaluation with one job running and one queued."""
    if not shutil.which(CHROMIUM):
        message = f"BROWSER MISSING: no chromium at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(message + "; CORRAL_REQUIRE_BROWSER=1 makes this a failure")
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("pages")
    environment = {
        **offline_environment(CORRAL_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'corral.db'}"),
        "CORRAL_WORKDIR": str(workdir),
    }
    port = _free_port()
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
        yield {"base": base, **_seed(base, environment, workdir)}
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()


def _seed(base: str, environment: dict[str, str], workdir: Path) -> dict[str, Any]:
    token = subprocess.run(
        [sys.executable, "-m", "corral", "token", "create", "--scope", "admin", "--name", "pages-browser"],
        env=environment,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    shas = {}
    for repo, level in (("meta-llama/Llama-3.1-8B-Instruct", 0.45), ("meta-llama/Llama-3.1-70B-Instruct", 0.7)):
        sha = f"{abs(hash(repo)):040d}"[:40]
        shas[repo] = sha
        assert httpx.post(f"{base}/v1/models/{repo}/revisions", json={"sha": sha}, headers=headers).status_code == 201
        body = {"model": repo, "revision": sha, "suite": "openllm-v2", "results": openllm_results(level)}
        assert httpx.post(f"{base}/v1/results/import", json=body, headers=headers).status_code == 201
    runner_body = {
        "name": "gpu-box-with-a-long-name-1",
        "backends": ["hf", "vllm"],
        "lm_eval_version": "0.4.13",
        "accelerators": [{"kind": "nvidia-h100-80gb", "memory_bytes": 80 * 2**30, "count": 8, "nodes": 2}],
        "max_concurrent_jobs": 1,
    }
    created = httpx.post(f"{base}/v1/runners", json=runner_body, headers=headers)
    assert created.status_code == 201, created.text
    runner = {"Authorization": f"Bearer {created.json()['token']}"}
    repo = "meta-llama/Llama-3.1-8B-Instruct"
    request = {"model": repo, "revision": shas[repo], "suite": "smoke", "queue_without_runner": True, "force": True}
    evaluation = httpx.post(f"{base}/v1/evaluations", json=request, headers=headers)
    assert evaluation.status_code == 201, evaluation.text
    claimed = httpx.post(f"{base}/v1/runner/jobs/claim", headers=runner, timeout=30)
    assert claimed.status_code == 201, claimed.text
    held = {**runner, "Corral-Lease-Token": claimed.json()["lease_token"]}
    attempt = claimed.json()["attempt_id"]
    beat = {"progress": {"overall": 0.3, "stage": "loglikelihood"}, "external_ref": "slurm:4242"}
    httpx.post(f"{base}/v1/runner/attempts/{attempt}/heartbeat", json=beat, headers=held)
    log = b"loading weights\n" + b"a very long log line without any space " * 8 + b"\n"
    range_header = {"Content-Type": "text/plain", "Content-Range": f"bytes 0-{len(log) - 1}"}
    httpx.patch(f"{base}/v1/runner/attempts/{attempt}/log", content=log, headers={**held, **range_header})
    return {"evaluation": evaluation.json()["id"]}


def _pages(site: dict[str, Any]) -> dict[str, str]:
    return {
        "leaderboard": "/leaderboards/openllm-v2",
        "leaderboard-filtered": "/leaderboards/openllm-v2?max_parameters=8B&q=llama",
        "models": "/models",
        "model": "/models/meta-llama/Llama-3.1-70B-Instruct",
        "model-scout": f"/models/{SCOUT}",
        "evaluation": f"/evaluations/{site['evaluation']}",
        "queue": "/queue",
        "runners": "/runners",
        "error": "/models/acme/nothing",
    }


def _screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("CORRAL_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.mark.parametrize("width", list(WIDTHS))
def test_every_page_fits_its_width_offline_without_errors(site: dict[str, Any], width: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    base = site["base"]
    screenshots = _screenshots(tmp_path)
    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            viewport_w, viewport_h = WIDTHS[width]
            page = browser.new_page(viewport={"width": viewport_w, "height": viewport_h})
            page.on("request", lambda request: requested.append(request.url))
            current = {"name": ""}
            page.on(
                "console",
                lambda message: (
                    problems.append(f"{current['name']}: console {message.type}: {message.text}")
                    if message.type == "error"
                    else None
                ),
            )
            page.on("pageerror", lambda error: problems.append(f"{current['name']}: page error: {error}"))
            page.on(
                "response",
                lambda response: (
                    problems.append(f"{current['name']}: {response.status} from {response.url}")
                    if response.status >= 400 and current["name"] != "error"
                    else None
                ),
            )
            for name, path in _pages(site).items():
                current["name"] = name
                answer = page.goto(base + path)
                assert answer is not None
                if name == "error":
                    assert answer.status == 404
                    assert "No model" in page.inner_text("#error-detail")
                    # Chromium logs the document's own 404 as a console error: that one is expected.
                    problems[:] = [p for p in problems if not p.startswith("error: console error: Failed to load")]
                else:
                    assert answer.status == 200, (name, answer.status)
                scroll_width, inner_width = page.evaluate(
                    "() => [document.documentElement.scrollWidth, window.innerWidth]"
                )
                assert scroll_width <= inner_width, f"{name} at {width}: {scroll_width}px wide in {inner_width}px"
                page.screenshot(path=str(screenshots / f"page-{name}-{width}.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert _foreign(base, requested) == []
    assert any(url.endswith("/static/corral.css") for url in requested)


def test_pages_read_as_issue_18_asks(site: dict[str, Any]) -> None:
    """What a person sees: benchmark names, human sizes, a chart with named points, hardware per precision."""
    from playwright.sync_api import sync_playwright

    base = site["base"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(base + "/leaderboards/openllm-v2")
            headers = page.locator("#leaderboard thead th").all_inner_texts()
            assert headers[-6:] == ["IFEval", "BBH", "MATH Lvl 5", "GPQA", "MuSR", "MMLU-PRO"]
            assert "70.6 B" in page.inner_text("#leaderboard tbody")
            titles = page.locator("svg.chart circle title").all_text_contents()
            assert any(title.startswith("meta-llama/Llama-3.1-70B-Instruct (bf16): 70.6 B") for title in titles)
            chart_box = page.locator("svg.chart").first.bounding_box()
            assert chart_box is not None
            assert chart_box["width"] <= 390  # scaled to the phone, not a fixed 640 px

            page.fill("input[name=max_parameters]", "8B")
            page.click("#filters button")
            page.wait_for_url("**max_parameters=8B**")
            assert page.locator("#leaderboard td.model").all_inner_texts() == ["meta-llama/Llama-3.1-8B-Instruct"]
            assert "max_parameters=8999999999" in (page.get_attribute("#exports a >> nth=0", "href") or "")

            page.goto(base + f"/models/{SCOUT}")
            precisions = page.locator("#hardware tbody tr td:first-child").all_inner_texts()
            assert precisions == ["fp32", "bf16", "fp16", "fp8", "int8", "int4"]
        finally:
            browser.close()
