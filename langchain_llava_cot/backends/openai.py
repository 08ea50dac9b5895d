"""OpenAI-compatible servers as a backend: vLLM, SGLang, llama.cpp, Ollama, ``transformers serve``.

Servers differ in what they honour, so the first call sends a few one-token probe
requests and records a :class:`ServerCapabilities` (or takes the one given as
``capabilities=``); every later request is built for what the server can do.

Request flow:
    SampleRequest / ChoiceRequest
      -> :func:`_openai_messages`: the conversation as OpenAI ``messages``, images as
         ``image_url`` data URLs before the text
      -> :func:`_how_to_ask`: continue the prefix as a final assistant message
         (``continue_final_message``) where the server honours it; else send the
         conversation alone when the prefix is only the first opening tag, or ask for
         the stage explicitly (the chat-model backend's stage request)
      -> :func:`_sample_payloads` / :func:`_choice_payload`: one payload with ``n``, or
         one per candidate with distinct seeds where ``n`` is ignored; ``stop``,
         ``logprobs``, ``seed`` only where honoured
      -> :class:`_Posts`: POSTed to ``{base_url}/chat/completions`` concurrently (at most
         ``max_concurrency`` at once), with retries and exponential backoff on 429, 5xx
         and connection errors (:func:`_attempts`)

Response flow:
    JSON
      -> :func:`_samples_from_reply`: each choice's text cut at the stop string (always,
         client side) or pulled out of an explicit stage reply; log-probabilities of the
         kept tokens; ``usage`` split over the choices -> :class:`Sample`
      -> :func:`_choice_from_reply`: ``top_logprobs`` of the one generated token -> :class:`ChoiceResult`
    HTTP errors -> :func:`_error_for`: :class:`ModelNotServedError`,
      :class:`ImagesRejectedError`, :class:`ServerUnreachableError`, :class:`ServerError`

Sync and async share one implementation: request planning is a generator that yields
:class:`_Posts` and receives replies, and the retry loop is a generator that yields
posts and sleeps; :meth:`OpenAICompatibleBackend.sample` runs them with a sync
``httpx.Client`` (threads for concurrency), :meth:`~OpenAICompatibleBackend.asample`
with an ``httpx.AsyncClient``. No event loop is ever started.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import logging
import random
import re
import threading
import time
import weakref
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

from langchain_llava_cot.backends._grammar import to_gbnf, tool_call_ebnf
from langchain_llava_cot.backends.base import ChoiceRequest, ChoiceResult, Sample, SampleRequest, VLMBackend
from langchain_llava_cot.backends.langchain import (
    Extracted,
    StageAsk,
    cut_at_stop,
    extract_stages,
    prefix_request_text,
    read_prefix,
    span_logprobs,
    stage_repairs,
    stage_request_text,
)
from langchain_llava_cot.conversation import Conversation, laid_out
from langchain_llava_cot.images import image_base64, image_mime_type

try:
    import httpx
except ImportError as e:  # pragma: no cover - depends on the environment
    msg = "OpenAICompatibleBackend needs httpx: pip install 'langchain-llava-cot[openai]'."
    raise ImportError(msg) from e

logger = logging.getLogger(__name__)

__all__ = [
    "ImagesRejectedError",
    "ModelNotServedError",
    "OpenAICompatibleBackend",
    "ServerCapabilities",
    "ServerError",
    "ServerTimeoutError",
    "ServerUnreachableError",
]

T = TypeVar("T")

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_PROBE_RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""A probe treats HTTP 500 as "feature not supported" (``transformers serve`` answers ``stop`` so)."""
_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 8.0
_TOP_LOGPROBS = 20
_MODEL_MISSING = re.compile(
    r"model.{0,80}(not found|does not exist|not exist|not served|unknown|pinned|no such|not available)"
    r"|(unknown|invalid|no such) model|is pinned to",
    re.IGNORECASE | re.DOTALL,
)
_IMAGES_REFUSED = re.compile(r"image|multimodal|multi-modal|vision|mmproj", re.IGNORECASE)


# --- errors ---------------------------------------------------------------------------


class ServerError(RuntimeError):
    """An OpenAI-compatible server could not answer; the message says what to do."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status, when the server answered."""


