"""Search strategies as configuration of one engine.

Every strategy runs the same graph; :class:`SearchContext` decides how wide each step
is, how far it writes, and whether a judge prunes it:

==============  ==========  =====================  ===========================================
strategy        candidates  one step writes        judge
==============  ==========  =====================  ===========================================
``greedy``      1           one stage              none (temperature 0)
``best_of_n``   N           the whole answer       once, on whole answers
``vote``        N           the whole answer       a (score-weighted) majority of conclusions
``stage_beam``  N           one stage              after every stage
``retrace``     N           one stage              after every stage; keeps the best ``keep``
                                                   captions, and goes back to sample captions
                                                   again when no reasoning scores well enough
==============  ==========  =====================  ===========================================

``adaptive=True`` (stage_beam, retrace) samples each step in rounds: ``adaptive_start``
candidates first, the rest only when those disagree and no score clears ``confidence``.

The context names its model either as a ready ``backend`` or, for a graph run from
JSON (``langgraph dev``, the LangGraph SDK), as ``model`` / ``base_url`` options: the
backend is then created on first use and shared by every run in the process.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from langchain_llava_cot.backends import cached_backend
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.demo import DEMO_MODEL_PATH
from langchain_llava_cot.judges import AutoJudge, BuiltinJudge, Judge, JudgeSpec, VoteJudge, resolve_judge
from langchain_llava_cot.stages import STAGES, Stage

__all__ = [
    "DEFAULT_JUDGE",
    "DEFAULT_STAGE_TOKENS",
    "MAX_CANDIDATES",
    "RETRACE_Z",
    "SearchContext",
    "Strategy",
    "cached_backend",
]

Strategy = Literal["greedy", "best_of_n", "vote", "stage_beam", "retrace"]

DEFAULT_STAGE_TOKENS: Mapping[Stage, int] = {
    Stage.SUMMARY: 128,
    Stage.CAPTION: 256,
    Stage.REASONING: 512,
    Stage.CONCLUSION: 256,
}
"""Token limit of each stage unless ``max_stage_tokens`` says otherwise."""

_STRATEGIES = ("greedy", "best_of_n", "vote", "stage_beam", "retrace")
_WHOLE_ANSWERS = ("best_of_n", "vote")
_ADAPTIVE = ("stage_beam", "retrace")

RETRACE_Z = 0.2533
"""The paper's z in its retrace threshold, mean + z x std of the reasoning scores."""

MAX_CANDIDATES = 64
"""Default cap on ``candidates``: each candidate is a row of every batch, so a typo costs a lot."""

DEFAULT_JUDGE: BuiltinJudge = "auto"
"""The judge used unless one is named: the one that fits the model and the backend, chosen
once per run (:class:`~langchain_llava_cot.judges.AutoJudge`)."""


