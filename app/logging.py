"""Logs as text or JSON lines, each carrying the request id; anything shaped like a token is masked."""

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

_request_id: ContextVar[str | None] = ContextVar("corral_request_id", default=None)

# Defence in depth: no code path logs a token, but a token pasted into a name or a URL must not leak either.
TOKEN_PATTERN = re.compile(r"crl(?:reg)?_[A-Za-z0-9_\-]{8,}")
_MASK = "crl_***"
# Fields of LogRecord that are not user extras; the rest become JSON keys.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


def current_request_id() -> str | None:
    return _request_id.get()


def bind_request_id(request_id: str | None) -> object:
    return _request_id.set(request_id)


def reset_request_id(token: object) -> None:
    _request_id.reset(token)  # type: ignore[arg-type]


def mask_tokens(text: str) -> str:
    return TOKEN_PATTERN.sub(_MASK, text)


class _RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get() or "-"
        return True


class _MaskingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_tokens(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry |= {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRS}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return mask_tokens(json.dumps(entry, default=str))


def configure_logging(log_format: str, level: str) -> None:
    """Send corral's, uvicorn's and alembic's logs to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_MaskingTextFormatter("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # huggingface_hub installs its own stderr handler at import; route it through ours (format, masking).
    for name in ("uvicorn", "uvicorn.error", "alembic", "huggingface_hub"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
