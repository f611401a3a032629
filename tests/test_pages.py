"""The web pages: human sizes, benchmark names, filters that exports carry, charts people can read, HTML errors
for browsers, HEAD, and the models, evaluation, queue and runners pages, rendered from a seeded database."""

import csv
import html
import io
import re
import uuid

import pytest
from fastapi.testclient import TestClient

from corral.config import Settings
from corral.hardware.estimator import PRECISION_BITS
from corral.web import formatting
from corral.web.charts import Bar, Point, bars, scatter
from tests.support.evaluations import lease, make_model, make_runner
from tests.test_queue import claim, request_smoke
from tests.test_scores import import_results, openllm_results

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
SIZES = {"acme/m405": 405_000_000, "acme/b8": 8_030_261_248, "acme/b70": 70_553_706_496}
MODEL_CELL = re.compile(r'<td class="model"><a href="/models/([^"]+)">')


def listed(page: str) -> list[str]:
    """The models a leaderboard or the models index lists, in order."""
    return MODEL_CELL.findall(page)


@pytest.fixture
def sized(client: TestClient, settings: Settings, catalog: None, publish_headers: dict[str, str]) -> dict[str, str]:
    """Three scored models of 405 M, 8.03 B and 70.6 B parameters (the largest an instruct model); repo -> sha."""
    from tests.support.evaluations import load_shipped_suites

    load_shipped_suites(settings)
    shas = {}
    for (repo, count), level in zip(SIZES.items(), (0.3, 0.5, 0.7), strict=True):
        kind = "instruct" if repo == "acme/b70" else "base"
        shas[repo] = make_model(client, publish_headers, repo, family="llama-3.1", kind=kind, parameter_count=count)
        assert import_results(client, publish_headers, repo, shas[repo], openllm_results(level)).status_code == 201
    return shas


def test_sizes_are_read_and_written_as_people_do() -> None:
    assert formatting.parameters(70_553_706_496) == "70.6 B"
    assert formatting.parameters(8_030_261_248) == "8.0 B"
    assert formatting.parameters(405_000_000) == "405.0 M"
    assert formatting.parameters(None) == "—"
    written = {
        "8B": 8 * 10**9,
        "8b": 8 * 10**9,
        "70B": 70 * 10**9,
        "1.5B": 1_500_000_000,
        "405M": 405_000_000,
        "8000000000": 8_000_000_000,
        "8,000,000,000": 8_000_000_000,
        " 2 T ": 2 * 10**12,
    }
    for text, count in written.items():
        assert formatting.parse_parameters(text) == count, text
    # As models are named (their counts truncated): "8B" keeps Llama 3.1 8B (8.03 B), "70B" keeps 70.6 B.
    limits = {"8B": 8_999_999_999, "70B": 70_999_999_999, "1.5B": 1_599_999_999, "8000000000": 8_000_000_000}
    for text, most in limits.items():
        limit = formatting.parameter_limit(text)
        assert limit is not None
        assert limit[0] == most, text
    assert formatting.parameter_limit("") is None
    for bad in ("eight", "8 GB", "1.5", "8B8", "1.5555555555B"):
        with pytest.raises(ValueError, match="cannot read"):
            formatting.parse_parameters(bad)


def test_scores_never_read_negative_zero() -> None:
    assert formatting.score(-0.0, 1) == "0.0"
    assert formatting.score(-0.04, 1) == "0.0"
    assert formatting.score(-0.06, 1) == "-0.1"  # a real negative stays negative
    chart = bars([Bar("GPQA", -0.0, 0.4), Bar("MuSR", 0.0, None)])
    assert "-0.0" not in chart
    assert ">0.0 ± 0.8<" in chart


