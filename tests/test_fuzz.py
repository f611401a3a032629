"""Schemathesis drives every operation from the app's own OpenAPI document, with an admin token.

Fails on any 5xx, and on any response that contradicts the document (status, content type, body schema,
headers). Bounded example counts keep it to seconds per operation.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from corral.main import create_app
from corral.wire.enums import Scope
from tests.conftest import IssueToken, bearer
from tests.support.databases import make_settings
from tests.support.fake_hub import FakeHub

ADMIN_HEADERS: dict[str, str] = {}
CONFIG = SchemathesisConfig.from_path(Path(__file__).with_name("schemathesis.toml"))


@pytest.fixture
def api_schema(database_url: str, issue_token: IssueToken) -> Iterator[object]:
    ADMIN_HEADERS.clear()
    ADMIN_HEADERS.update(bearer(issue_token(Scope.ADMIN, name="fuzzer")))
    # An empty fake Hub: registration by repo id and commit listings get its 404s, never the internet.
    with FakeHub().running() as hub:
        settings = make_settings(database_url, hub_endpoint=hub.url)
        yield schemathesis.openapi.from_asgi("/openapi.json", create_app(settings), config=CONFIG)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    # Schemathesis puts an Authorization header in every case that should have one, and leaves it out where it
    # tests that a missing token is refused: swap in a real token only where it put one.
    has_auth = "Authorization" in (case.headers or {})
    case.call_and_validate(headers=ADMIN_HEADERS if has_auth else {})
