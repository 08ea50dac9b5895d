"""The search graph's state: its keys and reducers, the search record's types, and checkpoints.

- :class:`SearchProgress` holds the search's own keys (chosen stages, the pending
  expansion, the step records, usage, and what the strategy carries from step to step);
  :class:`SearchState` adds the conversation, in a :class:`WrittenOnce` channel that
  stores it once per run.
- :class:`StepRecord` and :class:`CandidateRecord` are the search record, one per
  expand-and-judge step (``response_metadata["llava_cot"]["steps"]``), with each step's
  scores (:class:`StepScoreRecord`) where the judge scores steps; :class:`JudgeRecord`
  says which judge ran and why (``response_metadata["llava_cot"]["judge"]``).
- :func:`checkpoint_serializer` lets a checkpointer read this package's state types back.

The nodes that read and write this state are in :mod:`langchain_llava_cot.graph`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from langgraph.channels.delta import MISSING, DeltaChannel
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Overwrite
from typing_extensions import NotRequired, TypedDict

from langchain_llava_cot.conversation import Conversation, Turn

__all__ = [
    "CHECKPOINT_TYPES",
    "CandidateRecord",
    "Expansion",
    "JudgeRecord",
    "RetraceAttempt",
    "SearchProgress",
    "SearchState",
    "StepRecord",
    "StepScoreRecord",
    "Usage",
    "WrittenOnce",
    "add_usage",
    "checkpoint_serializer",
    "fresh_search",
]


class CandidateRecord(TypedDict):
    """One sampled candidate."""

    text: str
    """What the judge compares: the stage's text, or the whole rendered answer."""
    stages: dict[str, str]
    """The text of each stage this candidate wrote."""
    finish_reason: str
    closed: bool
    """Whether every stage it wrote was properly closed (unclosed ones are repaired)."""
    problems: list[str]
    mean_logprob: float | None
    completion_tokens: int
    follows: NotRequired[str]
    """retrace, reasoning: the kept caption this candidate continues."""
    path: NotRequired[int]
    """dvts, particle_filter: the path (subtree, particle) this candidate continues, as its index in
    the previous step's ``paths`` (at the first step, where every path is still empty, the path it starts)."""


class StepScoreRecord(TypedDict):
    """One step of a candidate and its score, as a process judge split and scored it."""

    text: str
    score: float


class JudgeRecord(TypedDict):
    """Which judge ran the search, and why (``judge="auto"`` says what it chose)."""

    name: str
    reason: str


class StepRecord(TypedDict):
    """One expand-and-judge step."""

    stage: str
    span: list[str]
    candidates: list[CandidateRecord]
    winner: int
    judge: str | None
    comparisons: list[dict[str, Any]]
    scores: list[float | None] | None
    """Each candidate's score, when the judge scores (verifier, likelihood); else None."""
    step_scores: NotRequired[list[list[StepScoreRecord] | None]]
    """Each candidate's steps and their scores, when the judge scores steps (a process reward
    model, the verifier on whole answers): which step a checker doubted."""
    sample_seconds: float
    judge_seconds: float
    stopped_early: NotRequired[str | None]
    """Adaptive width: ``agreement`` or ``confidence`` when the first round was enough."""
    kept: NotRequired[list[int]]
    """retrace, caption step: the candidates kept, best first; dvts: each subtree's kept candidate."""
    retrace: NotRequired[RetraceAttempt]
    """retrace, reasoning step: how this attempt went."""
    paths: NotRequired[list[list[int]]]
    """dvts, particle_filter: the paths alive after this step, each as the index of its candidate in
    every step so far (path ``p`` is ``steps[j]["candidates"][p[j]]`` for each ``j``)."""
    resampled: NotRequired[list[int]]
    """particle_filter, every step but the last: the candidate each particle of the next step copies."""


class RetraceAttempt(TypedDict):
    """One try at the reasoning stage under ``strategy="retrace"``."""

    attempt: int
    """1 for the first try, 2 after the first retrace, and so on."""
    threshold: float
    kth_score: float | None
    """The ``keep``-th best reasoning score of this try, compared with the threshold."""
    passed: bool
    retraced: bool
    """Whether the search went back to the caption after this try."""


class Usage(TypedDict):
    """Tokens and model calls spent by the whole search."""

    input_tokens: int
    output_tokens: int
    model_calls: int


class Expansion(TypedDict):
    """One step's candidates, sampled by its expand node and waiting for its judge."""

    stage: str
    span: list[str]
    candidates: list[CandidateRecord]
    sample_seconds: float
    notes: dict[str, Any]
    """What the strategy's expand leaves for its own judge (retrace: which candidates follow
    which caption; adaptive width: a first round's verdict); the nodes never read it."""


