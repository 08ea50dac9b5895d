"""``strategy="greedy"``: one candidate per stage at temperature 0; nothing to judge."""

from __future__ import annotations

from langchain_llava_cot.options import SearchOptions
from langchain_llava_cot.strategies.stage_beam import StageBeam

__all__ = ["Greedy"]


class Greedy(StageBeam):
    """Stage by stage, the model's most likely continuation: width 1, temperature 0."""

    name = "greedy"
    adaptive = False

    def width(self, options: SearchOptions) -> int:
        """Always one candidate, whatever ``candidates`` says."""
        return 1

    def temperature(self, options: SearchOptions) -> float:
        """Always 0: the most likely token."""
        return 0.0
