"""Scoring an answer the field's way: options by letter or text, numbers with a tolerance, exact text.

:func:`score_answer` picks the rule from the question: a multiple-choice question (or an answer that
is an option letter) is read as an option (:func:`read_choice`); a numeric answer as a number
(:func:`read_number`); any other by exact match after normalising case, spaces and a final full
stop (:func:`normalise_text`), unless a grader scores open answers
(:mod:`~langchain_llava_cot.eval.grading`). A prediction the rule cannot read is wrong and counted as
unreadable, never guessed:

>>> choices = (("A", "2"), ("B", "3"), ("C", "4"))
>>> [read_choice(text, choices) for text in ("B", "(B)", "Answer: B", "3", "B. 3", "2 or 3")]
['B', 'B', 'B', 'B', 'B', None]
>>> read_number("There are 4.0 of them."), read_number("3 or 4")
(4.0, None)
>>> normalise_text("  The Red   Square. ")
'the red square'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from langchain_llava_cot.eval.data import OPTION_LETTERS

if TYPE_CHECKING:
    from langchain_llava_cot.eval.data import EvalQuestion

__all__ = [
    "DEFAULT_TOLERANCE",
    "Score",
    "normalise_text",
    "read_choice",
    "read_number",
    "score_answer",
    "scoring_method",
]

DEFAULT_TOLERANCE = 0.01
"""Numbers match when they differ by at most this share of the expected one (at least this much)."""

Method = Literal["choice", "number", "exact", "grader"]


@dataclass(frozen=True)
class Score:
    """One prediction scored against the expected answer."""

    correct: float
    """1.0 right, 0.0 wrong; a grader's 0-1 score for open answers."""
    readable: bool
    """Whether the rule could read an answer out of the prediction (an unreadable one is wrong)."""
    method: Method
    read: str | None = None
    """What was read: the option's letter, the number, or the normalised text."""


def scoring_method(question: EvalQuestion, graded: bool = False) -> Method:
    """How ``question`` is scored: ``choice``, ``number``, ``exact``, or ``grader`` when ``graded``."""
    if question.choices or question.answer in OPTION_LETTERS:
        return "choice"
    if _number(question.answer) is not None:
        return "number"
    return "grader" if graded else "exact"


def score_answer(question: EvalQuestion, prediction: str, tolerance: float = DEFAULT_TOLERANCE) -> Score:
    """Score ``prediction`` by rule (a graded open question is scored by the grader instead)."""
    method = scoring_method(question)
    if method == "choice":
        choices = question.choices or tuple((letter, "") for letter in OPTION_LETTERS)
        letter = read_choice(prediction, choices)
        return Score(float(letter == question.answer), letter is not None, method, letter)
    if method == "number":
        expected = _number(question.answer)
        assert expected is not None
        value = read_number(prediction)
        right = value is not None and abs(value - expected) <= tolerance * max(1.0, abs(expected))
        return Score(float(right), value is not None, method, None if value is None else f"{value:g}")
    text = normalise_text(prediction)
    return Score(float(text == normalise_text(question.answer)), bool(text), method, text)


def normalise_text(text: str) -> str:
    """Lower case, one space between words, no final full stop."""
    return " ".join(text.split()).casefold().rstrip(".").rstrip()


_ANSWER_IS = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*[:\-]?\s*\(?([A-H])\)?(?![A-Za-z])", re.I)
_LEADING_LETTER = re.compile(r"^\s*(?:\(([A-H])\)|([A-H])(?:[.:)]|$))")


def read_choice(prediction: str, choices: tuple[tuple[str, str], ...]) -> str | None:
    """The option ``prediction`` picks, or None when it names no option or several.

    By letter (``B``, ``(B)``, ``Answer: B``, ``B. 3``) or by the option's text (``3`` when option B
    is ``3``).
    """
    letters = {letter for letter, _ in choices}
    text = prediction.strip()
    if (alone := text.strip("().: ").upper()) in letters:  # the letter alone, in any case: "b.", "(B)"
        return alone
    if (found := _ANSWER_IS.search(text)) and found.group(1).upper() in letters:
        return found.group(1).upper()
    if (found := _LEADING_LETTER.match(text)) and (letter := found.group(1) or found.group(2)) in letters:
        rest = normalise_text(text[found.end() :])
        others = {normalise_text(option) for other, option in choices if other != letter and option}
        return None if rest in others else letter  # "B. 13" when D is 13 contradicts itself
    said = normalise_text(text)
    by_text = [letter for letter, option in choices if option and normalise_text(option) == said]
    if len(by_text) == 1:
        return by_text[0]
    mentioned = {letter for letter, option in choices if option and _mentions(said, normalise_text(option))}
    return mentioned.pop() if len(mentioned) == 1 else None


def _mentions(text: str, option: str) -> bool:
    """Whether ``option`` appears in ``text`` as whole words."""
    return re.search(rf"(?<![\w.]){re.escape(option)}(?![\w]|\.\d)", text) is not None


_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?")
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()


def read_number(prediction: str) -> float | None:
    """The one number ``prediction`` gives (digits or a word up to twenty).

    None when it gives none or several different ones.
    """
    values = {_number(match) for match in _NUMBER.findall(prediction)}
    values |= {
        float(_NUMBER_WORDS.index(w)) for w in re.findall(r"[a-z]+", prediction.lower()) if w in _NUMBER_WORDS
    }
    values.discard(None)
    return values.pop() if len(values) == 1 else None  # type: ignore[return-value]


def _number(text: str) -> float | None:
    text = text.strip().replace(",", "").removesuffix("%")
    try:
        return float(text)
    except ValueError:
        return None
