"""Fixtures: every API test runs twice, on SQLite and on PostgreSQL, each time on a fresh migrated database."""

import asyncio
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.config import Settings
from corral.db import in_unit_of_work
from corral.main import create_app
from corral.tables import ApiToken, Runner
from corral.tables.base import utcnow
from corral.tokens.schemas import TokenCreated
from corral.tokens.service import TokenService
from corral.wire.enums import RunnerState, Scope
from tests.support import databases, slurm
from tests.support.clock import ManualClock
from tests.support.evaluations import load_shipped_suites

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_available() -> str | None:
    """None when PostgreSQL answers; otherwise the reason (a failure when CORRAL_REQUIRE_POSTGRES=1)."""
    return databases.postgres_unreachable_reason()


def _need_postgres(reason: str | None) -> None:
    if reason is None:
        return
    if databases.REQUIRE_POSTGRES:
        pytest.fail(f"{reason} (CORRAL_REQUIRE_POSTGRES=1 makes this a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shared := os.environ.get("CORRAL_TEST_TEMPLATE_DIR"):
        return databases.shared_sqlite_template(Path(shared))
    return databases.sqlite_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def postgres_template(postgres_available: str | None) -> Iterator[str]:
    _need_postgres(postgres_available)
    with databases.postgres_template() as name:
        yield name


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of the parametrized backend."""
    if backend == "sqlite":
        yield databases.sqlite_clone(request.getfixturevalue("sqlite_template"), tmp_path)
        return
    template = request.getfixturevalue("postgres_template")
    with databases.postgres_clone(template) as url:
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return databases.make_settings(database_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


IssueToken = Callable[..., TokenCreated]


def token_issuer(settings: Settings) -> IssueToken:
    """Issue a token straight through the service (as `corral token create` does), outside any request."""

    def issue(scope: Scope | str = Scope.ADMIN, name: str = "test", expires_at: datetime | None = None) -> TokenCreated:
        scope = Scope(scope)

        async def work(session: AsyncSession) -> TokenCreated:
            runner_id = None
            if scope == Scope.RUNNER:  # a runner token is bound to a real runner
                runner = Runner(name=f"runner-{uuid.uuid4().hex[:8]}", state=RunnerState.ACTIVE)
                session.add(runner)
                await session.flush()
                runner_id = runner.id
            return await TokenService(session).issue(name=name, scope=scope, expires_at=expires_at, runner_id=runner_id)

        return asyncio.run(in_unit_of_work(settings, work))

    return issue


@pytest.fixture
def issue_token(settings: Settings) -> IssueToken:
    return token_issuer(settings)


def expire_now(settings: Settings, token_id: uuid.UUID) -> None:
    """The token's expiry moves into the past, as if its time had run out (no waiting for it)."""

    async def work(session: AsyncSession) -> None:
        await session.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(expires_at=utcnow() - timedelta(seconds=1))
        )

    asyncio.run(in_unit_of_work(settings, work))


def bearer(token: TokenCreated | str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token if isinstance(token, str) else token.token}"}


@pytest.fixture
def admin_headers(issue_token: IssueToken) -> dict[str, str]:
    return bearer(issue_token(Scope.ADMIN, name="admin"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    for marker, words in (
        (
            databases.POSTGRES_SKIP_REASON,
            "PostgreSQL tests were SKIPPED: the server was not reachable. Half of the database coverage did not "
            "run. Set CORRAL_REQUIRE_POSTGRES=1 (as .ci/run does) to make this a failure.",
        ),
        (
            slurm.SKIP_REASON,
            "Slurm tests were SKIPPED: slurmctld, slurmd or munged is not installed (scripts/test installs them "
            "as root). Set CORRAL_REQUIRE_SLURM=1 (as .ci/run does) to make this a failure.",
        ),
    ):
        missing = [report for report in skipped if marker in str(report.longrepr)]
        if missing:
            bar = "!" * 78
            terminalreporter.write_line(bar, red=True, bold=True)
            terminalreporter.write_line(f"{len(missing)} {words}", red=True, bold=True)
            terminalreporter.write_line(bar, red=True, bold=True)


@pytest.fixture
def catalog(settings: Settings) -> None:
    """The shipped Llama catalog, loaded into this test's database through the real loader."""
    from corral.catalog.loader import load_catalog

    asyncio.run(in_unit_of_work(settings, load_catalog))


@pytest.fixture
def publish_headers(issue_token: IssueToken) -> dict[str, str]:
    return bearer(issue_token(Scope.PUBLISH, name="ci"))


@pytest.fixture(autouse=True, scope="session")
def _hub_logs_through_root() -> None:
    # huggingface_hub binds a stderr handler at import, which outlives pytest's capture of that stream.
    hub_logger = logging.getLogger("huggingface_hub")
    hub_logger.handlers[:] = []
    hub_logger.propagate = True


@pytest.fixture
def fast_settings(database_url: str) -> Settings:
    """Short leases and no backoff, so that lapses and retries happen within a test; the reaper runs by hand."""
    return databases.make_settings(
        database_url, lease_seconds=5, retry_backoff_seconds=0, reaper_interval_seconds=0, claim_poll_seconds=0.2
    )


@pytest.fixture
def clock() -> ManualClock:
    """The queue's clock in `queue_client`: it stands still until the test moves it."""
    return ManualClock()


@pytest.fixture
def queue_client(fast_settings: Settings, clock: ManualClock) -> Iterator[TestClient]:
    load_shipped_suites(fast_settings)
    with TestClient(create_app(fast_settings, clock=clock), raise_server_exceptions=False) as test_client:
        yield test_client
