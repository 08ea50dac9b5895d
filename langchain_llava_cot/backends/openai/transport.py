"""The transport: POST payloads to a server (``/chat/completions``, ``/pooling``), with retries.

A request plan (:data:`Plan`) is a generator that yields :class:`Posts` (payloads to
POST concurrently to one path) and receives the replies; the retry loop
(:func:`post_attempts`) is a generator that yields posts and sleeps, retrying with
exponential backoff on 429, 5xx and connection errors (:func:`_retry_delay`). Neither
does any I/O, so sync and async HTTP share them: a :class:`Session` runs a plan with an
``httpx.Client`` (threads for concurrency) or an ``httpx.AsyncClient`` through the package's one
generator driver (:mod:`langchain_llava_cot._driving`), each reply read
within one deadline (:func:`post_within`, :func:`apost_within`). The chat backend and the
served reward models each hold one session.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
import weakref
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, Union

import httpx

from langchain_llava_cot._driving import adrive, drive
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


CHAT_PATH = "/chat/completions"


@dataclass(frozen=True)
class Posts:
    """POST these payloads to ``path`` concurrently; a probe gets errors back as values instead of raised."""

    payloads: tuple[dict[str, Any], ...]
    probe: bool = False
    path: str = CHAT_PATH


@dataclass(frozen=True)
class Post:
    """One POST of ``payload`` to ``path`` to make next."""

    payload: dict[str, Any]
    path: str = CHAT_PATH


Plan = Generator[Posts, list[Any], T]
_Attempt = Generator[Union[Post, float], Union[httpx.Response, httpx.TransportError, None], Any]  # noqa: UP007


_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol, httpx.ProxyError)
"""Transport errors that mean nothing answered; any other broke a request under way."""


def post_within(client: httpx.Client, post: Post, seconds: float) -> httpx.Response:
    """POST ``post`` and read the whole reply within ``seconds``.

    httpx's timeout bounds each read, so a server that trickles its body would hold the
    call for as long as it likes; the body is read chunk by chunk against one deadline.
    """
    deadline = time.monotonic() + seconds
    with client.stream("POST", post.path, json=post.payload, headers=_headers(post.payload)) as response:
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if time.monotonic() > deadline:
                msg = f"the whole reply took over {seconds:g} s"
                raise httpx.ReadTimeout(msg, request=response.request)
    return httpx.Response(
        response.status_code, headers=response.headers, content=bytes(body), request=response.request
    )


async def apost_within(client: httpx.AsyncClient, post: Post, seconds: float) -> httpx.Response:
    """The async :func:`post_within`: the whole request is cancelled at the deadline."""
    try:
        return await asyncio.wait_for(
            client.post(post.path, json=post.payload, headers=_headers(post.payload)), seconds
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


def post_attempts(
    payload: dict[str, Any], base_url: str, max_retries: int, probe: bool, path: str = CHAT_PATH
) -> _Attempt:
    """Send ``payload`` to ``path`` until it succeeds or retries run out; yields posts and sleeps (seconds).

    Returns the reply's JSON, or (for a probe) the :class:`ServerError` instead of raising it.
    """
    retry_statuses = _PROBE_RETRY_STATUSES if probe else _RETRY_STATUSES
    error: ServerError
    for attempt in range(max_retries + 1):
        outcome = yield Post(payload, path)
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
            error = error_for(response, payload, base_url, path)
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


class _LoopState:
    """The async client and concurrency bound of one event loop."""

    def __init__(self, session: Session) -> None:
        self.client = httpx.AsyncClient(
            base_url=session.base_url, headers=session.headers, timeout=session.timeout
        )
        self.semaphore = asyncio.Semaphore(session.max_concurrency)


class Session:
    """Sync and async HTTP to one server: runs a :data:`Plan` with either, never starting an event loop.

    Args:
        base_url: The server's URL; each post's path is appended to it.
        api_key: Sent as a bearer token when given.
        timeout: Seconds a request may take in all, from connecting to the last byte of the reply.
        max_retries: Retries after a 429, a 5xx or a connection error (exponential backoff).
        max_concurrency: Most requests in flight at once (per event loop, and per sync call).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_concurrency: int = 8,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            msg = "Need max_concurrency >= 1, max_retries >= 0 and timeout > 0."
            raise ValueError(msg)
        self.base_url = base_url.rstrip("/")
        self.seconds = timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout)
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState]
        self._loops = weakref.WeakKeyDictionary()

    def run(self, plan: Plan[T]) -> T:
        """Run ``plan`` with sync HTTP (threads for concurrent posts)."""
        return drive(plan, self._post_all)

    async def arun(self, plan: Plan[T]) -> T:
        """Run ``plan`` with async HTTP."""
        return await adrive(plan, self._apost_all)

    def close(self) -> None:
        """Close the sync HTTP client (async clients close with :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the current event loop's HTTP client."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.client.aclose()

    def _post_all(self, posts: Posts) -> list[Any]:
        if len(posts.payloads) == 1:
            return [self._post_one(posts.payloads[0], posts)]
        workers = min(self.max_concurrency, len(posts.payloads))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llava-cot-http") as pool:
            return list(pool.map(lambda p: self._post_one(p, posts), posts.payloads))

    def _post_one(self, payload: dict[str, Any], posts: Posts) -> Any:
        client = self._sync_client()

        def attempt(action: Post | float) -> Any:
            if not isinstance(action, Post):
                time.sleep(action)
                return None
            try:
                return post_within(client, action, self.seconds)
            except httpx.TransportError as e:
                return e

        return drive(
            post_attempts(payload, self.base_url, self.max_retries, posts.probe, posts.path), attempt
        )

    async def _apost_all(self, posts: Posts) -> list[Any]:
        state = self._loop_state()
        return list(await asyncio.gather(*(self._apost_one(state, p, posts) for p in posts.payloads)))

    async def _apost_one(self, state: _LoopState, payload: dict[str, Any], posts: Posts) -> Any:
        async def attempt(action: Post | float) -> Any:
            if not isinstance(action, Post):
                await asyncio.sleep(action)
                return None
            try:
                async with state.semaphore:
                    return await apost_within(state.client, action, self.seconds)
            except httpx.TransportError as e:
                return e

        attempts = post_attempts(payload, self.base_url, self.max_retries, posts.probe, posts.path)
        return await adrive(attempts, attempt)

    def _sync_client(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    base_url=self.base_url, headers=self.headers, timeout=self.timeout
                )
            return self._client

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(self)
        return state
