"""Keyset (cursor) pagination: stable under inserts, no OFFSET scans, opaque to clients.

A list endpoint declares which columns it sorts on; `sort=-created_at` means descending. The cursor
carries the sort key and the last row's (value, id), base64url-encoded; a cursor made under another sort
is refused rather than misread.
"""

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from sqlalchemy import ColumnElement, Select, and_, func, literal, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from corral.config import Settings
from corral.errors import BadRequest
from corral.state import state_of

RowT = TypeVar("RowT")


@dataclass(frozen=True)
class PageRequest:
    cursor: str | None
    limit: int


async def page_request(
    request: Request,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` from the previous page.")] = None,
    limit: Annotated[
        int | None, Query(ge=1, description="Items per page; capped by the server (CORRAL_PAGE_LIMIT_MAX).")
    ] = None,
) -> PageRequest:
    settings: Settings = state_of(request).settings
    chosen = settings.page_limit_default if limit is None else limit
    return PageRequest(cursor=cursor, limit=min(chosen, settings.page_limit_max))


PageDep = Annotated[PageRequest, Depends(page_request)]


@dataclass(frozen=True)
class SortKey:
    """A nullable sort column: NULLs sort as `nulls_as` (first ascending, last descending), so keysets work."""

    column: InstrumentedAttribute[Any]
    nulls_as: Any

    def expression(self) -> ColumnElement[Any]:
        return func.coalesce(self.column, literal(self.nulls_as, self.column.type))

    def value_of(self, row: Any) -> Any:
        value = getattr(row, self.column.key)
        return self.nulls_as if value is None else value


SortColumn = InstrumentedAttribute[Any] | SortKey  # a NOT NULL column, or a nullable one with its stand-in


def _sort_key(column: SortColumn) -> SortKey:
    # A NOT NULL column needs no coalescing; a sentinel of None keeps the plain column in the SQL.
    return column if isinstance(column, SortKey) else SortKey(column, nulls_as=None)


def _encode(sort: str, value: Any, row_id: uuid.UUID) -> str:
    if isinstance(value, datetime):
        value = {"dt": value.isoformat()}
    elif isinstance(value, date):
        value = {"d": value.isoformat()}
    payload = json.dumps({"s": sort, "v": value, "id": str(row_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _decode(cursor: str, sort: str, key: "SortKey") -> tuple[Any, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        value = payload["v"]
        if isinstance(value, dict):
            value = datetime.fromisoformat(value["dt"]) if "dt" in value else date.fromisoformat(value["d"])
        row_id = uuid.UUID(payload["id"])
        made_for = payload["s"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BadRequest("The cursor is not valid; start again without one.") from None
    if made_for != sort:
        raise BadRequest(f"The cursor was made for sort={made_for}; send the same sort with it.")
    if not _fits_column(value, key):
        raise BadRequest("The cursor is not valid; start again without one.")
    return value, row_id


def _fits_column(value: Any, key: "SortKey") -> bool:
    """A cursor's value must be what the sort column holds (cursors are opaque, not tamper-proof)."""
    expected = key.column.type.python_type
    if isinstance(value, bool) or not isinstance(value, expected):
        return False
    return not isinstance(value, datetime) or value.tzinfo is not None


async def paginate(
    session: AsyncSession,
    statement: Select[RowT],  # one entity selected: rows come back as scalars
    *,
    sort: str,
    columns: Mapping[str, SortColumn],
    id_column: InstrumentedAttribute[uuid.UUID],
    page: PageRequest,
) -> tuple[list[RowT], str | None]:
    """One page of `statement` ordered by `sort` (a key of `columns`, '-' for descending), ties broken by id."""
    descending = sort.startswith("-")
    key = _sort_key(columns[sort.removeprefix("-")])
    column: Any = key.column if key.nulls_as is None else key.expression()
    if page.cursor is not None:
        value, last_id = _decode(page.cursor, sort, key)
        if descending:
            statement = statement.where(or_(column < value, and_(column == value, id_column < last_id)))
        else:
            statement = statement.where(or_(column > value, and_(column == value, id_column > last_id)))
    order = (column.desc(), id_column.desc()) if descending else (column.asc(), id_column.asc())
    rows = list((await session.execute(statement.order_by(*order).limit(page.limit + 1))).scalars())
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    last = rows[-1]
    return rows, _encode(sort, key.value_of(last), getattr(last, id_column.key))
