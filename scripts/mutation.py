"""Mutation testing of the modules that hold the rules: mutmut 3, one bounded run per unit of tests/mutation/units.toml.

Each unit runs in its own folder under .mutation/ (links to the sources and a pyproject.toml that adds the unit's
[tool.mutmut] section), so units never share mutmut's state and each runs only its own tests. The counts per module
go to tests/mutation/scores.json; survivors judged equivalent are listed, one line of reason each, in
tests/mutation/equivalent.toml. Look at a unit's survivors with `cd .mutation/<unit> && ../../.venv/bin/mutmut browse`.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

ROOT = Path(__file__).resolve().parents[1]
UNITS_FILE = ROOT / "tests" / "mutation" / "units.toml"
EQUIVALENT_FILE = ROOT / "tests" / "mutation" / "equivalent.toml"
SCORES_FILE = ROOT / "tests" / "mutation" / "scores.json"
WORK = ROOT / ".mutation"
# The unit's folder links each source folder under its installed name (what the tests import), the rest as it is.
LINKED = {
    "corral": "app",
    "corral_runner": "evals",
    "corral_migrations": "migrations",
    "tests": "tests",
    "alembic.ini": "alembic.ini",
    "constraints": "constraints",
}
INSTALLED = {"app/": "corral/", "evals/": "corral_runner/", "migrations/": "corral_migrations/"}


class Unit(TypedDict):
    """A unit of tests/mutation/units.toml."""

    modules: list[str]
    tests: list[str]


# mutmut's exit codes (mutmut.stats.status_by_exit_code), grouped the way a score counts them.
KILLED = {1, 3, 36, -24, 24, 152, 255, 37}  # a test failed, the tests timed out, or mypy rejected the mutant
SURVIVED = {0}
NO_TESTS = {5, 33}
NOT_COUNTED = {34}  # skipped by configuration


def source_digest(module: str) -> str:
    return hashlib.sha256((ROOT / module).read_bytes()).hexdigest()


def mutmut_section(unit: Unit) -> str:
    lines = [
        "",
        "[tool.mutmut]",
        'source_paths = ["corral/"]',
        f"only_mutate = {json.dumps([installed(module) for module in unit['modules']])}",
        'also_copy = ["corral_runner/", "corral_migrations/", "alembic.ini", "constraints/"]',
        f"pytest_add_cli_args_test_selection = {json.dumps(unit['tests'])}",
        # One test process per mutant, SQLite only: the rules are the same code on both databases (the full suite
        # runs both), and a PostgreSQL template per mutant would double the run. No xdist: it only adds start-up.
        'pytest_add_cli_args = ["-p", "no:xdist", "-k", "not postgresql"]',
        "",
    ]
    return "\n".join(lines)


def prepare(name: str, unit: Unit) -> Path:
    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, entry in LINKED.items():
        (folder / name).symlink_to(ROOT / entry)
    (folder / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + mutmut_section(unit))
    return folder


def installed(module: str) -> str:
    """A module's path under its installed name: app/queue/matching.py is corral/queue/matching.py."""
    for folder, name in INSTALLED.items():
        if module.startswith(folder):
            return name + module.removeprefix(folder)
    return module