class ServerUnreachableError(ServerError):
    """Nothing answers at ``base_url`` (connection refused, unknown host)."""


class ServerTimeoutError(ServerError):
    """The server took longer than ``timeout`` to answer."""


class ModelNotServedError(ServerError):
    """The server does not serve the model named by ``model``."""


class ImagesRejectedError(ServerError):
    """The server refuses image input (a text-only model, or no vision projector loaded)."""


# --- capabilities ---------------------------------------------------------------------


@dataclass(frozen=True)
class ServerCapabilities:
    """What a server honours; detected at first use, or given to skip detection.

    >>> ServerCapabilities.vllm().continuation
    True
    """

    n: bool = False
    """Returns ``n`` choices from one request; otherwise one request per candidate."""
    stop: bool = False
    """Accepts ``stop`` strings; the text is cut client-side either way."""
    logprobs: bool = False
    """Returns per-token ``logprobs``."""
    top_logprobs: bool = False
    """Returns ``top_logprobs``; with ``logprobs`` and ``continuation`` it enables :meth:`choose`."""
    continuation: bool = False
    """Continues a final assistant message (``continue_final_message``, ``add_generation_prompt=false``)."""
    images: bool = True
    """Accepts ``image_url`` content parts."""
    generation_config: bool = False
    """Reads a per-request ``generation_config`` JSON (``transformers serve``; needed there to sample)."""
    grammar: bool = False
    """Decodes under an EBNF grammar sent as ``structured_outputs`` (vLLM): forced tool calls are
    then valid by construction."""
    gbnf: bool = False
    """Decodes under a GBNF grammar sent as ``grammar`` (llama.cpp), used where ``grammar`` is not."""

    @classmethod
    def vllm(cls) -> ServerCapabilities:
        """Everything, as vLLM documents it."""
        return cls(n=True, stop=True, logprobs=True, top_logprobs=True, continuation=True, grammar=True)

    @property
    def choice(self) -> bool:
        """Whether verdicts can be read from one token's ``top_logprobs``."""
        return self.logprobs and self.top_logprobs and self.continuation


# --- request building (pure) ----------------------------------------------------------


@dataclass(frozen=True)
class _Ask:
    """How one request is put to the server, and how its reply is read back."""

    messages: list[dict[str, Any]]
    mode: Literal["continue", "fresh", "explicit"]
    stage: StageAsk | None = None
    prefix: str = ""


def _openai_messages(conversation: Conversation, last_user_text: str | None = None) -> list[dict[str, Any]]:
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


def _how_to_ask(
    conversation: Conversation, prefix: str, stop: Sequence[str], caps: ServerCapabilities
) -> _Ask:
    """Continue ``prefix`` where the server can; otherwise ask for the stage explicitly."""
    if not prefix:
        return _Ask(_openai_messages(conversation), "fresh")
    if caps.continuation:
        messages = [*_openai_messages(conversation), {"role": "assistant", "content": prefix}]
        return _Ask(messages, "continue", prefix=prefix)
    ask = read_prefix(prefix, stop)
    if ask is not None and not ask.chosen:
        # Only the first opening tag: LLaVA-CoT writes it unasked, so send the conversation alone.
        return _Ask(_openai_messages(conversation), "explicit", stage=ask, prefix=prefix)
    if ask is not None:
        text = stage_request_text(conversation.question, ask)
        return _Ask(_openai_messages(conversation, text), "explicit", stage=ask, prefix=prefix)
    text = prefix_request_text(conversation.question, prefix)
    return _Ask(_openai_messages(conversation, text), "fresh", prefix=prefix)


def _base_payload(model: str, ask: _Ask, max_tokens: int) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": model, "messages": ask.messages, "max_tokens": max_tokens}
    if ask.mode == "continue":
        payload["continue_final_message"] = True
        payload["add_generation_prompt"] = False
    return payload


