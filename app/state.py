"""The application's state, typed: what it holds for its life, read by requests and background tasks from here."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from corral.clock import Clock
from corral.config import Settings
from corral.metrics import Metrics

Part = TypeVar("Part")


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    metrics: Metrics
    clock: Clock
    # The domain's long-lived objects (the Hub client, the queue's wake-up signal), by their type: the kernel
    # cannot name the domain's classes, and `part` hands each back typed.
    parts: Mapping[type, object]

    def part(self, kind: type[Part]) -> Part:
        found = self.parts[kind]
        if not isinstance(found, kind):
            raise TypeError(f"the application's {kind.__name__} is a {type(found).__name__}")
        return found


def state_of(connection: HTTPConnection) -> AppState:
    """The state of the application serving this request."""
    state: AppState = connection.app.state.corral
    return state
