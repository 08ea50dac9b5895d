"""Adaptive width (``adaptive=True``): a step sampled in rounds, the rest only when the first is not enough.

The first round samples ``adaptive_start`` candidates. It is enough when they are all the
same text (``stopped_early="agreement"``), or, with ``confidence=`` set, when the judge
scores one of them at least that high (``"confidence"``: that verdict is kept in the
expansion's notes, so the judge node does not ask again). Otherwise the other
``N - adaptive_start`` candidates are sampled with another seed. Strategies that allow it
(:attr:`~langchain_llava_cot.strategies.SearchStrategy.adaptive`: stage_beam, retrace) call
:func:`expand_in_rounds` from their ``expand`` and :func:`kept_verdict` from their ``judge``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from langchain_llava_cot._calls import SampleCall, Step
from langchain_llava_cot.graph import (
    candidate,
    judge_task,
    sample_request,
    sampling_usage,
    step_scores_record,
    verdict_usage,
)
from langchain_llava_cot.judges import Comparison, StepScore, Verdict
from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.stages import Stage
from langchain_llava_cot.state import SearchState, add_usage
from langchain_llava_cot.strategies.base import Expanded

__all__ = ["ROUND_SEED", "expand_in_rounds", "kept_verdict"]

ROUND_SEED = 7919
"""Added to the seed of an adaptive step's second round, so it does not repeat the first."""


def expand_in_rounds(
    stage: Stage, state: SearchState, context: SearchContext, room: int | None
) -> Step[Expanded]:
    """``adaptive_start`` candidates, then the rest only if they are not enough."""
    span = context.span(stage)
    request = sample_request(stage, state, context, room)
    first = replace(request, n=min(context.adaptive_start, request.n))
    [samples] = yield SampleCall((first,))
    usage = sampling_usage(samples)
    candidates = [candidate(span, s) for s in samples]
    if len(candidates) == request.n:
        return Expanded(candidates, usage, {"stopped_early": None})
    if len(candidates) > 1 and len({c["text"].strip() for c in candidates}) == 1:
        return Expanded(candidates, usage, {"stopped_early": "agreement"})
    if context.confidence is not None:
        task = judge_task(stage, [s.value for s in span], state, candidates)
        verdict = yield from context.resolved_judge.select(task, context.get_backend())
        usage = add_usage(usage, verdict_usage(verdict))
        if any(score is not None and score >= context.confidence for score in verdict.scores):
            kept = {"winner": verdict.winner, "scores": list(verdict.scores),
                    "comparisons": [vars(c) for c in verdict.comparisons],
                    "step_scores": step_scores_record(verdict.step_scores)}  # fmt: skip
            return Expanded(candidates, usage, {"stopped_early": "confidence", "verdict": kept})
    seed = None if request.seed is None else request.seed + ROUND_SEED
    [more] = yield SampleCall((replace(request, n=request.n - first.n, seed=seed),))
    usage = add_usage(usage, sampling_usage(more))
    return Expanded(candidates + [candidate(span, s) for s in more], usage, {"stopped_early": None})


def kept_verdict(notes: dict[str, Any]) -> Verdict | None:
    """The verdict a confident first round kept (None: there is none)."""
    kept = notes.get("verdict")
    if not kept:
        return None
    comparisons = tuple(Comparison(**c) for c in kept["comparisons"])
    steps = tuple(
        None if found is None else tuple(StepScore(**s) for s in found)
        for found in kept.get("step_scores") or ()
    )
    return Verdict(kept["winner"], comparisons, scores=tuple(kept["scores"]), step_scores=steps)
