"""The committed mutation scores (tests/mutation/scores.json, written by scripts/mutation) hold every rule module
at or above the threshold. Mutation testing itself is too slow for every CI run; its record is checked instead.
"""

import json
import tomllib
from pathlib import Path

MUTATION = Path(__file__).resolve().parent / "mutation"
UNITS = tomllib.loads((MUTATION / "units.toml").read_text())
SCORES = json.loads((MUTATION / "scores.json").read_text())["units"]
EQUIVALENT: dict[str, str] = tomllib.loads((MUTATION / "equivalent.toml").read_text())["equivalent"]
ROOT = MUTATION.parents[1]


def test_every_rule_module_has_a_score_at_or_above_the_threshold() -> None:
    threshold = UNITS["threshold"]
    assert threshold >= 0.9
    below = []
    for name, unit in UNITS["units"].items():
        assert name in SCORES, f"unit {name} was never measured: run scripts/mutation {name}"
        assert SCORES[name]["tests"] == unit["tests"], f"unit {name} was measured with other tests"
        for module in unit["modules"]:
            assert (ROOT / module).is_file(), f"{module} is listed in units.toml but does not exist"
            assert module in SCORES[name]["modules"], f"{module} was never measured: run scripts/mutation {name}"
            if SCORES[name]["modules"][module]["score"] < threshold:
                below.append(f"{module}: {SCORES[name]['modules'][module]['score']:.1%}")
    assert not below, f"mutation score below {threshold:.0%}: {', '.join(below)}"


def test_each_score_adds_up() -> None:
    for unit in SCORES.values():
        for module, counts in unit["modules"].items():
            assert counts["mutants"] > 0, module
            parts = counts["killed"] + counts["survived"] + counts["suspicious"] + counts["equivalent"]
            assert parts == counts["mutants"], module
            assert len(counts["surviving"]) == counts["survived"] + counts["suspicious"], module
            scored = counts["mutants"] - counts["equivalent"]
            assert counts["score"] == round(counts["killed"] / scored, 4), module


def test_equivalent_mutants_are_named_with_a_reason_and_belong_to_a_listed_module() -> None:
    modules = {
        module.removesuffix(".py").replace("/", ".") for unit in UNITS["units"].values() for module in unit["modules"]
    }
    for mutant, reason in EQUIVALENT.items():
        assert mutant.rsplit(".", 1)[0] in modules, f"{mutant} is not a mutant of a listed module"
        assert len(reason.split()) >= 4, f"{mutant}: say why it is equivalent"
        assert "__mutmut_" in mutant, mutant
