"""How a server's reply is read back: JSON to samples and choice scores.

    JSON
      -> :func:`samples_from_reply`: each choice's text cut at the stop string (always,
         client side) or pulled out of an explicit stage reply; log-probabilities of the
         kept tokens; ``usage`` split over the choices -> :class:`Sample`
      -> :func:`choice_from_reply`: ``top_logprobs`` of the one generated token -> :class:`ChoiceResult`

All functions are pure; a reply without choices is a :class:`ServerError`.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_llava_cot.backends.base import ChoiceRequest, ChoiceResult, Sample, SampleRequest
from langchain_llava_cot.backends.openai.asking import Ask
from langchain_llava_cot.backends.openai.errors import ServerError
from langchain_llava_cot.backends.stage_asking import (
    Extracted,
    cut_at_stop,
    extract_stages,
    span_logprobs,
    stage_repairs,
)


def samples_from_reply(request: SampleRequest, ask: Ask, reply: dict[str, Any]) -> list[Sample]:
    """Read every choice of a reply into samples of what ``request`` asked for."""
    choices = _choices(reply)
    usage = reply.get("usage") or {}
    prompt_total = int(usage.get("prompt_tokens") or 0)
    completion_total = int(usage.get("completion_tokens") or 0)
    samples = []
    for index, choice in enumerate(choices):
        content = _without_echo((choice.get("message") or {}).get("content") or "", ask)
        start, end, closed, found = _kept_span(content, ask)
        text, stopped = cut_at_stop(content[start:end], request.stop)
        tokens = _token_logprobs(choice)
        server_stopped = choice.get("finish_reason") != "length"
        repairs = stage_repairs(found, ask.stage, stopped or server_stopped) if found and ask.stage else ()
        samples.append(
            Sample(
                text=text,
                finish_reason="stop" if stopped or closed or server_stopped else "length",
                token_logprobs=span_logprobs(tokens, text, start) if tokens else None,
                prompt_tokens=prompt_total if index == 0 else 0,
                completion_tokens=_share(
                    completion_total, len(choices), index, len(tokens) if tokens else None
                ),
                repairs=repairs,
            )
        )
    return samples


def _without_echo(content: str, ask: Ask) -> str:
    """The continuation alone: llama.cpp's assistant prefill returns the prefix in the reply too."""
    if ask.mode == "continue" and ask.prefix and content.startswith(ask.prefix):
        return content[len(ask.prefix) :]
    return content


def _kept_span(content: str, ask: Ask) -> tuple[int, int, bool, Extracted | None]:
    """Where the wanted text lies in a reply, and whether the asked stage was closed there.

    The last item is the stage as found in a reply to an explicit stage request.
    """
    if ask.mode == "explicit" and ask.stage is not None:
        found = extract_stages(content, ask.stage)
        return found.start, found.end, found.closed, found
    if ask.mode == "fresh" and ask.prefix:
        stripped = content.lstrip()
        if stripped.startswith(ask.prefix.strip()):
            return len(content) - len(stripped) + len(ask.prefix.strip()), len(content), False, None
    return 0, len(content), False, None


def _share(total: int, parts: int, index: int, counted: int | None) -> int:
    """One choice's completion tokens: its own count when known, else an even share of the total."""
    if counted is not None:
        return counted
    return total // parts + (total % parts if index == 0 else 0)


def _choices(reply: dict[str, Any]) -> list[dict[str, Any]]:
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        msg = (
            f"The server's reply has no choices: {json.dumps(reply)[:300]}. "
            "Is base_url an OpenAI-compatible /v1 endpoint?"
        )
        raise ServerError(msg)
    return choices


def _token_logprobs(choice: dict[str, Any]) -> list[tuple[str, float]]:
    content = (choice.get("logprobs") or {}).get("content") or []
    return [(str(t.get("token", "")), float(t["logprob"])) for t in content if t.get("logprob") is not None]


def choice_from_reply(request: ChoiceRequest, reply: dict[str, Any]) -> ChoiceResult:
    """Each option's log-probability among the first token's ``top_logprobs`` (-inf when absent)."""
    content = (_choices(reply)[0].get("logprobs") or {}).get("content") or []
    top = content[0].get("top_logprobs") or [] if content else []
    scores = []
    for option in request.options:
        matches = [float(t["logprob"]) for t in top if str(t.get("token", "")).strip() == option.strip()]
        scores.append(max(matches, default=float("-inf")))
    prompt = int((reply.get("usage") or {}).get("prompt_tokens") or 0)
    return ChoiceResult(logprobs=tuple(scores), prompt_tokens=prompt)
