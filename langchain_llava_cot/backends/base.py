"""The backend contract: the only place that knows how to talk to a model.

The search engine asks a backend for two things:

- :meth:`VLMBackend.sample`: ``n`` continuations of an assistant ``prefix``, each
  stopped at the first of ``stop``, with per-token log-probabilities when the model
  gives them;
- :meth:`VLMBackend.choose`: for each of several prompts, the log-probability of each
  of a few one-token ``options`` right after an assistant ``prefix``, read from a
  single forward pass. Backends that cannot do this set ``supports_choice = False``
  and the pairwise judge generates and parses a verdict instead.

Both take lists so a backend can batch; the async twins default to running the sync
method in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from langchain_llava_cot.conversation import Conversation

__all__ = [
    "ChoiceRequest",
    "ChoiceResult",
    "PromptTooLongError",
    "Sample",
    "SampleRequest",
    "ToolCallConstraint",
    "VLMBackend",
]


class PromptTooLongError(ValueError):
    """A prompt is longer than the model reads; the message says by how much."""


@dataclass(frozen=True)
class ToolCallConstraint:
    """The continuation's conclusion must be one call of one of ``tools``, valid by construction.

    Backends that decode under a grammar (the transformers backend, with xgrammar) make
    the conclusion exactly ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
    with arguments that match the tool's JSON schema, unless a token limit cuts it short;
    earlier stages written in the same continuation (best-of-N) may not contain ``<``.
    Other backends rely on the tools prompt.
    """

    tools: tuple[dict[str, Any], ...]
    """The tools the call may name, as OpenAI function schemas."""

    @cached_property
    def key(self) -> str:
        """A stable text of the tools: equal constraints have equal keys."""
        return json.dumps(self.tools, sort_keys=True)

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of one call: ``{"name": <a tool's name>, "arguments": <its parameters>}``."""
        calls = []
        for tool in self.tools:
            function = tool.get("function", tool)
            parameters = function.get("parameters") or {"type": "object", "properties": {}}
            calls.append(
                {
                    "type": "object",
                    "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                    "required": ["name", "arguments"],
                    "additionalProperties": False,
                }
            )
        return calls[0] if len(calls) == 1 else {"anyOf": calls}


@dataclass(frozen=True)
class SampleRequest:
    """Ask for ``n`` continuations of ``prefix`` as the assistant's reply."""

    conversation: Conversation
    prefix: str
    """Assistant text already written; the continuations extend it."""
    n: int = 1
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 means greedy decoding."""
    top_p: float | None = None
    seed: int | None = None
    tool_call: ToolCallConstraint | None = None
    """When set, the conclusion this continuation writes must be one call of these tools."""

    def __post_init__(self) -> None:
        """Every backend gets only requests that make sense."""
        if self.n < 1:
            msg = f"SampleRequest.n must be at least 1, got {self.n}."
            raise ValueError(msg)
        if self.max_new_tokens < 1:
            msg = f"SampleRequest.max_new_tokens must be at least 1, got {self.max_new_tokens}."
            raise ValueError(msg)
        if self.temperature < 0:
            msg = f"SampleRequest.temperature must be >= 0 (0 is greedy), got {self.temperature}."
            raise ValueError(msg)
        if self.top_p is not None and not 0 < self.top_p <= 1:
            msg = f"SampleRequest.top_p must be in (0, 1], got {self.top_p}."
            raise ValueError(msg)
        if any(not stop for stop in self.stop):
            msg = "SampleRequest.stop holds an empty string; remove it."
            raise ValueError(msg)


@dataclass(frozen=True)
class Sample:
    """One continuation."""

    text: str
    """The generated text, cut before the stop string that ended it."""
    finish_reason: Literal["stop", "length"]
    token_logprobs: tuple[float, ...] | None = None
    """Log-probability of each generated token, when the backend gives them."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    repairs: tuple[str, ...] = ()
    """What the backend mended in the model's reply (a missing or stray tag), if anything."""

    @property
    def mean_logprob(self) -> float | None:
        """Mean token log-probability, or None when unknown."""
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)


@dataclass(frozen=True)
class ChoiceRequest:
    """Ask which of ``options`` the model would write right after ``prefix``."""

    conversation: Conversation
    prefix: str
    options: tuple[str, ...] = ("1", "2")

    def __post_init__(self) -> None:
        """A choice needs something to choose from."""
        if not self.options:
            msg = "A ChoiceRequest needs at least one option, e.g. options=(' 1', ' 2')."
            raise ValueError(msg)


@dataclass(frozen=True)
class ChoiceResult:
    """Log-probability of each option, in the order asked."""

    logprobs: tuple[float, ...]
    prompt_tokens: int = 0


class VLMBackend(ABC):
    """Base class of every backend."""

    model_name: str = "unknown"
    """The model's name, reported in ``response_metadata["model_name"]``."""
    supports_choice: bool = False
    """Whether :meth:`choose` reads a verdict from one forward pass."""
    gives_logprobs: bool | None = None
    """Whether samples come with token log-probabilities; None when that is not known
    before the model answers (a server not probed yet, a LangChain chat model)."""

    @abstractmethod
    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        """Sample each request's ``n`` continuations."""

    async def asample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        """Async :meth:`sample`."""
        return await asyncio.to_thread(self.sample, requests)

    def tokens_left(self, conversation: Conversation, prefix: str) -> int | None:
        """How many new tokens fit in the model's context after ``conversation`` and ``prefix``.

        The search asks with every stage's tags as the prefix, before its first token: a
        request with no room for an answer, or with stage limits that cannot fit, fails
        there, and the answer's token budget is kept within the room. None (the default)
        when the backend cannot tell; a server reports its own limit.
        """
        return None

    def choose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        """Score each request's options from one forward pass."""
        msg = f"{type(self).__name__} cannot score choices; the judge generates verdicts instead."
        raise NotImplementedError(msg)

    async def achoose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        """Async :meth:`choose`."""
        return await asyncio.to_thread(self.choose, requests)
