"""A same-user sandbox for the lm-eval process (Landlock, Linux 5.13+): the runner's own files — its config with
the runner and Hub tokens, the spool and lease files, other jobs' directories on a cluster's shared storage — can be
neither read nor written by anything lm-eval runs (a task's `!function`, a trusted repository's code), and the
agent's memory and environment (/proc/<pid>/environ, ptrace) are out of reach.

Landlock only grants: every right is refused unless a rule grants it beneath some path. So each hidden path is cut
out of the tree: every entry beside it and beside each folder on the way to it gets every right, and the folders
on the way get listing only. Entries made later directly in such a folder are out of reach too, so the per-user
cache folders tools write to are made (or pointed into ~/.cache) before the sandbox closes.

`python -m evals.sandbox --hide PATH [--keep PATH] -- COMMAND...` runs a command inside one (a Ray worker node).
"""

import argparse
import contextlib
import ctypes
import os
import stat
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # the same numbers on every architecture
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38
READ_DIR = 1 << 3
# Filesystem rights by the ABI version that brought them: v1 the first thirteen, v2 REFER, v3 TRUNCATE,
# v5 IOCTL_DEV. Rights on a file (not a folder) are these five only.
RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)
SCOPE_SIGNAL = 1 << 1  # v6: no signal to a process outside the sandbox (the agent)
# Where tools write per-user caches: pointed into ~/.cache when unset, so that none needs a new folder in $HOME.
CACHES = {
    "TRITON_CACHE_DIR": "triton",
    "CUDA_CACHE_PATH": "nv",
    "VLLM_CACHE_ROOT": "vllm",
    "VLLM_CONFIG_ROOT": "vllm-config",
    "MPLCONFIGDIR": "matplotlib",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
}


class SandboxUnavailable(RuntimeError):
    """This kernel has no Landlock (older than 5.13, or not enabled)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


_libc = ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """Landlock's ABI version here, 0 when there is none."""
    version = int(_libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION)))
    return max(version, 0)


@dataclass(frozen=True)
class Sealed:
    abi: int
    hidden: tuple[str, ...]

    def describe(self) -> str:
        return f"Landlock ABI {self.abi}: {len(self.hidden)} of the runner's paths hidden"


def seal(hidden: Iterable[str | Path], kept: Iterable[str | Path] = ()) -> Sealed:
    """Close this process (and all it starts) off from `hidden`, but for `kept` beneath them. For good."""
    abi = abi_version()
    if abi < 1:
        raise SandboxUnavailable("this kernel has no Landlock (Linux 5.13+ with landlock among its LSMs)")
    rights = RIGHTS_BY_ABI.get(abi, RIGHTS_BY_ABI[5])
    hidden_paths = {Path(os.path.realpath(path)) for path in hidden if os.path.lexists(path)}
    kept_paths = {Path(os.path.realpath(path)) for path in kept if os.path.exists(path)}
    on_the_way = {parent for path in hidden_paths for parent in path.parents}
    _prepare_caches()
    _private_tmp(on_the_way)
    attr = _RulesetAttr(rights, 0, SCOPE_SIGNAL if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else ctypes.sizeof(ctypes.c_uint64)
    ruleset = _check(_libc.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)))
    try:
        for folder in sorted(on_the_way):
            _grant(ruleset, folder, READ_DIR)
            for entry in _entries(folder):
                if entry not in on_the_way and entry not in hidden_paths:
                    _grant(ruleset, entry, rights)
        for path in kept_paths:
            _grant(ruleset, path, rights)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        _check(_libc.syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)))
    finally:
        os.close(ruleset)
    return Sealed(abi, tuple(sorted(str(path) for path in hidden_paths)))


def _entries(folder: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(folder)]
    except OSError:  # not ours to list: nothing beneath it is granted
        return []


def _grant(ruleset: int, path: Path, rights: int) -> None:
    try:
        descriptor = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISLNK(mode):
            return  # a link is followed to its target, whose own place in the tree decides
        allowed = rights if stat.S_ISDIR(mode) else rights & FILE_RIGHTS
        rule = _PathBeneathAttr(allowed, descriptor)
        _check(
            _libc.syscall(
                SYS_ADD_RULE,
                ctypes.c_int(ruleset),
                ctypes.c_int(RULE_PATH_BENEATH),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            )
        )
    finally:
        os.close(descriptor)


def _prepare_caches() -> None:
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for variable, name in CACHES.items():
        os.environ.setdefault(variable, str(home_cache / name))
    hub_cache = [Path(os.environ[name]) for name in ("HF_HOME", "HF_HUB_CACHE") if os.environ.get(name)]
    for folder in (home_cache, *hub_cache, *(Path(os.environ[variable]) for variable in CACHES)):
        with contextlib.suppress(OSError):  # a read-only home: the tool will say so itself
            folder.mkdir(parents=True, exist_ok=True)


def _private_tmp(on_the_way: set[Path]) -> None:
    """Temporary files in a folder of this process's own when the temporary folder lies on the way to a hidden
    path (where nothing new could be written): made now, directly beneath it, with a short name (Ray's sockets)."""
    system = Path(os.path.realpath(tempfile.gettempdir()))
    if system in on_the_way:
        os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="corral-", dir=system)
        tempfile.tempdir = None  # read TMPDIR again


def _check(result: int) -> int:
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"landlock: {os.strerror(error)}")
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.sandbox", description="Run a command in a sandbox.")
    parser.add_argument("--hide", action="append", default=[], help="a path the command may not touch")
    parser.add_argument("--keep", action="append", default=[], help="a path beneath a hidden one it keeps")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    if not command:
        parser.error("no command")
    seal(arguments.hide, arguments.keep)
    os.execvp(command[0], command)
    return 127  # execvp returns only by raising


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
