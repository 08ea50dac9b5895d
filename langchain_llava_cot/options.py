"""The search options, declared once, and the graph's context made of them.

Every strategy runs the same graph; the run's strategy (a plug-in of
:mod:`langchain_llava_cot.strategies`, chosen by the ``strategy`` option) decides how wide
each step is, how far it writes, how it is judged and where the graph goes next:

===================  ==========  =====================  =======================================
strategy             candidates  one step writes        judge
===================  ==========  =====================  =======================================
``greedy``           1           one stage              none (temperature 0)
``best_of_n``        N           the whole answer       once, on whole answers
``vote``             N           the whole answer       a (score-weighted) majority of conclusions
``stage_beam``       N           one stage              after every stage
``retrace``          N           one stage              after every stage; keeps the best ``keep``
                                                        captions, and goes back to sample captions
                                                        again when no reasoning scores well enough
``dvts``             N           one stage, on N/M      after every stage, each subtree keeps its
                                 subtrees               best of M by score; the best leaf wins
``particle_filter``  N           one stage, on N        after every stage, the particles are
                                 particles              resampled in proportion to their scores
===================  ==========  =====================  =======================================

``adaptive=True`` (stage_beam, retrace) samples each step in rounds: ``adaptive_start``
candidates first, the rest only when those disagree and no score clears ``confidence``.

One declaration, one check (as vLLM's ``SamplingParams``): :class:`SearchOptions` holds
each option's name, default, description (the docstring under it) and check, a strategy's
own options among them. The chat model inherits its fields, per-call options merge over
them in :meth:`SearchContext.of`, :class:`SearchContext` is the options plus a backend (the
graph's context), the served graph's client context (:mod:`langchain_llava_cot.deployment`)
is the options limited by the deployer, and the CLI's flags and the eval's strategy specs
are read from it. A bad value therefore fails the same way, before any model work,
wherever it came from. The strategies a ``strategy`` may name are the registry's
(:func:`~langchain_llava_cot.strategies.strategy_names`), so a registered strategy is
accepted everywhere.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)
from typing_extensions import Self

from langchain_llava_cot.backends import cached_backend
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.bundled import DEMO_MODEL_PATH
from langchain_llava_cot.checks import finite_number, true_or_false, whole_number
from langchain_llava_cot.judges import BuiltinJudge, Judge, resolve_judge
from langchain_llava_cot.stages import STAGES, Stage
from langchain_llava_cot.strategies import SearchStrategy, get_strategy, strategy_names

__all__ = [
    "DEFAULT_JUDGE",
    "DEFAULT_STAGE_TOKENS",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "MAX_CANDIDATES",
    "MAX_RETRACES",
    "MAX_SEED",
    "RETRACE_Z",
    "SearchContext",
    "SearchOptions",
    "Strategy",
    "cached_backend",
    "checked",
    "finite_number",
    "model_or_demo",
    "true_or_false",
    "whole_number",
]

Strategy = str
"""A strategy's name: one of :func:`~langchain_llava_cot.strategies.strategy_names`, checked
against the registry when the options are made (so a strategy registered later is accepted)."""

DEFAULT_STAGE_TOKENS: Mapping[Stage, int] = {
    Stage.SUMMARY: 128,
    Stage.CAPTION: 256,
    Stage.REASONING: 512,
    Stage.CONCLUSION: 256,
}
"""Token limit of each stage unless ``max_stage_tokens`` says otherwise."""

DEFAULT_JUDGE: BuiltinJudge = "auto"
"""The judge used unless one is named: the one that fits the model and the backend, chosen
once per run (:class:`~langchain_llava_cot.judges.AutoJudge`)."""

DEFAULT_TEMPERATURE = 0.6
"""LLaVA-CoT's recommended sampling temperature."""

DEFAULT_TOP_P = 0.9
"""LLaVA-CoT's recommended nucleus sampling."""

RETRACE_Z = 0.2533
"""The paper's z in its retrace threshold, mean + z x std of the reasoning scores."""

