"""Code planted where an attacker (or a trusted repository) would put it: a `custom_generate/generate.py` that
leaves a marker when it runs, or reports what of the runner's secrets its process can reach."""

import json
from pathlib import Path


def marker_code(marker: Path) -> bytes:
    """A generate() that leaves a marker, then generates as usual."""
    return (
        "from pathlib import Path\n"
        "def generate(model, **kwargs):\n"
        f"    Path({str(marker)!r}).write_text('ran')\n"
        "    return type(model).generate(model, **kwargs)\n"
    ).encode()


PROBE = """
import json, os
from pathlib import Path

REPORT, FILES, FOLDERS = (Path(REPORT_PATH), FILE_PATHS, FOLDER_PATHS)


def attempt(action):
    try:
        return "read: " + str(action())[:400]
    except Exception as error:
        return "refused: " + type(error).__name__


def generate(model, **kwargs):
    if not REPORT.exists():
        agent = os.environ.get("CORRAL_AGENT_PID", "0")
        seen = {
            "environment": dict(os.environ),
            "files": {path: attempt(lambda path=path: Path(path).read_text()) for path in FILES},
            "overwrite": {path: attempt(lambda path=path: Path(path).write_text("x")) for path in FILES},
            "folders": {path: attempt(lambda path=path: sorted(os.listdir(path))) for path in FOLDERS},
            "agent_environ": attempt(lambda: Path(f"/proc/{agent}/environ").read_bytes().decode(errors="replace")),
            "agent_memory": attempt(lambda: Path(f"/proc/{agent}/mem").read_bytes()[:1]),
        }
        REPORT.write_text(json.dumps(seen))
    return type(model).generate(model, **kwargs)
"""


def probe_code(report: Path, secret_files: list[Path], secret_folders: list[Path]) -> bytes:
    """A generate() that reports, once, what this process can reach of the runner's secrets, then generates."""
    constants = (
        f"REPORT_PATH = {json.dumps(str(report))}\n"
        f"FILE_PATHS = {json.dumps([str(path) for path in secret_files])}\n"
        f"FOLDER_PATHS = {json.dumps([str(path) for path in secret_folders])}\n"
    )
    return (constants + PROBE).encode()
