"""Settings: every knob is a CORRAL_* environment variable (or a line in .env), validated once at start-up."""

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:  # SQLAlchemy is imported when a URL is read, not by every command that loads this module
    from sqlalchemy.engine import URL

# Driver per database family: the embedded default is SQLite through aiosqlite; production is PostgreSQL
# through psycopg 3. A bare `postgresql://` URL (as most tools print it) is upgraded to the psycopg driver.
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


def data_directory() -> Path:
    """Where the embedded database lives unless CORRAL_DATABASE_URL says otherwise: one fixed place per user
    ($XDG_DATA_HOME/corral, else ~/.local/share/corral), so every command finds the same database wherever it is
    run from (a relative ./corral.db made a new, empty database in each directory)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "corral"


def default_database_url() -> str:
    return f"sqlite+aiosqlite:///{data_directory() / 'corral.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_", env_file=".env", extra="ignore", frozen=True)

    database_url: str = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL; sqlite (embedded, default: ~/.local/share/corral/corral.db) or postgresql.",
    )
    sqlite_busy_timeout_seconds: float = Field(
        default=15.0, ge=0, le=600, description="How long an SQLite writer waits for the write lock (then 503)."
    )
    public_reads: bool = Field(default=True, description="Let anonymous clients read; writes always need a token.")
    # No user:password@ in the URL: it would show in error messages; a mirror's credential is CORRAL_HUB_TOKEN.
    hub_endpoint: str = Field(default="https://huggingface.co", pattern=r"^https?://[^\s/@]+(/[^\s@]*)?$")
    hub_token: SecretStr | None = None
    hub_timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="Per Hub request.")
    hub_retries: int = Field(default=3, ge=0, le=10, description="Retries on 429, 5xx and network errors.")
    hub_backoff_seconds: float = Field(default=1.0, ge=0, le=60, description="First retry delay; doubles, with jitter.")
    hub_backoff_max_seconds: float = Field(default=30.0, ge=0, le=600, description="Cap on one retry delay.")
    hub_request_deadline_seconds: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="How long a request waits for the Hub at most, retries included (then 503); background "
        "syncs are not bound by it.",
    )
    hub_sync_interval_seconds: int = Field(
        default=6 * 3600, ge=0, description="Background re-sync of Hub-synced models; 0 turns it off."
    )
    hub_sync_concurrency: int = Field(
        default=16,
        ge=1,
        le=64,
        description="Hub calls in flight at once, this process's requests and background syncs together; a request "
        "that finds them all taken is answered 503 at once (a background sync waits for one).",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long requests in flight may finish; then they are cut (a Hub call that never "
        "answers holds nothing up).",
    )
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/@]+(/[^\s@]*)?$",
        description="The URL people reach this service at, for links in Hub exports; default: the request's own.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    page_limit_default: int = Field(default=50, ge=1, le=1000)
    page_limit_max: int = Field(default=200, ge=1, le=1000)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Larger request bodies get 413.")
    harness_version: str = Field(
        default="0.4.13",
        pattern=r"^[0-9A-Za-z.+-]{1,32}$",
        description="lm-eval version an evaluation asks for when the request names none (runners must match).",
    )
    lease_seconds: int = Field(default=90, ge=5, le=86400, description="A claim lives this long without heartbeats.")
    heartbeat_seconds: int = Field(default=15, ge=1, le=3600, description="How often runners are told to beat.")
    reaper_interval_seconds: float = Field(
        default=15.0, ge=0, le=3600, description="How often lapsed leases are expired; 0 turns the loop off."
    )
    claim_wait_max_seconds: float = Field(default=25.0, ge=0, le=120, description="Longest claim long-poll.")
    claim_poll_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Re-check interval of a waiting claim between wake-ups."
    )
    retry_backoff_seconds: float = Field(
        default=30.0, ge=0, le=3600, description="First requeue delay after a lost or failed attempt; doubles."
    )
    max_infrastructure_retries: int = Field(default=3, ge=0, le=50)
    max_oom_retries: int = Field(default=2, ge=0, le=10)
    oom_memory_growth_percent: int = Field(default=50, ge=1, le=1000, description="Memory added after an OOM.")
    max_log_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Per attempt; more gets 413.")
    leaderboard_cache_seconds: float = Field(
        default=10.0, ge=0, le=3600, description="How long a ranked leaderboard is reused by one process."
    )
    token_touch_seconds: int = Field(
        default=60,
        ge=0,
        description="A token's last_used_at is written at most this often (fewer writes on reads).",
    )
    view_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="How long one process serves a kept registry read or page without building it again; a "
        "change committed anywhere drops it at once on PostgreSQL (0: never keep one).",
    )
    token_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description="How long one process trusts a verified token without reading it again; a revoke reaches "
        "every process at once on PostgreSQL, within this bound otherwise (0: read it on every request).",
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a database URL (expected sqlite+aiosqlite:///PATH or postgresql://...)") from None
        family = url.get_backend_name()
        if family not in _ASYNC_DRIVERS:
            raise ValueError(f"unsupported database {family!r}: use sqlite or postgresql")
        return value

    @field_validator("page_limit_max")
    @classmethod
    def _max_not_below_default(cls, value: int, info: object) -> int:
        default = getattr(info, "data", {}).get("page_limit_default", 1)
        if value < default:
            raise ValueError(f"must be at least CORRAL_PAGE_LIMIT_DEFAULT ({default})")
        return value

    @cached_property
    def database(self) -> "URL":
        """The async URL the engine uses (driver filled in)."""
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        return url.set(drivername=_ASYNC_DRIVERS[url.get_backend_name()])

    @property
    def is_sqlite(self) -> bool:
        return self.database.get_backend_name() == "sqlite"

    @property
    def sqlite_file(self) -> Path | None:
        """The embedded database's file (None for PostgreSQL or an in-memory SQLite)."""
        if not self.is_sqlite or self.database.database in (None, "", ":memory:"):
            return None
        return Path(self.database.database).resolve()

    @property
    def database_display(self) -> str:
        """The database URL with any password hidden, for messages and logs."""
        return self.database.render_as_string(hide_password=True)


class SettingsError(Exception):
    """Settings that cannot be used; the message is one line naming the setting."""


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; turn a validation failure into one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "CORRAL_" + "_".join(str(part) for part in first["loc"]).upper()
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from None
