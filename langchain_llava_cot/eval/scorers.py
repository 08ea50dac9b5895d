"""Scoring a whole answer: the demo's stage oracles, or a benchmark file's answers the field's way.

Both scorers turn one question, its answer (the conclusion) and its search record into the scores
the report sums up: ``correct`` (0-1), ``readable``, ``pass`` (any final candidate right), ``decisions``
(judge decisions among mixed candidates, with whether a right one was kept), ``well_formed`` and
``category``.

- :class:`DemoScorer`: the demo dataset's ground truth and stage oracles
  (:func:`~langchain_llava_cot.eval.oracle.score_record`): judge decisions at every stage, and
  whether the caption was right and the conclusion follows it.
- :class:`FileScorer`: what can be known on a user's file: the answer by option, number or text
  (:mod:`~langchain_llava_cot.eval.scoring`) or by a grader (:mod:`~langchain_llava_cot.eval.grading`);
  judge decisions at the final step only (no stage oracle exists for a user's data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_llava_cot.eval.oracle import final_texts, score_record, well_formed
from langchain_llava_cot.eval.scoring import DEFAULT_TOLERANCE, score_answer, scoring_method

if TYPE_CHECKING:
    from langchain_llava_cot.demo.dataset import Example
    from langchain_llava_cot.eval.data import EvalQuestion
    from langchain_llava_cot.eval.grading import Grader

__all__ = ["DemoScorer", "FileScorer"]


class DemoScorer:
    """Score the demo's questions against their ground truth, stage by stage."""

    demo = True

    async def score(self, example: Example, content: str, record: Mapping[str, Any]) -> dict[str, Any]:
        from langchain_llava_cot.demo.dataset import normalize_answer

        scored = score_record(example, content, dict(record))
        scored.update(
            category=example.kind,
            kind=example.kind,
            readable=normalize_answer(content) is not None,
            method="demo",
        )
        return scored


class FileScorer:
    """Score a benchmark file's questions: options, numbers, exact text, or a grader for open answers.

    Args:
        tolerance: Numbers match within this share of the expected one.
        grader: Scores open (non-choice, non-numeric) answers; None scores them by exact match.
    """

    demo = False

    def __init__(self, tolerance: float = DEFAULT_TOLERANCE, grader: Grader | None = None) -> None:
        self.tolerance = tolerance
        self.grader = grader

    async def score(self, question: EvalQuestion, content: str, record: Mapping[str, Any]) -> dict[str, Any]:
        scored: dict[str, Any] = {
            "category": question.category,
            "well_formed": well_formed(record),
            "decisions": [],
        }
        if scoring_method(question, graded=self.grader is not None) == "grader":
            assert self.grader is not None
            grade = await self.grader.agrade(question, content)
            scored.update(
                correct=grade.score,
                readable=grade.readable,
                method="grader",
                read=None,
                grader={"prompt": grade.prompt, "verdict": grade.verdict, "score": grade.score},
                **{"pass": None},  # only the chosen answer is graded
            )
            return scored
        score = score_answer(question, content, self.tolerance)
        finals = final_texts(record, content)
        labels = [score_answer(question, text, self.tolerance).correct == 1.0 for text in finals]
        steps = record.get("steps") or []
        if steps and len(finals) > 1 and any(labels) and not all(labels):
            last = steps[-1]
            where = "answer" if len(last["span"]) > 1 else last["stage"]
            scored["decisions"] = [(where, labels[last["winner"]])]
        scored.update(
            correct=score.correct == 1.0, readable=score.readable, method=score.method, read=score.read,
            **{"pass": any(labels)},
        )  # fmt: skip
        return scored
