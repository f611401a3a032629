import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from corral.tables.base import Base, IdMixin, TimestampMixin, checked_enum
from corral.wire.enums import Scope


class ApiToken(IdMixin, TimestampMixin, Base):
    """A bearer token. Only a SHA-256 of the secret is kept; `key_id` is the public half used to find the row."""

    __tablename__ = "api_tokens"

    name: Mapped[str] = mapped_column(String(100))
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scope: Mapped[Scope] = mapped_column(checked_enum(Scope, "scope"))
    # Runner tokens are bound to one runner.
    runner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runners.id", ondelete="RESTRICT"), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
