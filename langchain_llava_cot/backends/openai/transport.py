"""The transport: POST payloads to ``{base_url}/chat/completions``, with retries.

A request plan (:data:`Plan`) is a generator that yields :class:`Posts` (payloads to
POST concurrently) and receives the replies; the retry loop (:func:`post_attempts`) is a
generator that yields posts and sleeps, retrying with exponential backoff on 429, 5xx
and connection errors (:func:`_retry_delay`). Neither does any I/O, so sync and async
HTTP share them: the backend runs both with an ``httpx.Client`` (threads for
concurrency) or an ``httpx.AsyncClient``, each reply read within one deadline
(:func:`post_within`, :func:`apost_within`).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar, Union

import httpx

from langchain_llava_cot.backends.openai.errors import (
    ServerError,
    ServerTimeoutError,
    ServerUnreachableError,
    error_for,
)

T = TypeVar("T")

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_PROBE_RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""A probe treats HTTP 500 as "feature not supported" (``transformers serve`` answers ``stop`` so)."""
_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 8.0


@dataclass(frozen=True)
class Posts:
    """POST these payloads concurrently; a probe gets errors back as values instead of raised."""

    payloads: tuple[dict[str, Any], ...]
    probe: bool = False


@dataclass(frozen=True)
class Post:
    """One POST of ``payload`` to make next."""

    payload: dict[str, Any]


Plan = Generator[Posts, list[Any], T]
_Attempt = Generator[Union[Post, float], Union[httpx.Response, httpx.TransportError, None], Any]  # noqa: UP007


_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol, httpx.ProxyError)
"""Transport errors that mean nothing answered; any other broke a request under way."""


def post_within(client: httpx.Client, payload: dict[str, Any], seconds: float) -> httpx.Response:
    """POST a chat completion and read the whole reply within ``seconds``.

    httpx's timeout bounds each read, so a server that trickles its body would hold the
    call for as long as it likes; the body is read chunk by chunk against one deadline.
    """
    deadline = time.monotonic() + seconds
    with client.stream("POST", "/chat/completions", json=payload, headers=_headers(payload)) as response:
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if time.monotonic() > deadline:
                msg = f"the whole reply took over {seconds:g} s"
                raise httpx.ReadTimeout(msg, request=response.request)
    return httpx.Response(
        response.status_code, headers=response.headers, content=bytes(body), request=response.request
    )


async def apost_within(client: httpx.AsyncClient, payload: dict[str, Any], seconds: float) -> httpx.Response:
    """The async :func:`post_within`: the whole request is cancelled at the deadline."""
    try:
        return await asyncio.wait_for(
            client.post("/chat/completions", json=payload, headers=_headers(payload)), seconds
        )
    except asyncio.TimeoutError as e:
        msg = f"the whole reply took over {seconds:g} s"
        raise httpx.ReadTimeout(msg) from e


ROUTING_HEADER = "X-SMG-Routing-Key"
"""The header that carries a request's routing key (its ``user`` field) too: SGLang's model gateway
reads it for sticky routing (its ``consistent_hashing`` and ``manual`` policies)."""


def _headers(payload: dict[str, Any]) -> dict[str, str]:
    """The request's routing key (its ``user`` field) as a header too, for routers that read headers."""
    return {ROUTING_HEADER: payload["user"]} if "user" in payload else {}


def post_attempts(payload: dict[str, Any], base_url: str, max_retries: int, probe: bool) -> _Attempt:
    """Send ``payload`` until it succeeds or retries run out; yields posts and sleeps (seconds).

    Returns the reply's JSON, or (for a probe) the :class:`ServerError` instead of raising it.
    """
    retry_statuses = _PROBE_RETRY_STATUSES if probe else _RETRY_STATUSES
    error: ServerError
    for attempt in range(max_retries + 1):
        outcome = yield Post(payload)
        if isinstance(outcome, httpx.TimeoutException) and not isinstance(outcome, httpx.ConnectTimeout):
            msg = f"The server at {base_url} did not answer within the timeout ({outcome!r}). Raise timeout=."
            error = ServerTimeoutError(msg)
            break
        if isinstance(outcome, _UNREACHABLE):
            msg = (
                f"Cannot reach an OpenAI-compatible server at {base_url} ({outcome!r}). Start the server, "
                "or check base_url: host, port, and the /v1 suffix."
            )
            error = ServerUnreachableError(msg)
            response = None
        elif isinstance(outcome, httpx.TransportError):
            msg = f"The connection to the server at {base_url} broke during the request ({outcome!r})."
            error = ServerError(msg)
            response = None
        else:
            assert isinstance(outcome, httpx.Response)
            response = outcome
            if response.is_success:
                try:
                    return response.json()
                except ValueError:
                    msg = f"The server at {base_url} sent a reply that is not JSON: {response.text[:200]!r}."
                    error = ServerError(msg, status=response.status_code)
                    break
            error = error_for(response, payload, base_url)
            if response.status_code not in retry_statuses:
                break
        if attempt < max_retries:
            yield _retry_delay(attempt, response)
    if probe:
        return error
    raise error


def _retry_delay(attempt: int, response: httpx.Response | None) -> float:
    """Exponential backoff with jitter, or the server's ``Retry-After`` when it gives one."""
    if response is not None and (after := response.headers.get("retry-after")) is not None:
        try:
            return min(max(float(after), 0.0), _BACKOFF_CAP_S)
        except ValueError:
            when = email.utils.parsedate_to_datetime(after) if after else None
            if when is not None:
                return min(max(when.timestamp() - time.time(), 0.0), _BACKOFF_CAP_S)
    return min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt) * (0.5 + random.random() / 2)
