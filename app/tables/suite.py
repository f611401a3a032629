from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from corral.documents import JsonObject
from corral.tables.base import Base, IdMixin, TimestampMixin
from corral.tables.types import JsonDocument


class SuiteVersion(IdMixin, TimestampMixin, Base):
    """One version of a suite definition, named by its content hash; every version is kept."""

    __tablename__ = "suite_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(16))
    latest: Mapped[bool]
    definition: Mapped[JsonObject] = mapped_column(JsonDocument)