def test_bar_values_sit_right_of_every_whisker() -> None:
    chart = bars([Bar("IFEval", 99.0, 5.0), Bar("BBH", 50.0, 30.0), Bar("GPQA", 0.0, 3.0)])
    whisker_ends = [float(x) for x in re.findall(r'class="whisker" x1="[\d.]+" y1="[\d.]+" x2="([\d.]+)"', chart)]
    value_starts = re.findall(r'<text class="value" x="([\d.]+)"[^>]*text-anchor="end"[^>]*>([^<]+)<', chart)
    assert len(whisker_ends) == 3
    assert [text for _, text in value_starts] == ["99.0 ± 9.8", "50.0 ± 58.8", "0.0 ± 5.9"]
    # Right-aligned at the chart's edge, in a column 120 wide that no bar or whisker (clamped to 0-100) enters.
    assert all(float(x) == 716 for x, _ in value_starts)
    assert max(whisker_ends) <= 720 - 120
    assert 'width="100%"' in chart
    assert 'viewBox="0 0 720 ' in chart
    assert "IFEval" in chart


def test_scatter_has_named_points_labelled_axes_and_readable_ticks() -> None:
    points = [
        Point("acme/b8 (bf16)", 8_030_261_248, 41.5, "llama-3.1"),
        Point("acme/b70 (bf16)", 70_553_706_496, 63.0, "llama-3.1"),
        Point("acme/b405 (bf16)", 405_853_388_800, 12.0, "llama-3.1"),
    ]
    chart = scatter(points)
    ticks = re.findall(r'<text class="tick x"[^>]*>([^<]+)</text>', chart)
    assert ticks == ["1B", "10B", "100B", "1T"]
    assert "1e9" not in chart
    assert "1e10" not in chart
    assert re.findall(r'<text class="tick y"[^>]*>([^<]+)</text>', chart) == ["0", "20", "40", "60", "80"]
    assert "parameters (log scale)</text>" in chart
    assert "average score (0-100)</text>" in chart
    titles = re.findall(r"<circle[^>]*><title>([^<]+)</title>", chart)
    assert titles[1] == "acme/b70 (bf16): 70.6 B parameters, average 63.00"
    assert len(titles) == 3
    assert 'width="100%"' in chart
    assert 'viewBox="0 0 720 360"' in chart
    assert 'width="640"' not in chart


def test_leaderboard_shows_names_sizes_and_links(client: TestClient, sized: dict[str, str]) -> None:
    page = client.get("/leaderboards/openllm-v2").text
    assert listed(page) == ["acme/b70", "acme/b8", "acme/m405"]
    # Benchmarks by their names, lm-eval's names in the tooltip only.
    headers = re.findall(r'<th class="[^"]*" title="([^"]*)"><a href="[^"]*">([^<]+)</a></th>', page)
    names = [name for _, name in headers]
    assert names[-6:] == ["IFEval", "BBH", "MATH Lvl 5", "GPQA", "MuSR", "MMLU-PRO"]
    tooltip = {name: tip for tip, name in headers}["MATH Lvl 5"]
    assert "lm-eval task leaderboard_math_hard" in html.unescape(tooltip)
    assert ">math_hard<" not in page
    assert ">leaderboard_math_hard<" not in page
    # Human sizes; the exact count only as a tooltip.
    assert ">70.6 B</td>" in page
    assert ">8.0 B</td>" in page
    assert ">405.0 M</td>" in page
    assert ">70,553,706,496<" not in page
    row = page[page.index('href="/models/acme/b70"') :].split("</tr>")[0]
    assert '<a href="/hub/acme/b70"' in row
    assert "<td>instruct</td>" in row
    assert "<td>llama3.1</td>" in row  # the family's licence
    hub = client.get("/hub/acme/b70", follow_redirects=False)
    endpoint = client.app.state.corral.settings.hub_endpoint  # type: ignore[attr-defined]
    assert (hub.status_code, hub.headers["location"]) == (307, f"{endpoint}/acme/b70")
    assert "https://" not in page  # every Hub link goes through /hub: the page names no other origin
    # The chart: readable ticks and named points.
    assert "<title>acme/b8 (bf16): 8.0 B parameters, average" in page
    assert ">10B</text>" in page


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("8B", ["acme/b8", "acme/m405"]),
        ("8b", ["acme/b8", "acme/m405"]),
        ("70B", ["acme/b70", "acme/b8", "acme/m405"]),
        ("1.5B", ["acme/m405"]),
        ("8000000000", ["acme/m405"]),
        ("405M", ["acme/m405"]),
        ("404M", []),
    ],
)
def test_max_parameters_reads_sizes_as_typed(
    client: TestClient, sized: dict[str, str], typed: str, expected: list[str]
) -> None:
    page = client.get("/leaderboards/openllm-v2", params={"max_parameters": typed}).text
    assert listed(page) == expected
    assert f'value="{typed}"' in page  # the field keeps what was typed
    models = client.get("/models", params={"max_parameters": typed, "q": "acme/"}).text
    assert sorted(listed(models)) == sorted(expected)


