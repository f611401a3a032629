import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, text
from sqlalchemy.orm import Mapped, mapped_column

from corral.documents import AcceleratorRecord
from corral.tables.base import Base, IdMixin, TimestampMixin, checked_enum
from corral.tables.types import JsonDocument
from corral.wire.enums import RunnerState


class Runner(IdMixin, TimestampMixin, Base):
    """A registered GPU/accelerator machine. Deleted runners are kept (jobs will point at them) but hidden."""

    __tablename__ = "runners"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    labels: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    accelerators: Mapped[list[AcceleratorRecord]] = mapped_column(JsonDocument, default=list)
    backends: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    lm_eval_version: Mapped[str | None] = mapped_column(String(32))
    max_concurrent_jobs: Mapped[int] = mapped_column(default=1)
    max_nodes_per_job: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    state: Mapped[RunnerState] = mapped_column(checked_enum(RunnerState, "runner_state"))
    last_contact_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]


class RegistrationToken(IdMixin, TimestampMixin, Base):
    """A short-lived, single-use secret a machine exchanges for its own runner and runner token."""

    __tablename__ = "runner_registration_tokens"

    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    labels: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    runner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runners.id", ondelete="RESTRICT"), default=None)
