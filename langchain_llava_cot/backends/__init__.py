"""Backends: how the search engine reaches a model.

:func:`create_backend` picks one from options (heavy imports happen only for the one
chosen): an OpenAI-compatible server when ``base_url`` is given, otherwise the model
in-process with transformers (the bundled demo model when ``model`` is None).
"""

from __future__ import annotations

from langchain_llava_cot.backends.base import (
    ChoiceRequest,
    ChoiceResult,
    Sample,
    SampleRequest,
    VLMBackend,
)

__all__ = ["ChoiceRequest", "ChoiceResult", "Sample", "SampleRequest", "VLMBackend", "create_backend"]


def create_backend(
    model: str | None = None,
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
            base_url, model, api_key=api_key, timeout=timeout, max_retries=max_retries
        )
    from langchain_llava_cot.backends.transformers import TransformersBackend

    if model is None:
        from langchain_llava_cot.demo import DEMO_MODEL_PATH

        model = str(DEMO_MODEL_PATH)
    return TransformersBackend(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
