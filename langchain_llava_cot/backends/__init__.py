"""Backends: how the search engine reaches a model."""

from langchain_llava_cot.backends.base import (
    ChoiceRequest,
    ChoiceResult,
    Sample,
    SampleRequest,
    VLMBackend,
)

__all__ = ["ChoiceRequest", "ChoiceResult", "Sample", "SampleRequest", "VLMBackend"]