def _sample_payloads(model: str, request: SampleRequest, ask: _Ask, caps: ServerCapabilities) -> list[dict]:
    """The payloads for one request: one asking for ``n`` choices, or ``n`` asking for one each."""
    payload = _base_payload(model, ask, request.max_new_tokens)
    payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if request.stop and caps.stop:
        payload["stop"] = list(request.stop)
    if caps.logprobs:
        payload["logprobs"] = True
    if caps.generation_config:
        payload["generation_config"] = json.dumps(_generation_config(request))
    if request.tool_call is not None and ask.mode == "continue":
        payload.update(_grammar_field(request, caps))
    if caps.n or request.n == 1:
        if request.n > 1:
            payload["n"] = request.n
        if request.seed is not None:
            payload["seed"] = request.seed
        return [payload]
    seeds = [None if request.seed is None else request.seed + i for i in range(request.n)]
    return [payload if seed is None else {**payload, "seed": seed} for seed in seeds]


def _grammar_field(request: SampleRequest, caps: ServerCapabilities) -> dict[str, Any]:
    """The forced call's grammar in the field the server reads: vLLM's EBNF, or llama.cpp's GBNF."""
    grammar = _call_grammar(request) if caps.grammar or caps.gbnf else None
    if grammar is None:
        return {}
    return {"structured_outputs": {"grammar": grammar}} if caps.grammar else {"grammar": to_gbnf(grammar)}


def _call_grammar(request: SampleRequest) -> str | None:
    """The forced call's grammar for the server, or None (the tools prompt alone) without xgrammar."""
    assert request.tool_call is not None
    try:
        return tool_call_ebnf(request.tool_call, request.prefix)
    except ImportError:
        logger.warning("xgrammar is not installed: a forced tool call is asked for by the prompt alone.")
        return None


def _generation_config(request: SampleRequest) -> dict[str, Any]:
    config: dict[str, Any] = {"do_sample": request.temperature > 0, "max_new_tokens": request.max_new_tokens}
    if request.temperature > 0:
        config["temperature"] = request.temperature
        if request.top_p is not None:
            config["top_p"] = request.top_p
    return config


def _choice_payload(model: str, request: ChoiceRequest) -> dict[str, Any]:
    """A one-token, greedy completion after the prefix, asking for the top log-probabilities."""
    messages = [*_openai_messages(request.conversation), {"role": "assistant", "content": request.prefix}]
    payload = _base_payload(model, _Ask(messages, "continue"), 1)
    payload.update(temperature=0.0, logprobs=True, top_logprobs=_TOP_LOGPROBS)
    return payload


# --- response parsing (pure) ----------------------------------------------------------


def _samples_from_reply(request: SampleRequest, ask: _Ask, reply: dict[str, Any]) -> list[Sample]:
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


def _without_echo(content: str, ask: _Ask) -> str:
    """The continuation alone: llama.cpp's assistant prefill returns the prefix in the reply too."""
    if ask.mode == "continue" and ask.prefix and content.startswith(ask.prefix):
        return content[len(ask.prefix) :]
    return content


def _kept_span(content: str, ask: _Ask) -> tuple[int, int, bool, Extracted | None]:
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


def _choice_from_reply(request: ChoiceRequest, reply: dict[str, Any]) -> ChoiceResult:
    """Each option's log-probability among the first token's ``top_logprobs`` (-inf when absent)."""
    content = (_choices(reply)[0].get("logprobs") or {}).get("content") or []
    top = content[0].get("top_logprobs") or [] if content else []
    scores = []
    for option in request.options:
        matches = [float(t["logprob"]) for t in top if str(t.get("token", "")).strip() == option.strip()]
        scores.append(max(matches, default=float("-inf")))
    prompt = int((reply.get("usage") or {}).get("prompt_tokens") or 0)
    return ChoiceResult(logprobs=tuple(scores), prompt_tokens=prompt)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)[:500]
    return json.dumps(body)[:300]


