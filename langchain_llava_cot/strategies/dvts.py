"""``strategy="dvts"``: diverse verifier tree search (search-and-learn), stage by stage.

The N candidates of a step are split into N / M independent subtrees (M is the
``subtree_width`` option, 2 by default). Each subtree is a beam of width M: at every
stage it samples M continuations of its own path, the judge scores them after that path,
and the subtree keeps its best one. Subtrees never share or trade paths, so the search
keeps N / M different lines of thought where one stage_beam would follow one; after the
conclusion, the best-scored leaf of all subtrees wins.

Every subtree's continuations are sampled in one backend call; the record keeps every
candidate with its ``path`` (its subtree), its score, each subtree's ``kept`` candidate, and
the ``paths`` alive after each step. It needs a judge that scores (likelihood, verifier, a
reward model).
"""

from __future__ import annotations

from typing import Any

from langchain_llava_cot.judges import Verdict, ranked
from langchain_llava_cot.options import SearchContext, SearchOptions
from langchain_llava_cot.stages import Stage
from langchain_llava_cot.state import Expansion, SearchState
from langchain_llava_cot.strategies.paths import PathSearch

__all__ = ["DVTS"]


class DVTS(PathSearch):
    """N / M independent subtrees, each a beam of width M kept by the judge's scores; the best leaf wins."""

    name = "dvts"
    scores_needed = "keeps each subtree's best candidate by score"

    def check(self, options: SearchOptions) -> None:
        """The candidates must split into whole subtrees."""
        if options.candidates % options.subtree_width:
            msg = (
                f"dvts splits candidates={options.candidates} into subtrees of subtree_width="
                f"{options.subtree_width}: make candidates a multiple of subtree_width."
            )
            raise ValueError(msg)

    def paths(self, options: SearchOptions) -> int:
        """One path per subtree."""
        return options.candidates // options.subtree_width

    def each(self, options: SearchOptions) -> int:
        """Each subtree samples M continuations."""
        return options.subtree_width

    def carry_on(
        self, stage: Stage, state: SearchState, context: SearchContext, pending: Expansion, verdict: Verdict
    ) -> tuple[list[int], dict[str, Any]]:
        """Each subtree keeps its best-scored candidate (ties: the higher mean log-probability)."""
        candidates = pending["candidates"]
        best: dict[int, int] = {}  # subtree -> its best candidate
        for i in ranked(verdict.scores, [c["mean_logprob"] for c in candidates]):
            best.setdefault(candidates[i]["path"], i)
        kept = [best[k] for k in sorted(best)]
        return kept, {"kept": kept}
