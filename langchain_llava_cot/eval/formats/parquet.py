"""Parquet files, image columns as ``datasets`` writes them (``{"bytes": ..., "path": ...}``).

Needs ``pyarrow`` (the ``[eval]`` extra).
"""

from __future__ import annotations

from pathlib import Path

from langchain_llava_cot.eval.formats.base import Reader, Table

__all__ = ["PARQUET"]


def _read(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        msg = "Reading Parquet needs pyarrow: pip install 'langchain-llava-cot[eval]'."
        raise ImportError(msg) from e
    table = pq.read_table(path)
    return Table(path, tuple(table.column_names), table.to_pylist(), path.parent)


PARQUET = Reader(
    name="Parquet",
    description="a .parquet file",
    accepts=lambda path: path.is_file() and path.suffix.lower() == ".parquet",
    read=_read,
)
