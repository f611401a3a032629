"""What a CI job pays to install the client: `pip install corral` against the full install, in the same run.

    .venv/bin/python -m tests.bench.bench_install

One wheel of Corral is built; each install goes into a fresh venv from the machine's package index (pip's cache
warm for both, as it is on a CI runner that caches pip): the client (`corral`: pydantic, typer, rich, httpx) and
the full install (`corral[server,runner]` with the CPU torch of constraints/cpu.txt). Reported: wall time and
the size the install added to an empty venv, each with the ratio full / client, and whether `corral --help`
works in the client's venv. Needs the index (PyPI or a mirror): a benchmark, not a test.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.server import ROOT


def size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def install(folder: Path, name: str, *requirements: str) -> dict[str, float]:
    venv = folder / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    empty = size(venv)
    started = time.monotonic()
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
        check=True,
    )
    seconds = time.monotonic() - started
    return {"seconds": round(seconds, 1), "megabytes": round((size(venv) - empty) / 2**20, 1)}


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(folder), "."],
            cwd=ROOT,
            check=True,
        )
        (wheel,) = folder.glob("corral-*.whl")
        client = install(folder, "client", str(wheel))
        helped = subprocess.run([str(folder / "client" / "bin" / "corral"), "--help"], capture_output=True, text=True)
        full = install(
            folder, "full", "-c", str(ROOT / "constraints" / "cpu.txt"), "torch==2.13.0", f"{wheel}[server,runner]"
        )
    report = {
        "client": client,
        "full": full,
        "full_over_client": {
            "seconds": round(full["seconds"] / client["seconds"], 1),
            "megabytes": round(full["megabytes"] / client["megabytes"], 1),
        },
        "client_cli_works": helped.returncode == 0,
    }
    print(json.dumps(report, indent=2))
    return 0 if helped.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
