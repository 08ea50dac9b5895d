"""What searches that carry several paths share (dvts, particle_filter): sampling and scoring them alike.

A :class:`Path` is a partial answer the search carries from stage to stage: the stages it
wrote, the tokens they took, the candidate it chose at each step (its ``trail``) and its
last score. :class:`PathSearch` is the base of such strategies:

- its ``expand`` samples every path's continuations of the stage in **one backend call**
  (:func:`expand_paths`: one request per distinct prefix, so paths that wrote the same text
  share a request and its ``n``), each candidate marked with the ``path`` it continues;
- its ``judge`` scores each candidate after its own path (:func:`score_paths`: one judge task
  per distinct prefix, run side by side so their model calls go out merged), then asks the
  subclass which candidates go on (:meth:`PathSearch.carry_on`); the record marks the best
  of them, and after the last stage that path's stages are chosen, all at once;
- it goes to the first stage its paths have not written (:meth:`PathSearch.next_stage`).

The paths live in the state's ``strategy_state`` (``{"paths": [...]}``), so a checkpointed
run resumes between any two nodes; the record keeps every candidate, its ``path`` and its
score, and after each step the ``paths`` alive (each as its trail).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from typing_extensions import TypedDict

from langchain_llava_cot._calls import SampleCall, Step, together
from langchain_llava_cot.graph import (
    candidate,
    judge_task,
    room_left,
    sample_request,
    sampling_usage,
)
from langchain_llava_cot.judges import Comparison, StepScore, Verdict, best_index, ranked
from langchain_llava_cot.options import SearchContext, SearchOptions
from langchain_llava_cot.stages import STAGES, Stage, render_answer
from langchain_llava_cot.state import CandidateRecord, Expansion, SearchState
from langchain_llava_cot.strategies.base import Expanded, Judged, SearchStrategy

__all__ = ["Path", "PathSearch", "expand_paths", "extended", "paths_of", "score_paths"]


class Path(TypedDict):
    """One partial answer a search carries."""

    stages: dict[str, str]
    """The stages it wrote, by name."""
    spent: int
    """The tokens its stages took (for ``max_tokens``)."""
    trail: list[int]
    """Its candidate's index in each step so far."""
    score: float | None
    """Its last candidate's score."""


def paths_of(state: SearchState, count: int) -> list[Path]:
    """The paths the state carries, or ``count`` new ones from the chosen stages."""
    found = (state.get("strategy_state") or {}).get("paths")
    if found:
        return list(found)
    chosen = dict(state.get("chosen") or {})
    return [Path(stages=dict(chosen), spent=0, trail=[], score=None) for _ in range(count)]


def extended(path: Path, found: CandidateRecord, index: int, score: float | None) -> Path:
    """``path`` continued by the candidate ``found`` (the step's candidate ``index``)."""
    return Path(
        stages={**path["stages"], **found["stages"]},
        spent=path["spent"] + found["completion_tokens"],
        trail=[*path["trail"], index],
        score=score,
    )


def _stages(path: Path) -> dict[Stage, str]:
    return {Stage(name): text for name, text in path["stages"].items()}


def _by_prefix(paths: Sequence[Path], members: Sequence[int]) -> dict[str, list[int]]:
    """``members`` (indices of ``paths``) grouped by the text their paths wrote, in order."""
    groups: dict[str, list[int]] = {}
    for i in members:
        groups.setdefault(render_answer(_stages(paths[i])), []).append(i)
    return groups


