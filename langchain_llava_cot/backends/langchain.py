"""Any LangChain chat model with image input as a backend, one stage per call.

A generic chat model cannot continue a partial assistant message, so each stage is
asked for explicitly and its tags are enforced by parsing.

Input flow:
    SampleRequest
      -> :func:`~.stage_asking.read_prefix`: the engine's prefix (chosen stages + the next opening tag)
         as a :class:`~.stage_asking.StageAsk`: which stages were chosen, which one to write next
      -> :func:`~.stage_asking.stage_request_text`: the question, the stages so far and an instruction
         to write only the next stage in its tags
      -> :func:`to_langchain_messages`: the conversation as LangChain messages, images as
         standard ``{"type": "image", "base64": ...}`` blocks before the text
      -> ``chat_model.batch`` / ``abatch``: one input per candidate (``n`` of them),
         at most ``max_concurrency`` at a time; callbacks and tracing come from the
         caller's runnable context, untouched

Output flow:
    AIMessage
      -> :func:`~.stage_asking.extract_stages`: the stage text between its tags, repaired when the
         model drifts (untagged text, a whole four-stage answer, a missing close tag)
      -> :func:`~.stage_asking.cut_at_stop`: cut before the request's stop strings
      -> :class:`Sample` with ``usage_metadata`` token counts and, when the model gives
         them (``response_metadata["logprobs"]``), the log-probabilities of the kept tokens

The asking and the reading back are the stage-asking protocol
(:mod:`langchain_llava_cot.backends.stage_asking`), which the OpenAI-compatible backend
follows too where a server ignores a partial assistant message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langchain_llava_cot.backends.base import Sample, SampleRequest, VLMBackend
from langchain_llava_cot.backends.stage_asking import (
    after_prefix,
    cut_at_stop,
    extract_stages,
    prefix_request_text,
    read_prefix,
    span_logprobs,
    stage_repairs,
    stage_request_text,
)
from langchain_llava_cot.conversation import Conversation, laid_out
from langchain_llava_cot.images import image_block

__all__ = ["ChatModelBackend", "to_langchain_messages"]

logger = logging.getLogger(__name__)


# --- LangChain messages ---------------------------------------------------------------


def to_langchain_messages(conversation: Conversation, last_user_text: str | None = None) -> list[BaseMessage]:
    """The conversation as LangChain messages (:func:`laid_out`), images as image blocks before the text.

    Args:
        conversation: The request's conversation.
        last_user_text: Replaces the text of the last user turn (the stage request).
    """
    messages: list[BaseMessage] = []
    for turn in laid_out(conversation, last_user_text=last_user_text):
        if turn.role == "system":
            messages.append(SystemMessage(turn.text))
        elif turn.role == "assistant":
            messages.append(AIMessage(turn.text))
        else:
            blocks: list[Any] = [image_block(image) for image in turn.images]
            blocks.append({"type": "text", "text": turn.text})
            messages.append(HumanMessage(content=blocks))
    return messages


# --- the backend ----------------------------------------------------------------------


class ChatModelBackend(VLMBackend):
    """Drive any LangChain chat model with image input, asking for one stage per call.

    Sampling options (temperature, top-p, token limit, seed) are the chat model's own:
    set them when you build it, since chat models name them differently. For ``n > 1``
    candidates to differ, give it a temperature above 0.

    Setup:
        .. code-block:: python

            from langchain_ollama import ChatOllama
            from langchain_llava_cot.backends.langchain import ChatModelBackend

            backend = ChatModelBackend(ChatOllama(model="llava", temperature=0.6))

    Args:
        chat_model: A chat model that accepts standard image content blocks.
        max_concurrency: Most calls to the chat model in flight at once.
    """

    supports_choice = False

    def __init__(self, chat_model: BaseChatModel, *, max_concurrency: int = 8) -> None:
        if max_concurrency < 1:
            msg = f"max_concurrency must be at least 1, got {max_concurrency}."
            raise ValueError(msg)
        self.chat_model = chat_model
        self.max_concurrency = max_concurrency
        self.model_name = _model_name(chat_model)

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        inputs, owners = self._inputs(requests)
        replies = self.chat_model.batch(inputs, config={"max_concurrency": self.max_concurrency})
        return self._samples(requests, owners, replies)

    async def asample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        inputs, owners = self._inputs(requests)
        replies = await self.chat_model.abatch(inputs, config={"max_concurrency": self.max_concurrency})
        return self._samples(requests, owners, replies)

    def _inputs(self, requests: Sequence[SampleRequest]) -> tuple[list[LanguageModelInput], list[int]]:
        inputs: list[LanguageModelInput] = []
        owners: list[int] = []
        for index, request in enumerate(requests):
            messages = stage_messages(request)
            for _ in range(request.n):
                inputs.append(messages)
                owners.append(index)
        return inputs, owners

    def _samples(
        self, requests: Sequence[SampleRequest], owners: Sequence[int], replies: Sequence[BaseMessage]
    ) -> list[list[Sample]]:
        out: list[list[Sample]] = [[] for _ in requests]
        for index, reply in zip(owners, replies):
            out[index].append(sample_from_message(requests[index], reply))
        return out


def stage_messages(request: SampleRequest) -> list[BaseMessage]:
    """The messages that ask a chat model for what ``request`` wants."""
    ask = read_prefix(request.prefix, request.stop)
    conversation = request.conversation
    if ask is not None:
        return to_langchain_messages(conversation, stage_request_text(conversation.question, ask))
    if request.prefix:
        return to_langchain_messages(conversation, prefix_request_text(conversation.question, request.prefix))
    return to_langchain_messages(conversation)


def sample_from_message(request: SampleRequest, message: BaseMessage) -> Sample:
    """Turn a chat model's reply into a :class:`Sample` of what ``request`` asked for."""
    reply = message.text if isinstance(message.text, str) else str(message.content)
    ask = read_prefix(request.prefix, request.stop)
    if ask is not None:
        found = extract_stages(reply, ask)
        start, end, closed = found.start, found.end, found.closed
    else:
        found, start, end, closed = None, after_prefix(reply, request.prefix), len(reply), False
    text, stopped = cut_at_stop(reply[start:end], request.stop)
    repairs = stage_repairs(found, ask, stopped) if found and ask else ()
    if repairs:
        logger.debug("Repaired a drifting stage: %s.", "; ".join(repairs))
    usage = getattr(message, "usage_metadata", None) or {}
    tokens = message_logprobs(message.response_metadata)
    metadata = message.response_metadata
    reason = metadata.get("finish_reason") or metadata.get("done_reason")
    return Sample(
        text=text,
        finish_reason="length" if reason == "length" and not (stopped or closed) else "stop",
        token_logprobs=span_logprobs(tokens, text, start) if tokens else None,
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
        repairs=repairs,
    )


def message_logprobs(metadata: Mapping[str, Any]) -> list[tuple[str, float]]:
    """``(token, logprob)`` pairs from ``response_metadata["logprobs"]``; empty when absent.

    Reads the OpenAI shape (``{"content": [{"token", "logprob"}, ...]}``) and a bare list
    of such entries (as Ollama gives them).
    """
    raw = metadata.get("logprobs")
    entries = raw.get("content") if isinstance(raw, Mapping) else raw
    if not isinstance(entries, list):
        return []
    return [
        (str(e.get("token", "")), float(e["logprob"]))
        for e in entries
        if isinstance(e, Mapping) and isinstance(e.get("logprob"), (int, float))
    ]


def _model_name(chat_model: BaseChatModel) -> str:
    for attribute in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(chat_model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return chat_model._llm_type
