"""How commands print: tables (rich) on a terminal, plain tab-separated lines in CI and pipes, JSON for scripts."""

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel


def on_terminal() -> bool:
    return sys.stdout.isatty()


def emit_json(value: "BaseModel | Sequence[BaseModel] | dict[str, object]") -> None:
    """One JSON document on stdout, in the API's own field names."""
    if hasattr(value, "model_dump"):
        document: Any = value.model_dump(mode="json")
    elif isinstance(value, dict):
        document = value
    else:
        document = [item.model_dump(mode="json") for item in value]
    sys.stdout.write(json.dumps(document, indent=2 if on_terminal() else None) + "\n")


def table(columns: Sequence[str], rows: Sequence[Sequence[object]], *, title: str | None = None) -> None:
    """A table: boxed and coloured on a terminal, tab-separated with a header line otherwise (cut/awk-friendly)."""
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    if not on_terminal():
        lines = ["\t".join(columns), *("\t".join(row) for row in cells)]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    shown = Table(*columns, title=title, header_style="bold", show_lines=False)
    for row in cells:
        shown.add_row(*row)
    Console().print(shown)


def fields(pairs: Sequence[tuple[str, object]]) -> None:
    """A record as `name: value` lines, names aligned."""
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        sys.stdout.write(f"{name.ljust(width)}  {'—' if value in (None, '', []) else value}\n")
