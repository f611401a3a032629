"""Where `corral login` keeps the server and token (mode 600, as gh keeps its hosts file), and how a command
finds them: --server/--token, else CORRAL_SERVER_URL/CORRAL_TOKEN, else the login, else the local default."""

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Login:
    server: str
    token: str | None = None


@dataclass(frozen=True)
class Target:
    server: str
    token: str | None
    source: str  # which of the four it came from, for `corral login --status` and error messages


def login_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "corral" / "login.json"


def load_login() -> Login | None:
    path = login_path()
    try:
        stored = json.loads(path.read_text())
        return Login(server=str(stored["server"]), token=stored.get("token"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"corral: cannot read {path} ({exc!r}); run `corral login` again") from None


def save_login(login: Login) -> Path:
    """Written whole to a mode-600 file in a mode-700 directory, then moved into place: never half a token."""
    path = login_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(json.dumps(dataclasses.asdict(login), indent=2))
    partial.replace(path)
    return path


def forget_login() -> bool:
    path = login_path()
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def resolve(server: str | None, token: str | None) -> Target:
    env_server, env_token = os.environ.get("CORRAL_SERVER_URL"), os.environ.get("CORRAL_TOKEN")
    login = None if (server or env_server) and (token or env_token) else load_login()
    if server:
        chosen, source = server, "--server"
    elif env_server:
        chosen, source = env_server, "CORRAL_SERVER_URL"
    elif login is not None:
        chosen, source = login.server, f"the login in {login_path()}"
    else:
        chosen, source = DEFAULT_SERVER, "the default"
    # A stored token goes only to the server it was stored for.
    stored = login.token if login is not None and login.server.rstrip("/") == chosen.rstrip("/") else None
    return Target(chosen.rstrip("/"), token or env_token or stored, source)
