"""Every ORM model, imported here so Alembic and relationships see the whole schema."""

from app.models.api_token import ApiToken, Scope
from app.models.base import Base

__all__ = ["ApiToken", "Base", "Scope"]
