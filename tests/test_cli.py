"""The `corral` command line, run as a real process: settings errors, tokens, and the schema guard on serve."""

import json
import subprocess
import sys
from pathlib import Path

from corral import migrate
from corral.config import Settings
from tests.support.databases import offline_environment

CORRAL = [sys.executable, "-m", "corral"]


def run(args: list[str], database_url: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = offline_environment(CORRAL_DATABASE_URL=database_url, **env)
    return subprocess.run(CORRAL + args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)


def test_invalid_setting_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    result = run(["serve"], "sqlite+aiosqlite:///x.db", tmp_path, CORRAL_PAGE_LIMIT_MAX="lots")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "CORRAL_PAGE_LIMIT_MAX" in result.stderr
    bad_db = run(["serve"], "mysql://root@localhost/x", tmp_path)
    assert bad_db.returncode == 2
    assert "CORRAL_DATABASE_URL" in bad_db.stderr
    assert "Traceback" not in bad_db.stderr + result.stderr


def test_hub_token_never_echoed_in_settings_errors(tmp_path: Path) -> None:
    result = run(
        ["serve"],
        "sqlite+aiosqlite:///x.db",
        tmp_path,
        CORRAL_HUB_TOKEN="hf_supersecret",
        CORRAL_HUB_ENDPOINT="not a url hf_supersecret",
    )
    assert result.returncode == 2
    assert "CORRAL_HUB_ENDPOINT" in result.stderr
    assert "hf_supersecret" not in result.stderr


def test_token_create_prints_secret_alone_on_stdout(settings: Settings, tmp_path: Path) -> None:
    result = run(["token", "create", "--scope", "admin", "--name", "bootstrap"], settings.database_url, tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("crl_")
    assert "\n" not in token
    assert "shown only this once" in result.stderr
    assert token not in result.stderr

    listed = run(["token", "list"], settings.database_url, tmp_path)
    record = json.loads(listed.stdout.splitlines()[0])
    assert record["name"] == "bootstrap"
    assert record["scope"] == "admin"
    assert token not in listed.stdout

    revoked = run(["token", "revoke", record["id"]], settings.database_url, tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert (
        json.loads(run(["token", "list", "--inactive"], settings.database_url, tmp_path).stdout)["id"] == record["id"]
    )


def test_token_create_refuses_runner_scope(settings: Settings, tmp_path: Path) -> None:
    result = run(["token", "create", "--scope", "runner", "--name", "x"], settings.database_url, tmp_path)
    assert result.returncode == 2
    assert "runner registration" in result.stderr


def test_serve_refuses_postgres_schema_behind(settings: Settings, tmp_path: Path, backend: str) -> None:
    migrate.downgrade(settings, "base")
    # 192.0.2.1 (TEST-NET-1) is on no interface here: serve exits at bind time, after its database step.
    result = run(["serve", "--host", "192.0.2.1", "--port", "8000"], settings.database_url, tmp_path)
    if backend == "postgresql":
        assert result.returncode == 1
        assert "run `corral db upgrade`" in result.stderr
        assert f"the database at {settings.database_display} is at schema revision (empty)" in result.stderr
        current = run(["db", "current"], settings.database_url, tmp_path)
        assert current.returncode == 1
        assert "(empty)" in current.stdout
        assert run(["db", "upgrade"], settings.database_url, tmp_path).returncode == 0
        assert run(["db", "current"], settings.database_url, tmp_path).returncode == 0
    else:
        # The embedded database is migrated by serve itself (then fails to bind).
        assert run(["db", "current"], settings.database_url, tmp_path).returncode == 0


def test_database_password_never_printed(tmp_path: Path) -> None:
    result = run(["db", "upgrade"], "postgresql://corral:hunter2secret@127.0.0.1:1/corral", tmp_path)
    assert result.returncode == 1
    assert "cannot use the database" in result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout


def test_runner_command_lists_its_commands() -> None:
    # The installed console script, as operators will call it.
    runner = str(Path(sys.executable).parent / "corral-runner")
    result = subprocess.run([runner, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("register", "run", "doctor"):
        assert command in result.stdout


def test_the_cli_imports_what_a_command_needs_when_it_needs_it() -> None:
    """`corral --help`, and every server worker (which imports the CLI module again when it is spawned), start
    without the service, the ORM or the HTTP client: a replacement worker answers its supervisor in time."""
    heavy = (
        "corral.main",
        "fastapi",
        "sqlalchemy",
        "httpx",
        "huggingface_hub",
        "corral.scores.service",
        "prometheus_client",
    )
    probe = f"import sys, app.cli; print(','.join(name for name in {heavy!r} if name in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
    helped = subprocess.run([sys.executable, "-m", "corral", "--help"], capture_output=True, text=True, check=True)
    assert "serve" in helped.stdout


def test_the_default_database_is_one_file_in_the_data_directory_whichever_directory_a_command_runs_in(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    first, second = tmp_path / "here", tmp_path / "elsewhere"
    first.mkdir()
    second.mkdir()
    environment = offline_environment(XDG_DATA_HOME=str(data))
    environment.pop("CORRAL_DATABASE_URL", None)

    def corral(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            CORRAL + list(args), cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
        )

    created = corral("token", "create", "--scope", "admin", "--name", "bootstrap", cwd=first)
    assert created.returncode == 0, created.stderr
    database = data / "corral" / "corral.db"
    assert f"new embedded database {database}" in created.stderr
    assert f"in sqlite+aiosqlite:///{database}" in created.stderr  # the message names the file it wrote to
    listed = corral("token", "list", cwd=second)
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["bootstrap"]
    assert not list(first.iterdir())
    assert not list(second.iterdir())  # no stray corral.db where the commands ran
