"""``llava-cot serve``: LLaVA-CoT's search behind an OpenAI-compatible endpoint, pictures included.

Any OpenAI client (the ``openai`` package, LangChain's ``ChatOpenAI``, LlamaIndex, Open WebUI,
curl) sends its chat request; the search answers it. Each module owns one part:

- :mod:`.requests`: OpenAI request bodies -> LangChain messages and ``ChatLlavaCoT`` call options;
- :mod:`.model_names`: search options in the model's name (``stage_beam-8@llava-cot-demo``);
- :mod:`.image_urls`: pictures sent as ``http(s)`` URLs, fetched only when allowed;
- :mod:`.runs`: each search in its own task, cancelled when its client disconnects;
- :mod:`.replies`: message chunks -> completions and stream chunks (stages as ``reasoning_content``,
  the search record under ``llava_cot``, usage);
- :mod:`.errors`: OpenAI's error shape and the status of each failure;
- :mod:`.settings`: what the deployer decides; :mod:`.app`: the Starlette app;
- :mod:`.background`: the server in a thread; :mod:`.command`: the command line.

Needs the ``[serve]`` extra (starlette, uvicorn, httpx).
"""

from langchain_llava_cot.server.app import create_app
from langchain_llava_cot.server.background import BackgroundServer
from langchain_llava_cot.server.errors import APIError
from langchain_llava_cot.server.model_names import listed_models, search_of
from langchain_llava_cot.server.replies import RECORD_FIELD
from langchain_llava_cot.server.requests import SEARCH_OPTIONS
from langchain_llava_cot.server.settings import ServerSettings

__all__ = [
    "RECORD_FIELD",
    "SEARCH_OPTIONS",
    "APIError",
    "BackgroundServer",
    "ServerSettings",
    "create_app",
    "listed_models",
    "search_of",
]