def test_an_unreadable_size_is_said_not_ignored(client: TestClient, sized: dict[str, str]) -> None:
    page = client.get("/leaderboards/openllm-v2", params={"max_parameters": "eight"}).text
    assert "max parameters: cannot read &#39;eight&#39; as a size" in page
    assert len(listed(page)) == 3


def test_exports_carry_the_filters(client: TestClient, sized: dict[str, str]) -> None:
    filters = {"max_parameters": "8B", "family": "llama-3.1", "kind": "base", "precision": "bf16", "sort": "average"}
    page = client.get("/leaderboards/openllm-v2", params=filters).text
    links = dict(re.findall(r'<a href="(/v1/leaderboards/openllm-v2\?[^"]+)">(CSV|Markdown|JSON)</a>', page))
    assert len(links) == 3
    exported = {name: html.unescape(href) for href, name in links.items()}
    for href in exported.values():
        for part in ("max_parameters=8999999999", "family=llama-3.1", "kind=base", "precision=bf16", "sort=average"):
            assert part in href
    answer = client.get(exported["CSV"])
    assert answer.headers["content-type"].startswith("text/csv")
    assert [row["model"] for row in csv.DictReader(io.StringIO(answer.text))] == ["acme/m405", "acme/b8"]
    items = client.get(exported["JSON"]).json()["items"]
    assert [item["model"] for item in items] == ["acme/m405", "acme/b8"]


def test_name_search_licence_and_type_filters(client: TestClient, sized: dict[str, str]) -> None:
    assert listed(client.get("/leaderboards/openllm-v2", params={"q": "B7"}).text) == ["acme/b70"]
    assert listed(client.get("/leaderboards/openllm-v2", params={"kind": "instruct"}).text) == ["acme/b70"]
    assert len(listed(client.get("/leaderboards/openllm-v2", params={"license": "llama3.1"}).text)) == 3
    assert listed(client.get("/leaderboards/openllm-v2", params={"license": "llama3.2"}).text) == []


def test_models_index_searches_filters_and_links(
    client: TestClient, sized: dict[str, str], publish_headers: dict[str, str]
) -> None:
    make_model(
        client, publish_headers, "other/chat-3b", family="llama-3.2", kind="instruct", parameter_count=3_212_749_824
    )

    def ours(**params: str) -> list[str]:  # the shipped catalog's Llama models are listed too
        return [
            repo for repo in listed(client.get("/models", params=params).text) if repo.startswith(("acme/", "other/"))
        ]

    page = client.get("/models").text
    assert ours() == ["acme/b70", "acme/b8", "acme/m405", "other/chat-3b"]
    assert "meta-llama/Llama-3.1-8B" in listed(page)
    assert ">3.2 B</td>" in page
    assert ">70.6 B</td>" in page
    assert '<a href="/hub/other/chat-3b"' in page
    assert listed(client.get("/models", params={"q": "other/CHAT"}).text) == ["other/chat-3b"]
    assert ours(family="llama-3.2") == ["other/chat-3b"]
    assert ours(kind="instruct") == ["acme/b70", "other/chat-3b"]
    assert ours(license="llama3.2") == ["other/chat-3b"]
    assert ours(license="llama3.1") == ["acme/b70", "acme/b8", "acme/m405"]
    assert ours(sort="-parameter_count")[0] == "acme/b70"
    assert ours(sort="parameter_count")[0] == "acme/m405"


