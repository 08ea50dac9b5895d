"""``strategy="retrace"``: the paper's v6 search (SWIRES), stage_beam going back when reasoning scores low.

- The caption step keeps the best ``keep`` distinct captions by score (the record's ``kept``).
- The reasoning step samples ``candidates // keep`` continuations of each kept caption, in
  one backend call, and scores each caption's candidates after that caption.
- The try passes when its ``keep``-th best score reaches the threshold (``retrace_threshold``,
  or mean + ``retrace_z`` x std of every reasoning score of the run so far). If it fails,
  the graph goes back to sample captions again (an edge back, :attr:`Retrace.goes_back`), at
  most ``max_retraces`` times; after the last try the best reasoning of all tries is chosen,
  with its caption. Each try is in the record (``retrace``) and the stream (``{"event": "retrace"}``).

What it carries between steps (the state's ``strategy_state``) is a :class:`RetraceState`,
so a checkpointed run interrupted inside a retrace resumes there.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.types import Overwrite
from typing_extensions import TypedDict

from langchain_llava_cot._calls import SampleCall, Step
from langchain_llava_cot.graph import candidate, chosen_stages, judge_task, sample_request, sampling_usage
from langchain_llava_cot.judges import Comparison, StepScore, Verdict, best_index, ranked
from langchain_llava_cot.options import SearchContext, SearchOptions
from langchain_llava_cot.stages import STAGES, Stage
from langchain_llava_cot.state import CandidateRecord, Expansion, RetraceAttempt, SearchState
from langchain_llava_cot.strategies.base import Expanded, Judged
from langchain_llava_cot.strategies.stage_beam import StageBeam

__all__ = ["Retrace", "RetracePath", "RetraceState"]


class RetracePath(TypedDict):
    """A reasoning with the caption it follows, and its score."""

    score: float | None
    stages: dict[str, str]


class RetraceState(TypedDict):
    """What retracing carries from step to step in one run."""

    frontier: list[str] | None
    """The captions kept for the reasoning step, best first (None: no reasoning step waits)."""
    attempts: int
    scores: list[float]
    """Every reasoning score seen, for the threshold."""
    best: RetracePath | None
    """The best reasoning seen, with its caption."""


class Retrace(StageBeam):
    """stage_beam keeping ``keep`` captions, going back to the caption when no reasoning scores well."""

    name = "retrace"
    scores_needed = "compares scores with a threshold"
    goes_back = {Stage.REASONING: Stage.CAPTION}
    revisable = frozenset({Stage.CAPTION})  # final only once a reasoning after it is kept

    def check(self, options: SearchOptions) -> None:
        """``keep`` captions must be among the candidates."""
        if options.keep > options.candidates:
            msg = (
                f"keep={options.keep} is more than candidates={options.candidates}: retrace keeps the best "
                "keep captions of the candidates; lower keep or raise candidates."
            )
            raise ValueError(msg)

    def graph_steps(self, options: SearchOptions) -> int:
        """An expand and a judge per stage, and per retrace a caption and a reasoning step again."""
        return 2 * len(STAGES) + 4 * options.max_retraces

    def expand(
        self, stage: Stage, state: SearchState, context: SearchContext, room: int | None
    ) -> Step[Expanded]:
        """At the reasoning stage after kept captions: continuations of each; else as stage_beam."""
        frontier = _progress(state)["frontier"]
        if stage is Stage.REASONING and frontier:
            return (yield from _expand_frontier(frontier, state, context, room))
        return (yield from super().expand(stage, state, context, room))

    def judge(
        self, stage: Stage, state: SearchState, context: SearchContext, pending: Expansion
    ) -> Step[Judged]:
        """Captions: keep the best ``keep``. Reasoning after them: score each group, then pass or go back."""
        groups = (pending.get("notes") or {}).get("groups")
        if groups:
            verdict = yield from _judge_groups(stage, state, context, pending, groups)
            update, record = _decision(state, context, pending["candidates"], verdict)
            return Judged(verdict, context.resolved_judge, update, record)
        judged = yield from super().judge(stage, state, context, pending)
        if stage is not Stage.CAPTION:
            return judged
        candidates = pending["candidates"]
        kept = _kept(judged.verdict, candidates, context.keep)
        frontier = [candidates[i]["stages"][stage.value] for i in kept]
        update = {**judged.update, "strategy_state": {**_progress(state), "frontier": frontier}}
        return replace(judged, update=update, record={**judged.record, "kept": kept})


def _progress(state: SearchState) -> RetraceState:
    found = state.get("strategy_state")
    return found if found else RetraceState(frontier=None, attempts=0, scores=[], best=None)  # type: ignore[return-value]


def _expand_frontier(
    frontier: list[str], state: SearchState, context: SearchContext, room: int | None
) -> Step[Expanded]:
    """``candidates // keep`` continuations of each kept caption, in one call."""
    chosen = chosen_stages(state)
    per_caption = max(1, context.width // len(frontier))
    requests = tuple(
        replace(
            sample_request(Stage.REASONING, state, context, room, chosen={**chosen, Stage.CAPTION: caption}),
            n=per_caption,
        )
        for caption in frontier
    )
    results = yield SampleCall(requests)
    candidates: list[CandidateRecord] = []
    groups: list[list[int]] = []
    for caption, samples in zip(frontier, results):
        groups.append(list(range(len(candidates), len(candidates) + len(samples))))
        candidates += [CandidateRecord(**candidate((Stage.REASONING,), s), follows=caption) for s in samples]
    usage = sampling_usage([s for samples in results for s in samples])
    return Expanded(candidates, usage, {"groups": groups})


def _judge_groups(
    stage: Stage, state: SearchState, context: SearchContext, pending: Expansion, groups: list[list[int]]
) -> Step[Verdict]:
    """Score each kept caption's reasoning candidates (after that caption); the best wins."""
    candidates = pending["candidates"]
    scores: list[float | None] = [None] * len(candidates)
    steps: list[tuple[StepScore, ...] | None] = [None] * len(candidates)
    comparisons: list[Comparison] = []
    prompt = written = calls = 0
    for group in groups:
        members = [candidates[i] for i in group]
        chosen = {**chosen_stages(state), Stage.CAPTION: members[0]["follows"]}
        task = judge_task(stage, pending["span"], state, members, chosen)
        verdict = yield from context.resolved_judge.score(task, context.get_backend())
        for i, score in zip(group, verdict.scores):
            scores[i] = score
        for i, found in zip(group, verdict.step_scores):
            steps[i] = found
        comparisons += [replace(c, first=group[c.first], second=group[c.second], winner=group[c.winner])
                        for c in verdict.comparisons]  # fmt: skip
        prompt, written, calls = (
            prompt + verdict.prompt_tokens,
            written + verdict.completion_tokens,
            calls + verdict.calls,
        )
    winner = best_index(scores, [c["mean_logprob"] for c in candidates])
    return Verdict(winner, tuple(comparisons), prompt, written, calls, tuple(scores), tuple(steps))


def _kept(verdict: Verdict, candidates: list[CandidateRecord], keep: int) -> list[int]:
    """The best ``keep`` distinct candidates by score, best first (the winner when unscored)."""
    if not verdict.scores:
        return [verdict.winner]
    kept: list[int] = []
    for i in ranked(verdict.scores, [c["mean_logprob"] for c in candidates]):
        if all(candidates[i]["text"] != candidates[j]["text"] for j in kept):
            kept.append(i)
    return kept[:keep]


def _score(path: RetracePath) -> float:
    return float("-inf") if path["score"] is None else path["score"]


def _decision(
    state: SearchState, context: SearchContext, candidates: list[CandidateRecord], verdict: Verdict
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keep this try's best reasoning, or go back to the caption (at most ``max_retraces`` times).

    A try passes when its ``keep``-th best score reaches the threshold: ``retrace_threshold``,
    or the mean + ``retrace_z`` x std of every reasoning score of this run so far. When the
    retraces run out, the best reasoning of all tries is chosen, with its caption. Returns
    the state update and what the step's record adds.
    """
    progress = _progress(state)
    scores = [s for s in verdict.scores if s is not None]
    seen = progress["scores"] + scores
    best_first = sorted(scores, reverse=True)
    kth = best_first[min(context.keep, len(best_first)) - 1] if best_first else None
    threshold = context.retrace_threshold
    if threshold is None:
        threshold = statistics.fmean(seen) + context.retrace_z * statistics.pstdev(seen) if seen else 0.0
    passed = kth is None or kth >= threshold
    attempt = progress["attempts"] + 1
    winner = candidates[verdict.winner]
    here = RetracePath(
        score=verdict.scores[verdict.winner] if verdict.scores else None,
        stages={"caption": winner["follows"], **winner["stages"]},
    )
    best = progress["best"]
    if best is None or _score(here) > _score(best):
        best = here
    retraced = not passed and attempt <= context.max_retraces
    attempt_record = RetraceAttempt(
        attempt=attempt, threshold=threshold, kth_score=kth, passed=passed, retraced=retraced
    )
    carried = RetraceState(frontier=None, attempts=attempt, scores=seen, best=best)
    if retraced:
        get_stream_writer()({"event": "retrace", "stage": Stage.REASONING.value, "retrace": attempt_record})
        earlier = {k: v for k, v in (state.get("chosen") or {}).items() if k == Stage.SUMMARY.value}
        return {"chosen": Overwrite(earlier), "strategy_state": carried}, {"retrace": attempt_record}
    chosen = here if passed else best
    update = {"chosen": {Stage.REASONING.value: "", **chosen["stages"]}, "strategy_state": carried}
    return update, {"retrace": attempt_record}
