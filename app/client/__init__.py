"""The Python client of Corral's REST API, typed with the server's own schemas: `Corral` (blocking) and
`AsyncCorral` (asyncio), with retries on 429/503 (Retry-After honoured) and pagination iterators."""

from corral.client.asyncio import AsyncCorral
from corral.client.errors import ApiError, CorralError, ServerUnreachable
from corral.client.sync import Corral

__all__ = ["ApiError", "AsyncCorral", "Corral", "CorralError", "ServerUnreachable"]
