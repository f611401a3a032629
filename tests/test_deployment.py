"""The deployment files: Dockerfile, .dockerignore and compose.yaml, checked against the code they drive.

No Docker engine runs where this suite usually runs, so most of this reads the files and runs what can run
without one: the CLI commands they name, the Dockerfile's dependency-list script, both health checks against a
real `corral serve`, and the compose api's start script against a real, empty PostgreSQL database. The images
themselves were never built here (no engine): `docker build --target api .` and `--target runner` are for a
machine that has one, and the README says so.
"""

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from corral.config import Settings
from tests.support import databases
from tests.support.server import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: `corral` and `corral-runner` are its entry points
DOCKERFILE = ROOT / "Dockerfile"
PIP_CACHE = "--mount=type=cache,target=/root/.cache/pip"


# --- The Dockerfile, parsed ---------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str
    heredoc: str = ""


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [step for step in self.instructions if step.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages, in order: comments dropped, continuations joined, heredoc bodies kept."""
    lines = text.splitlines()
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + lines[index].strip()
            index += 1
        keyword, _, arguments = line.strip().partition(" ")
        step = Instruction(keyword.upper(), arguments.strip())
        if marker := re.search(r"<<-?'?\"?(\w+)'?\"?", arguments):
            body: list[str] = []
            while lines[index] != marker.group(1):
                body.append(lines[index])
                index += 1
            index += 1
            step.heredoc = "\n".join(body) + "\n"
        if step.keyword == "FROM":
            base, _, name = step.arguments.partition(" AS ")
            stages.append(Stage(name.strip(), base.strip()))
        elif not stages and step.keyword == "ARG":
            key, _, value = step.arguments.partition("=")
            global_args[key] = value
        elif stages:
            stages[-1].instructions.append(step)
    return global_args, stages


GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
BY_NAME = {stage.name: stage for stage in STAGES}


def copy_sources(step: Instruction) -> tuple[str | None, list[str]]:
    """(the --from stage or None for the build context, the source paths) of a COPY."""
    words = shlex.split(step.arguments)
    origin = next((word.removeprefix("--from=") for word in words if word.startswith("--from=")), None)
    paths = [word for word in words if not word.startswith("--")]
    return origin, paths[:-1]


def upstream(stage: Stage) -> set[str]:
    """Every stage this one is built from or takes files from (FROM, COPY --from, RUN --mount from=)."""
    found: set[str] = set()
    pending = [stage]
    while pending:
        current = pending.pop()
        names = {current.base} if current.base in BY_NAME else set()
        for step in current.all("COPY"):
            origin, _ = copy_sources(step)
            if origin:
                names.add(origin)
        for step in current.all("RUN"):
            names |= set(re.findall(r"--mount=\S*from=([\w-]+)", step.arguments))
        for name in names - found:
            found.add(name)
            pending.append(BY_NAME[name])
    return found


def context_copies(stages: list[Stage]) -> list[str]:
    return [path for stage in stages for step in stage.all("COPY") for path in _context_paths(step)]


def _context_paths(step: Instruction) -> list[str]:
    origin, paths = copy_sources(step)
    return [] if origin else paths


def exec_form(step: Instruction) -> list[str]:
    value = json.loads(step.arguments)
    assert isinstance(value, list), step
    return [str(item) for item in value]


def test_dependencies_are_installed_in_layers_that_never_see_the_source() -> None:
    """Editing app/ must not reinstall the dependencies: the stages that install them (pip install -r) are built
    from nothing but the dependency lists read out of pyproject.toml (and the torch constraint)."""
    installing = [
        stage
        for stage in STAGES
        if any("pip install" in s.arguments and " -r " in s.arguments for s in stage.all("RUN"))
    ]
    assert {stage.name for stage in installing} == {"deps", "runner-deps"}
    for stage in installing:
        lineage = [BY_NAME[name] for name in upstream(stage)] + [stage]
        assert sorted(context_copies(lineage)) == sorted(
            ["pyproject.toml", "constraints/cpu.txt"] if stage.name == "runner-deps" else ["pyproject.toml"]
        ), stage.name
    # pyproject.toml itself reaches the installing stages only as the lists made from it.
    requirements = BY_NAME["requirements"]
    assert [path for step in requirements.all("COPY") for path in _context_paths(step)] == ["pyproject.toml"]
    assert all(stage.name != "requirements" for stage in installing)


def test_the_source_is_copied_after_pyproject_and_installed_without_dependencies() -> None:
    wheel = BY_NAME["wheel"]
    copied = [path for step in wheel.all("COPY") for path in _context_paths(step)]
    assert copied.index("pyproject.toml") < copied.index("app")
    text = DOCKERFILE.read_text()
    assert text.index("pip install -r /tmp/server.txt") < text.index("COPY app")
    for target, deps in (("build", "deps"), ("build-runner", "runner-deps")):
        stage = BY_NAME[target]
        assert stage.base == deps
        (install,) = stage.all("RUN")
        assert "--no-deps /wheels/" in install.arguments
        assert install.arguments.endswith("/opt/corral/bin/pip check")  # the layers below satisfy the wheel
        assert "from=wheel" in install.arguments
    # And the final images take the installed environment from those stages.
    assert upstream(BY_NAME["api"]) >= {"build", "deps", "wheel"}
    assert upstream(BY_NAME["runner"]) >= {"build-runner", "runner-deps", "wheel"}


def test_every_pip_run_uses_the_cache_mount_and_the_cache_is_not_turned_off() -> None:
    pip_runs = [
        step for stage in STAGES for step in stage.all("RUN") if re.search(r"pip (install|wheel)", step.arguments)
    ]
    assert len(pip_runs) == 5
    for step in pip_runs:
        assert PIP_CACHE in step.arguments, step.arguments
    assert "PIP_NO_CACHE_DIR" not in DOCKERFILE.read_text()  # it would make the cache mount useless


def test_the_base_image_is_pinned_by_tag_and_digest_and_matches_requires_python() -> None:
    base = GLOBAL_ARGS["PYTHON"]
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    assert {stage.base for stage in STAGES if stage.base not in BY_NAME} == {"${PYTHON}"}
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains("3.11")  # the image's Python is one the project supports
    assert not SpecifierSet(requires).contains("3.10")


def test_the_requirements_script_lists_exactly_pyprojects_dependencies(tmp_path: Path) -> None:
    """The heredoc the `requirements` stage runs, run here on this pyproject.toml with the Dockerfile's extras."""
    (run,) = BY_NAME["requirements"].all("RUN")
    (extras,) = [step.arguments.partition("=")[2] for step in BY_NAME["requirements"].all("ARG")]
    work = tmp_path / "src"
    work.mkdir()
    shutil.copy(ROOT / "pyproject.toml", work)
    subprocess.run(
        [sys.executable, "-", str(tmp_path / "out"), extras], input=run.heredoc, text=True, cwd=work, check=True
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    assert extras.split(",") == ["runner", "cluster"]
    # The service's image: the client's dependencies and the server's (the base install is the client alone).
    server = (tmp_path / "out" / "server.txt").read_text().splitlines()
    assert server == project["dependencies"] + optional["server"]
    assert {"fastapi>=0.121,<1", "sqlalchemy[asyncio]>=2.1,<2.2"} <= {line.split("#")[0].strip() for line in server}
    assert (tmp_path / "out" / "runner.txt").read_text().splitlines() == optional["runner"] + optional["cluster"]
    assert not any(line.strip().startswith("#") for line in project["dependencies"])


def test_api_image_keeps_its_behaviour() -> None:
    api = BY_NAME["api"]
    (user_setup, *_) = api.all("RUN")
    assert "--uid 10001 corral" in user_setup.arguments
    assert [step.arguments for step in api.all("USER")] == ["corral"]
    environment = " ".join(step.arguments for step in api.all("ENV"))
    assert "CORRAL_DATABASE_URL=sqlite+aiosqlite:////data/corral.db" in environment
    assert "CORRAL_HOST=0.0.0.0" in environment
    assert [step.arguments for step in api.all("VOLUME")] == ["/data"]
    assert exec_form(api.all("ENTRYPOINT")[0]) == ["corral"]
    assert exec_form(api.all("CMD")[0]) == ["serve"]
    (health,) = api.all("HEALTHCHECK")
    assert "/healthz" in health.arguments


def test_runner_image_has_tini_as_init_and_the_runner_extras() -> None:
    runner = BY_NAME["runner"]
    assert exec_form(runner.all("ENTRYPOINT")[0]) == ["tini", "--", "corral-runner"]
    (setup,) = runner.all("RUN")
    assert re.search(r"apt-get install -y --no-install-recommends tini\b", setup.arguments)
    assert "--uid 10001 corral" in setup.arguments
    assert [step.arguments for step in runner.all("USER")] == ["corral"]
    assert "build-runner" in upstream(runner)
    assert "build" not in upstream(runner)


def test_every_path_the_dockerfile_copies_exists_and_is_not_ignored() -> None:
    """Each COPY source from the build context exists, and neither it nor any file under it is excluded by
    .dockerignore (a `*.yaml` rule would silently drop the shipped catalog from the image)."""
    patterns = dockerignore_patterns()
    copied = context_copies(STAGES)
    assert set(copied) >= {"pyproject.toml", "README.md", "app", "evals", "migrations", "src", "constraints/cpu.txt"}
    for source in copied:
        path = ROOT / source
        assert path.exists(), source
        # The repository's own files under it (links included), not what a build left there (src/*.egg-info).
        listed = subprocess.run(["git", "ls-files", "--", source], cwd=ROOT, capture_output=True, text=True, check=True)
        files = listed.stdout.split()
        assert files, source
        for relative in files:
            assert not ignored(relative, patterns), relative


def dockerignore_patterns() -> list[str]:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not any(line.startswith("!") for line in patterns), "exceptions are not modelled by `ignored`"
    return patterns


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule, closely enough: a pattern matches the path or a directory above it, `**/` any depth."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: count + 1]) for count in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip("/")
        candidates = [pattern] + ([pattern.removeprefix("**/")] if pattern.startswith("**/") else [])
        for candidate in candidates:
            if pattern.startswith("**/"):
                if any(fnmatch.fnmatchcase(part, candidate) for part in parts):
                    return True
            elif any(fnmatch.fnmatchcase(prefix, candidate) for prefix in prefixes):
                return True
    return False


def test_dockerignore_keeps_secrets_environments_and_caches_out() -> None:
    patterns = dockerignore_patterns()
    for name in (".env", ".env.production", ".venv/bin/python", ".git/config", "app/__pycache__/x.pyc"):
        assert ignored(name, patterns), name
    for name in (".mypy_cache/x", ".ruff_cache/x", ".pytest_cache/x", "mutants/app/x.py", "corral.db"):
        assert ignored(name, patterns), name
    for name in ("dist/corral.whl", "build/lib/x", "node_modules/x/y.js", "corral.egg-info/PKG-INFO"):
        assert ignored(name, patterns), name
    assert not ignored("app/catalog/llama.yaml", patterns)  # the matcher can say no


# --- compose.yaml -------------------------------------------------------------------------------------------


def interpolate(value: Any, environment: dict[str, str]) -> Any:
    """Compose's `${VAR:-default}`, `${VAR}` and `$$`, applied to every string in the parsed file."""
    if isinstance(value, dict):
        return {key: interpolate(item, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environment) for item in value]
    if not isinstance(value, str):
        return value

    def replace(found: re.Match[str]) -> str:
        if found.group(0) == "$$":
            return "$"
        return environment.get(found.group(1)) or (found.group(2) or "")

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}", replace, value)


RAW_COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())