@dataclass
class SearchContext:
    """Runtime options of the search graph (its LangGraph ``context_schema``)."""

    backend: VLMBackend | None = None
    """The model to sample from and to judge with; None creates one from ``model``/``base_url``."""
    strategy: Strategy = "stage_beam"
    candidates: int = 4
    """Candidates per step (N). Ignored by ``greedy``."""
    judge: JudgeSpec = DEFAULT_JUDGE
    temperature: float = 0.6
    """Sampling temperature of candidates; ``greedy`` always uses 0."""
    top_p: float | None = 0.9
    max_stage_tokens: int | Mapping[Stage | str, int] | None = None
    """Token limit per stage: one number for all, or a mapping by stage."""
    max_tokens: int | None = None
    """Token budget of the whole chosen answer, all stages together."""
    stop: tuple[str, ...] = ()
    """Extra stop strings for the conclusion."""
    seed: int | None = None
    """Makes sampling and the judge's pairing reproducible."""
    model: str | None = None
    """Without ``backend``: a local model folder (None: the bundled demo model), or the
    name a server at ``base_url`` serves."""
    base_url: str | None = None
    """Without ``backend``: an OpenAI-compatible server, e.g. ``http://127.0.0.1:8000/v1``."""
    device: str = "cpu"
    """Without ``backend``: device of an in-process model."""
    max_candidates: int = MAX_CANDIDATES
    """The cap on ``candidates``; raise it if you mean more."""
    adaptive: bool = False
    """stage_beam and retrace: sample each step in rounds and stop early when the first
    round agrees (the same text) or its best score clears ``confidence``."""
    adaptive_start: int = 2
    """Candidates of an adaptive step's first round."""
    confidence: float | None = None
    """Adaptive steps stop after the first round when the judge scores one candidate at
    least this high (a scoring judge only; None: stop on agreement only)."""
    keep: int = 2
    """retrace: captions kept after the caption step; the reasoning step samples
    ``candidates // keep`` continuations of each."""
    max_retraces: int = 3
    """retrace: how many times the search may go back to sample captions again."""
    retrace_threshold: float | None = None
    """retrace: the score the ``keep``-th best reasoning must reach. None uses the paper's
    rule over this run's reasoning scores so far: mean + ``retrace_z`` x std."""
    retrace_z: float = RETRACE_Z
    resolved_judge: Judge = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.strategy not in _STRATEGIES:
            msg = f"Unknown strategy {self.strategy!r}: use one of {', '.join(_STRATEGIES)}."
            raise ValueError(msg)
        _check_whole("max_candidates", self.max_candidates, low=1)
        _check_whole("candidates", self.candidates, low=1)
        if self.candidates > self.max_candidates:
            msg = (
                f"candidates={self.candidates} is above the cap of {self.max_candidates} (each candidate "
                "is a row of every batch); raise max_candidates if you mean it."
            )
            raise ValueError(msg)
        _check_number("temperature", self.temperature, low=0.0)
        if self.top_p is not None:
            _check_number("top_p", self.top_p, low=0.0, high=1.0)
            if self.top_p == 0:
                msg = "top_p must be above 0 (it keeps the most likely tokens up to that mass), or None."
                raise ValueError(msg)
        if self.max_tokens is not None:
            _check_whole("max_tokens", self.max_tokens, low=1)
        if self.seed is not None:
            _check_whole("seed", self.seed, low=None)
        if self.base_url and not self.model:
            msg = "With base_url, name the served model too: SearchContext(base_url=..., model='<name>')."
            raise ValueError(msg)
        self.stop = tuple(self.stop)
        needs_scores = self.strategy == "retrace" or self.confidence is not None
        named = resolve_judge(self.judge, seed=self.seed, strategy=self.strategy, needs_scores=needs_scores)
        self.resolved_judge = self._judge_of_strategy(named)
        self._check_search_shape()
        self._stage_tokens = _stage_token_limits(self.max_stage_tokens)

    def _judge_of_strategy(self, judge: Judge) -> Judge:
        """``vote`` counts conclusions, weighed by the judge's scores; retrace needs scores."""
        if self.strategy == "vote" and not isinstance(judge, (VoteJudge, AutoJudge)):
            return VoteJudge(scorer=judge)  # says what to do if the judge does not score
        if self.strategy == "retrace" and not judge.scores:
            msg = (
                f"strategy='retrace' compares scores with a threshold, and the {judge.name!r} judge does "
                "not score; use judge='likelihood', 'verifier' or a reward model."
            )
            raise ValueError(msg)
        return judge

    def _check_search_shape(self) -> None:
        if self.adaptive and self.strategy not in _ADAPTIVE:
            msg = f"adaptive=True is for strategy 'stage_beam' or 'retrace', not {self.strategy!r}."
            raise ValueError(msg)
        _check_whole("adaptive_start", self.adaptive_start, low=1)
        if self.confidence is not None:
            _check_number("confidence", self.confidence, low=float("-inf"))
            if not self.resolved_judge.scores:
                name = self.resolved_judge.name
                msg = f"confidence= reads a judge's scores, and the {name!r} judge has none."
                raise ValueError(msg)
        _check_whole("keep", self.keep, low=1)
        _check_whole("max_retraces", self.max_retraces, low=0)
        if self.retrace_threshold is not None:
            _check_number("retrace_threshold", self.retrace_threshold, low=float("-inf"))
        _check_number("retrace_z", self.retrace_z, low=float("-inf"))

    def get_backend(self) -> VLMBackend:
        """The ``backend``, or the process-wide one that ``model``/``base_url`` describe."""
        if self.backend is not None:
            return self.backend
        return cached_backend(self.model or DEMO_MODEL_PATH, self.base_url, self.device)

    @property
    def width(self) -> int:
        """How many candidates each step samples."""
        return 1 if self.strategy == "greedy" else self.candidates

    @property
    def sampling_temperature(self) -> float:
        """Temperature of candidate sampling (0 for greedy)."""
        return 0.0 if self.strategy == "greedy" else self.temperature

    def span(self, first: Stage) -> tuple[Stage, ...]:
        """The stages one step writes when it starts at ``first``."""
        if self.strategy in _WHOLE_ANSWERS:
            return STAGES[STAGES.index(first) :]
        return (first,)

    def token_limit(self, span: tuple[Stage, ...]) -> int:
        """Token limit of a step that writes ``span``."""
        return sum(self._stage_tokens[s] for s in span)


def _stage_token_limits(option: int | Mapping[Stage | str, int] | None) -> dict[Stage, int]:
    limits = dict(DEFAULT_STAGE_TOKENS)
    if option is None:
        return limits
    if not isinstance(option, Mapping):
        _check_whole("max_stage_tokens", option, low=1)
        return dict.fromkeys(STAGES, option)
    for key, value in option.items():
        try:
            stage = Stage(key)
        except ValueError as e:
            msg = f"max_stage_tokens has unknown stage {key!r}: use {[s.value for s in STAGES]}."
            raise ValueError(msg) from e
        _check_whole(f"max_stage_tokens[{stage.value!r}]", value, low=1)
        limits[stage] = value
    return limits


def _check_whole(name: str, value: object, *, low: int | None) -> None:
    """``value`` must be a whole number (not a bool), of at least ``low`` when given."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or (low is not None and int(value) < low):  # type: ignore[call-overload]
        bound = f" of at least {low}" if low is not None else ""
        msg = f"{name} must be a whole number{bound}, got {value!r}."
        raise ValueError(msg)


def _check_number(name: str, value: object, *, low: float, high: float | None = None) -> None:
    """``value`` must be a real number (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        msg = f"{name} must be a number, got {value!r}."
        raise ValueError(msg)
    number = float(value)  # type: ignore[arg-type]
    if number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        msg = f"{name} must be {bounds}, got {value!r}."
        raise ValueError(msg)
