"""A leaderboard as CSV and Markdown, and its opaque page cursors."""

import base64
import binascii
import csv
import io
import json
from collections.abc import Sequence

from corral.errors import BadRequest
from corral.scores.leaderboard import RankedRow


def encode_cursor(sort: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"sort": sort, "offset": offset}).encode()).decode()


def decode_cursor(cursor: str | None, sort: str) -> int:
    if cursor is None:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        offset = data["offset"]
        if data["sort"] != sort or not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("The cursor is not valid for this listing (or its sort changed).") from None
    return offset


def to_csv(tasks: Sequence[str], rows: Sequence[RankedRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head = ["rank", "model", "revision", "precision", "chat_template", "parameters", "family", "license", "average"]
    writer.writerow(head + [f"{task}" for task in tasks] + [f"{task}_raw" for task in tasks] + ["evaluation_id"])
    for row in rows:
        scores = [row["tasks"].get(task) for task in tasks]
        writer.writerow(
            [
                row["rank"],
                row["model"],
                row["revision"],
                row["precision"],
                row["chat_template"],
                row["parameters"] or "",
                row["family"] or "",
                row["license"] or "",
                _fmt(row["average"]),
            ]
            + [_fmt(score["normalized"] if score else None) for score in scores]
            + [_fmt(score["raw"] if score else None, 4) for score in scores]
            + [row["evaluation_id"]]
        )
    return out.getvalue()


def to_markdown(tasks: Sequence[str], rows: Sequence[RankedRow]) -> str:
    head = ["#", "model", "revision", "precision", "chat", "average", *tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [
            str(row["rank"]),
            row["model"],
            row["revision"][:7],
            row["precision"],
            "yes" if row["chat_template"] else "no",
            _fmt(row["average"]),
        ]
        for task in tasks:
            score = row["tasks"].get(task)
            if score is None:
                cells.append("—")
            else:
                stderr = score["stderr"]
                cells.append(_fmt(score["normalized"]) + (f" ± {stderr:.2f}" if stderr is not None else ""))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"
