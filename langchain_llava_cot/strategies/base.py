"""The strategy interface: the four things a search strategy decides, and what its nodes exchange.

Every strategy runs the same graph (an expand and a judge node per stage); the nodes ask
the run's strategy, a :class:`SearchStrategy`:

- **how wide a step is**: :meth:`~SearchStrategy.width` and :meth:`~SearchStrategy.temperature`,
  and :meth:`~SearchStrategy.expand`, which samples the step's candidates (an
  :class:`Expanded`);
- **how far a step writes**: :meth:`~SearchStrategy.span`, one stage or the whole answer;
- **how a step is judged**: :meth:`~SearchStrategy.judge_of`, the judge it runs (and
  :attr:`~SearchStrategy.scores_needed`), and :meth:`~SearchStrategy.judge`, which turns the
  candidates into a :class:`Judged`: a verdict, the state it writes, what the record adds;
- **where the graph goes next**: :meth:`~SearchStrategy.next_stage` (and
  :attr:`~SearchStrategy.goes_back`, the edges back to an earlier stage it may take).

``expand`` and ``judge`` are generators of backend calls (:mod:`langchain_llava_cot._calls`),
so one body serves ``invoke`` and ``ainvoke``; one that asks no model may return its value
directly. What every strategy shares (the sample request, the candidate parsing, the
record) is in :mod:`langchain_llava_cot.graph`; the paper's strategy,
:class:`~langchain_llava_cot.strategies.stage_beam.StageBeam`, is the base most strategies
build on. Register one with :func:`~langchain_llava_cot.strategies.register_strategy`.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Union

from langchain_llava_cot._calls import Call
from langchain_llava_cot.judges import Judge, Verdict
from langchain_llava_cot.stages import STAGES, Stage
from langchain_llava_cot.state import CandidateRecord, Expansion, SearchState, Usage

if TYPE_CHECKING:
    from langchain_llava_cot.options import SearchContext, SearchOptions

__all__ = ["Expanded", "Judged", "MaybeStep", "SearchStrategy"]


@dataclass(frozen=True)
class Expanded:
    """What a strategy's :meth:`~SearchStrategy.expand` sampled: one step's candidates."""

    candidates: list[CandidateRecord]
    usage: Usage
    """Tokens and model calls the sampling spent."""
    notes: dict[str, Any] = field(default_factory=dict)
    """What the strategy's own judge needs to know about this expansion (kept in the state
    between the two nodes, so a checkpointed run resumes between them); the nodes never read it."""


@dataclass(frozen=True)
class Judged:
    """What a strategy's :meth:`~SearchStrategy.judge` decided about one step."""

    verdict: Verdict
    """The winner among the step's candidates (the one the record marks), and the judge's work."""
    judge: Judge | None
    """The judge that ran; None when there was nothing to judge."""
    update: dict[str, Any]
    """The state it writes: ``chosen`` (the stages settled), ``strategy_state`` (what it carries on)."""
    record: dict[str, Any] = field(default_factory=dict)
    """What the step's record adds to the shared fields (e.g. ``kept``, ``paths``)."""


MaybeStep = Union[Generator[Call, Any, Any], Any]  # noqa: UP007 - a runtime alias on Python 3.10
"""A generator of backend calls that returns the value, or (asking no model) the value itself."""


class SearchStrategy:
    """One way to search, behind the four questions the graph's nodes ask.

    Subclasses set :attr:`name` and write :meth:`expand` and :meth:`judge`; the rest has
    defaults (N candidates of one stage per step, sampled at the ``temperature`` option,
    and the graph going to the first stage not chosen yet). Options are read from the
    run's :class:`~langchain_llava_cot.options.SearchOptions`, the one declaration of every
    option; a strategy with options of its own reads them there too.
    """

    name: ClassVar[str] = ""
    """The ``strategy=`` value that selects it."""
    adaptive: ClassVar[bool] = False
    """Whether ``adaptive=True`` (sampling each step in rounds) applies to it."""
    scores_needed: ClassVar[str | None] = None
    """Why it needs a judge that scores every candidate (None: any judge will do); said in the
    error when the judge named does not score, and ``judge="auto"`` chooses among scoring ones."""
    goes_back: ClassVar[Mapping[Stage, Stage]] = {}
    """Edges back: after the judge of a key stage the graph may go to the value stage's expand."""
    revisable: ClassVar[frozenset[Stage]] = frozenset()
    """Stages whose chosen text a later judge may take back (streams wait for a later judge)."""

    # --- the options -------------------------------------------------------------------------

    def check(self, options: SearchOptions) -> None:
        """Raise ``ValueError`` for options that do not go together under this strategy."""

    def judge_of(self, judge: Judge, options: SearchOptions) -> Judge:
        """The judge the search runs, from the one the ``judge`` option names."""
        if self.scores_needed is not None and not judge.scores:
            msg = (
                f"strategy={self.name!r} {self.scores_needed}, and the {judge.name!r} judge does not "
                "score; use judge='likelihood', 'verifier' or a reward model."
            )
            raise ValueError(msg)
        return judge

    def width(self, options: SearchOptions) -> int:
        """How many candidates a step samples."""
        return options.candidates

    def temperature(self, options: SearchOptions) -> float:
        """The sampling temperature of candidates."""
        return options.temperature

    def span(self, first: Stage, options: SearchOptions) -> tuple[Stage, ...]:
        """The stages one step writes when it starts at ``first``."""
        return (first,)

    def graph_steps(self, options: SearchOptions) -> int:
        """The most graph steps one search takes: an expand and a judge per stage."""
        return 2 * len(STAGES)

    # --- the nodes ---------------------------------------------------------------------------

    def expand(self, stage: Stage, state: SearchState, context: SearchContext, room: int | None) -> MaybeStep:
        """Sample the candidates of the step that starts at ``stage``: returns an :class:`Expanded`.

        ``room`` is what the model's context leaves after the prompt and the chosen stages
        (None: unknown); :func:`~langchain_llava_cot.graph.sample_request` keeps within it.
        """
        msg = f"The {type(self).__name__} strategy does not say how to sample a step (expand)."
        raise NotImplementedError(msg)

    def judge(
        self, stage: Stage, state: SearchState, context: SearchContext, pending: Expansion
    ) -> MaybeStep:
        """Judge the candidates ``pending`` holds: returns a :class:`Judged`."""
        msg = f"The {type(self).__name__} strategy does not say how to judge a step (judge)."
        raise NotImplementedError(msg)

    def next_stage(self, state: SearchState) -> Stage | None:
        """The stage the graph samples next (None: the search is done): the first not chosen."""
        chosen = state.get("chosen") or {}
        return next((stage for stage in STAGES if stage.value not in chosen), None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