def compose(**environment: str) -> dict[str, Any]:
    resolved: dict[str, Any] = interpolate(RAW_COMPOSE, environment)
    return resolved


def test_compose_has_the_three_services_in_order_of_dependency() -> None:
    services = RAW_COMPOSE["services"]
    assert set(services) == {"postgres", "api", "runner"}
    assert services["api"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["runner"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert services["api"]["build"] == {"context": ".", "target": "api"}
    assert services["runner"]["build"] == {"context": ".", "target": "runner"}
    assert {stage.name for stage in STAGES} >= {"api", "runner"}
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:\d+[\w.-]*", postgres["image"])  # a tag, never latest or nothing
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    (volume,) = postgres["volumes"]
    assert volume.split(":")[0] in RAW_COMPOSE["volumes"]
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]


def test_every_variable_has_a_default_and_no_secret_is_written_in() -> None:
    """`docker compose up` works with no .env at all; tokens only ever come from the environment."""
    text = (ROOT / "compose.yaml").read_text()
    references = re.findall(r"\$\{([^}]*)\}", text)
    assert references
    assert all(":-" in reference for reference in references), references
    for service in RAW_COMPOSE["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if re.search("TOKEN|SECRET|PASSWORD", key):
                assert value is None or str(value).startswith("${"), key
    assert RAW_COMPOSE["services"]["runner"]["environment"] == {"CORRAL_TOKEN": None}


@pytest.mark.parametrize("password", [None, "another-pass"])
def test_compose_database_url_is_one_the_app_accepts_for_its_postgres(password: str | None) -> None:
    resolved = compose(**({"POSTGRES_PASSWORD": password} if password else {}))
    postgres = resolved["services"]["postgres"]["environment"]
    url = resolved["services"]["api"]["environment"]["CORRAL_DATABASE_URL"]
    assert make_url(url).drivername == "postgresql+psycopg"  # as written (the app would swap another driver)
    settings = Settings(_env_file=None, database_url=url)
    database = settings.database
    assert database.drivername == "postgresql+psycopg"
    assert not settings.is_sqlite
    assert (database.host, database.port) == ("postgres", 5432)
    assert (database.username, database.password, database.database) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert postgres["POSTGRES_PASSWORD"] == (password or "corral-local-only")
    engine = create_async_engine(database)  # the dialect and driver load (no connection is made)
    assert engine.dialect.driver == "psycopg"


# --- The commands the files name ----------------------------------------------------------------------------


def api_script() -> str:
    api = compose()["services"]["api"]
    assert api["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = api["command"]
    assert isinstance(script, str)
    return script


def named_invocations(text: str) -> list[tuple[str, list[str], list[str]]]:
    """(program, subcommands, options) of every `corral ...` / `corral-runner ...` written in the text."""
    found = []
    for match in re.finditer(r"\b(corral(?:-runner)?)((?: (?:--[a-z-]+|[a-z][a-z-]*))+)", text):
        words = match.group(2).split()
        first_option = next((i for i, word in enumerate(words) if word.startswith("--")), len(words))
        options = [word for word in words[first_option:] if word.startswith("--")]
        found.append((match.group(1), words[:first_option], options))
    return found


def usage_lines() -> str:
    """The commands the header of compose.yaml tells people to run."""
    lines = (ROOT / "compose.yaml").read_text().splitlines()
    return "\n".join(line for line in lines if line.startswith("#") and "docker compose" in line)


def invocations() -> list[tuple[str, list[str], list[str]]]:
    runner = RAW_COMPOSE["services"]["runner"]["command"]
    entrypoint = exec_form(BY_NAME["runner"].all("ENTRYPOINT")[0])
    named = named_invocations(api_script()) + named_invocations(usage_lines())
    named.append((entrypoint[-1], [word for word in runner if not word.startswith(("-", "http"))], runner[1::2]))
    named.append(("corral", exec_form(BY_NAME["api"].all("CMD")[0]), []))
    return named


def test_the_compose_files_name_these_commands() -> None:
    """Guards the parser below: if it stopped finding commands, the --help test would check nothing."""
    assert {(program, " ".join(words)) for program, words, _ in invocations()} == {
        ("corral", "db current"),
        ("corral", "db upgrade"),
        ("corral", "catalog load"),
        ("corral", "serve"),
        ("corral", "token create"),
        ("corral-runner", "demo"),
    }


@pytest.mark.parametrize(
    ("program", "words", "options"),
    invocations(),
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_every_command_the_deployment_names_exists(program: str, words: list[str], options: list[str]) -> None:
    done = subprocess.run(
        [str(BIN / program), *words, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=databases.offline_environment(),
    )
    assert done.returncode == 0, done.stderr
    for option in options:
        assert option in done.stdout, f"{program} {' '.join(words)} has no {option}"


def test_runner_demo_without_a_token_stops_asking_for_one(tmp_path: Path) -> None:
    """compose.yaml says so: CORRAL_TOKEN unset, `corral-runner demo` names the missing option and does nothing."""
    done = subprocess.run(
        [str(BIN / "corral-runner"), *RAW_COMPOSE["services"]["runner"]["command"]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=databases.offline_environment(),
    )
    assert done.returncode == 2
    assert "Missing option '--admin-token'" in done.stderr
    assert not (tmp_path / ".corral-demo").exists()


# --- The start script and the health checks, run for real ---------------------------------------------------


def start_api(database_url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    environment = databases.offline_environment(
        CORRAL_DATABASE_URL=database_url, CORRAL_PORT=str(port), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"
    )
    return subprocess.Popen(
        ["/bin/sh", "-c", api_script()],
        cwd=workdir,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> bytes:
    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


def run_healthcheck(test: list[str], port: int) -> int:
    assert test[0] == "CMD"
    command = [word.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for word in test[1:]]
    environment = databases.offline_environment(CORRAL_PORT=str(port))
    return subprocess.run(command, env=environment, capture_output=True, timeout=30).returncode


def test_compose_api_migrates_an_empty_postgres_loads_the_catalog_once_and_serves(
    postgres_available: str | None, tmp_path: Path
) -> None:
    """The api service's start script, run by sh as in the container, on a real empty database: it migrates,
    loads the Llama catalog because the database was new, serves with two workers, and both health checks
    (compose's and the image's HEALTHCHECK) pass against it; a second start loads nothing."""
    if postgres_available is not None:
        if databases.REQUIRE_POSTGRES:
            pytest.fail(postgres_available)
        pytest.skip(postgres_available)
    name = databases.unique_name("corral_compose")
    url = databases.create_postgres_database(name)
    compose_check = RAW_COMPOSE["services"]["api"]["healthcheck"]["test"]
    (image_check,) = BY_NAME["api"].all("HEALTHCHECK")
    image_test = ["CMD", *json.loads(image_check.arguments.partition("CMD ")[2])]
    try:
        port = free_port()
        assert run_healthcheck(compose_check, port) != 0  # nothing listens yet: the check can fail
        assert run_healthcheck(image_test, port) != 0
        first = start_api(url, port, tmp_path)
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", first, timeout=120)
            licenses = httpx.get(f"http://127.0.0.1:{port}/v1/licenses").json()
            assert licenses["items"], "the catalog was not loaded into the new database"
            assert run_healthcheck(compose_check, port) == 0
            assert run_healthcheck(image_test, port) == 0
        finally:
            output = stop(first)
        assert b'"created"' in output  # `corral catalog load` printed what it loaded

        second = start_api(url, port, tmp_path)
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", second, timeout=120)
        finally:
            output = stop(second)
        assert b'"created"' not in output  # at head already: no catalog load on a later start
    finally:
        databases.drop_postgres_database(name)
