"""The resumable ``answers.jsonl``: every finished answer appended at once, kept across runs.

One JSON line per question and strategy (``strategy``, ``index``, ``correct``, the prediction,
tokens, requests, seconds and the rest of the scored record), written and flushed to the disk
(``fsync``) as each question finishes, so a Ctrl-C or a kill loses at most the questions in flight.
Opening the log again reads what is there: a last line torn by a kill mid-write is cut off (and its
question asked again), and :meth:`AnswerLog.has` tells the runner which answers to keep. While a log
is open, no other run can open the same file (an advisory ``flock``, released by the system when the
process ends, even by a kill), so two runs never ask the same questions into one folder.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with AnswerLog(folder / "answers.jsonl") as log:
...     log.append({"strategy": "greedy", "index": "7", "correct": True})
>>> with (folder / "answers.jsonl").open("a") as file:  # a kill in the middle of the next line
...     _ = file.write('{"strategy": "greedy", "ind')
>>> log = AnswerLog(folder / "answers.jsonl")
>>> log.has("greedy", "7"), log.has("greedy", "8"), log.dropped
(True, False, 1)
>>> log.close()
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["ANSWERS_FILE", "AnswerLog"]

ANSWERS_FILE = "answers.jsonl"


class AnswerLog:
    """The answers of a run in ``path``: those already there, and each new one appended durably.

    Args:
        path: The ``answers.jsonl`` file; made (with its folder) if missing. None keeps the answers
            in memory only.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._answers: dict[tuple[str, str], dict[str, Any]] = {}
        self.dropped = 0
        """Lines that were not whole JSON objects (a torn last line): cut off, their questions asked again."""
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = _open_alone(self.path)
            self._read_and_repair(self.path)

    def _read_and_repair(self, path: Path) -> None:
        """Read every whole line; cut the file after the last one (a kill can tear only the last)."""
        if not path.exists():
            return
        data = path.read_bytes()
        keep = 0
        for line in data.splitlines(keepends=True):
            record = _parse(line)
            if record is None:
                break  # a kill tears only the last line; nothing after it is trusted
            self._answers[(str(record["strategy"]), str(record["index"]))] = record
            keep += len(line)
        self.dropped = sum(1 for line in data[keep:].splitlines() if line.strip())
        if keep < len(data):
            with path.open("r+b") as file:
                file.truncate(keep)

    def has(self, strategy: str, index: str | int) -> bool:
        """Whether ``strategy``'s answer to question ``index`` is already in the log."""
        return (strategy, str(index)) in self._answers

    def answers(self, strategy: str) -> Iterator[dict[str, Any]]:
        """Every logged answer of ``strategy``."""
        return (record for (name, _), record in self._answers.items() if name == strategy)

    def get(self, strategy: str, index: str | int) -> dict[str, Any]:
        """The logged answer of ``strategy`` to question ``index``."""
        return self._answers[(strategy, str(index))]

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line and make it durable before returning."""
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
            self._answers[(str(record["strategy"]), str(record["index"]))] = record

    def __len__(self) -> int:
        return len(self._answers)

    def close(self) -> None:
        """Close the file (every line is already on disk)."""
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> AnswerLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _open_alone(path: Path) -> IO[str]:
    """``path`` opened for appending, locked against other runs; a ValueError if one holds it."""
    file = path.open("a", encoding="utf-8")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows has no flock: one run per folder is up to the user
        return file
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        file.close()
        msg = (
            f"Another run is writing {str(path)!r}; let it finish (then rerun to add what is missing), or "
            "pass another --out."
        )
        raise ValueError(msg) from e
    return file


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or "strategy" not in record or "index" not in record:
        return None
    return record
