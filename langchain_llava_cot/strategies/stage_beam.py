"""``strategy="stage_beam"``: the paper's stage-level beam search, and the base most strategies build on.

For each stage, sample N continuations of the chosen prefix in one backend call, let
the judge keep one, and start the next stage from it. ``adaptive=True`` samples each
step in rounds (:mod:`.adaptive`). Greedy, best-of-N and vote are this strategy with
another width, temperature, span or judge; retrace adds to its caption and reasoning steps.
"""

from __future__ import annotations

from langchain_llava_cot._calls import SampleCall, Step, finished
from langchain_llava_cot.graph import candidate, judge_task, sample_request, sampling_usage, settled
from langchain_llava_cot.judges import Verdict
from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.stages import Stage
from langchain_llava_cot.state import Expansion, SearchState
from langchain_llava_cot.strategies.adaptive import expand_in_rounds, kept_verdict
from langchain_llava_cot.strategies.base import Expanded, Judged, SearchStrategy

__all__ = ["StageBeam"]


class StageBeam(SearchStrategy):
    """N candidates of one stage per step; the judge keeps one (the paper's method)."""

    name = "stage_beam"
    adaptive = True

    def expand(
        self, stage: Stage, state: SearchState, context: SearchContext, room: int | None
    ) -> Step[Expanded]:
        """One call for the step's ``width`` candidates (in rounds with ``adaptive=True``)."""
        if context.adaptive and context.width > 1:
            return (yield from expand_in_rounds(stage, state, context, room))
        [samples] = yield SampleCall((sample_request(stage, state, context, room),))
        return Expanded([candidate(context.span(stage), s) for s in samples], sampling_usage(samples))

    def judge(
        self, stage: Stage, state: SearchState, context: SearchContext, pending: Expansion
    ) -> Step[Judged]:
        """The judge keeps one candidate (a single one needs no judge); its stages are chosen."""
        candidates = pending["candidates"]
        notes = pending.get("notes") or {}
        judge = context.resolved_judge if len(candidates) > 1 else None
        kept = kept_verdict(notes)
        if kept is not None:  # an adaptive first round the judge already scored
            verdict = yield from finished(kept)
        elif judge is None:
            verdict = yield from finished(Verdict(0))
        else:
            task = judge_task(stage, pending["span"], state, candidates)
            verdict = yield from judge.select(task, context.get_backend())
        record = {"stopped_early": notes["stopped_early"]} if "stopped_early" in notes else {}
        return Judged(verdict, judge, settled(stage, candidates[verdict.winner]), record)
