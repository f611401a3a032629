"""The Python client of Corral's REST API, typed with the server's own schemas: `Corral` (blocking) and
`AsyncCorral` (asyncio), with retries on 429/503 (Retry-After honoured) and pagination iterators."""

from app.client.asyncio import AsyncCorral
from app.client.errors import ApiError, CorralError, ServerUnreachable
from app.client.sync import Corral

__all__ = ["ApiError", "AsyncCorral", "Corral", "CorralError", "ServerUnreachable"]
