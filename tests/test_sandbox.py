"""The job sandbox (evals/sandbox.py) on this machine's kernel, in a child process each: what it hides stays out of
reach for reading, writing, deleting and renaming, what it keeps and everything beside stays usable, and the
agent's memory and signals are out of reach. The end-to-end runs (test_runner_security.py, test_slurm_runner.py)
show the same with lm-eval; here each rule is pinned on its own."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from corral_runner.sandbox import abi_version
from tests.support.server import ROOT

CHECKS = r"""
import json, os, signal, sys, tempfile
from pathlib import Path
from corral_runner.sandbox import seal

base, parent = Path(sys.argv[1]), int(sys.argv[2])
sealed = seal([base / "conf" / "runner.json", base / "spool", base / "shared"], kept=[base / "shared" / "mine"])
print("sealed", flush=True)
sys.stdin.readline()  # another job's directory is made meanwhile

def attempt(action):
    try:
        action()
        return "allowed"
    except OSError as error:
        return type(error).__name__

print(json.dumps({
    "abi": sealed.abi,
    "read hidden file": attempt(lambda: (base / "conf" / "runner.json").read_text()),
    "write hidden file": attempt(lambda: (base / "conf" / "runner.json").write_text("x")),
    "delete hidden file": attempt(lambda: (base / "conf" / "runner.json").unlink()),
    "rename hidden file": attempt(lambda: (base / "conf" / "runner.json").rename(base / "conf" / "stolen")),
    "read hidden folder's file": attempt(lambda: (base / "spool" / "entry.json").read_text()),
    "new file in hidden folder": attempt(lambda: (base / "spool" / "new.json").write_text("x")),
    "read another job": attempt(lambda: (base / "shared" / "theirs" / "results.json").read_text()),
    "a job made later": attempt(lambda: (base / "shared" / "later" / "spec.json").read_text()),
    "write own job": attempt(lambda: (base / "shared" / "mine" / "log.txt").write_text("ok")),
    "read beside": attempt(lambda: (base / "conf" / "other.txt").read_text()),
    "write beside": attempt(lambda: (base / "elsewhere" / "out.txt").write_text("ok")),
    "temporary file": attempt(lambda: tempfile.NamedTemporaryFile().close()),
    "agent memory": attempt(lambda: Path(f"/proc/{parent}/mem").read_bytes()[:1]),
    "signal the agent": attempt(lambda: os.kill(parent, 0)),
    "child reads hidden": "refused" if os.system(f"cat {base}/conf/runner.json >/dev/null 2>&1") else "allowed",
}))
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    for folder in ("conf", "spool", "shared/theirs", "shared/mine", "elsewhere"):
        (base / folder).mkdir(parents=True)
    (base / "conf" / "runner.json").write_text('{"token": "crl_secret"}')
    (base / "conf" / "other.txt").write_text("not secret")
    (base / "spool" / "entry.json").write_text('{"lease_token": "secret"}')
    (base / "shared" / "theirs" / "results.json").write_text("{}")
    return base


def test_landlock_is_here() -> None:
    """The kernels these tests run on have it; where one does not, the runner says so (doctor, the job's log)."""
    assert abi_version() >= 1


def test_what_is_hidden_is_out_of_reach_and_the_rest_is_not(tree: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHECKS, str(tree), str(os.getpid())],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tree.parent)},  # on the way to the hidden paths: a private one is made
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "sealed\n"
    (tree / "shared" / "later").mkdir()  # another job, started after this one's sandbox closed
    (tree / "shared" / "later" / "spec.json").write_text("{}")
    output, _ = child.communicate("go\n", timeout=60)
    assert child.returncode == 0
    seen = json.loads(output)
    assert seen.pop("abi") >= 1
    assert seen == {
        "read hidden file": "PermissionError",
        "write hidden file": "PermissionError",
        "delete hidden file": "PermissionError",
        "rename hidden file": "PermissionError",
        "read hidden folder's file": "PermissionError",
        "new file in hidden folder": "PermissionError",
        "read another job": "PermissionError",
        "a job made later": "PermissionError",
        "write own job": "allowed",
        "read beside": "allowed",
        "write beside": "allowed",
        "temporary file": "allowed",
        "agent memory": "PermissionError",
        "signal the agent": "PermissionError" if abi_version() >= 6 else "allowed",
        "child reads hidden": "refused",
    }
    assert (tree / "conf" / "runner.json").read_text() == '{"token": "crl_secret"}'
    assert (tree / "shared" / "mine" / "log.txt").read_text() == "ok"


def test_the_launcher_runs_a_command_inside_one(tree: Path) -> None:
    """`python -m evals.sandbox` (how a Ray worker node of a multi-node job starts) seals, then execs."""
    command = [sys.executable, "-m", "corral_runner.sandbox", f"--hide={tree / 'conf'}", "--", "cat"]
    hidden = subprocess.run([*command, str(tree / "conf" / "runner.json")], cwd=ROOT, capture_output=True, text=True)
    assert hidden.returncode != 0
    assert "Permission denied" in hidden.stderr
    beside = subprocess.run([*command, str(tree / "spool" / "entry.json")], cwd=ROOT, capture_output=True, text=True)
    assert beside.returncode == 0
    assert "lease_token" in beside.stdout


def test_sealing_twice_narrows_never_widens(tree: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from evals.sandbox import seal; base = Path(sys.argv[1]);"
        "seal([base / 'conf']); seal([base / 'spool']);"
        "print(Path(base / 'conf' / 'other.txt').exists() and open(base / 'conf' / 'other.txt').read())"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tree)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0
    assert "PermissionError" in done.stderr


def test_a_path_that_does_not_exist_is_nothing_to_hide(tmp_path: Path) -> None:
    code = "import sys; from evals.sandbox import seal; print(seal([sys.argv[1]]).hidden)"
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "absent")], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "()"
