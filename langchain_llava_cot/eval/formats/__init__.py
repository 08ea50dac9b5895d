"""Benchmark files as tables of rows: one reader per format, behind a small registry.

Each reader says which paths it takes and turns one into a :class:`Table` (column names, rows as
dicts, the folder relative image paths start from). :func:`read_table` picks the reader:

- :mod:`.tsv`: VLMEvalKit's TSV files (MMStar, MMBench, AI2D, SEEDBench, HallusionBench...), pictures
  as base64 in an ``image`` column or as paths in ``image_path``;
- :mod:`.jsonl`: JSON Lines (one object a line) and JSON (a list of objects);
- :mod:`.parquet`: Parquet files, image columns as ``datasets`` writes them (``{"bytes", "path"}``);
- :mod:`.saved`: a folder written by ``datasets``' ``save_to_disk``.

Adding a format is a module with a :class:`Reader` and one line in :data:`READERS`.
"""

from __future__ import annotations

from pathlib import Path

from langchain_llava_cot.eval.formats.base import DataError, Reader, Table
from langchain_llava_cot.eval.formats.jsonl import JSON, JSONL
from langchain_llava_cot.eval.formats.parquet import PARQUET
from langchain_llava_cot.eval.formats.saved import SAVED_DATASET
from langchain_llava_cot.eval.formats.tsv import TSV

__all__ = ["READERS", "DataError", "Reader", "Table", "read_table", "reader_for"]

READERS: tuple[Reader, ...] = (TSV, JSONL, JSON, PARQUET, SAVED_DATASET)
"""Every data format ``llava-cot eval --data`` reads, tried in this order."""


def reader_for(path: Path) -> Reader:
    """The reader that takes ``path``; a :class:`DataError` names the formats when none does."""
    if not path.exists():
        msg = f"Data file {str(path)!r} does not exist."
        raise DataError(msg)
    for reader in READERS:
        if reader.accepts(path):
            return reader
    kinds = "; ".join(reader.description for reader in READERS)
    msg = f"Cannot read {str(path)!r}: unknown data format. Pass one of: {kinds}."
    raise DataError(msg)


def read_table(path: str | Path) -> Table:
    """Read a benchmark file or folder in any format of :data:`READERS`."""
    path = Path(path).expanduser()
    reader = reader_for(path)
    try:
        return reader.read(path)
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as e:
        msg = f"Cannot read {str(path)!r} as {reader.name}: {e}"
        raise DataError(msg) from e
