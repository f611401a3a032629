"""A database that answers but cannot take writes is told apart from one that is away: a full disk and a read-only
database are each named in the 503 of every write and in /readyz (no longer ready), reads go on, and the service is
ready again once the operator has fixed it.

The disks are real small filesystems mounted here (tmpfs): SQLite's file on one; PostgreSQL's database in a
tablespace on one. Mounting needs root, as the Slurm tests do (CI runs as root and sets CORRAL_REQUIRE_ROOT=1).
"""

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import errors, sql
from sqlalchemy.exc import DBAPIError, OperationalError

from corral.config import Settings
from corral.errors import database_unavailable
from corral.main import create_app
from corral.wire.enums import Scope
from tests.conftest import bearer, token_issuer
from tests.support import databases

REQUIRE_ROOT = os.environ.get("CORRAL_REQUIRE_ROOT") == "1"


def need_root() -> None:
    if os.geteuid() == 0 and shutil.which("mount"):
        return
    reason = "MOUNTING A SMALL DISK NEEDS ROOT: the disk-full and read-only tests cannot run"
    if REQUIRE_ROOT:
        pytest.fail(f"{reason} (CORRAL_REQUIRE_ROOT=1 makes this a failure)")
    pytest.skip(reason)


@contextmanager
def small_disk(folder: Path, megabytes: int, owner: str | None = None) -> Iterator[Path]:
    need_root()
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755", "tmpfs", str(folder)], check=True)
    try:
        if owner:
            shutil.chown(folder, owner, owner)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path) -> Path:
    """Write until the disk has no byte left; the file that took it all."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (2**20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(descriptor, b"\0" * size):
                    pass
    finally:
        os.close(descriptor)
    return filler


@pytest.fixture
def sqlite_on_a_small_disk(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with small_disk(tmp_path / "disk", 48) as disk:
        yield databases.sqlite_clone(sqlite_template, disk), disk


@pytest.fixture
def postgres_on_a_small_disk(postgres_template: str) -> Iterator[tuple[str, Path]]:
    """A database cloned into a tablespace on a small disk of its own (the server's own disk is left alone)."""
    name, space = databases.unique_name("corral_full"), f"corral_small_{uuid.uuid4().hex[:8]}"
    # Outside pytest's own folders (mode 700): PostgreSQL's user must reach it.
    where = Path(tempfile.mkdtemp(prefix="corral-pgdisk-", dir="/tmp"))
    where.chmod(0o755)
    with (
        small_disk(where, 96, owner="postgres") as disk,
        psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as admin,
    ):
        admin.execute(sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(sql.Identifier(space), sql.Literal(str(disk))))
        try:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} TABLESPACE {}").format(
                    sql.Identifier(name), sql.Identifier(postgres_template), sql.Identifier(space)
                )
            )
            try:
                yield databases.postgres_url(name), disk
            finally:
                databases.drop_postgres_database(name)
        finally:
            admin.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(sql.Identifier(space)))
    where.rmdir()


def licence(index: int) -> dict[str, object]:
    return {"slug": f"licence-{index}", "name": f"Licence {index}", "commercial_use": True}


def refused_write(client: TestClient, admin: dict[str, str], attempts: int = 1) -> dict[str, object]:
    """The first write the database refuses (a full page may still take a row or two: write until one fails)."""
    for index in range(attempts):
        answer = client.post("/v1/licenses", json=licence(1000 + index), headers=admin)
        if answer.status_code != 201:
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert int(answer.headers["retry-after"]) >= 30
            return dict(answer.json())
    raise AssertionError(f"{attempts} writes all went through")


def ready(client: TestClient) -> dict[str, object]:
    return dict(client.get("/readyz").json())


def admin_of(settings: Settings) -> dict[str, str]:
    return bearer(token_issuer(settings)(Scope.ADMIN, name="ops"))


def test_sqlite_on_a_full_disk(sqlite_on_a_small_disk: tuple[str, Path]) -> None:
    url, disk = sqlite_on_a_small_disk
    settings = databases.make_settings(url)
    admin = admin_of(settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/v1/licenses", json=licence(1), headers=admin).status_code == 201
        assert ready(client)["status"] == "ready"
        filler = fill(disk)
        problem = refused_write(client, admin)
        assert "the disk it writes to is full" in str(problem["detail"])
        assert "unreachable" not in str(problem["detail"])
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert "the disk it writes to is full" in not_ready.json()["detail"]
        assert client.get("/v1/licenses/licence-1", headers=admin).status_code == 200  # reads go on
        filler.unlink()  # the operator frees space
        assert ready(client)["writes"] == "ok"
        assert client.post("/v1/licenses", json=licence(2), headers=admin).status_code == 201


def test_each_refusal_of_a_write_is_named_by_its_cause() -> None:
    """The messages each database gives for each cause, as the drivers raise them (SQLite's read-only file is not
    played here: a filesystem cannot be made read-only under an open database)."""
    cases = {
        "database or disk is full": "disk full",
        "attempt to write a readonly database": "read-only",
        "database is locked": "busy",
        "unable to open database file": "unavailable",
    }
    for message, reason in cases.items():
        error = OperationalError("UPDATE x", {}, sqlite3.OperationalError(message))
        assert database_unavailable(error) == reason, message
    for code, reason in ((errors.DiskFull, "disk full"), (errors.ReadOnlySqlTransaction, "read-only")):
        assert database_unavailable(DBAPIError("UPDATE x", {}, code("no"))) == reason


def test_postgresql_on_a_full_disk(postgres_on_a_small_disk: tuple[str, Path]) -> None:
    url, disk = postgres_on_a_small_disk
    settings = databases.make_settings(url)
    admin = admin_of(settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/v1/licenses", json=licence(1), headers=admin).status_code == 201
        filler = fill(disk)
        problem = refused_write(client, admin, attempts=500)
        assert "the disk it writes to is full" in str(problem["detail"])
        assert client.get("/v1/licenses/licence-1", headers=admin).status_code == 200
        filler.unlink()
        assert client.post("/v1/licenses", json=licence(2), headers=admin).status_code == 201


def test_postgresql_read_only(postgres_template: str) -> None:
    with databases.postgres_clone(postgres_template) as url:
        settings = databases.make_settings(url)
        admin = admin_of(settings)
        name = sql.Identifier(url.rsplit("/", 1)[1])
        with psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as superuser:
            superuser.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name))
            with TestClient(create_app(settings), raise_server_exceptions=False) as client:
                assert "it is read-only" in str(refused_write(client, admin)["detail"])
                not_ready = client.get("/readyz")
                assert not_ready.status_code == 503
                assert "it is read-only" in not_ready.json()["detail"]
                assert client.get("/v1/licenses", headers=admin).status_code == 200  # reads go on
            superuser.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(name))
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            assert ready(client)["writes"] == "ok"
