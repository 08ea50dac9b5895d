"""Streaming the search as LangChain message chunks.

The chat model runs the graph under :func:`child_config` (the graph's runs nest under the
model's run) and turns its stream into chunks:

    graph ``updates`` (one per judged stage) -> :class:`ChunkConverter` -> ``AIMessageChunk``:
    summary, caption and reasoning as ``reasoning_content``, the conclusion as content (with
    tools bound, its tool calls); the final graph state -> the closing chunk: usage and the
    whole search record in ``response_metadata["llava_cot"]``.

``stream`` and ``astream`` share one :class:`ChunkConverter`; ``invoke`` aggregates the
same chunks, and :func:`message_from_state` adds them up from a finished search's state
(the served graph and the CLI).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, AIMessageChunk, message_chunk_to_message
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk
from langgraph.types import Overwrite

from langchain_llava_cot.stages import STAGE_SEPARATOR, STAGES, Stage, render_answer, render_stage
from langchain_llava_cot.strategies import get_strategy
from langchain_llava_cot.tools import parse_tool_calls

__all__ = ["PROVIDER", "ChunkConverter", "child_config", "message_from_state"]

PROVIDER = "llava_cot"
"""The provider name in ``response_metadata["model_provider"]`` and LangSmith's ``ls_provider``."""


def child_config(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None) -> Any:
    """The graph's config: its runs (and a judge model's) nest under this model's run."""
    if run_manager is None:
        return None
    from langchain_core.callbacks import AsyncCallbackManager, CallbackManager

    kind = AsyncCallbackManager if isinstance(run_manager, AsyncCallbackManagerForLLMRun) else CallbackManager
    child = kind(handlers=[], parent_run_id=run_manager.run_id)
    child.set_handlers(run_manager.inheritable_handlers)
    child.add_tags(run_manager.inheritable_tags)
    child.add_metadata(run_manager.inheritable_metadata)
    return {"callbacks": child}


class ChunkConverter:
    """Turns graph stream events into message chunks: one per chosen stage, then a final one."""

    def __init__(self, model_name: str, strategy: str, tagged: bool, tools: bool) -> None:
        self.model_name, self.strategy, self.tagged, self.tools = model_name, strategy, tagged, tools
        # a stage a later judge may take back (retrace's caption) is sent once a later one keeps it
        self.revisable = {f"judge_{s.value}" for s in get_strategy(strategy).revisable}
        self.state: dict[str, Any] = {}
        self.emitted: set[Stage] = set()

    def convert(self, mode: str, data: Any) -> Iterator[ChatGenerationChunk]:
        """The chunks of one ``(mode, data)`` event: ``values`` keeps the state, ``updates`` chunks."""
        if mode == "values":
            self.state = data
            return
        for node, update in data.items():
            chosen = update.get("chosen") if node.startswith("judge_") and update else None
            if not chosen or isinstance(chosen, Overwrite):  # an Overwrite: retrace went back
                continue
            for stage in STAGES:
                if stage.value not in chosen or stage in self.emitted:
                    continue
                if node in self.revisable:
                    continue
                self.emitted.add(stage)
                yield _stage_chunk(stage, chosen[stage.value], self.tagged, self.tools)

    def final_chunk(self) -> ChatGenerationChunk:
        """The closing chunk, from the last state seen."""
        return _final_chunk(self.state, self.model_name, self.strategy)


def message_from_state(
    state: Mapping[str, Any], model_name: str, strategy: str, *, tagged: bool = False, tools: bool = False
) -> AIMessage:
    """The ``AIMessage`` a finished search stands for: the same message ``invoke`` returns."""
    chosen = state.get("chosen") or {}
    chunks = [_stage_chunk(s, chosen[s.value], tagged, tools) for s in STAGES if s.value in chosen]
    whole = chunks[0] if chunks else ChatGenerationChunk(message=AIMessageChunk(content=""))
    for chunk in [*chunks[1:], _final_chunk(state, model_name, strategy)]:
        whole += chunk
    return message_chunk_to_message(whole.message)  # type: ignore[return-value]


def _stage_chunk(stage: Stage, text: str, tagged: bool, tools: bool) -> ChatGenerationChunk:
    """A chunk carrying one chosen stage; with tools bound, the conclusion's tool calls."""
    if stage is Stage.CONCLUSION:
        if not tools:
            return ChatGenerationChunk(
                message=AIMessageChunk(content=render_stage(stage, text) if tagged else text)
            )
        answer, calls, invalid = parse_tool_calls(text)
        chunks = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(calls)
        ]
        # Unparseable calls travel as a JSON string, which LangChain files as an invalid call.
        chunks += [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=len(chunks) + i)
            for i, c in enumerate(invalid)
        ]
        content = render_stage(stage, text) if tagged else answer
        return ChatGenerationChunk(message=AIMessageChunk(content=content, tool_call_chunks=chunks))
    rendered = render_stage(stage, text) + STAGE_SEPARATOR
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content=rendered if tagged else "", additional_kwargs={"reasoning_content": rendered}
        )
    )


def _final_chunk(state: Mapping[str, Any], model_name: str, strategy: str) -> ChatGenerationChunk:
    """The closing chunk: usage, finish reason and the whole search record."""
    usage = state.get("usage") or {}
    steps = state.get("steps") or []
    last = steps[-1]["candidates"][steps[-1]["winner"]] if steps else None
    finish_reason = "length" if last and last["finish_reason"] == "length" else "stop"
    chosen = state.get("chosen") or {}
    record = {
        "strategy": strategy,
        "judge": state.get("judge"),
        "chosen": dict(chosen),
        "answer": render_answer({Stage(k): v for k, v in chosen.items()}),
        "steps": list(steps),
        "usage": dict(usage),
        "seconds": sum(s["sample_seconds"] + s["judge_seconds"] for s in steps),
    }
    input_tokens, output_tokens = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    message = AIMessageChunk(
        content="",
        usage_metadata=UsageMetadata(
            input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
        ),
        response_metadata={
            "model_name": model_name,
            "model_provider": PROVIDER,
            "finish_reason": finish_reason,
            "llava_cot": record,
        },
    )
    return ChatGenerationChunk(message=message, generation_info={"finish_reason": finish_reason})
