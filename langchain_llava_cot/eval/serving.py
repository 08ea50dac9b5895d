"""A served model for the eval: its name from the server when not given, and a dead server found at once.

:func:`served_backend` makes the OpenAI-compatible backend the eval answers with, asks the server
which model it serves when ``served_model`` is None (``GET /models``), and probes it before the
first question, so an address where nothing answers fails in about a second with one line
(:class:`~langchain_llava_cot.backends.openai.ServerUnreachableError`) instead of once per question.
"""

from __future__ import annotations

from typing import Any

__all__ = ["served_backend", "served_model_name"]


def served_backend(
    base_url: str,
    served_model: str | None,
    api_key: str | None,
    *,
    max_concurrency: int = 8,
    timeout: float | None = None,
) -> Any:
    """The backend for ``base_url``, checked: the server answers and serves the model.

    ``timeout`` is the seconds one reply may take, queueing in the server included (None: the
    backend's default).
    """
    from langchain_llava_cot.backends.openai import OpenAICompatibleBackend

    name = served_model or served_model_name(base_url, api_key)
    limits: dict[str, Any] = {"max_concurrency": max_concurrency}
    if timeout is not None:
        limits["timeout"] = timeout
    backend = OpenAICompatibleBackend(base_url, name, api_key=api_key, **limits)
    backend.probe()
    return backend


def served_model_name(base_url: str, api_key: str | None, timeout: float = 10.0) -> str:
    """The one model the server at ``base_url`` lists (``GET /models``)."""
    import httpx

    from langchain_llava_cot.backends.openai import ServerError, ServerUnreachableError

    url = f"{base_url.rstrip('/')}/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        reply = httpx.get(url, headers=headers, timeout=timeout)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as e:
        msg = (
            f"Cannot reach an OpenAI-compatible server at {base_url} ({e!r}). Start the server, or check "
            "--base-url: host, port, and the /v1 suffix."
        )
        raise ServerUnreachableError(msg) from e
    except httpx.HTTPError as e:
        msg = f"The server at {base_url} did not list its models ({e!r}); name it with --served-model."
        raise ServerError(msg) from e
    try:
        names = [str(m["id"]) for m in reply.json()["data"]] if reply.is_success else []
    except (ValueError, KeyError, TypeError):
        names = []
    if len(names) != 1:
        listed = f"it lists {', '.join(names)}" if names else f"GET {url} gave HTTP {reply.status_code}"
        msg = f"Name the served model with --served-model ({listed})."
        raise ValueError(msg)
    return names[0]
