"""A judge that asks no model: keep the candidate the model itself found most likely.

>>> from langchain_llava_cot._calls import drive
>>> from langchain_llava_cot.conversation import Conversation, Turn
>>> from langchain_llava_cot.stages import Stage
>>> task = JudgeTask(
...     conversation=Conversation((Turn("user", "How many?"),)),
...     stage=Stage.CONCLUSION, chosen={}, candidates=("2", "3"), mean_logprobs=(-0.9, -0.2))
>>> drive(LikelihoodJudge().select(task, backend=None), backend=None).winner
1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from langchain_llava_cot._calls import Step, finished
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.judges.base import Judge, JudgeTask, Verdict, best_index

__all__ = ["LikelihoodJudge"]


@dataclass
class LikelihoodJudge(Judge):
    """Keep the candidate the model itself found most likely (mean token log-probability)."""

    name: str = field(default="likelihood", init=False)
    scores: bool = field(default=True, init=False)

    def vote_weight(self, score: float) -> float:
        """The geometric-mean probability of the candidate's tokens, ``exp(mean log-probability)``."""
        return math.exp(min(score, 0.0))

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Pick the highest mean log-probability; makes no backend call.

        A candidate without one (an empty continuation has no tokens) ranks last; a backend
        that gives none at all cannot be judged this way.
        """
        scores = task.mean_logprobs
        if len(scores) != len(task.candidates) or all(s is None for s in scores):
            msg = (
                "The likelihood judge needs token log-probabilities, and this backend gave "
                "none. Use judge='auto' or 'pairwise', or a server that returns logprobs."
            )
            raise ValueError(msg)
        return finished(Verdict(best_index(scores, scores), scores=tuple(scores)))