def test_model_page_hardware_for_every_precision(client: TestClient, sized: dict[str, str]) -> None:
    page = client.get("/models/acme/b8").text
    table = page[page.index('<table id="hardware">') :].split("</table>")[0]
    rows = re.findall(r"<tr>\s*<td>(\w+)</td>(.*?)</tr>", table, re.S)
    assert [precision for precision, _ in rows] == list(PRECISION_BITS)
    for precision, cells in rows:
        # The figures are the estimator's, as GET /v1/models/{repo}/requirements reports them.
        full = client.get("/v1/models/acme/b8/requirements", params={"precision": precision}).json()
        short = client.get(
            "/v1/models/acme/b8/requirements", params={"precision": precision, "context_tokens": 4096}
        ).json()
        assert formatting.gib(full["inference"]["weights"]["bytes"]) in cells
        assert formatting.gib(full["inference"]["total"]["bytes"]) in cells
        assert formatting.gib(short["inference"]["total"]["bytes"]) in cells
    assert ">Parameters</dt><dd" in page
    assert ">8.0 B</dd>" in page


@pytest.mark.usefixtures("catalog")
def test_model_page_says_what_the_architecture_adds_and_how_it_is_stored(client: TestClient) -> None:
    maverick = client.get("/models/meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8").text
    line = maverick[maverick.index('id="architecture">') :].split("</dd>")[0]
    assert "48 layers of 5,120" in line
    assert "128 experts in every second layer, 1 active per token" in line
    assert "an image encoder of 34 layers of 1,408" in line
    assert "stored with its routed experts in fp8 (2 layers kept in bf16)" in line
    table = maverick[maverick.index('<table id="hardware">') :].split("</table>")[0]
    fp8_row = re.search(r"<tr>\s*<td>fp8</td>(.*?)</tr>", table, re.S)
    assert fp8_row is not None
    assert formatting.gib(432_853_249_024) in fp8_row.group(1)  # the stored size, not one byte a parameter
    assert "as stored" in maverick
    vision = client.get("/models/meta-llama/Llama-3.2-90B-Vision").text
    assert "20 of the layers cross-attention to images" in vision


def test_model_page_bars_use_benchmark_names(client: TestClient, sized: dict[str, str]) -> None:
    page = client.get("/models/acme/b70").text
    chart = page[page.index('aria-label="Normalized score per task"') :].split("</svg>")[0]
    labels = re.findall(r'<text x="[\d.]+" y="[\d.]+" text-anchor="end" font-size="13">([^<]+)</text>', chart)
    assert labels == ["IFEval", "BBH", "MATH Lvl 5", "GPQA", "MuSR", "MMLU-PRO"]
    assert "leaderboard_" not in re.sub(r"<title>.*?</title>", "", chart)
    assert 'class="whisker"' in chart
    assert "-0.0" not in page


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/models/acme/nothing", 404),
        ("/leaderboards/no-such-suite", 404),
        (f"/evaluations/{uuid.UUID(int=7)}", 404),
        ("/evaluations/not-an-id", 422),
        ("/leaderboards/openllm-v2?sort=nothing", 422),
    ],
)
def test_browsers_get_html_errors_and_api_clients_problem_json(
    client: TestClient, sized: dict[str, str], path: str, status: int
) -> None:
    api = client.get(path)
    assert api.status_code == status
    assert api.headers["content-type"] == "application/problem+json"
    shown = client.get(path, headers=BROWSER)
    assert shown.status_code == status
    assert shown.headers["content-type"].startswith("text/html")
    assert f'<h1 id="error-status">{status} · ' in shown.text
    if status == 404:  # the problem's own detail, word for word
        assert api.json()["detail"] in html.unescape(shown.text)
    assert "{" not in shown.text.split("<main>")[1]  # no JSON on the page


