"""In-process backend: a Hugging Face vision-language model loaded with ``transformers``.

- :mod:`.backend`: :class:`TransformersBackend`, the requests' way through the collaborators;
- :mod:`.loading`: where a model comes from and what it supports;
- :mod:`.prompts`: each request's prompt prepared once, in the caller's thread (picture, template,
  tokens, pixels);
- :mod:`.inputs`: prepared prompts as batches, and the image feature cache;
- :mod:`.attention`: where pictures live in the KV cache (self- or cross-attention), chosen once;
- :mod:`.prefill`: prompts read once through the prefix KV cache, and its counters;
- :mod:`.vision_cache`: each distinct picture encoded once (an LRU cache of image features);
- :mod:`.prefix_cache`: prompts' KV states by token ids, and the caches built from them;
- :mod:`.decoding`: generation settings and seeds, where a row ends, its log-probabilities;
- :mod:`.constrained`: forced tool calls under their grammar: masks, where a row ends, closing in time;
- :mod:`.scoring`: options' log-probabilities for judges;
- :mod:`.jobs`: request checks, grouping into shared calls, the worker's lifetime.
"""

from langchain_llava_cot.backends.transformers.backend import BackendSettings, TransformersBackend

__all__ = ["BackendSettings", "TransformersBackend"]
