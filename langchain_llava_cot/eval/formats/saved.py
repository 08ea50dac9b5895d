"""A folder written by ``datasets``' ``save_to_disk``.

A ``Dataset``, or a ``DatasetDict`` with a ``test`` split or only one split. Pictures are read as
stored, never decoded by ``datasets``. Needs ``datasets`` (the ``[eval]`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_llava_cot.eval.formats.base import DataError, Reader, Table

__all__ = ["SAVED_DATASET"]


def _accepts(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
    )


def _read(path: Path) -> Table:
    try:
        import datasets
    except ImportError as e:
        msg = "Reading a save_to_disk folder needs datasets: pip install 'langchain-llava-cot[eval]'."
        raise ImportError(msg) from e
    loaded: Any = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _one_split(loaded, path)
    for name, feature in loaded.features.items():
        if isinstance(feature, datasets.Image):  # keep the stored bytes: no decoding, no re-encoding
            loaded = loaded.cast_column(name, datasets.Image(decode=False))
    return Table(path, tuple(loaded.column_names), loaded.to_list(), path)


def _one_split(splits: Any, path: Path) -> Any:
    if "test" in splits:
        return splits["test"]
    if len(splits) == 1:
        return next(iter(splits.values()))
    msg = (
        f"{str(path)!r} holds the splits {', '.join(splits)} and none is 'test'; save the split to "
        "measure on its own (dataset_dict['NAME'].save_to_disk(FOLDER))."
    )
    raise DataError(msg)


SAVED_DATASET = Reader(
    name="datasets folder",
    description="a folder written by datasets' save_to_disk",
    accepts=_accepts,
    read=_read,
)
