"""JSON Lines (one question object a line) and JSON (a list of question objects)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_llava_cot.eval.formats.base import DataError, Reader, Table, columns_of

__all__ = ["JSON", "JSONL"]


def _read_lines(path: Path) -> Table:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                msg = f"{str(path)!r} line {number} is not JSON ({e.msg}); write one JSON object a line."
                raise DataError(msg) from e
            rows.append(_object(row, path, f"line {number}"))
    return Table(path, columns_of(rows), rows, path.parent)


def _read_list(path: Path) -> Table:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        msg = f"{str(path)!r} is not JSON ({e.msg} at line {e.lineno})."
        raise DataError(msg) from e
    if not isinstance(data, list):
        msg = f"{str(path)!r} holds a JSON {type(data).__name__}; write a list of question objects."
        raise DataError(msg)
    rows = [_object(row, path, f"item {number}") for number, row in enumerate(data)]
    return Table(path, columns_of(rows), rows, path.parent)


def _object(row: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        msg = f"{str(path)!r} {where} is a JSON {type(row).__name__}, not an object with a question."
        raise DataError(msg)
    return row


JSONL = Reader(
    name="JSON Lines",
    description="a .jsonl file (one question object a line)",
    accepts=lambda path: path.is_file() and path.suffix.lower() == ".jsonl",
    read=_read_lines,
)
JSON = Reader(
    name="JSON",
    description="a .json file (a list of question objects)",
    accepts=lambda path: path.is_file() and path.suffix.lower() == ".json",
    read=_read_list,
)
