"""Which search strategies an eval runs: ``greedy`` or ``STRATEGY:JUDGE:N`` specs and their sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from langchain_llava_cot.judges import BuiltinJudge
from langchain_llava_cot.options import SearchOptions
from langchain_llava_cot.strategies import get_strategy, strategy_names

__all__ = [
    "ADAPTIVE_SUFFIX",
    "GRID_STRATEGIES",
    "JUDGES",
    "StrategySpec",
    "default_strategies",
    "parse_strategy",
    "searches",
]


@dataclass(frozen=True)
class StrategySpec:
    """One configuration to measure."""

    strategy: str
    candidates: int = 1
    judge: str | None = None
    adaptive: bool = False

    @property
    def name(self) -> str:
        """``greedy``, ``best_of_n:pairwise:4``, ``stage_beam+adaptive:likelihood:8``."""
        if self.strategy == "greedy":
            return "greedy"
        return f"{self.strategy}{ADAPTIVE_SUFFIX if self.adaptive else ''}:{self.judge}:{self.candidates}"


_GRID_ORDER = ("best_of_n", "stage_beam")


def searches() -> tuple[str, ...]:
    """The searches an eval can name: every registered strategy but greedy (the grid's two first)."""
    return (*_GRID_ORDER, *(s for s in strategy_names() if s not in ("greedy", *_GRID_ORDER)))


ADAPTIVE_SUFFIX = "+adaptive"
"""Appended to a strategy that samples in rounds (``stage_beam``, ``retrace``) in a spec."""
_JUDGE_ORDER = ("verifier", "pairwise", "likelihood")
JUDGES: tuple[str, ...] = (
    *_JUDGE_ORDER,
    *(j for j in get_args(BuiltinJudge) if j not in ("human", *_JUDGE_ORDER)),
)
"""The judges an eval can name: every built-in one but the human judge, which needs a person."""


def parse_strategy(text: str) -> StrategySpec:
    """Read ``greedy`` or ``STRATEGY:JUDGE:N`` (e.g. ``stage_beam:verifier:4``).

    ``stage_beam+adaptive`` and ``retrace+adaptive`` sample each step in rounds. STRATEGY is
    any registered strategy (:func:`searches`).
    """
    if text == "greedy":
        return StrategySpec("greedy")
    parts = text.split(":")
    search = parts[0].removesuffix(ADAPTIVE_SUFFIX)
    adaptive = parts[0].endswith(ADAPTIVE_SUFFIX)
    known = search in searches() and (not adaptive or get_strategy(search).adaptive)
    if len(parts) != 3 or not known or parts[1] not in JUDGES:
        rounds = " and ".join(s for s in searches() if get_strategy(s).adaptive)
        msg = (
            f"Unknown strategy {text!r}. Write 'greedy' or STRATEGY:JUDGE:N with STRATEGY "
            f"{', '.join(searches())} ({rounds} may end in {ADAPTIVE_SUFFIX}) and JUDGE "
            f"{', '.join(JUDGES)}, e.g. stage_beam:verifier:4."
        )
        raise ValueError(msg)
    try:
        n = int(parts[2])
    except ValueError:
        n = 0
    if n < 1:
        msg = f"N in {text!r} must be a whole number of at least 1, e.g. stage_beam:verifier:4."
        raise ValueError(msg)
    checks: dict[str, Any] = {"strategy": search, "candidates": n, "judge": parts[1], "adaptive": adaptive}
    try:
        SearchOptions(**checks)  # the search's own checks (candidates' cap, a judge the search can use)
    except ValueError as e:  # pydantic's ValidationError is one
        from langchain_llava_cot.cli import one_line

        msg = f"{text}: {one_line(e)}"
        raise ValueError(msg) from e
    return StrategySpec(search, n, parts[1], adaptive)


def default_strategies(judge: str | None = None) -> tuple[str, ...]:
    """The quick set: greedy, and both searches at N=4 with ``judge`` (None: the demo model's default)."""
    if judge is None:
        from langchain_llava_cot.judges import DEMO_JUDGE

        judge = DEMO_JUDGE
    return ("greedy", f"best_of_n:{judge}:4", f"stage_beam:{judge}:4")


GRID_STRATEGIES: tuple[str, ...] = (
    "greedy",
    *(f"{search}:{judge}:{n}" for search in _GRID_ORDER for judge in JUDGES[:3] for n in (2, 4, 8)),
    *(f"best_of_n:vote:{n}" for n in (2, 4, 8)),
)
"""The full grid (``--grid``): greedy, and best_of_n and stage_beam with every judge at N = 2, 4, 8."""
