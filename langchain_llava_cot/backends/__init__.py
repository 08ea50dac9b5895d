"""Backends: how the search engine reaches a model.

:func:`create_backend` picks one from options (heavy imports happen only for the one
chosen): an OpenAI-compatible server when ``base_url`` is given, otherwise the model
in-process with transformers. :func:`cached_backend` creates each one once per process.
The caller names the model: this layer knows no default model.
"""

from __future__ import annotations

import threading
from pathlib import Path

from langchain_llava_cot.backends.base import (
    ChoiceRequest,
    ChoiceResult,
    Sample,
    SampleRequest,
    VLMBackend,
)

__all__ = [
    "ChoiceRequest",
    "ChoiceResult",
    "Sample",
    "SampleRequest",
    "VLMBackend",
    "cached_backend",
    "create_backend",
]


def create_backend(
    model: str | Path,
    base_url: str | None = None,
    *,
    api_key: str | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    timeout: float = 120.0,
    max_retries: int = 2,
) -> VLMBackend:
    """Create the backend these options describe."""
    if base_url:
        from langchain_llava_cot.backends.openai import OpenAICompatibleBackend

        if not model:
            msg = "Name the served model: base_url=..., model='<the name the server serves>'."
            raise ValueError(msg)
        return OpenAICompatibleBackend(
            base_url, str(model), api_key=api_key, timeout=timeout, max_retries=max_retries
        )
    from langchain_llava_cot.backends.transformers import TransformersBackend

    return TransformersBackend(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)


_BACKENDS: dict[tuple[str, str | None, str], VLMBackend] = {}
_BACKENDS_LOCK = threading.Lock()


def cached_backend(model: str | Path, base_url: str | None = None, device: str = "cpu") -> VLMBackend:
    """The backend for these options, created once per process (a model loads once).

    Args:
        model: a local model folder, or with ``base_url`` the served model's name.
        base_url: an OpenAI-compatible server; None runs the model in-process.
        device: device of an in-process model.
    """
    key = (str(model), base_url, device)
    with _BACKENDS_LOCK:
        if key not in _BACKENDS:
            _BACKENDS[key] = create_backend(model, base_url, device=device)
        return _BACKENDS[key]
