"""The backend: :class:`OpenAICompatibleBackend` and its plans for each request.

Request flow:
    SampleRequest / ChoiceRequest
      -> :func:`~.asking.openai_messages`: the conversation as OpenAI ``messages``, images as
         ``image_url`` data URLs before the text
      -> :func:`~.asking.how_to_ask`: continue the prefix as a final assistant message
         (``continue_final_message``) where the server honours it; else send the
         conversation alone when the prefix is only the first opening tag, or ask for
         the stage explicitly (the stage-asking protocol: :mod:`~langchain_llava_cot.backends.stage_asking`)
      -> :func:`~.asking.sample_payloads` / :func:`~.asking.choice_payload`: one payload with
         ``n``, or one per candidate with distinct seeds where ``n`` is ignored; ``stop``,
         ``logprobs``, ``seed`` only where honoured; a forced call's grammar where the server
         has one, and then only the stop strings it writes at its end (:mod:`.forced_calls`)
      -> :class:`~.transport.Posts`: POSTed to ``{base_url}/chat/completions`` concurrently (at
         most ``max_concurrency`` at once), with retries and exponential backoff on 429, 5xx
         and connection errors (:func:`~.transport.post_attempts`)

Response flow:
    JSON
      -> :func:`~.replies.samples_from_reply`: each choice's text cut at the stop strings in
         force (always, client side) or pulled out of an explicit stage reply; log-probabilities
         of the kept tokens; ``usage`` split over the choices -> :class:`Sample`; a forced call
         its token limit cut is closed by its grammar (:mod:`.forced_calls`)
      -> :func:`~.replies.choice_from_reply`: ``top_logprobs`` of the one generated token
         -> :class:`ChoiceResult`
    HTTP errors -> :func:`~.errors.error_for`: :class:`~.errors.ModelNotServedError`,
      :class:`~.errors.ImagesRejectedError`, :class:`~.errors.ServerUnreachableError`,
      :class:`~.errors.ServerError`

Sync and async share one implementation: request planning is a generator that yields
:class:`~.transport.Posts` and receives replies, and the retry loop is a generator that
yields posts and sleeps; the backend's :class:`~.transport.Session` runs both with the
package's one generator driver (:mod:`langchain_llava_cot._driving`): with a sync
``httpx.Client`` (threads for concurrency) for :meth:`OpenAICompatibleBackend.sample`, with an
``httpx.AsyncClient`` for :meth:`~OpenAICompatibleBackend.asample`. No event loop is ever started.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

from langchain_llava_cot.backends.base import ChoiceRequest, ChoiceResult, Sample, SampleRequest, VLMBackend
from langchain_llava_cot.backends.openai.asking import Ask, choice_payload, how_to_ask, sample_payloads
from langchain_llava_cot.backends.openai.capabilities import ServerCapabilities, probe_plan
from langchain_llava_cot.backends.openai.errors import ImagesRejectedError
from langchain_llava_cot.backends.openai.forced_calls import server_grammar
from langchain_llava_cot.backends.openai.replies import choice_from_reply, samples_from_reply
from langchain_llava_cot.backends.openai.transport import Plan, Posts, Session
from langchain_llava_cot.conversation import Conversation

T = TypeVar("T")


def _read_samples(
    request: SampleRequest, ask: Ask, reply: Any, caps: ServerCapabilities, server: str
) -> list[Sample]:
    """One reply's samples; a forced call decoded under the server's grammar is read by its rules.

    Only the stop strings the grammar writes at its end are cut, and a call its token
    limit cut short is completed by the grammar (:mod:`.forced_calls`).
    """
    grammar = server_grammar(request, ask.mode == "continue", caps)
    if grammar is None:
        return samples_from_reply(request, ask, reply, server=server)
    read_as = dataclasses.replace(request, stop=grammar.stops(request.stop))
    return [grammar.closed(sample) for sample in samples_from_reply(read_as, ask, reply, server=server)]


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
        self._session = Session(
            base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            max_concurrency=max_concurrency,
        )
        self.base_url = self._session.base_url
        self.model = model
        self.model_name = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.capabilities = capabilities
        """What the server honours; None until detected."""

    @property
    def supports_choice(self) -> bool:  # type: ignore[override]
        """Whether :meth:`choose` works; False until capabilities are known (see :meth:`probe`)."""
        return self.capabilities is not None and self.capabilities.choice

    @property
    def gives_logprobs(self) -> bool | None:  # type: ignore[override]
        """Whether samples carry token log-probabilities; None until capabilities are known."""
        return None if self.capabilities is None else self.capabilities.logprobs

    # public entry points: each runs one plan with the sync or the async transport

    def probe(self) -> ServerCapabilities:
        """Detect (once) and return what the server honours."""
        return self._run(self._capabilities_plan())

    async def aprobe(self) -> ServerCapabilities:
        """Async :meth:`probe`."""
        return await self._arun(self._capabilities_plan())

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        return self._run(self._sample_plan(requests))

    async def asample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        return await self._arun(self._sample_plan(requests))

    def choose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        return self._run(self._choice_plan(requests))

    async def achoose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        return await self._arun(self._choice_plan(requests))

    def close(self) -> None:
        """Close the sync HTTP client (async clients close with :meth:`aclose`)."""
        self._session.close()

    async def aclose(self) -> None:
        """Close the current event loop's HTTP client."""
        await self._session.aclose()

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
            out[index].extend(_read_samples(requests[index], asks[index], reply, caps, self.base_url))
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
        return [choice_from_reply(r, reply, server=self.base_url) for r, reply in zip(requests, replies)]

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

    # transports: run a plan with sync or async HTTP

    def _run(self, plan: Plan[T]) -> T:
        return self._session.run(plan)

    async def _arun(self, plan: Plan[T]) -> T:
        return await self._session.arun(plan)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"
