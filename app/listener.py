"""One LISTEN connection per process, relaying PostgreSQL NOTIFYs from every replica to this process's handlers
(wake-ups for waiting claims, generations of changed data), reconnecting after failures.

Whatever was announced while the connection was down is lost, so each channel also names what to do on every
(re)connect: assume anything may have happened.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from corral.config import Settings

log = logging.getLogger("corral.listener")


@dataclass
class Listener:
    handlers: dict[str, Callable[[str], None]] = field(default_factory=dict)
    on_connect: list[Callable[[], None]] = field(default_factory=list)

    def subscribe(self, channel: str, handler: Callable[[str], None], on_connect: Callable[[], None]) -> None:
        self.handlers[channel] = handler
        self.on_connect.append(on_connect)

    async def run(self, settings: Settings) -> None:
        url = settings.database.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 1.0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
                    for channel in self.handlers:
                        await connection.execute(f"LISTEN {channel}")
                    delay = 1.0
                    for catch_up in self.on_connect:
                        catch_up()
                    async for notify in connection.notifies():
                        handler = self.handlers.get(notify.channel)
                        if handler is not None:
                            handler(notify.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listener: %s; reconnecting in %.0f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
