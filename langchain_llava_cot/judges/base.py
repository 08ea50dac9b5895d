"""What every judge shares: the task it sees, the verdict it gives, and the base class.

A judge reads a :class:`JudgeTask` (the request, the stages chosen so far, the
candidates) and returns a :class:`Verdict` (the winner's index, the comparisons it made,
its token usage, each candidate's score for judges that score, and each step's score
(:class:`StepScore`) for judges that score steps). :func:`best_index`
and :func:`ranked` order candidates by score, ties broken by mean token log-probability;
:func:`reads_logits` tells model judges whether to read a verdict from one forward pass.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from langchain_llava_cot._calls import Step
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.conversation import Conversation
from langchain_llava_cot.stages import Stage

__all__ = [
    "Comparison",
    "Judge",
    "JudgeTask",
    "StepScore",
    "Verdict",
    "best_index",
    "check_verdict_tokens",
    "ranked",
    "reads_logits",
]


@dataclass(frozen=True)
class JudgeTask:
    """What a judge sees: the request, what was chosen so far, and the candidates."""

    conversation: Conversation
    stage: Stage | None
    """The stage being judged; None when whole answers are judged."""
    chosen: Mapping[Stage, str]
    """Stages chosen before this one."""
    candidates: tuple[str, ...]
    mean_logprobs: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """One pairwise decision."""

    first: int
    second: int
    winner: int
    method: Literal["logits", "generated", "unparseable", "identical", "precheck"]
    detail: str = ""


@dataclass(frozen=True)
class StepScore:
    """One step of a candidate, as a process judge split it, and its score (higher is better)."""

    text: str
    score: float


@dataclass(frozen=True)
class Verdict:
    """A judge's choice and how it was reached."""

    winner: int
    comparisons: tuple[Comparison, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    scores: tuple[float | None, ...] = ()
    """Each candidate's score, for judges that score (higher is better)."""
    step_scores: tuple[tuple[StepScore, ...] | None, ...] = ()
    """Each candidate's steps and their scores, for judges that score steps (process reward
    models, the verifier on whole answers); ``scores`` aggregates them."""


class Judge(ABC):
    """Base class of the built-in judges."""

    name: str = "judge"
    scores: bool = False
    """Whether its verdicts score every candidate (``Verdict.scores``): what vote weights,
    retracing and adaptive width read."""
    asks_a_person: bool = False
    """Whether it interrupts the graph for a person's choice: the graph then needs a
    checkpointer, and the run a resume."""

    @abstractmethod
    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Choose the best candidate, yielding any backend calls it needs."""

    def score(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Every candidate's score, even when all are the same text (for thresholds).

        Only for judges with :attr:`scores`; the default is :meth:`select`'s verdict.
        """
        if not self.scores:
            msg = f"The {self.name!r} judge does not score candidates."
            raise TypeError(msg)
        return self.select(task, backend)

    def describe(self) -> dict[str, str]:
        """Which judge this is and why it judges: the run's ``record["judge"]``."""
        return {"name": self.name, "reason": "named by the judge option"}

    def vote_weight(self, score: float) -> float:
        """How much a candidate with ``score`` counts in a weighted vote.

        The score is read as log-odds that the candidate is right (a verifier's margin, a
        reward model's logit), so the weight is that probability.
        """
        return 0.5 * (1.0 + math.tanh(0.5 * score))  # the logistic function, without overflow


def best_index(scores: Sequence[float | None], mean_logprobs: Sequence[float | None]) -> int:
    """The index of the highest score; ties go to the higher mean log-probability, then the first."""
    return ranked(scores, mean_logprobs)[0]


def ranked(scores: Sequence[float | None], mean_logprobs: Sequence[float | None]) -> list[int]:
    """Candidate indices, best first, by :func:`best_index`'s order (no score ranks last)."""

    def key(i: int) -> tuple[float, float, int]:
        likelihood = mean_logprobs[i] if i < len(mean_logprobs) else None
        score = scores[i]
        return (
            float("-inf") if score is None else score,
            float("-inf") if likelihood is None else likelihood,
            -i,
        )

    return sorted(range(len(scores)), key=key, reverse=True)


def reads_logits(backend: VLMBackend, read_logits: bool | None) -> bool:
    """Whether to read verdicts from one forward pass (None: whenever the backend can)."""
    if read_logits is None:
        return backend.supports_choice
    if read_logits and not backend.supports_choice:
        msg = f"{type(backend).__name__} cannot score choices; set read_logits=None or False."
        raise ValueError(msg)
    return read_logits


def check_verdict_tokens(value: object) -> None:
    """A written verdict's token limit must be a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"max_verdict_tokens must be a whole number of at least 1 got {value!r}."
        raise ValueError(msg)
