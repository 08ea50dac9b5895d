"""In-process backend: a Hugging Face vision-language model loaded with ``transformers``.

- :mod:`.backend`: :class:`TransformersBackend`, sampling and choosing, prefills and caches;
- :mod:`.loading`: where a model comes from and what it supports;
- :mod:`.jobs`: request checks, grouping into shared calls, the worker's lifetime;
- :mod:`.stopping`: where a generated row ends, and its log-probabilities.
"""

from langchain_llava_cot.backends.transformers.backend import TransformersBackend

__all__ = ["TransformersBackend"]
