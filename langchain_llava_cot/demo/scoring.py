"""Scoring a conclusion against the demo dataset's answer.

:func:`normalize_answer` reduces a conclusion to its one answer word (``3``, ``red``,
``yes``), and :func:`is_correct` compares that with the example's answer:

>>> normalize_answer("There are three.")
'3'
>>> normalize_answer("Three red squares.") is None  # three answer words
True
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from langchain_llava_cot.demo.scenes import COLOURS, SHAPES, SIZES

if TYPE_CHECKING:
    from langchain_llava_cot.demo.dataset import Example

__all__ = ["is_correct", "is_readable", "normalize_answer", "same_answer"]

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_WORD = re.compile(r"[a-z]+|\d+")
_ANSWER_WORDS = {
    *COLOURS,
    *SHAPES,
    *SIZES,
    "yes",
    "no",
    "none",
    *(f"{s}s" for s in SHAPES),
}


def normalize_answer(text: str) -> str | None:
    """The one answer word in ``text`` (``3``, ``red``, ``yes``), or None.

    Number words become digits and plurals singular. Text naming no answer word, or
    several different ones, gives None.
    """
    found = set()
    for word in _WORD.findall(text.lower()):
        if word.isdigit():
            found.add(str(int(word)))
        elif word in _NUMBERS:
            found.add(str(_NUMBERS.index(word)))
        elif word in _ANSWER_WORDS:
            found.add(word[:-1] if word.endswith("s") and word[:-1] in SHAPES else word)
    return found.pop() if len(found) == 1 else None


def same_answer(text: str, expected: str, kind: str) -> bool:
    """Whether ``text`` gives the answer ``expected`` gives, for a question of ``kind``.

    Descriptions agree when they list the same objects at the same places; other answers
    when they name the same one answer word (and ``expected`` names one).
    """
    if kind == "describe":
        return _listed(text) == _listed(expected)
    wanted = normalize_answer(expected)
    return wanted is not None and normalize_answer(text) == wanted


def is_readable(text: str, kind: str) -> bool:
    """Whether ``text`` gives an answer at all: one answer word, or for a description some objects."""
    return bool(_listed(text)) if kind == "describe" else normalize_answer(text) is not None


def is_correct(conclusion: str, example: Example) -> bool:
    """Whether a conclusion gives the example's answer and no other."""
    return same_answer(conclusion, example.answer, example.kind)


def _listed(text: str) -> list[tuple[int, str]]:
    from langchain_llava_cot.demo.answers import parse_caption

    return sorted((o.cell, o.name) for o in parse_caption(text))
