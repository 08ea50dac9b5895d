"""Errors of an OpenAI-compatible server, and which one an HTTP error reply is.

Every error is a :class:`ServerError` (a ``RuntimeError``) whose message says what to do;
:func:`error_for` picks the subclass from the status and the server's message:
:class:`ModelNotServedError`, :class:`ImagesRejectedError`, :class:`ServerPromptTooLongError`
(also a :class:`~langchain_llava_cot.backends.base.PromptTooLongError`), or a plain :class:`ServerError`.
:class:`ServerUnreachableError` and :class:`ServerTimeoutError` come from the transport.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from langchain_llava_cot.backends.base import PromptTooLongError

_MODEL_MISSING = re.compile(
    r"model.{0,80}(not found|does not exist|not exist|not served|unknown|pinned|no such|not available)"
    r"|(unknown|invalid|no such) model|is pinned to",
    re.IGNORECASE | re.DOTALL,
)
_IMAGES_REFUSED = re.compile(r"image|multimodal|multi-modal|vision|mmproj", re.IGNORECASE)
_CONTEXT_EXCEEDED = re.compile(
    r"context (length|window|size)|prompt is too long|too many (input )?tokens", re.IGNORECASE
)


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


class ServerPromptTooLongError(ServerError, PromptTooLongError):
    """The server refuses a prompt (with its token limit) longer than its model reads."""


# --- HTTP error replies ---------------------------------------------------------------


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


def error_for(
    response: httpx.Response, payload: dict[str, Any], base_url: str, path: str = "/chat/completions"
) -> ServerError:
    """The project error for an HTTP error reply to a POST to ``path``, saying what to do about it."""
    status, message, model = response.status_code, _error_message(response), payload.get("model")
    models = "/models" if path == "/chat/completions" else "/v1/models"
    if _MODEL_MISSING.search(message):
        msg = (
            f"The server at {base_url} does not serve model {model!r} (HTTP {status}: {message}). "
            f"Pass one of the served names as model=; GET {base_url}{models} lists them."
        )
        return ModelNotServedError(msg, status=status)
    if status == 404 and path != "/chat/completions":
        msg = (
            f"HTTP 404 from {base_url}{path}: {message}. Serve the model with vLLM's pooling runner "
            "(--runner pooling), and check base_url: the server's root, where vLLM serves /pooling."
        )
        return ModelNotServedError(msg, status=status)
    if status in (400, 413, 422) and _CONTEXT_EXCEEDED.search(message):
        msg = (
            f"The server at {base_url} refused the prompt as too long for model {model!r} (HTTP {status}: "
            f"{message}). Shorten the conversation, or lower the stage token limits."
        )
        return ServerPromptTooLongError(msg, status=status)
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