def module_name(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def mutant_results(folder: Path, module: str) -> dict[str, int | None]:
    """mutmut's exit code of each mutant, named after the repository's path (as scores and equivalents are)."""
    meta = folder / "mutants" / (installed(module) + ".meta")
    if not meta.exists():
        raise SystemExit(f"mutmut wrote no results for {module} (see {folder / 'run.log'})")
    results: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    ran_as, named = module_name(installed(module)), module_name(module)
    return {named + name.removeprefix(ran_as): code for name, code in results.items()}


def score(module: str, results: dict[str, int | None], equivalent: dict[str, str]) -> dict[str, object]:
    counted = {name: code for name, code in results.items() if code not in NOT_COUNTED}
    unchecked = sorted(name for name, code in counted.items() if code is None)
    if unchecked:
        raise SystemExit(f"{len(unchecked)} mutants of {module} were never run, e.g. {unchecked[0]}")
    killed = sorted(name for name, code in counted.items() if code in KILLED)
    survived = sorted(name for name, code in counted.items() if code in SURVIVED | NO_TESTS)
    other = sorted(name for name, code in counted.items() if code not in KILLED | SURVIVED | NO_TESTS)
    judged = sorted(name for name in survived if name in equivalent)
    judged_killed = sorted(name for name in killed if name in equivalent)
    if judged_killed:
        raise SystemExit(f"listed as equivalent but killed, take them out of {EQUIVALENT_FILE.name}: {judged_killed}")
    scored = len(counted) - len(judged)
    return {
        "mutants": len(counted),
        "killed": len(killed),
        "survived": len(survived) - len(judged),
        "no_tests": sum(1 for name in survived if counted[name] in NO_TESTS and name not in equivalent),
        "suspicious": len(other),
        "equivalent": len(judged),
        "score": round(len(killed) / scored, 4) if scored else 1.0,
        "surviving": [name for name in survived if name not in equivalent] + other,
        "source_sha256": source_digest(module),
    }


def run_unit(name: str, unit: Unit, jobs: int, equivalent: dict[str, str]) -> dict[str, object]:
    folder = prepare(name, unit)
    started = time.monotonic()
    log = folder / "run.log"
    mutmut = Path(sys.executable).with_name("mutmut")
    with log.open("w") as output:
        completed = subprocess.run(
            [str(mutmut), "run", "--max-children", str(jobs)],
            cwd=folder,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1", "CORRAL_TEST_TEMPLATE_DIR": str(folder / "template")},
            check=False,
        )
    seconds = round(time.monotonic() - started)
    if completed.returncode != 0:
        raise SystemExit(f"mutmut failed on unit {name} (exit {completed.returncode}); see {log}")
    modules = {module: score(module, mutant_results(folder, module), equivalent) for module in unit["modules"]}
    return {"tests": unit["tests"], "seconds": seconds, "modules": modules}


def table(scores: dict[str, dict[str, object]], threshold: float) -> str:
    rows = ["| module | mutants | killed | survived | equivalent | score |", "|---|---:|---:|---:|---:|---:|"]
    for unit in scores.values():
        for module, counts in unit["modules"].items():  # type: ignore[attr-defined]
            mark = "" if counts["score"] >= threshold else " ❌"
            rows.append(
                f"| {module} | {counts['mutants']} | {counts['killed']} | {counts['survived']} "
                f"| {counts['equivalent']} | {counts['score']:.1%}{mark} |"
            )
    return "\n".join(rows)


def stale(scores: dict[str, dict[str, object]]) -> list[str]:
    return [
        module
        for unit in scores.values()
        for module, counts in unit["modules"].items()  # type: ignore[attr-defined]
        if (ROOT / module).exists() and counts["source_sha256"] != source_digest(module)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("units", nargs="*", help="units to run (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--check", action="store_true", help="only report the committed scores")
    parser.add_argument(
        "--rescore", action="store_true", help="score the last run's results again (after editing equivalent.toml)"
    )
    arguments = parser.parse_args()

    config = tomllib.loads(UNITS_FILE.read_text())
    threshold: float = config["threshold"]
    units: dict[str, Unit] = config["units"]
    equivalent: dict[str, str] = tomllib.loads(EQUIVALENT_FILE.read_text()).get("equivalent", {})
    unknown = sorted(set(arguments.units) - set(units))
    if unknown:
        parser.error(f"no such unit: {', '.join(unknown)} (units: {', '.join(units)})")
    scores: dict[str, dict[str, object]] = json.loads(SCORES_FILE.read_text())["units"] if SCORES_FILE.exists() else {}

    if arguments.rescore:
        for name in arguments.units or [name for name in units if name in scores]:
            folder, unit = WORK / name, units[name]
            measured: dict[str, dict[str, object]] = scores[name]["modules"]  # type: ignore[assignment]
            modules = {module: score(module, mutant_results(folder, module), equivalent) for module in unit["modules"]}
            for module, counts in modules.items():  # the source as it was measured, not as it is now
                counts["source_sha256"] = measured[module]["source_sha256"]
            scores[name] = {"tests": unit["tests"], "seconds": scores[name]["seconds"], "modules": modules}
    elif not arguments.check:
        for name in arguments.units or list(units):
            print(f"unit {name}: mutating {', '.join(units[name]['modules'])}", flush=True)
            scores[name] = run_unit(name, units[name], arguments.jobs, equivalent)
            print(f"unit {name}: {scores[name]['seconds']} s", flush=True)
    if not arguments.check:
        scores = {name: scores[name] for name in units if name in scores}
        SCORES_FILE.write_text(
            json.dumps({"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "units": scores}, indent=2)
            + "\n"
        )

    print(table(scores, threshold))
    for measured_unit in scores.values():
        for module, counts in measured_unit["modules"].items():  # type: ignore[attr-defined]
            for mutant in counts["surviving"]:
                print(f"survived: {mutant}  ({module})")
    for module in stale(scores):
        print(f"stale: {module} changed since its score was measured; run scripts/mutation again")
    below = [
        module
        for unit in scores.values()
        for module, counts in unit["modules"].items()  # type: ignore[attr-defined]
        if counts["score"] < threshold
    ]
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
