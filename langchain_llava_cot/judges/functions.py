"""Judges made from your own function.

- :class:`FunctionJudge` wraps ``judge(task: JudgeTask) -> int`` (sync or async), returning
  the index of the best candidate; any such callable passed as ``judge=`` becomes one.
- :class:`ScoreJudge` wraps ``(JudgeTask) -> list[float]`` (sync or async), a score per
  candidate: how a reward model plugs in.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from langchain_llava_cot._calls import FunctionCall, Step
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.judges.base import Judge, JudgeTask, Verdict, best_index

__all__ = ["FunctionJudge", "ScoreJudge"]


@dataclass
class FunctionJudge(Judge):
    """Wrap a function ``(JudgeTask) -> int`` (sync or async) as a judge."""

    function: Callable[[JudgeTask], int | Awaitable[int]]
    name: str = field(default="function", init=False)

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Call the function and check its answer."""
        winner = yield FunctionCall(self.function, task)
        whole = isinstance(winner, numbers.Integral) and not isinstance(winner, bool)  # numpy's too
        if not whole or not 0 <= int(winner) < len(task.candidates):  # type: ignore[call-overload]
            msg = (
                f"Judge function returned {winner!r}; it must return the index (0 to "
                f"{len(task.candidates) - 1}) of the best candidate, a whole number (not a bool)."
            )
            raise ValueError(msg)
        return Verdict(int(winner), calls=1)  # type: ignore[call-overload]


@dataclass
class ScoreJudge(Judge):
    """Score every candidate with a function ``(JudgeTask) -> list[float]`` (sync or async).

    The highest score wins (ties: the higher mean token log-probability, then the earlier
    candidate), and the scores go into the record, the stream, vote weights and retrace
    thresholds like a verifier's. This is how a VLM reward model that needs the picture
    plugs in (``task.conversation`` holds it);
    :func:`~langchain_llava_cot.judges.prompts.reward_text` renders a candidate in its
    context for text reward models. Scores are read as log-odds when votes are weighed.
    """

    function: Callable[[JudgeTask], Sequence[float] | Awaitable[Sequence[float]]]
    name: str = "score"
    scores: bool = field(default=True, init=False)

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Call the function once for all candidates; keep the highest score."""
        scored = yield from self.score(task, backend)
        return replace(scored, winner=best_index(scored.scores, task.mean_logprobs))

    def score(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """The function's scores, checked: one finite number per candidate."""
        scores = yield FunctionCall(self.function, task, blocking=True)
        checked = _checked_scores(scores, len(task.candidates), self.name)
        return Verdict(0, calls=1, scores=checked)


def _checked_scores(scores: object, count: int, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in scores)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        msg = (
            f"The {name!r} judge's function returned {scores!r}; it must return {count} finite "
            "numbers, one per candidate."
        )
        raise ValueError(msg)
    return values