def _error_for(response: httpx.Response, payload: dict[str, Any], base_url: str) -> ServerError:
    """The project error for an HTTP error reply, saying what to do about it."""
    status, message, model = response.status_code, _error_message(response), payload.get("model")
    if _MODEL_MISSING.search(message):
        msg = (
            f"The server at {base_url} does not serve model {model!r} (HTTP {status}: {message}). "
            f"Pass one of the served names as model=; GET {base_url}/models lists them."
        )
        return ModelNotServedError(msg, status=status)
    if status == 404:
        msg = (
            f"HTTP 404 from {base_url}/chat/completions: {message}. Check base_url (it usually ends "
            f"in /v1) and that model {model!r} is served."
        )
        return ModelNotServedError(msg, status=status)
    if _has_images(payload) and status in (400, 415, 422, 500, 501) and _IMAGES_REFUSED.search(message):
        msg = (
            f"The server at {base_url} rejects image input for model {model!r} (HTTP {status}: {message}). "
            "Serve a vision-language model (for llama.cpp, load its --mmproj), or send no images."
        )
        return ImagesRejectedError(msg, status=status)
    if status in (401, 403):
        msg = f"The server at {base_url} refused the request (HTTP {status}: {message}). Check api_key."
        return ServerError(msg, status=status)
    msg = f"The server at {base_url} answered HTTP {status}: {message}."
    return ServerError(msg, status=status)


def _has_images(payload: dict[str, Any]) -> bool:
    return any(
        isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
        for m in payload.get("messages", ())
    )


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


# --- the transport: one retry loop for sync and async ----------------------------------


@dataclass(frozen=True)
class _Posts:
    """POST these payloads concurrently; a probe gets errors back as values instead of raised."""

    payloads: tuple[dict[str, Any], ...]
    probe: bool = False


@dataclass(frozen=True)
class _Post:
    payload: dict[str, Any]


_Plan = Generator[_Posts, list[Any], T]
_Attempt = Generator[Union[_Post, float], Union[httpx.Response, httpx.TransportError, None], Any]  # noqa: UP007


_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol, httpx.ProxyError)
"""Transport errors that mean nothing answered; any other broke a request under way."""


def _post_within(client: httpx.Client, payload: dict[str, Any], seconds: float) -> httpx.Response:
    """POST a chat completion and read the whole reply within ``seconds``.

    httpx's timeout bounds each read, so a server that trickles its body would hold the
    call for as long as it likes; the body is read chunk by chunk against one deadline.
    """
    deadline = time.monotonic() + seconds
    with client.stream("POST", "/chat/completions", json=payload) as response:
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if time.monotonic() > deadline:
                msg = f"the whole reply took over {seconds:g} s"
                raise httpx.ReadTimeout(msg, request=response.request)
    return httpx.Response(
        response.status_code, headers=response.headers, content=bytes(body), request=response.request
    )


async def _apost_within(client: httpx.AsyncClient, payload: dict[str, Any], seconds: float) -> httpx.Response:
    """The async :func:`_post_within`: the whole request is cancelled at the deadline."""
    try:
        return await asyncio.wait_for(client.post("/chat/completions", json=payload), seconds)
    except asyncio.TimeoutError as e:
        msg = f"the whole reply took over {seconds:g} s"
        raise httpx.ReadTimeout(msg) from e


def _attempts(payload: dict[str, Any], base_url: str, max_retries: int, probe: bool) -> _Attempt:
    """Send ``payload`` until it succeeds or retries run out; yields posts and sleeps (seconds).

    Returns the reply's JSON, or (for a probe) the :class:`ServerError` instead of raising it.
    """
    retry_statuses = _PROBE_RETRY_STATUSES if probe else _RETRY_STATUSES
    error: ServerError
    for attempt in range(max_retries + 1):
        outcome = yield _Post(payload)
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
            error = _error_for(response, payload, base_url)
            if response.status_code not in retry_statuses:
                break
        if attempt < max_retries:
            yield _retry_delay(attempt, response)
    if probe:
        return error
    raise error


class _LoopState:
    """The async client and concurrency bound of one event loop."""

    def __init__(self, backend: OpenAICompatibleBackend) -> None:
        self.client = httpx.AsyncClient(
            base_url=backend.base_url, headers=backend._headers, timeout=backend._timeout
        )
        self.semaphore = asyncio.Semaphore(backend.max_concurrency)


