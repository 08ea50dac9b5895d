"""OpenAI chat replies out: ``ChatLlavaCoT``'s message chunks as completions and stream chunks.

Output flow:
    ``AIMessageChunk`` s of ``ChatLlavaCoT.astream`` (one per chosen stage, then one with usage
    and the search record) -> :class:`ReplyWriter`:

    - a chosen summary, caption or reasoning -> ``delta.reasoning_content`` (the field vLLM's
      reasoning parsers and DeepSeek use), each as soon as its judge chose it;
    - the conclusion -> ``delta.content``; with tools, its calls -> ``delta.tool_calls``; for a
      JSON ``response_format``, the forced call's arguments -> ``delta.content``;
    - the closing chunk -> ``finish_reason`` and the search record under the vendor field
      ``llava_cot`` (every candidate, judge decision, token count and timing), then, when
      ``stream_options.include_usage`` is set, a chunk with ``usage``: every token the search
      spent, judges included.

A whole completion (``stream: false``) is what the same chunks add up to (:meth:`ReplyWriter.completion`).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from langchain_core.messages import BaseMessageChunk

__all__ = ["RECORD_FIELD", "ReplyWriter", "json_text", "sse"]

RECORD_FIELD = "llava_cot"
"""The vendor field holding the search record, in a completion and in the closing stream chunk."""


class ReplyWriter:
    """Turns one request's message chunks into OpenAI objects, and keeps what they add up to."""

    def __init__(self, model: str, *, json_answer: bool = False, include_usage: bool = False) -> None:
        self.model, self.json_answer, self.include_usage = model, json_answer, include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.usage: dict[str, int] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.record: dict[str, Any] | None = None
        self._finish = "stop"
        self._started = False

    def stream_chunks(self, chunk: BaseMessageChunk) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects of one message chunk (none for one with only metadata)."""
        delta = self._delta(chunk)
        if not delta:
            return []
        if not self._started:
            delta = {"role": "assistant", **delta}
            self._started = True
        return [self._chunk(delta)]

    def closing_chunks(self) -> list[dict[str, Any]]:
        """The last chunks: the finish reason with the search record, then the usage if asked."""
        closing = self._chunk(
            {} if self._started else {"role": "assistant", "content": ""}, self.finish_reason
        )
        closing[RECORD_FIELD] = self.record
        if not self.include_usage:
            return [closing]
        usage = {**self._base("chat.completion.chunk"), "choices": [], "usage": dict(self.usage)}
        return [closing, usage]

    def add(self, chunk: BaseMessageChunk) -> None:
        """Take a chunk into the whole completion without streaming it."""
        self._delta(chunk)

    @property
    def finish_reason(self) -> str:
        """``tool_calls`` when the answer calls tools, else the search's ``stop`` or ``length``."""
        return "tool_calls" if self.tool_calls else self._finish

    def completion(self) -> dict[str, Any]:
        """The ``chat.completion`` the chunks seen add up to."""
        content = "".join(self.content)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if self.tool_calls and not content else content,
            "reasoning_content": "".join(self.reasoning) or None,
        }
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
        return {
            **self._base("chat.completion"),
            "choices": [choice],
            "usage": dict(self.usage),
            RECORD_FIELD: self.record,
        }

    # -- one chunk ----------------------------------------------------------------

    def _delta(self, chunk: BaseMessageChunk) -> dict[str, Any]:
        """The OpenAI delta of ``chunk``, after taking its parts into the whole."""
        delta: dict[str, Any] = {}
        if reasoning := chunk.additional_kwargs.get("reasoning_content"):
            self.reasoning.append(reasoning)
            delta["reasoning_content"] = reasoning
        text = chunk.content if isinstance(chunk.content, str) else chunk.text
        calls = [self._call(part, len(self.tool_calls) + i) for i, part in enumerate(_call_chunks(chunk))]
        if self.json_answer and calls:  # the forced call's arguments are the answer
            text, calls = text + "".join(c["function"]["arguments"] for c in calls), []
        if text:
            self.content.append(text)
            delta["content"] = text
        if calls:
            start = len(self.tool_calls)
            self.tool_calls.extend(calls)
            delta["tool_calls"] = [{"index": start + i, **call} for i, call in enumerate(calls)]
        self._take_metadata(chunk)
        return delta

    @staticmethod
    def _call(part: dict[str, Any], index: int) -> dict[str, Any]:
        arguments = part.get("args") or "{}"
        if part.get("name") is None:  # a call that did not parse: its text, as the model wrote it
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass
        return {
            "id": part.get("id") or f"call_{index}",
            "type": "function",
            "function": {"name": part.get("name") or "", "arguments": str(arguments)},
        }

    def _take_metadata(self, chunk: BaseMessageChunk) -> None:
        usage = getattr(chunk, "usage_metadata", None)
        if usage:
            self.usage = {
                "prompt_tokens": usage["input_tokens"],
                "completion_tokens": usage["output_tokens"],
                "total_tokens": usage["total_tokens"],
            }
        metadata = chunk.response_metadata
        if RECORD_FIELD in metadata:
            self.record = metadata[RECORD_FIELD]
        if metadata.get("finish_reason"):
            self._finish = metadata["finish_reason"]

    def _base(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._base("chat.completion.chunk"), "choices": [choice]}


def _call_chunks(chunk: BaseMessageChunk) -> list[dict[str, Any]]:
    return list(getattr(chunk, "tool_call_chunks", None) or ())


def json_text(value: Any) -> str:
    """``value`` as strict JSON: a NaN or infinite number becomes null."""
    return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False)


def sse(value: Any) -> str:
    """One server-sent event holding ``value`` as JSON (or ``[DONE]``)."""
    return f"data: {value if isinstance(value, str) else json_text(value)}\n\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