def test_pages_answer_head(client: TestClient, sized: dict[str, str]) -> None:
    evaluation = client.get("/v1/evaluations").json()["items"][0]["id"]
    for path in (
        "/leaderboards/openllm-v2",
        "/models",
        "/models/acme/b8",
        f"/evaluations/{evaluation}",
        "/queue",
        "/runners",
    ):
        answer = client.head(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.content == b""
    assert client.head("/", follow_redirects=False).status_code == 307


def test_evaluation_queue_and_runner_pages_show_live_state(
    queue_client: TestClient, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "gpu-box-1", memory_gib=80, count=8)
    requested = request_smoke(client, publish_headers, sha)
    first = claim(client, runner)
    assert first is not None
    beat = client.post(
        f"/v1/runner/attempts/{first['attempt_id']}/heartbeat",
        json={"progress": {"overall": 0.42, "stage": "loglikelihood"}, "external_ref": "slurm:4242"},
        headers=lease(first, runner),
    )
    assert beat.status_code == 200, beat.text
    log = b"loading weights\nKeyError: 'lm_head.weight'\n"
    appended = client.patch(
        f"/v1/runner/attempts/{first['attempt_id']}/log",
        content=log,
        headers={**lease(first, runner), "Content-Type": "text/plain", "Content-Range": f"bytes 0-{len(log) - 1}"},
    )
    assert appended.status_code == 202, appended.text

    queue = client.get("/queue").text
    running = queue[queue.index('<table id="running">') :].split("</table>")[0]
    assert "gpu-box-1" in running
    assert "42 %" in running
    assert "slurm:4242" in running
    assert "loglikelihood" in running
    queued = queue[queue.index('<table id="queued">') :].split("</table>")[0]
    assert f'href="/evaluations/{requested["id"]}"' in queued
    waiting = client.get("/v1/queue").json()["entries"][0]["waiting_for"]
    assert html.escape(waiting) in queued
    assert "1 job queued, 1 running." in queue

    runners = client.get("/runners").text
    row = runners[runners.index('<td class="name">gpu-box-1</td>') :].split("</tr>")[0]
    assert '<td class="online">online</td>' in row
    assert '<td class="state active">active</td>' in row
    assert "8 x test-gpu (80.0 GiB each)" in row
    assert "1 / 1" in row

    failed = client.post(
        f"/v1/runner/attempts/{first['attempt_id']}/fail",
        json={"category": "model_error", "message": "KeyError: 'lm_head.weight' while loading"},
        headers=lease(first, runner),
    )
    assert failed.status_code == 200, failed.text
    page = client.get(f"/evaluations/{requested['id']}").text
    job = page[page.index('id="job-0"') :].split("</section>")[0]
    attempt = job[job.index('<table class="attempts">') :].split("</table>")[0]
    assert "gpu-box-1" in attempt
    assert "slurm:4242" in attempt
    assert '<td class="state failed">failed</td>' in attempt
    assert "model_error: KeyError: &#39;lm_head.weight&#39; while loading" in attempt
    assert f'href="/v1/attempts/{first["attempt_id"]}/log"' in attempt
    assert "KeyError: &#39;lm_head.weight&#39;\n</pre>" in job  # the log tail
    provenance = page[page.index('<dl id="provenance">') :].split("</dl>")[0]
    assert f"<code>{sha}</code>" in provenance  # the full revision sha
    assert 'href="/leaderboards/smoke">smoke</a> version' in provenance
    assert "(requested; no results yet)" in provenance  # lm-eval version: what was asked, none reported yet


def test_a_page_that_needs_a_token_says_so_in_html(database_url: str) -> None:
    from corral.main import create_app
    from tests.support.databases import make_settings

    with TestClient(create_app(make_settings(database_url, public_reads=False))) as private:
        shown = private.get("/models", headers=BROWSER)
        assert shown.status_code == 401
        assert shown.headers["content-type"].startswith("text/html")
        assert shown.headers["www-authenticate"] == 'Bearer realm="corral"'
        assert "This operation needs a token" in shown.text
        assert private.get("/models").headers["content-type"] == "application/problem+json"


def test_evaluation_page_of_imported_results(client: TestClient, sized: dict[str, str]) -> None:
    [evaluation] = [item for item in client.get("/v1/evaluations").json()["items"] if item["model"] == "acme/b8"]
    page = client.get(f"/evaluations/{evaluation['id']}").text
    assert '<p id="state" class="state succeeded">succeeded</p>' in page
    scores = page[page.index('<table id="scores">') :].split("</table>")[0]
    names = re.findall(r'<tr><td title="[^"]*">([^<]+)</td>', scores)
    assert names == ["IFEval", "BBH", "MATH Lvl 5", "GPQA", "MuSR", "MMLU-PRO"]  # the suite's order, on any database
    provenance = page[page.index('<dl id="provenance">') :].split("</dl>")[0]
    assert "<dt>lm-eval</dt><dd>0.4.13 (from the results)</dd>" in provenance
    assert f"<code>{sized['acme/b8']}</code>" in provenance
