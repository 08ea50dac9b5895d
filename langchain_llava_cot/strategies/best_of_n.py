"""``strategy="best_of_n"``: N whole answers in one call, judged once."""

from __future__ import annotations

from langchain_llava_cot.options import SearchOptions
from langchain_llava_cot.stages import STAGES, Stage
from langchain_llava_cot.strategies.stage_beam import StageBeam

__all__ = ["BestOfN"]


class BestOfN(StageBeam):
    """One step that writes the whole answer: N candidates, and the judge keeps one."""

    name = "best_of_n"
    adaptive = False

    def span(self, first: Stage, options: SearchOptions) -> tuple[Stage, ...]:
        """Every stage from ``first`` to the conclusion."""
        return STAGES[STAGES.index(first) :]
