"""Column types shared by the tables."""

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

# JSONB on PostgreSQL (indexable, compact), plain JSON text on SQLite.
JsonDocument: Any = JSON().with_variant(JSONB(), "postgresql")


class json_array_contains(FunctionElement[bool]):
    """`column` (a JSON array of strings) contains `value`, on PostgreSQL and SQLite alike."""

    type = Boolean()
    inherit_cache = True
    name = "json_array_contains"


@compiles(json_array_contains, "postgresql")
def _contains_postgresql(element: json_array_contains, compiler: SQLCompiler, **kw: Any) -> str:
    column, value = list(element.clauses)
    return f"({compiler.process(column, **kw)} @> jsonb_build_array(CAST({compiler.process(value, **kw)} AS TEXT)))"


@compiles(json_array_contains, "sqlite")
def _contains_sqlite(element: json_array_contains, compiler: SQLCompiler, **kw: Any) -> str:
    column, value = list(element.clauses)
    return (
        f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) "
        f"WHERE json_each.value = {compiler.process(value, **kw)})"
    )


class wide_integer(FunctionElement[int]):
    """An integer expression whose products may pass 64 bits: NUMERIC on PostgreSQL (which would raise on a
    BIGINT overflow), unchanged on SQLite (which moves to floating point by itself). Typed as an integer so
    SQLAlchemy keeps rendering `//` as plain division; at worst the result carries a fraction of a unit."""

    type = BigInteger()
    inherit_cache = True
    name = "wide_integer"


@compiles(wide_integer, "postgresql")
def _wide_postgresql(element: wide_integer, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(next(iter(element.clauses)), **kw)} AS NUMERIC)"


@compiles(wide_integer, "sqlite")
def _wide_sqlite(element: wide_integer, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(next(iter(element.clauses)), **kw))


class floordiv(FunctionElement[int]):
    """`a // b` for non-negative integer expressions, exactly as Python floors it: `div` on PostgreSQL (NUMERIC
    division would keep a fraction), an integer cast of the quotient on SQLite (whose `/` turns to floating point
    past 64 bits). NULL in, NULL out."""

    type = BigInteger()
    inherit_cache = True
    name = "floordiv"


@compiles(floordiv, "postgresql")
def _floordiv_postgresql(element: floordiv, compiler: SQLCompiler, **kw: Any) -> str:
    left, right = list(element.clauses)
    return f"div({compiler.process(left, **kw)}, {compiler.process(right, **kw)})"


@compiles(floordiv, "sqlite")
def _floordiv_sqlite(element: floordiv, compiler: SQLCompiler, **kw: Any) -> str:
    left, right = list(element.clauses)
    return f"CAST(({compiler.process(left, **kw)}) / ({compiler.process(right, **kw)}) AS INTEGER)"


class json_array_subset(FunctionElement[bool]):
    """Every string of `column` (a JSON array) is among `values` (a JSON array given as text)."""

    type = Boolean()
    inherit_cache = True
    name = "json_array_subset"


@compiles(json_array_subset, "postgresql")
def _subset_postgresql(element: json_array_subset, compiler: SQLCompiler, **kw: Any) -> str:
    column, values = list(element.clauses)
    return f"({compiler.process(column, **kw)} <@ CAST({compiler.process(values, **kw)} AS JSONB))"


@compiles(json_array_subset, "sqlite")
def _subset_sqlite(element: json_array_subset, compiler: SQLCompiler, **kw: Any) -> str:
    column, values = list(element.clauses)
    return (
        f"NOT EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) AS wanted "
        f"WHERE wanted.value NOT IN (SELECT offered.value FROM json_each({compiler.process(values, **kw)}) AS offered))"
    )