# --- the backend ----------------------------------------------------------------------


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
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the current event loop's HTTP client."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.client.aclose()

    # plans: what to send and how to read it, written once

    def _sample_plan(self, requests: Sequence[SampleRequest]) -> _Plan[list[list[Sample]]]:
        caps = yield from self._capabilities_plan()
        payloads, owners, asks = [], [], []
        for index, request in enumerate(requests):
            self._check_images(request.conversation, caps)
            ask = _how_to_ask(request.conversation, request.prefix, request.stop, caps)
            asks.append(ask)
            for payload in _sample_payloads(self.model, request, ask, caps):
                payloads.append(payload)
                owners.append(index)
        replies = yield _Posts(tuple(payloads))
        out: list[list[Sample]] = [[] for _ in requests]
        for index, reply in zip(owners, replies):
            out[index].extend(_samples_from_reply(requests[index], asks[index], reply))
        return [samples[: request.n] for samples, request in zip(out, requests)]

    def _choice_plan(self, requests: Sequence[ChoiceRequest]) -> _Plan[list[ChoiceResult]]:
        caps = yield from self._capabilities_plan()
        if not caps.choice:
            msg = (
                f"The server at {self.base_url} cannot score choices (it needs logprobs, top_logprobs and "
                f"continue_final_message; detected: {caps}). The pairwise judge generates verdicts instead."
            )
            raise NotImplementedError(msg)
        for request in requests:
            self._check_images(request.conversation, caps)
        replies = yield _Posts(tuple(_choice_payload(self.model, r) for r in requests))
        return [_choice_from_reply(request, reply) for request, reply in zip(requests, replies)]

    def _capabilities_plan(self) -> _Plan[ServerCapabilities]:
        if self.capabilities is None:
            self.capabilities = yield from _probe_plan(self.model)
        return self.capabilities

    def _check_images(self, conversation: Conversation, caps: ServerCapabilities) -> None:
        if conversation.images and not caps.images:
            msg = (
                f"The server at {self.base_url} rejected image input for model {self.model!r} when probed. "
                "Serve a vision-language model (for llama.cpp, load its --mmproj), or send no images."
            )
            raise ImagesRejectedError(msg)

    # transports: run a plan with sync or async HTTP

    def _run(self, plan: _Plan[T]) -> T:
        try:
            posts = next(plan)
            while True:
                posts = plan.send(self._post_all(posts))
        except StopIteration as done:
            return done.value

    async def _arun(self, plan: _Plan[T]) -> T:
        try:
            posts = next(plan)
            while True:
                posts = plan.send(await self._apost_all(posts))
        except StopIteration as done:
            return done.value

    def _post_all(self, posts: _Posts) -> list[Any]:
        if len(posts.payloads) == 1:
            return [self._post_one(posts.payloads[0], posts.probe)]
        workers = min(self.max_concurrency, len(posts.payloads))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llava-cot-http") as pool:
            return list(pool.map(lambda p: self._post_one(p, posts.probe), posts.payloads))

    def _post_one(self, payload: dict[str, Any], probe: bool) -> Any:
        client = self._sync_client()
        attempts = _attempts(payload, self.base_url, self.max_retries, probe)
        try:
            action = next(attempts)
            while True:
                if isinstance(action, _Post):
                    try:
                        outcome: Any = _post_within(client, action.payload, self.timeout)
                    except httpx.TransportError as e:
                        outcome = e
                else:
                    time.sleep(action)
                    outcome = None
                action = attempts.send(outcome)
        except StopIteration as done:
            return done.value

    async def _apost_all(self, posts: _Posts) -> list[Any]:
        state = self._loop_state()
        return list(await asyncio.gather(*(self._apost_one(state, p, posts.probe) for p in posts.payloads)))

    async def _apost_one(self, state: _LoopState, payload: dict[str, Any], probe: bool) -> Any:
        attempts = _attempts(payload, self.base_url, self.max_retries, probe)
        try:
            action = next(attempts)
            while True:
                if isinstance(action, _Post):
                    try:
                        async with state.semaphore:
                            outcome: Any = await _apost_within(state.client, action.payload, self.timeout)
                    except httpx.TransportError as e:
                        outcome = e
                else:
                    await asyncio.sleep(action)
                    outcome = None
                action = attempts.send(outcome)
        except StopIteration as done:
            return done.value

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


# --- detection ------------------------------------------------------------------------


