"""How a request is put to the server: its messages, how the prefix is asked for, its payloads.

    SampleRequest / ChoiceRequest
      -> :func:`openai_messages`: the conversation as OpenAI ``messages``, images as
         ``image_url`` data URLs before the text
      -> :func:`how_to_ask`: continue the prefix as a final assistant message
         (``continue_final_message``) where the server honours it; else send the
         conversation alone when the prefix is only the first opening tag, or ask for
         the stage explicitly (the stage-asking protocol: :mod:`~langchain_llava_cot.backends.stage_asking`)
      -> :func:`sample_payloads` / :func:`choice_payload`: one payload with ``n``, or
         one per candidate with distinct seeds where ``n`` is ignored; ``stop``,
         ``logprobs``, ``seed`` only where honoured; a forced call's grammar where the
         server decodes under one, and then only the stop strings that the grammar
         writes at its end (:mod:`.forced_calls`)

The :class:`Ask` made here also says how the reply is read back (:mod:`.replies`).
All functions are pure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest
from langchain_llava_cot.backends.openai.capabilities import ServerCapabilities
from langchain_llava_cot.backends.openai.forced_calls import server_grammar
from langchain_llava_cot.backends.stage_asking import (
    StageAsk,
    prefix_request_text,
    read_prefix,
    stage_request_text,
)
from langchain_llava_cot.conversation import Conversation, laid_out
from langchain_llava_cot.images import image_base64, image_mime_type

_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class Ask:
    """How one request is put to the server, and how its reply is read back."""

    messages: list[dict[str, Any]]
    mode: Literal["continue", "fresh", "explicit"]
    stage: StageAsk | None = None
    prefix: str = ""


def openai_messages(conversation: Conversation, last_user_text: str | None = None) -> list[dict[str, Any]]:
    """The conversation as OpenAI chat messages (:func:`laid_out`).

    Each image is an ``image_url`` data URL before its turn's text.
    """
    messages: list[dict[str, Any]] = []
    for turn in laid_out(conversation, last_user_text=last_user_text):
        if not turn.images:
            messages.append({"role": turn.role, "content": turn.text})
            continue
        parts: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": _data_url(i)}} for i in turn.images
        ]
        parts.append({"type": "text", "text": turn.text})
        messages.append({"role": turn.role, "content": parts})
    return messages


def _data_url(image: bytes) -> str:
    return f"data:{image_mime_type(image)};base64,{image_base64(image)}"


def how_to_ask(conversation: Conversation, prefix: str, stop: Sequence[str], caps: ServerCapabilities) -> Ask:
    """Continue ``prefix`` where the server can; otherwise ask for the stage explicitly."""
    if not prefix:
        return Ask(openai_messages(conversation), "fresh")
    if caps.continuation:
        messages = [*openai_messages(conversation), {"role": "assistant", "content": prefix}]
        return Ask(messages, "continue", prefix=prefix)
    ask = read_prefix(prefix, stop)
    if ask is not None and not ask.chosen:
        # Only the first opening tag: LLaVA-CoT writes it unasked, so send the conversation alone.
        return Ask(openai_messages(conversation), "explicit", stage=ask, prefix=prefix)
    if ask is not None:
        text = stage_request_text(conversation.question, ask)
        return Ask(openai_messages(conversation, text), "explicit", stage=ask, prefix=prefix)
    text = prefix_request_text(conversation.question, prefix)
    return Ask(openai_messages(conversation, text), "fresh", prefix=prefix)


def routing_key(conversation: Conversation) -> str:
    """One question's key, the same for every request of its search (candidates and verdicts).

    Sent as the OpenAI ``user`` field and the ``X-SMG-Routing-Key`` header
    (:data:`~.transport.ROUTING_HEADER`), so that a router that
    pins a key to a replica keeps a question, whose requests share the picture and prompt prefix,
    where that prefix is cached. Keyed by the pictures (a judge's prompt asks about the same
    pictures in other words), or by the whole conversation when it has none.
    """
    images = conversation.images
    digest = hashlib.sha256(b"".join(hashlib.sha256(i).digest() for i in images)).hexdigest()
    return f"llava-cot-{(digest if images else conversation.fingerprint)[:16]}"


def _base_payload(model: str, ask: Ask, max_tokens: int, key: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model,
        "messages": ask.messages,
        "max_tokens": max_tokens,
        "user": key,
    }
    if ask.mode == "continue":
        payload["continue_final_message"] = True
        payload["add_generation_prompt"] = False
    return payload


def sample_payloads(model: str, request: SampleRequest, ask: Ask, caps: ServerCapabilities) -> list[dict]:
    """The payloads for one request: one asking for ``n`` choices, or ``n`` asking for one each."""
    payload = _base_payload(model, ask, request.max_new_tokens, routing_key(request.conversation))
    payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    grammar = server_grammar(request, ask.mode == "continue", caps)
    stop = request.stop if grammar is None else grammar.stops(request.stop)
    if stop and caps.stop:
        payload["stop"] = list(stop)
    if caps.logprobs:
        payload["logprobs"] = True
    if caps.generation_config:
        payload["generation_config"] = json.dumps(_generation_config(request))
    if grammar is not None:
        payload.update(grammar.payload_field)
    if caps.n or request.n == 1:
        if request.n > 1:
            payload["n"] = request.n
        if request.seed is not None:
            payload["seed"] = request.seed
        return [payload]
    seeds = [None if request.seed is None else request.seed + i for i in range(request.n)]
    return [payload if seed is None else {**payload, "seed": seed} for seed in seeds]


def _generation_config(request: SampleRequest) -> dict[str, Any]:
    config: dict[str, Any] = {"do_sample": request.temperature > 0, "max_new_tokens": request.max_new_tokens}
    if request.temperature > 0:
        config["temperature"] = request.temperature
        if request.top_p is not None:
            config["top_p"] = request.top_p
    return config


def choice_payload(model: str, request: ChoiceRequest) -> dict[str, Any]:
    """A one-token, greedy completion after the prefix, asking for the top log-probabilities."""
    messages = [*openai_messages(request.conversation), {"role": "assistant", "content": request.prefix}]
    payload = _base_payload(model, Ask(messages, "continue"), 1, routing_key(request.conversation))
    payload.update(temperature=0.0, logprobs=True, top_logprobs=_TOP_LOGPROBS)
    return payload
