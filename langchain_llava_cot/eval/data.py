"""Questions from a benchmark file: columns found or named, options, pictures decoded, bad rows skipped.

A :class:`~langchain_llava_cot.eval.formats.Table` from any reader becomes a list of
:class:`EvalQuestion`. Columns are found by their usual names (``question``, ``answer``, ``image`` or
``image_path``, ``choices`` or the option columns ``A``..``H``, ``category``, ``hint``, ``index`` or
``id``) or named with ``--columns question=query,image=decoded_image,...`` (:func:`parse_columns`).
A row whose picture cannot be decoded, or whose answer is not one of its options, is skipped and
reported by its index; a file without a question or answer column is refused as a whole.

>>> parse_columns("question=query, answer=ans")
{'question': 'query', 'answer': 'ans'}
"""

from __future__ import annotations

import base64
import binascii
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_llava_cot.eval.formats import DataError, Table, read_table
from langchain_llava_cot.images import ImageError, image_block, validate_image

if TYPE_CHECKING:
    from langchain_core.messages import HumanMessage

__all__ = [
    "FIELDS",
    "OPTION_LETTERS",
    "Dataset",
    "EvalQuestion",
    "load_questions",
    "parse_columns",
    "questions_from_table",
]

OPTION_LETTERS = tuple(string.ascii_uppercase[:8])
"""The option columns of VLMEvalKit's multiple-choice files, ``A`` to ``H``."""

FIELDS: dict[str, tuple[str, ...]] = {
    "question": ("question",),
    "answer": ("answer",),
    "image": ("image", "image_path", "images", "decoded_image"),
    "choices": ("choices", "options"),
    "category": ("category", "l2-category", "subject"),
    "hint": ("hint",),
    "index": ("index", "id", "question_id", "pid"),
}
"""Each field the eval reads, and the column names it looks for when ``--columns`` names none."""

_REQUIRED = ("question", "answer")


@dataclass(frozen=True)
class EvalQuestion:
    """One question of a benchmark file, ready to ask and to score."""

    index: str
    """The file's own id of the question (its ``index`` or ``id`` column), else its row number."""
    position: int
    """Row number in the file (0-based): the question's seed is the run's seed plus this."""
    question: str
    answer: str
    """The expected answer: an option's letter for a multiple-choice question."""
    images: tuple[bytes, ...] = ()
    choices: tuple[tuple[str, str], ...] = ()
    """``(letter, text)`` of each option; empty for an open question."""
    category: str = ""
    hint: str = ""

    @property
    def kind(self) -> str:
        """The category, as the demo's questions call it (the report groups by it)."""
        return self.category

    def prompt(self) -> str:
        """The text the model is asked: the hint, the question, then each option on its own line."""
        lines = [self.hint.strip()] if self.hint.strip() else []
        lines.append(self.question.strip())
        if self.choices:
            lines.extend(f"{letter}. {text}".rstrip() for letter, text in self.choices)
            lines.append("Answer with the letter of the right option.")
        return "\n".join(lines)

    def message(self) -> HumanMessage:
        """The question as a LangChain user message: its pictures, then :meth:`prompt`."""
        from langchain_core.messages import HumanMessage

        blocks: list[Any] = [image_block(image) for image in self.images]
        return HumanMessage(content=[*blocks, {"type": "text", "text": self.prompt()}])


@dataclass(frozen=True)
class Dataset:
    """The questions read from a file, and the rows skipped on the way."""

    questions: list[EvalQuestion]
    skipped: list[str]
    """One line per skipped row: its index and why."""
    path: Path


def parse_columns(text: str | None) -> dict[str, str]:
    """Read ``--columns``: ``FIELD=COLUMN`` pairs separated by commas."""
    if not text:
        return {}
    names: dict[str, str] = {}
    for part in text.split(","):
        field, sep, column = (s.strip() for s in part.partition("="))
        if not sep or not field or not column or field not in FIELDS:
            msg = (
                f"--columns takes FIELD=COLUMN pairs, e.g. question=query,image=decoded_image; FIELD is one "
                f"of {', '.join(FIELDS)} (got {part.strip()!r})."
            )
            raise ValueError(msg)
        names[field] = column
    return names


def load_questions(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    *,
    questions: int | None = None,
    shuffle: int | None = None,
) -> Dataset:
    """Read a benchmark file: every question, or the first ``questions`` (after a seeded ``shuffle``)."""
    table = read_table(path)
    found, skipped = questions_from_table(table, columns or {})
    if shuffle is not None:
        random.Random(shuffle).shuffle(found)
    if questions is not None:
        found = found[:questions]
    if not found:
        msg = f"{str(table.path)!r} holds no question that can be asked ({len(skipped)} rows skipped)."
        raise DataError(msg)
    return Dataset(found, skipped, table.path)


def questions_from_table(table: Table, columns: Mapping[str, str]) -> tuple[list[EvalQuestion], list[str]]:
    """Every row of ``table`` as an :class:`EvalQuestion`, and a line for each row skipped."""
    names = _column_names(table, columns)
    by_index = {str(row.get(names["index"])): row for row in table.rows} if "index" in names else {}
    found: list[EvalQuestion] = []
    skipped: list[str] = []
    for position, row in enumerate(table.rows):
        index = (
            str(row[names["index"]])
            if "index" in names and row.get(names["index"]) is not None
            else str(position)
        )
        try:
            found.append(_question(row, position, index, names, table, by_index))
        except (DataError, ImageError) as e:
            skipped.append(f"row {index}: {e}")
    return found, skipped