def _probe_plan(model: str) -> _Plan[ServerCapabilities]:
    """Find out what the server honours with a few one-token requests.

    1. A plain request, which must succeed: a dead server or a wrong model name fails here.
    2. At once: ``n=2`` + ``stop`` + ``logprobs`` + ``top_logprobs`` together (split up when
       that is rejected); a continued assistant message and the same message as a finished
       turn (continuation is honoured when the first prompt is shorter, in ``usage``);
       an 8x8 image; a grammar that allows only "7", as ``structured_outputs`` (vLLM) and as
       ``grammar`` (llama.cpp's GBNF): honoured when the reply is "7".
    3. Only on a server that rejects unknown fields (HTTP 422): a ``generation_config``.
    """

    def payload(**extra: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"model": model, "messages": [user], "max_tokens": 1, "temperature": 0.0}
        return {**base, **extra}

    user = {"role": "user", "content": "Say OK."}
    partial = [user, {"role": "assistant", "content": "OK"}]
    image_part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_probe_image()}"}}
    [plain_reply] = yield _Posts((payload(),))
    features = payload(n=2, stop=["\n\n"], logprobs=True, top_logprobs=2, temperature=1.0, seed=0)
    continued = payload(messages=partial, continue_final_message=True, add_generation_prompt=False)
    finished = payload(messages=partial)
    pictured = payload(
        messages=[{"role": "user", "content": [image_part, {"type": "text", "text": "Say OK"}]}]
    )
    grammar = payload(structured_outputs={"grammar": 'root ::= "7"'})  # honoured: the reply is "7"
    gbnf = payload(grammar='root ::= "7"')
    together, continued_reply, finished_reply, image_reply, grammar_reply, gbnf_reply = yield _Posts(
        (features, continued, finished, pictured, grammar, gbnf), probe=True
    )
    if isinstance(together, ServerError):
        separately = (
            payload(n=2, temperature=1.0, seed=0),
            payload(stop=["\n\n"]),
            payload(logprobs=True, top_logprobs=2),
        )
        n_reply, stop_reply, logprobs_reply = yield _Posts(separately, probe=True)
    else:
        n_reply = stop_reply = logprobs_reply = together
    generation_config = False
    if isinstance(continued_reply, ServerError) and continued_reply.status == 422:
        config = payload(generation_config=json.dumps({"max_new_tokens": 1}))
        [config_reply] = yield _Posts((config,), probe=True)
        generation_config = not isinstance(config_reply, ServerError)
    first_token = _first_token(logprobs_reply)
    return ServerCapabilities(
        n=_ok(n_reply) and len(n_reply.get("choices") or ()) >= 2,
        stop=_ok(stop_reply),
        logprobs=first_token is not None,
        top_logprobs=bool(first_token and first_token.get("top_logprobs")),
        continuation=_continued(plain_reply, continued_reply, finished_reply),
        images=not isinstance(image_reply, ImagesRejectedError),
        generation_config=generation_config,
        grammar=_ok(grammar_reply) and _content(grammar_reply) == "7",
        gbnf=_ok(gbnf_reply) and _content(gbnf_reply) == "7",
    )


def _content(reply: dict[str, Any]) -> str | None:
    choices = reply.get("choices") or [{}]
    return (choices[0].get("message") or {}).get("content")


def _ok(reply: Any) -> bool:
    return isinstance(reply, dict)


def _first_token(reply: Any) -> dict[str, Any] | None:
    if not _ok(reply) or not reply.get("choices"):
        return None
    content = (reply["choices"][0].get("logprobs") or {}).get("content") or []
    return content[0] if content else None


def _continued(plain: Any, continued: Any, finished: Any) -> bool:
    """Whether the server continued the partial assistant message ("OK") rather than closing it.

    Its prompt then lacks the end-of-turn and new-turn tokens: it is shorter than the same
    message as a finished turn (vLLM's ``continue_final_message``), or, on a server that
    always continues a final assistant message (llama.cpp's assistant prefill), only the
    one or two tokens of "OK" longer than the user turn alone.
    """
    if not (_ok(plain) and _ok(continued) and _ok(finished)):
        return False
    alone, used, full = ((r.get("usage") or {}).get("prompt_tokens") for r in (plain, continued, finished))
    if not (isinstance(alone, int) and isinstance(used, int) and isinstance(full, int)):
        return False
    return used < full or used - alone <= 2


def _probe_image() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