MAX_CANDIDATES = 64
"""Default cap on ``candidates``: each candidate is a row of every batch, so a typo costs a lot."""

MAX_RETRACES = 16
"""Most times retrace may go back: each time samples and judges two more stages."""

MAX_SEED = 2**32 - 1
"""The largest seed: every backend's random generator takes it (numpy's is 32 bits)."""


def model_or_demo(model: str | Path | None) -> str | Path:
    """``model``, or the bundled demo model's folder when None: the one place that default lives."""
    if model:
        return model
    return DEMO_MODEL_PATH


# --- the checks each option's declaration names ----------------------------------------------


def checked(function: Callable[..., Any], *, none: bool = False, **bounds: Any) -> BeforeValidator:
    """A field's check: ``function(field_name, value, **bounds)``; None passes where ``none``."""

    def check(value: Any, info: ValidationInfo) -> Any:
        if value is None and none:
            return None
        return function(info.field_name, value, **bounds)

    return BeforeValidator(check)


def _strategy(name: str, value: object) -> str:
    names = strategy_names()
    if not isinstance(value, str) or value not in names:
        msg = f"Unknown strategy {value!r}: use one of {', '.join(names)}."
        raise ValueError(msg)
    return value


def _strategy_schema(schema: dict[str, Any]) -> None:
    """The strategy field's JSON schema lists the registry's names when it is made (a served graph's)."""
    schema["enum"] = list(strategy_names())