def expand_paths(
    stage: Stage,
    state: SearchState,
    context: SearchContext,
    room: int | None,
    paths: Sequence[Path],
    each: int,
) -> Step[Expanded]:
    """``each`` continuations of every path in one backend call (path ``k``'s from candidate ``k * each``)."""
    if any(path["stages"] for path in paths):  # the longest path leaves the least room
        longest = max(paths, key=lambda path: len(render_answer(_stages(path))))
        room = room_left(state, context, _stages(longest))
    groups = list(_by_prefix(paths, range(len(paths))).values())
    requests = tuple(
        replace(
            sample_request(
                stage,
                state,
                context,
                room,
                chosen=_stages(paths[members[0]]),
                spent=paths[members[0]]["spent"],
            ),
            n=each * len(members),
        )
        for members in groups
    )
    results = yield SampleCall(requests)
    candidates: list[CandidateRecord | None] = [None] * (len(paths) * each)
    span = context.span(stage)
    for members, samples in zip(groups, results):
        for j, sample in enumerate(samples):
            k = members[j // each]
            candidates[k * each + j % each] = CandidateRecord(**candidate(span, sample), path=k)
    usage = sampling_usage([s for samples in results for s in samples])
    return Expanded([c for c in candidates if c is not None], usage)


def score_paths(
    stage: Stage, state: SearchState, context: SearchContext, paths: Sequence[Path], pending: Expansion
) -> Step[Verdict]:
    """Every candidate's score after its own path; the judge tasks of distinct prefixes run together.

    The verdict's winner is the best-scored candidate (ties: the higher mean log-probability).
    """
    candidates = pending["candidates"]
    groups = list(_by_prefix(paths, range(len(paths))).values())
    members = [[i for i, c in enumerate(candidates) if c["path"] in group] for group in groups]
    judge, backend = context.resolved_judge, context.get_backend()
    tasks = [
        judge_task(stage, pending["span"], state, [candidates[i] for i in indices], _stages(paths[group[0]]))
        for group, indices in zip(groups, members)
    ]
    verdicts, saved = yield from together([judge.score(task, backend) for task in tasks])
    scores: list[float | None] = [None] * len(candidates)
    steps: list[tuple[StepScore, ...] | None] = [None] * len(candidates)
    comparisons: list[Comparison] = []
    for indices, verdict in zip(members, verdicts):
        for i, score in zip(indices, verdict.scores):
            scores[i] = score
        for i, found in zip(indices, verdict.step_scores):
            steps[i] = found
        comparisons += [replace(c, first=indices[c.first], second=indices[c.second], winner=indices[c.winner])
                        for c in verdict.comparisons]  # fmt: skip
    return Verdict(
        best_index(scores, [c["mean_logprob"] for c in candidates]),
        tuple(comparisons),
        sum(v.prompt_tokens for v in verdicts),
        sum(v.completion_tokens for v in verdicts),
        sum(v.calls for v in verdicts) - saved,
        tuple(scores),
        tuple(steps),
    )


class PathSearch(SearchStrategy):
    """A search that carries several paths from stage to stage, judged by a scoring judge.

    Subclasses say how many paths there are and how many candidates each samples
    (:meth:`paths` and :meth:`each`), and which candidates go on after a step
    (:meth:`carry_on`).
    """

    scores_needed = "compares the scores of its paths"

    def paths(self, options: SearchOptions) -> int:
        """How many paths the search carries."""
        raise NotImplementedError

    def each(self, options: SearchOptions) -> int:
        """How many candidates each path samples per step."""
        raise NotImplementedError

    def carry_on(
        self, stage: Stage, state: SearchState, context: SearchContext, pending: Expansion, verdict: Verdict
    ) -> tuple[list[int], dict[str, Any]]:
        """The candidates whose paths go on, and what the step's record adds.

        After the last stage the best of those wins.
        """
        raise NotImplementedError

    def expand(
        self, stage: Stage, state: SearchState, context: SearchContext, room: int | None
    ) -> Step[Expanded]:
        """Every path's candidates, in one call."""
        paths = paths_of(state, self.paths(context))
        return (yield from expand_paths(stage, state, context, room, paths, self.each(context)))

    def judge(
        self, stage: Stage, state: SearchState, context: SearchContext, pending: Expansion
    ) -> Step[Judged]:
        """Score every candidate after its path and carry the chosen ones on; the best of them wins last."""
        paths = paths_of(state, self.paths(context))
        verdict = yield from score_paths(stage, state, context, paths, pending)
        candidates = pending["candidates"]
        going_on, record = self.carry_on(stage, state, context, pending, verdict)
        carried = [
            extended(paths[candidates[i]["path"]], candidates[i], i, verdict.scores[i]) for i in going_on
        ]
        best = next(
            i for i in ranked(verdict.scores, [c["mean_logprob"] for c in candidates]) if i in going_on
        )
        update: dict[str, Any] = {"strategy_state": {"paths": carried}}
        if stage is STAGES[-1]:
            update["chosen"] = dict(carried[going_on.index(best)]["stages"])
        record = {**record, "paths": [path["trail"] for path in carried]}
        return Judged(replace(verdict, winner=best), context.resolved_judge, update, record)

    def next_stage(self, state: SearchState) -> Stage | None:
        """The first stage neither chosen nor written by the paths."""
        paths = (state.get("strategy_state") or {}).get("paths") or [{"stages": {}}]
        written = {*(state.get("chosen") or {}), *paths[0]["stages"]}
        return next((stage for stage in STAGES if stage.value not in written), None)
