"""VLMEvalKit's TSV files, the format MMStar, MMBench, AI2D, SEEDBench and HallusionBench ship in.

Columns ``index``, ``image`` (base64) or ``image_path``, ``question``, options ``A``..``H``,
``answer``, optional ``hint``, ``category``, ``l2-category``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from langchain_llava_cot.eval.formats.base import Reader, Table

__all__ = ["TSV"]


def _read(path: Path) -> Table:
    csv.field_size_limit(sys.maxsize)  # a base64 picture is one field of megabytes
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = [dict(row) for row in reader]
        columns = tuple(reader.fieldnames or ())
    return Table(path, columns, rows, path.parent)


TSV = Reader(
    name="VLMEvalKit TSV",
    description="a VLMEvalKit .tsv file",
    accepts=lambda path: path.is_file() and path.suffix.lower() == ".tsv",
    read=_read,
)
