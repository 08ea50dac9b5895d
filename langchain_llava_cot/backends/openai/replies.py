"""How a server's reply is read back: JSON to samples and choice scores.

    JSON
      -> :func:`samples_from_reply`: each choice's text cut at the stop string (always,
         client side) or pulled out of an explicit stage reply; log-probabilities of the
         kept tokens; ``usage`` split over the choices -> :class:`Sample`
      -> :func:`choice_from_reply`: ``top_logprobs`` of the one generated token -> :class:`ChoiceResult`

All functions are pure. Nothing in a reply is trusted to have the documented shape: a
reply that is not an object, has no choices, or holds a field of the wrong type (content
that is neither text nor text parts, a count that is not a whole number, a log-probability
that is not a number) is a :class:`ServerError` that names the server and the field.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
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

__all__ = ["choice_from_reply", "samples_from_reply"]


def samples_from_reply(
    request: SampleRequest, ask: Ask, reply: Any, *, server: str = "the server"
) -> list[Sample]:
    """Read every choice of a reply into samples of what ``request`` asked for."""
    choices = _choices(reply, server)
    prompt_total = _count(reply, "prompt_tokens", server)
    completion_total = _count(reply, "completion_tokens", server)
    samples = []
    for index, choice in enumerate(choices):
        content = _without_echo(_content(choice, server), ask)
        start, end, closed, found = _kept_span(content, ask)
        text, stopped = cut_at_stop(content[start:end], request.stop)
        tokens = _token_logprobs(choice, server)
        server_stopped = choice.get("finish_reason") != "length"
        if found is not None and ask.stage is not None:
            repairs = stage_repairs(found, ask.stage, stopped or server_stopped)
        else:
            repairs = _prefix_repairs(content, ask)
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


def _prefix_repairs(content: str, ask: Ask) -> tuple[str, ...]:
    """A reply asked to begin with a prefix that it did not begin with is taken whole, and says so."""
    if ask.mode == "fresh" and ask.prefix and not content.lstrip().startswith(ask.prefix.strip()):
        return (
            f"the reply did not begin with {ask.prefix.strip()[:40]!r} as asked; the whole reply is kept",
        )
    return ()


def _share(total: int, parts: int, index: int, counted: int | None) -> int:
    """One choice's completion tokens: its own count when known, else an even share of the total."""
    if counted is not None:
        return counted
    return total // parts + (total % parts if index == 0 else 0)


# --- reading each field, trusting none -----------------------------------------------------


def _malformed(server: str, what: str, reply: Any) -> ServerError:
    shown = json.dumps(reply, default=repr)[:300]
    msg = (
        f"The server at {server} sent a reply that {what}: {shown}. "
        "Is base_url an OpenAI-compatible /v1 endpoint?"
    )
    return ServerError(msg)


def _choices(reply: Any, server: str) -> list[Mapping[str, Any]]:
    if not isinstance(reply, Mapping):
        raise _malformed(server, f"is a JSON {type(reply).__name__}, not an object", reply)
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _malformed(server, "has no choices", reply)
    if not all(isinstance(choice, Mapping) for choice in choices):
        raise _malformed(server, "has a choice that is not an object", choices)
    return choices


def _count(reply: Mapping[str, Any], name: str, server: str) -> int:
    usage = reply.get("usage")
    if usage is None:
        return 0
    if not isinstance(usage, Mapping):
        raise _malformed(server, "has a usage that is not an object", usage)
    value = usage.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise _malformed(server, f"counts usage.{name} as {value!r}, not a whole number", usage)
    return int(value)


def _content(choice: Mapping[str, Any], server: str) -> str:
    """A choice's text: a string, or OpenAI content parts of type text joined."""
    message = choice.get("message")
    if message is None:
        return ""
    if not isinstance(message, Mapping):
        raise _malformed(server, "has a message that is not an object", choice)
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(_is_text_part(part) for part in content):
        return "".join(part["text"] for part in content)
    raise _malformed(server, "has content that is neither text nor a list of text parts", message)


def _is_text_part(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _logprob_entries(holder: Any, key: str, server: str) -> list[Mapping[str, Any]]:
    """``holder[key]`` as a list of objects with a ``logprob`` number (entries without one left out)."""
    if holder is None:
        return []
    if not isinstance(holder, Mapping):
        raise _malformed(server, f"has {key} log-probabilities that are not an object", holder)
    entries = holder.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise _malformed(server, f"has {key} log-probabilities that are not a list of objects", holder)
    kept = []
    for entry in entries:
        logprob = entry.get("logprob")
        if logprob is None:
            continue
        if not _is_log_probability(logprob):
            raise _malformed(server, f"has a log-probability {logprob!r} that is not a number", entry)
        kept.append(entry)
    return kept


def _is_log_probability(value: Any) -> bool:
    """A real number (not a bool, not NaN) that a float holds; -inf is one (a token never chosen)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return not math.isnan(float(value))
    except OverflowError:  # a whole number too large for a float
        return False


def _token_logprobs(choice: Mapping[str, Any], server: str) -> list[tuple[str, float]]:
    entries = _logprob_entries(choice.get("logprobs"), "content", server)
    return [(str(t.get("token", "")), float(t["logprob"])) for t in entries]


def choice_from_reply(request: ChoiceRequest, reply: Any, *, server: str = "the server") -> ChoiceResult:
    """Each option's log-probability among the first token's ``top_logprobs`` (-inf when absent)."""
    choice = _choices(reply, server)[0]
    content = _logprob_entries(choice.get("logprobs"), "content", server)
    top = _logprob_entries(content[0], "top_logprobs", server) if content else []
    scores = []
    for option in request.options:
        matches = [float(t["logprob"]) for t in top if str(t.get("token", "")).strip() == option.strip()]
        scores.append(max(matches, default=float("-inf")))
    return ChoiceResult(logprobs=tuple(scores), prompt_tokens=_count(reply, "prompt_tokens", server))