def _merge_chosen(left: dict[str, str], right: dict[str, str]) -> dict[str, str]:
    return {**left, **right}


def add_usage(left: Usage, right: Usage) -> Usage:
    """Sum two usages (the reducer of the ``usage`` key)."""
    return Usage(
        input_tokens=left.get("input_tokens", 0) + right.get("input_tokens", 0),
        output_tokens=left.get("output_tokens", 0) + right.get("output_tokens", 0),
        model_calls=left.get("model_calls", 0) + right.get("model_calls", 0),
    )


def _keep_last(current: Any, writes: Sequence[Any]) -> Any:
    return writes[-1]


class WrittenOnce(DeltaChannel):
    """A last-value channel stored once, as its write, not in every checkpoint.

    A plain channel's value is copied into each checkpoint by savers that keep
    channel values inline (SQLite keeps them all in one blob per checkpoint). This
    one is a LangGraph ``DeltaChannel``: checkpoints hold no copy and the value is
    rebuilt from the stored write, so a conversation's images are stored once per run.
    """

    def __init__(
        self,
        reducer: Callable[[Any, Sequence[Any]], Any] = _keep_last,
        typ: Any = None,
        *,
        snapshot_frequency: int = 1_000_000,
    ) -> None:
        super().__init__(reducer, typ, snapshot_frequency=snapshot_frequency)

    def from_checkpoint(self, checkpoint: Any) -> WrittenOnce:
        """Start empty when nothing is stored: the value type needs no default."""
        new = self.__class__(self.reducer, self.typ, snapshot_frequency=self.snapshot_frequency)
        new.key = self.key
        if checkpoint is not MISSING:
            value = super().from_checkpoint(checkpoint).value
            new.value = self.reducer(None, [value])
        return new

    def update(self, values: Sequence[Any]) -> bool:
        """Keep the last value written (an ``Overwrite`` is unwrapped)."""
        if not values:
            return False
        last = values[-1]
        self.value = self.reducer(None, [last.value if isinstance(last, Overwrite) else last])
        return True


def _restore_conversation(current: Any, writes: Sequence[Any]) -> Conversation:
    """The last conversation written, with the tuples a serializer turned into lists restored."""
    value = writes[-1]
    if isinstance(value, Conversation) and isinstance(value.turns, tuple):
        if all(isinstance(t.images, tuple) for t in value.turns):
            return value
    turns = tuple(Turn(t.role, t.text, tuple(t.images)) for t in value.turns)
    tools = tuple(value.tools or ())
    return Conversation(
        turns=turns, tools_prompt=value.tools_prompt, tools=tools, tool_choice=value.tool_choice
    )


class SearchProgress(TypedDict):
    """The search's own keys, in any graph that runs the search nodes."""

    chosen: NotRequired[Annotated[dict[str, str], _merge_chosen]]
    """The chosen text of each stage so far, by stage name."""
    pending: NotRequired[Expansion | None]
    """Candidates waiting for their judge."""
    steps: NotRequired[Annotated[list[StepRecord], operator.add]]
    usage: NotRequired[Annotated[Usage, add_usage]]
    strategy_state: NotRequired[dict[str, Any] | None]
    """What the strategy carries from step to step, owned by its module (retrace: the kept
    captions and its tries; dvts: the subtrees; particle_filter: the particles); None at the start."""
    judge: NotRequired[JudgeRecord | None]
    """The judge that ran, and why; None until a step had candidates to judge."""


class SearchState(SearchProgress):
    """The state of one search."""

    conversation: Annotated[Conversation, WrittenOnce(_restore_conversation)]
    """The request; stored once per run (see :class:`WrittenOnce`)."""


def fresh_search() -> dict[str, Any]:
    """The state update that starts a new search in a graph that already ran one."""
    return {
        "chosen": Overwrite({}),
        "pending": None,
        "steps": Overwrite([]),
        "usage": Overwrite(Usage(input_tokens=0, output_tokens=0, model_calls=0)),
        "strategy_state": None,
        "judge": None,
    }


CHECKPOINT_TYPES: tuple[type, ...] = (Conversation, Turn)
"""The package's own types in graph state, for a checkpoint serializer's allowlist."""


def checkpoint_serializer() -> JsonPlusSerializer:
    """LangGraph's serializer with this package's state types allowed.

    Pass it to a checkpointer (``SqliteSaver(conn, serde=checkpoint_serializer())``) so the
    conversation is read back without "unregistered type" warnings, and still reads
    back where ``LANGGRAPH_STRICT_MSGPACK`` blocks unknown types.
    """
    return JsonPlusSerializer(allowed_msgpack_modules=[(t.__module__, t.__name__) for t in CHECKPOINT_TYPES])
