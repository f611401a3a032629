"""The environment a job's lm-eval process gets: named variables only, never the agent's whole environment.

The agent may run beside secrets (its own token, a database URL, cloud credentials in the shell it was started
from); a job sees the variables listed here, those the operator names in `job_env_passthrough` or sets in
`job_env`, and the runner's Hub token only when the job's weights may need it. The same list serves the local
worker, `sbatch --export` and the Kubernetes pod.
"""

import json
import os
import sys
from collections.abc import Mapping

# Where things are and how to reach them: no credential among them (a proxy URL may carry one; it is the
# proxy the Hub is reached through, and the operator's to set).
PASSED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "CUDA_PATH",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "XDG_CACHE_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "HF_DATASETS_OFFLINE",
    "HF_DATASETS_CACHE",
    "TRANSFORMERS_OFFLINE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)
# Which devices this machine's processes use: the local worker's business; a cluster engine sets its own.
DEVICES = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
FIXED = {
    "PYTHONUNBUFFERED": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Nothing phones home, and no dataset loading script runs (datasets before 4.0 could run them).
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_DATASETS_TRUST_REMOTE_CODE": "0",
}
# Names a job never gets from the operator's lists either: Corral's own settings and secrets, and the Hub token
# (which travels only through `hf_token`, only to jobs whose weights may need it).
NEVER_PREFIXES = ("CORRAL_",)
NEVER = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})


def never_passed(name: str) -> bool:
    return name in NEVER or name.startswith(NEVER_PREFIXES)


def job_environment(
    source: Mapping[str, str],
    *,
    passthrough: list[str],
    extra: Mapping[str, str],
    hf_cache_dir: str | None,
    hf_token: str | None,
    local: bool,
) -> dict[str, str]:
    """The variables a job runs with, taken by name from `source` (the agent's environment)."""
    names = [*PASSED, *(DEVICES if local else ()), *passthrough]
    env = {name: source[name] for name in names if name in source and not never_passed(name)}
    env |= FIXED
    env |= {name: value for name, value in extra.items() if not never_passed(name)}
    if hf_cache_dir is not None:
        env["HF_HOME"] = hf_cache_dir
    if hf_token is not None:
        env["HF_TOKEN"] = hf_token
    return env


SECRETS_FD = "CORRAL_RUNNER_SECRETS_FD"


def keep_secrets_out_of_sight() -> None:
    """The agent's secrets given in its environment (CORRAL_RUNNER_TOKEN, HF_TOKEN, whatever CORRAL_* the shell
    held) would stay readable for its whole life in /proc/<pid>/environ, which a job's code on this machine can
    read: the agent starts itself again without them and takes them back through a pipe, into memory only."""
    inherited = os.environ.pop(SECRETS_FD, None)
    if inherited is not None:
        with os.fdopen(int(inherited), "rb") as pipe:
            os.environ.update(json.loads(pipe.read()))
        return
    secrets = {name: value for name, value in os.environ.items() if never_passed(name)}
    payload = json.dumps(secrets).encode()
    if not secrets or len(payload) > 60_000:  # nothing to hide, or more than a pipe holds unread
        return
    read, write = os.pipe()
    os.write(write, payload)
    os.close(write)
    os.set_inheritable(read, True)
    environment = {name: value for name, value in os.environ.items() if name not in secrets} | {SECRETS_FD: str(read)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