def _column_names(table: Table, columns: Mapping[str, str]) -> dict[str, str]:
    """The column each field is read from: as named, or the first usual name present."""
    names: dict[str, str] = {}
    for field, usual in FIELDS.items():
        if field in columns:
            if columns[field] not in table.columns:
                msg = (
                    f"{str(table.path)!r} has no column {columns[field]!r} (named for {field}=); its "
                    f"columns: {', '.join(table.columns)}."
                )
                raise DataError(msg)
            names[field] = columns[field]
        elif present := next((c for c in usual if c in table.columns), None):
            names[field] = present
    for field in _REQUIRED:
        if field not in names:
            msg = (
                f"{str(table.path)!r} has no {field} column (looked for {', '.join(FIELDS[field])}); its "
                f"columns: {', '.join(table.columns)}. Name it with --columns {field}=COLUMN."
            )
            raise DataError(msg)
    return names


def _question(
    row: Mapping[str, Any],
    position: int,
    index: str,
    names: Mapping[str, str],
    table: Table,
    by_index: Mapping[str, Mapping[str, Any]],
) -> EvalQuestion:
    question = _text(row.get(names["question"]))
    if not question:
        msg = "the question is empty"
        raise DataError(msg)
    choices = _choices(row, names, table.columns)
    answer = _answer(row.get(names["answer"]), choices)
    images = _images(row.get(names["image"]) if "image" in names else None, table.base, by_index, names)
    return EvalQuestion(
        index=index,
        position=position,
        question=question,
        answer=answer,
        images=images,
        choices=choices,
        category=_text(row.get(names["category"])) if "category" in names else "",
        hint=_text(row.get(names["hint"])) if "hint" in names else "",
    )


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None, or pandas' NaN
        return ""
    return str(value).strip()


def _choices(
    row: Mapping[str, Any], names: Mapping[str, str], columns: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    """Options from a list or mapping column, or from the option columns ``A``..``H`` that hold text."""
    if "choices" in names:
        value = row.get(names["choices"])
        if isinstance(value, str) and value.strip().startswith("["):
            import json

            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if isinstance(value, Mapping):
            return tuple((str(k).strip().upper(), _text(v)) for k, v in value.items() if _text(v))
        if isinstance(value, (list, tuple)) and value:
            if len(value) > len(OPTION_LETTERS):
                msg = f"{len(value)} options; at most {len(OPTION_LETTERS)} (A to H) can be asked"
                raise DataError(msg)
            return tuple(zip(OPTION_LETTERS, (_text(v) for v in value)))
    return tuple(
        (letter, _text(row.get(letter)))
        for letter in OPTION_LETTERS
        if letter in columns and _text(row.get(letter))
    )


def _answer(value: Any, choices: tuple[tuple[str, str], ...]) -> str:
    """The answer as given; for a multiple-choice question, its option's letter."""
    if isinstance(value, (list, tuple)):  # several accepted answers: the first is the reference
        value = value[0] if value else None
    answer = _text(value)
    if not answer:
        msg = "the answer is empty"
        raise DataError(msg)
    if not choices:
        return answer
    letters = [letter for letter, _ in choices]
    if answer.upper() in letters:
        return answer.upper()
    matching = [letter for letter, text in choices if text.casefold() == answer.casefold()]
    if len(matching) == 1:
        return matching[0]
    msg = f"the answer {answer!r} is neither an option's letter ({', '.join(letters)}) nor one option's text"
    raise DataError(msg)


def _images(
    value: Any, base: Path, by_index: Mapping[str, Mapping[str, Any]], names: Mapping[str, str]
) -> tuple[bytes, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(image for item in value for image in _images(item, base, by_index, names))
    if isinstance(value, Mapping):  # datasets' Image: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            return (_checked(bytes(value["bytes"])),)
        if value.get("path"):
            return (_checked(_read_file(str(value["path"]), base)),)
        msg = "the picture holds neither bytes nor a path"
        raise DataError(msg)
    if isinstance(value, (bytes, bytearray)):
        return (_checked(bytes(value)),)
    text = str(value).strip()
    if len(text) <= 64 and text in by_index and "image" in names:  # VLMEvalKit: the picture of another row
        other = by_index[text].get(names["image"])
        if other is not None and str(other).strip() != text:
            return _images(other, base, {}, names)
    if text.startswith("data:"):
        return (_checked(_b64(text.partition(",")[2])),)
    if _is_file(text, base):
        return (_checked(_read_file(text, base)),)
    return (_checked(_b64(text)),)


def _is_file(text: str, base: Path) -> bool:
    """Whether ``text`` names a picture file (absolute, or relative to the data's folder)."""
    if len(text) >= 4096:
        return False
    path = Path(text).expanduser()
    try:
        return (path if path.is_absolute() else base / path).is_file()
    except OSError:  # base64 text is no file name: too long a name, say
        return False


def _read_file(text: str, base: Path) -> bytes:
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        msg = f"picture file {str(path)!r} does not exist"
        raise DataError(msg)
    return path.read_bytes()


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        msg = "the picture is neither a file next to the data nor base64"
        raise DataError(msg) from e


def _checked(data: bytes) -> bytes:
    try:
        return validate_image(data)
    except ImageError as e:
        msg = f"picture cannot be decoded ({e})"
        raise DataError(msg) from e
