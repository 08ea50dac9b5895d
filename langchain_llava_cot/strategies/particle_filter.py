"""``strategy="particle_filter"``: particle filtering (its-hub), stage by stage.

N particles (partial answers) advance together. At every stage each particle samples one
continuation, the judge scores it after that particle's path, and, before the next stage,
the N particles are drawn again with replacement, each with probability
softmax(score / ``resample_temperature``): well-scored partial answers multiply, poor ones
die out, and no particle is kept or dropped by a hard cut. After the conclusion the
best-scored particle wins. With ``seed`` set the draws are reproducible.

All particles' continuations are sampled in one backend call (particles that share a path
share one request). The record keeps every candidate with its ``path`` (its particle) and
score, which candidate each new particle copies (``resampled``), and the ``paths`` alive
after each step. It needs a judge that scores (likelihood, verifier, a reward model).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from langchain_llava_cot.judges import Verdict
from langchain_llava_cot.options import SearchContext, SearchOptions
from langchain_llava_cot.stages import STAGES, Stage
from langchain_llava_cot.state import Expansion, SearchState
from langchain_llava_cot.strategies.paths import PathSearch

__all__ = ["ParticleFilter", "resample"]


def resample(scores: Sequence[float | None], temperature: float, rng: random.Random) -> list[int]:
    """N indices drawn with replacement, each with probability softmax(score / temperature), sorted.

    A missing score weighs nothing, unless every score is missing (then all weigh the same).
    """
    known = [s for s in scores if s is not None]
    if not known:
        weights = [1.0] * len(scores)
    else:
        top = max(known)
        weights = [0.0 if s is None else math.exp((s - top) / temperature) for s in scores]
    return sorted(rng.choices(range(len(scores)), weights=weights, k=len(scores)))


class ParticleFilter(PathSearch):
    """N particles, resampled at each stage in proportion to the softmax of their scores."""

    name = "particle_filter"
    scores_needed = "resamples its particles by score"

    def paths(self, options: SearchOptions) -> int:
        """One path per particle."""
        return options.candidates

    def each(self, options: SearchOptions) -> int:
        """Each particle samples one continuation."""
        return 1

    def carry_on(
        self, stage: Stage, state: SearchState, context: SearchContext, pending: Expansion, verdict: Verdict
    ) -> tuple[list[int], dict[str, Any]]:
        """Resample the particles by score; after the last stage all stay, for the best to win."""
        if stage is STAGES[-1]:
            return list(range(len(pending["candidates"]))), {}
        step = len(state.get("steps") or [])
        rng = random.Random(None if context.seed is None else f"particle_filter:{context.seed}:{step}")
        drawn = resample(verdict.scores, context.resample_temperature, rng)
        return drawn, {"resampled": drawn}