def _stop_strings(name: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        msg = f"{name} must be a list of strings, e.g. ['Observation:'], got {value!r}."
        raise ValueError(msg)
    if not all(isinstance(text, str) for text in value):
        msg = f"{name} must be a list of strings, got {value!r}."
        raise ValueError(msg)
    if any(not text for text in value):
        msg = f"{name} holds an empty string, which would stop before the first token; remove it."
        raise ValueError(msg)
    return tuple(value)


def _stage_limits(name: str, value: object) -> int | dict[str, int]:
    if isinstance(value, Mapping):
        limits = {}
        for key, limit in value.items():
            try:
                stage = Stage(key)
            except ValueError:
                msg = f"{name} has unknown stage {key!r}: use {[s.value for s in STAGES]}."
                raise ValueError(msg) from None
            limits[stage.value] = whole_number(f"{name}[{stage.value!r}]", limit, low=1)
        return limits
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return whole_number(name, value, low=1)
    msg = f"{name} must be a whole number, a mapping like {{'reasoning': 512}}, or None, got {value!r}."
    raise ValueError(msg)


def _backend(name: str, value: object) -> VLMBackend:
    if not isinstance(value, VLMBackend):
        msg = (
            f"{name} must be a VLMBackend, got {type(value).__name__}; a LangChain chat model goes "
            "through ChatModelBackend(chat_model) or ChatLlavaCoT(backend=chat_model)."
        )
        raise ValueError(msg)
    return value


# --- the declaration -------------------------------------------------------------------------


class SearchOptions(BaseModel):
    """The search options: each one's name, default, description and check, once.

    Example::

        SearchOptions(strategy="retrace", candidates=6, judge="verifier")
        SearchOptions(candidates=0)  # ValidationError: candidates must be a whole number of at least 1
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True)

    strategy: Annotated[Strategy, checked(_strategy), Field(json_schema_extra=_strategy_schema)] = (
        "stage_beam"
    )
    """How to search: greedy, best_of_n, vote, stage_beam, retrace, dvts, particle_filter, or a
    strategy registered with register_strategy."""
    candidates: Annotated[int, checked(whole_number, low=1)] = 4
    """Candidates per step (N); greedy always samples 1."""
    judge: Any = DEFAULT_JUDGE
    """Who picks among candidates: auto (the default: the judge that fits the model and the backend),
    likelihood, verifier, pairwise, vote, human, a Judge, a LangChain chat model, or a function
    (JudgeTask) -> int."""
    temperature: Annotated[float, checked(finite_number, low=0.0)] = DEFAULT_TEMPERATURE
    """Sampling temperature of candidates; greedy always uses 0."""
    top_p: Annotated[float | None, checked(finite_number, none=True, above=0.0, high=1.0)] = DEFAULT_TOP_P
    """Nucleus sampling of candidates (None: off)."""
    max_tokens: Annotated[int | None, checked(whole_number, none=True, low=len(STAGES))] = None
    """Token budget of the whole chosen answer, all stages together (at least one per stage)."""
    max_stage_tokens: Annotated[int | dict[str, int] | None, checked(_stage_limits, none=True)] = None
    """Token limit per stage: one number for all, or a mapping like {"reasoning": 512}."""
    stop: Annotated[tuple[str, ...], checked(_stop_strings)] = ()
    """Extra stop strings for the conclusion."""
    seed: Annotated[int | None, checked(whole_number, none=True, low=0, high=MAX_SEED)] = None
    """Makes sampling and the judge's pairing reproducible."""
    max_candidates: Annotated[int, checked(whole_number, low=1)] = MAX_CANDIDATES
    """The cap on candidates (a typo like 1000 fails fast); raise it if you mean more."""
    adaptive: Annotated[bool, checked(true_or_false)] = False
    """stage_beam and retrace: sample each step in rounds and stop early when the first round
    agrees or its best score clears confidence."""
    adaptive_start: Annotated[int, checked(whole_number, low=1)] = 2
    """Candidates of an adaptive step's first round."""
    confidence: Annotated[float | None, checked(finite_number, none=True)] = None
    """Adaptive steps stop after the first round when the judge scores a candidate at least this
    high (a scoring judge only; None: stop on agreement only)."""
    keep: Annotated[int, checked(whole_number, low=1)] = 2
    """retrace: captions kept after the caption step; the reasoning step samples candidates // keep
    continuations of each."""
    max_retraces: Annotated[int, checked(whole_number, low=0, high=MAX_RETRACES)] = 3
    """retrace: how many times the search may go back to sample captions again."""
    retrace_threshold: Annotated[float | None, checked(finite_number, none=True)] = None
    """retrace: the score the keep-th best reasoning must reach (None: mean + retrace_z x std of the
    run's reasoning scores so far)."""
    retrace_z: Annotated[float, checked(finite_number)] = RETRACE_Z
    """retrace: z of the relative threshold (the paper's 0.2533)."""
    subtree_width: Annotated[int, checked(whole_number, low=1)] = 2
    """dvts: the beam width M of each subtree; the candidates are split into candidates // M
    independent subtrees, each sampling M continuations of its path per stage."""
    resample_temperature: Annotated[float, checked(finite_number, above=0.0)] = 1.0
    """particle_filter: the temperature of the softmax over the particles' scores that resamples
    them at each stage (lower: the best-scored particles take over sooner)."""

    _judge: Judge | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_together(self) -> Self:
        """The checks that read several options at once (a strategy's own among them)."""
        if self.candidates > self.max_candidates:
            msg = (
                f"candidates={self.candidates} is above the cap of {self.max_candidates} (each candidate "
                "is a row of every batch); raise max_candidates if you mean it."
            )
            raise ValueError(msg)
        strategy = self.search_strategy
        needs_scores = strategy.scores_needed is not None or self.confidence is not None
        named = resolve_judge(self.judge, seed=self.seed, strategy=self.strategy, needs_scores=needs_scores)
        judge = strategy.judge_of(named, self)
        if self.adaptive and not strategy.adaptive:
            adaptive = " or ".join(repr(name) for name in strategy_names() if get_strategy(name).adaptive)
            msg = f"adaptive=True is for strategy {adaptive}, not {self.strategy!r}."
            raise ValueError(msg)
        if self.adaptive and self.adaptive_start < 2 and self.confidence is None:
            msg = (
                "adaptive_start must be at least 2: one candidate always agrees with itself. Set "
                "confidence= to let a single candidate that scores that high end the step."
            )
            raise ValueError(msg)
        if self.confidence is not None and not judge.scores:
            msg = f"confidence= reads a judge's scores, and the {judge.name!r} judge has none."
            raise ValueError(msg)
        strategy.check(self)
        self._judge = judge
        return self

    @property
    def search_strategy(self) -> SearchStrategy:
        """The strategy the ``strategy`` option names, from the registry."""
        return get_strategy(self.strategy)

    @property
    def resolved_judge(self) -> Judge:
        """The judge the search runs (``judge`` made a :class:`Judge`, a vote's wrapped)."""
        assert self._judge is not None  # set by the check, which every construction runs
        return self._judge

    @property
    def asks_a_person(self) -> bool:
        """Whether the judge interrupts the graph for a person (it needs a checkpointer and a resume)."""
        return self.resolved_judge.asks_a_person

    def search_options(self) -> dict[str, Any]:
        """The search options by name, as this object holds them (a chat model's, or a context's)."""
        return {name: getattr(self, name) for name in SearchOptions.model_fields}

    @property
    def stage_tokens(self) -> dict[Stage, int]:
        """Each stage's token limit."""
        option = self.max_stage_tokens
        if option is None:
            return dict(DEFAULT_STAGE_TOKENS)
        if isinstance(option, int):
            return dict.fromkeys(STAGES, option)
        return {**DEFAULT_STAGE_TOKENS, **{Stage(key): limit for key, limit in option.items()}}

    @property
    def answer_tokens(self) -> int:
        """The most tokens a whole chosen answer may take: every stage's limit, within ``max_tokens``."""
        every_stage = sum(self.stage_tokens.values())
        return every_stage if self.max_tokens is None else min(every_stage, self.max_tokens)

    @property
    def graph_steps(self) -> int:
        """The most graph steps one search takes (a run's ``recursion_limit`` must allow them).

        An expand and a judge per stage, and whatever more the strategy may take (retrace's tries).
        """
        return self.search_strategy.graph_steps(self)


class SearchContext(SearchOptions):
    """Runtime options of the search graph (its LangGraph ``context_schema``): the options and a backend.

    Example::

        graph.invoke({"conversation": conversation}, context=SearchContext(backend=backend, candidates=3))
    """

    backend: Annotated[Any, checked(_backend, none=True)] = None
    """The model to sample from and to judge with; None runs the bundled demo model in-process."""

    @classmethod
    def of(cls, options: SearchOptions, backend: VLMBackend | None = None, **changes: Any) -> SearchContext:
        """The context of ``options`` (a chat model's, a context's) with ``changes``: the merge point."""
        unknown = set(changes) - set(SearchOptions.model_fields)
        if unknown:
            accepted = sorted(SearchOptions.model_fields)
            msg = f"Unknown option(s) {sorted(unknown)}; the search accepts {accepted}."
            raise TypeError(msg)
        return cls(backend=backend, **{**options.search_options(), **changes})

    def get_backend(self) -> VLMBackend:
        """The ``backend``, or the process-wide bundled demo model."""
        if self.backend is not None:
            return self.backend  # type: ignore[no-any-return]
        return cached_backend(model_or_demo(None))

    @property
    def width(self) -> int:
        """How many candidates each step samples (the strategy's say: greedy samples 1)."""
        return self.search_strategy.width(self)

    @property
    def sampling_temperature(self) -> float:
        """Temperature of candidate sampling (the strategy's say: 0 for greedy)."""
        return self.search_strategy.temperature(self)

    def span(self, first: Stage) -> tuple[Stage, ...]:
        """The stages one step writes when it starts at ``first`` (the strategy's say)."""
        return self.search_strategy.span(first, self)

    def token_limit(self, span: tuple[Stage, ...]) -> int:
        """Token limit of a step that writes ``span``."""
        limits = self.stage_tokens
        return sum(limits[s] for s in span)
