"""What a reader is and what it returns: :class:`Reader`, :class:`Table`, :class:`DataError`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DataError", "Reader", "Table"]


class DataError(ValueError):
    """A data file that cannot be read or lacks what the eval needs; the message names the file."""


@dataclass(frozen=True)
class Table:
    """A benchmark's rows as read from its file."""

    path: Path
    """The file or folder read."""
    columns: tuple[str, ...]
    """The column names, in the file's order."""
    rows: Sequence[dict[str, Any]]
    """One dict per question, keyed by column name."""
    base: Path
    """The folder that relative image paths start from."""


@dataclass(frozen=True)
class Reader:
    """One data format: which paths it takes and how to read one."""

    name: str
    """Short name, e.g. ``VLMEvalKit TSV``."""
    description: str
    """What a user passes for this format (shown when no reader takes a path)."""
    accepts: Callable[[Path], bool]
    read: Callable[[Path], Table]


def columns_of(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """Every key of ``rows``, in the order first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return tuple(seen)
