"""OpenAI-compatible servers as a backend: vLLM, SGLang, llama.cpp, Ollama, ``transformers serve``.

:class:`OpenAICompatibleBackend` is the public face; each module owns one part:

- :mod:`.backend`: :class:`OpenAICompatibleBackend`, its plans for ``sample`` and ``choose``,
  run with sync or async HTTP;
- :mod:`.capabilities`: :class:`ServerCapabilities`, and the probe that finds what a server honours;
- :mod:`.asking`: how a request is put to the server: messages, continuation or an explicit
  stage request, payloads;
- :mod:`.replies`: how a reply is read back into samples and choice scores;
- :mod:`.forced_calls`: a forced call's grammar on a server: its field, its stops, closing a cut call;
- :mod:`.transport`: POSTs within a deadline, retries with backoff;
- :mod:`.errors`: :class:`ServerError` and its subclasses, and which one an HTTP error reply is.
"""

try:
    import httpx  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    msg = "OpenAICompatibleBackend needs httpx: pip install 'langchain-llava-cot[openai]'."
    raise ImportError(msg) from e

from langchain_llava_cot.backends.openai.backend import OpenAICompatibleBackend
from langchain_llava_cot.backends.openai.capabilities import ServerCapabilities
from langchain_llava_cot.backends.openai.errors import (
    ImagesRejectedError,
    ModelNotServedError,
    ServerError,
    ServerPromptTooLongError,
    ServerTimeoutError,
    ServerUnreachableError,
)

__all__ = [
    "ImagesRejectedError",
    "ModelNotServedError",
    "OpenAICompatibleBackend",
    "ServerCapabilities",
    "ServerError",
    "ServerPromptTooLongError",
    "ServerTimeoutError",
    "ServerUnreachableError",
]
