"""Test databases: one migrated template per backend per worker, cloned for every test.

Alembic builds the template (never create_all), so every test runs on the schema the migrations make.
PostgreSQL clones with CREATE DATABASE ... TEMPLATE; SQLite copies the file.
"""

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from corral import migrate
from corral.config import Settings

POSTGRES_ADMIN_URL = os.environ.get("CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_POSTGRES = os.environ.get("CORRAL_REQUIRE_POSTGRES") == "1"
POSTGRES_SKIP_REASON = "PostgreSQL NOT REACHABLE"


# Nothing in the tests may reach the internet: unless a test points it at its fake Hub, the Hub endpoint is a
# closed local port (connections refused at once) and the background sync is off.
OFFLINE_HUB = {"hub_endpoint": "http://127.0.0.1:9", "hub_retries": 0, "hub_sync_interval_seconds": 0}


def offline_environment(**variables: str) -> dict[str, str]:
    """The environment for a `corral` subprocess: no inherited CORRAL_/HF_ settings, the Hub unreachable."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("CORRAL_", "HF_"))}
    environment["CORRAL_HUB_ENDPOINT"] = str(OFFLINE_HUB["hub_endpoint"])
    return environment | variables


def make_settings(database_url: str, **overrides: object) -> Settings:
    # _env_file=None and explicit values: a developer's .env or CORRAL_* variables cannot leak into tests.
    return Settings(_env_file=None, database_url=database_url, **(OFFLINE_HUB | overrides))  # type: ignore[call-arg]


def postgres_unreachable_reason() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"{POSTGRES_SKIP_REASON} at {POSTGRES_ADMIN_URL}: {str(exc).strip().splitlines()[0]}"


def _admin() -> psycopg.Connection:
    return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True)


def postgres_url(database: str) -> str:
    return make_url(POSTGRES_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def create_postgres_database(name: str, template: str | None = None) -> str:
    with _admin() as admin:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        admin.execute(statement)
    return postgres_url(name)


def drop_postgres_database(name: str) -> None:
    with _admin() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@contextmanager
def postgres_template() -> Iterator[str]:
    name = unique_name("corral_tpl")
    url = create_postgres_database(name)
    try:
        migrate.upgrade(make_settings(url))
        yield name
    finally:
        drop_postgres_database(name)


@contextmanager
def postgres_clone(template: str) -> Iterator[str]:
    name = unique_name("corral_test")
    url = create_postgres_database(name, template=template)
    try:
        yield url
    finally:
        drop_postgres_database(name)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def sqlite_template(directory: Path) -> Path:
    path = directory / "template.db"
    migrate.upgrade(make_settings(sqlite_url(path)))
    return path


def shared_sqlite_template(directory: Path) -> Path:
    """One template for many pytest sessions (scripts/mutation runs one per mutant): built once, then reused."""
    path = directory / "template.db"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        building = sqlite_template(Path(tempfile.mkdtemp(dir=directory)))
        os.replace(building, path)  # atomic: a concurrent session sees no file or a whole template
    return path


def sqlite_clone(template: Path, directory: Path) -> str:
    target = directory / "corral.db"
    shutil.copyfile(template, target)
    return sqlite_url(target)
