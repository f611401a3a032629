"""Corral installs beside a user's own code: the wheel puts corral, corral_runner and corral_migrations in
site-packages (never a top-level app, evals or migrations), next to a distribution of the user's that owns those
names; both work, from a repository with its own app/ too, and uninstalling either leaves the other whole."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support.server import ROOT

OURS = {"corral", "corral_runner", "corral_migrations"}
THEIRS = {"app", "evals", "migrations"}
USER_PROJECT = """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "their-app"
version = "1.0"

[tool.setuptools]
packages = ["app", "evals", "migrations"]
"""
# The import checks run from a folder that is a user's repository: its own app/ comes first on sys.path.
CHECK_CORRAL = """
import corral.client, corral.wire.protocol, corral.console.commands
from corral.migrate import MIGRATIONS_DIR
assert (MIGRATIONS_DIR / "env.py").is_file(), MIGRATIONS_DIR
assert "site-packages" in str(MIGRATIONS_DIR), MIGRATIONS_DIR  # the wheel's, not the repository's
import corral_runner.protocol
print("corral ok")
"""
CHECK_THEIRS = """
import app, evals, migrations
assert app.OWNER == evals.OWNER == migrations.OWNER == "user", (app.OWNER, evals.OWNER, migrations.OWNER)
print("theirs ok")
"""


def run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def wheel(project: Path, into: Path, name: str) -> Path:
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(into), "."],
        project,
    )
    (built,) = into.glob(f"{name}-*.whl")
    return built


def user_distribution(folder: Path) -> Path:
    """A user's project whose packages are named app, evals and migrations."""
    project = folder / "their-app"
    for package in THEIRS:
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text('OWNER = "user"\n')
    (project / "app" / "main.py").write_text("app = 'theirs'\n")  # where Corral kept its own app.main
    (project / "pyproject.toml").write_text(USER_PROJECT)
    return wheel(project, folder / "wheels", "their_app")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A fresh venv (its dependencies from this one's site-packages, after its own) and the two wheels."""
    folder = tmp_path_factory.mktemp("names")
    ours = wheel(ROOT, folder / "wheels", "corral")
    theirs = user_distribution(folder)
    target = folder / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(target)], folder)
    site = Path(
        run(
            [str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], folder
        ).strip()
    )
    # Appended after the venv's own site-packages: httpx, pydantic, typer, rich (and the server's packages) come
    # from here, while corral and app can only be the fresh venv's.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return target, ours, theirs


def pip(venv: Path, *args: str) -> None:
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *args], venv)


def top_level(venv: Path) -> set[str]:
    site = next((venv / "lib").glob("python*/site-packages"))
    return {path.name for path in site.iterdir() if path.is_dir() and not path.name.endswith((".dist-info", "__"))}


def checks(venv: Path, cwd: Path, script: str) -> str:
    return run([str(venv / "bin" / "python"), "-c", script], cwd)


def test_corral_and_a_package_named_app_install_side_by_side_and_uninstall_apart(
    venv: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    target, ours, theirs = venv
    repository = tmp_path / "their-repo"  # a user's checkout with its own app/
    (repository / "app").mkdir(parents=True)
    (repository / "app" / "__init__.py").write_text('OWNER = "user"\n')

    pip(target, "install", "--quiet", "--no-deps", "--no-index", str(ours))
    assert top_level(target) == OURS, "the wheel installs exactly corral, corral_runner and corral_migrations"
    assert "corral ok" in checks(target, repository, CHECK_CORRAL)

    pip(target, "install", "--quiet", "--no-deps", "--no-index", str(theirs))
    assert top_level(target) == OURS | THEIRS
    assert "corral ok" in checks(target, repository, CHECK_CORRAL)
    assert "theirs ok" in checks(target, tmp_path, CHECK_THEIRS)
    assert run([str(target / "bin" / "corral"), "--version"], tmp_path).strip()
    assert "Usage" in run([str(target / "bin" / "corral-runner"), "--help"], tmp_path)

    pip(target, "uninstall", "--yes", "--quiet", "their-app")
    assert top_level(target) == OURS
    assert "corral ok" in checks(target, repository, CHECK_CORRAL)

    pip(target, "install", "--quiet", "--no-deps", "--no-index", str(theirs))
    pip(target, "uninstall", "--yes", "--quiet", "corral")
    assert top_level(target) == THEIRS
    assert "theirs ok" in checks(target, tmp_path, CHECK_THEIRS)
    assert (next((target / "lib").glob("python*/site-packages")) / "app" / "main.py").read_text() == "app = 'theirs'\n"
