"""The backend: :class:`OpenAICompatibleBackend` and its plans for each request.

Request flow:
    SampleRequest / ChoiceRequest
      -> :func:`~.asking._openai_messages`: the conversation as OpenAI ``messages``, images as
         ``image_url`` data URLs before the text
      -> :func:`~.asking.how_to_ask`: continue the prefix as a final assistant message
         (``continue_final_message``) where the server honours it; else send the
         conversation alone when the prefix is only the first opening tag, or ask for
         the stage explicitly (the stage-asking protocol: :mod:`~langchain_llava_cot.backends.stage_asking`)
      -> :func:`~.asking.sample_payloads` / :func:`~.asking.choice_payload`: one payload with
         ``n``, or one per candidate with distinct seeds where ``n`` is ignored; ``stop``,
         ``logprobs``, ``seed`` only where honoured
      -> :class:`~.transport.Posts`: POSTed to ``{base_url}/chat/completions`` concurrently (at
         most ``max_concurrency`` at once), with retries and exponential backoff on 429, 5xx
         and connection errors (:func:`~.transport.post_attempts`)

Response flow:
    JSON
      -> :func:`~.replies.samples_from_reply`: each choice's text cut at the stop string
         (always, client side) or pulled out of an explicit stage reply; log-probabilities of
         the kept tokens; ``usage`` split over the choices -> :class:`Sample`
      -> :func:`~.replies.choice_from_reply`: ``top_logprobs`` of the one generated token
         -> :class:`ChoiceResult`
    HTTP errors -> :func:`~.errors.error_for`: :class:`~.errors.ModelNotServedError`,
      :class:`~.errors.ImagesRejectedError`, :class:`~.errors.ServerUnreachableError`,
      :class:`~.errors.ServerError`

Sync and async share one implementation: request planning is a generator that yields
:class:`~.transport.Posts` and receives replies, and the retry loop is a generator that
yields posts and sleeps; both are run by the package's one generator driver
(:mod:`langchain_llava_cot._driving`): :meth:`OpenAICompatibleBackend.sample` with a sync
``httpx.Client`` (threads for concurrency), :meth:`~OpenAICompatibleBackend.asample`
with an ``httpx.AsyncClient``. No event loop is ever started.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from langchain_llava_cot._driving import adrive, drive
from langchain_llava_cot.backends.base import ChoiceRequest, ChoiceResult, Sample, SampleRequest, VLMBackend
from langchain_llava_cot.backends.openai.asking import choice_payload, how_to_ask, sample_payloads
from langchain_llava_cot.backends.openai.capabilities import ServerCapabilities, probe_plan
from langchain_llava_cot.backends.openai.errors import ImagesRejectedError
from langchain_llava_cot.backends.openai.replies import choice_from_reply, samples_from_reply
from langchain_llava_cot.backends.openai.transport import (
    Plan,
    Post,
    Posts,
    apost_within,
    post_attempts,
    post_within,
)
from langchain_llava_cot.conversation import Conversation


class _LoopState:
    """The async client and concurrency bound of one event loop."""

    def __init__(self, backend: OpenAICompatibleBackend) -> None:
        self.client = httpx.AsyncClient(
            base_url=backend.base_url, headers=backend._headers, timeout=backend._timeout
        )
        self.semaphore = asyncio.Semaphore(backend.max_concurrency)


class OpenAICompatibleBackend(VLMBackend):
    """Drive a VLM served behind an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    What the server honours (``n``, ``stop``, ``logprobs``, continuation of a partial
    assistant message, images) is probed with a few one-token requests at first use
    and cached; pass ``capabilities=`` to skip the probe. Each gap has a fallback:
    concurrent requests for ``n``, client-side cutting for ``stop``, generated verdicts
    instead of :meth:`choose` without ``logprobs``, an explicit stage request without
    continuation.

    Setup:
        .. code-block:: bash

            vllm serve Xkev/Llama-3.2V-11B-cot --max-model-len 8192

    Instantiate:
        .. code-block:: python

            from langchain_llava_cot.backends.openai import OpenAICompatibleBackend

            backend = OpenAICompatibleBackend("http://127.0.0.1:8000/v1", "Xkev/Llama-3.2V-11B-cot")
            backend.probe()  # optional: detect capabilities now instead of at first use

    Args:
        base_url: The server's OpenAI base URL, usually ending in ``/v1``.
        model: The served model's name.
        api_key: Sent as a bearer token when given.
        timeout: Seconds a request may take in all, from connecting to the last byte of the reply.
        max_retries: Retries after a 429, a 5xx or a connection error (exponential backoff).
        max_concurrency: Most requests in flight at once (per event loop, and per sync call).
        capabilities: What the server honours; detected at first use when None.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_concurrency: int = 8,
        capabilities: ServerCapabilities | None = None,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            msg = "Need max_concurrency >= 1, max_retries >= 0 and timeout > 0."
            raise ValueError(msg)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_name = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.capabilities = capabilities
        """What the server honours; None until detected."""
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout)
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState]
        self._loops = weakref.WeakKeyDictionary()

    @property
    def supports_choice(self) -> bool:  # type: ignore[override]
        """Whether :meth:`choose` works; False until capabilities are known (see :meth:`probe`)."""
        return self.capabilities is not None and self.capabilities.choice

    # public entry points: each runs one plan with the sync or the async transport

    def probe(self) -> ServerCapabilities:
        """Detect (once) and return what the server honours."""
        return drive(self._capabilities_plan(), self._post_all)

    async def aprobe(self) -> ServerCapabilities:
        """Async :meth:`probe`."""
        return await adrive(self._capabilities_plan(), self._apost_all)

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        return drive(self._sample_plan(requests), self._post_all)

    async def asample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        return await adrive(self._sample_plan(requests), self._apost_all)

    def choose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        return drive(self._choice_plan(requests), self._post_all)

    async def achoose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        return await adrive(self._choice_plan(requests), self._apost_all)

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

    # plans: what to send and how to read it, written once

    def _sample_plan(self, requests: Sequence[SampleRequest]) -> Plan[list[list[Sample]]]:
        caps = yield from self._capabilities_plan()
        payloads, owners, asks = [], [], []
        for index, request in enumerate(requests):
            self._check_images(request.conversation, caps)
            ask = how_to_ask(request.conversation, request.prefix, request.stop, caps)
            asks.append(ask)
            for payload in sample_payloads(self.model, request, ask, caps):
                payloads.append(payload)
                owners.append(index)
        replies = yield Posts(tuple(payloads))
        out: list[list[Sample]] = [[] for _ in requests]
        for index, reply in zip(owners, replies):
            out[index].extend(samples_from_reply(requests[index], asks[index], reply))
        return [samples[: request.n] for samples, request in zip(out, requests)]

    def _choice_plan(self, requests: Sequence[ChoiceRequest]) -> Plan[list[ChoiceResult]]:
        caps = yield from self._capabilities_plan()
        if not caps.choice:
            msg = (
                f"The server at {self.base_url} cannot score choices (it needs logprobs, top_logprobs and "
                f"continue_final_message; detected: {caps}). The pairwise judge generates verdicts instead."
            )
            raise NotImplementedError(msg)
        for request in requests:
            self._check_images(request.conversation, caps)
        replies = yield Posts(tuple(choice_payload(self.model, r) for r in requests))
        return [choice_from_reply(request, reply) for request, reply in zip(requests, replies)]

    def _capabilities_plan(self) -> Plan[ServerCapabilities]:
        if self.capabilities is None:
            self.capabilities = yield from probe_plan(self.model)
        return self.capabilities

    def _check_images(self, conversation: Conversation, caps: ServerCapabilities) -> None:
        if conversation.images and not caps.images:
            msg = (
                f"The server at {self.base_url} rejected image input for model {self.model!r} when probed. "
                "Serve a vision-language model (for llama.cpp, load its --mmproj), or send no images."
            )
            raise ImagesRejectedError(msg)

    # transports: run a plan with sync or async HTTP (:mod:`langchain_llava_cot._driving`)

    def _post_all(self, posts: Posts) -> list[Any]:
        if len(posts.payloads) == 1:
            return [self._post_one(posts.payloads[0], posts.probe)]
        workers = min(self.max_concurrency, len(posts.payloads))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llava-cot-http") as pool:
            return list(pool.map(lambda p: self._post_one(p, posts.probe), posts.payloads))

    def _post_one(self, payload: dict[str, Any], probe: bool) -> Any:
        client = self._sync_client()

        def attempt(action: Post | float) -> Any:
            if not isinstance(action, Post):
                time.sleep(action)
                return None
            try:
                return post_within(client, action.payload, self.timeout)
            except httpx.TransportError as e:
                return e

        return drive(post_attempts(payload, self.base_url, self.max_retries, probe), attempt)

    async def _apost_all(self, posts: Posts) -> list[Any]:
        state = self._loop_state()
        return list(await asyncio.gather(*(self._apost_one(state, p, posts.probe) for p in posts.payloads)))

    async def _apost_one(self, state: _LoopState, payload: dict[str, Any], probe: bool) -> Any:
        async def attempt(action: Post | float) -> Any:
            if not isinstance(action, Post):
                await asyncio.sleep(action)
                return None
            try:
                async with state.semaphore:
                    return await apost_within(state.client, action.payload, self.timeout)
            except httpx.TransportError as e:
                return e

        return await adrive(post_attempts(payload, self.base_url, self.max_retries, probe), attempt)

    def _sync_client(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    base_url=self.base_url, headers=self._headers, timeout=self._timeout
                )
            return self._client

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(self)
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"
