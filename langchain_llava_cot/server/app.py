"""The app: OpenAI's chat completions API in front of ``ChatLlavaCoT``'s search (Starlette).

Routes: ``GET /v1/models``, ``GET /v1/models/{model}``, ``POST /v1/chat/completions`` (``stream``
true or false) and ``GET /health`` (no key needed: ``{"status": "ok", "searches_running": n}``).

Request flow of a chat completion:
    the API key -> the body, read up to ``max_request_bytes`` -> :func:`~.requests.parse_request`
    -> :func:`~.requests.call_of` (messages, pictures, search options)
    -> :class:`~.runs.SearchRun` over ``ChatLlavaCoT.astream`` (the chat model checks the options
    and pictures, and runs the graph), cancelled if the client disconnects
    -> the first chunk: the first chosen stage. Until it comes, any error is an HTTP error with
    its status (:mod:`.errors`); a streamed reply starts with it, and a later error is sent as a
    last ``{"error": ...}`` event, as OpenAI and vLLM do
    -> :class:`~.replies.ReplyWriter`: server-sent chunks, or the whole completion.

Every request of every client goes to the same chat model, so they share its backend: the
transformers backend merges concurrent searches' model calls into shared batches.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from langchain_llava_cot.server.errors import APIError, api_error
from langchain_llava_cot.server.image_urls import image_fetcher
from langchain_llava_cot.server.model_names import listed_models, search_of
from langchain_llava_cot.server.replies import ReplyWriter, json_text, sse
from langchain_llava_cot.server.requests import call_of, parse_request
from langchain_llava_cot.server.runs import ClientGone, SearchRun, cancel_on_disconnect
from langchain_llava_cot.server.settings import ServerSettings

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from langchain_llava_cot.chat_models import ChatLlavaCoT

__all__ = ["create_app"]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def create_app(llm: ChatLlavaCoT, settings: ServerSettings | None = None) -> Starlette:
    """The ASGI app serving ``llm``'s search; ``llm``'s options are the requests' defaults.

    Run it with any ASGI server (``uvicorn.run(app)``), or with ``llava-cot serve``.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    server = _Server(llm, settings or ServerSettings())
    routes = [
        Route("/v1/models", _replying(server.models), methods=["GET"]),
        Route("/v1/models/{model:path}", _replying(server.model), methods=["GET"]),
        Route("/v1/chat/completions", _replying(server.chat_completions), methods=["POST"]),
        Route("/health", _replying(server.health), methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.server = server
    return app


class _Server:
    """The endpoints, and what they share: the chat model, the settings, the running searches."""

    def __init__(self, llm: ChatLlavaCoT, settings: ServerSettings) -> None:
        self.llm, self.settings = llm, settings
        self.fetch_image = image_fetcher(settings)
        self.runs: set[SearchRun] = set()
        """Searches whose task has not ended yet."""
        self.created = int(time.time())

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok", "searches_running": len(self.runs)})

    async def models(self, request: Request) -> Response:
        self._authorize(request)
        data = [self._model_object(name) for name in listed_models(self.settings.served_model_name)]
        return _json({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        self._authorize(request)
        name = request.path_params["model"]
        search_of(name, self.settings.served_model_name)  # 404 or 400 unless served
        return _json(self._model_object(name))

    async def chat_completions(self, request: Request) -> Response:
        from starlette.responses import StreamingResponse

        self._authorize(request)
        chat = parse_request(await _read_json(request, self.settings.max_request_bytes))
        call = await call_of(chat, self.settings.served_model_name, self.fetch_image)
        writer = ReplyWriter(chat.model, json_answer=call.json_answer, include_usage=chat.include_usage)
        run = SearchRun(self.llm.astream(call.messages, **call.options), on_done=self.runs.discard)
        self.runs.add(run)
        watcher = asyncio.create_task(cancel_on_disconnect(request.receive, run))

        def finish() -> None:
            watcher.cancel()
            run.cancel()

        try:
            first = await run.next()
            if chat.stream:
                events = _events(writer, run, first, finish)
                return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)
            chunk = first
            while chunk is not None:
                writer.add(chunk)
                chunk = await run.next()
        except BaseException:
            finish()
            raise
        finish()
        return _json(writer.completion())

    def _authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            msg = "No API key: send the header 'Authorization: Bearer <key>' (the openai client's api_key)."
            raise APIError(401, msg, code="missing_api_key")
        if not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise APIError(401, "Incorrect API key.", code="invalid_api_key")

    def _model_object(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "llava-cot"}


async def _events(
    writer: ReplyWriter, run: SearchRun, chunk: Any, finish: Callable[[], None]
) -> AsyncIterator[str]:
    """The server-sent events of a streamed reply, from its first chunk on."""
    try:
        while chunk is not None:
            for item in writer.stream_chunks(chunk):
                yield sse(item)
            chunk = await run.next()
        for item in writer.closing_chunks():
            yield sse(item)
    except ClientGone:
        return
    except Exception as error:  # noqa: BLE001 - the reply has started: the error is its last event
        yield sse(api_error(error).body())
    finally:
        finish()
    yield sse("[DONE]")


async def _read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, refused with 413 past ``limit`` bytes."""
    too_large = APIError(
        413, f"The request body is over the server's limit of {limit:,} bytes.", code="request_too_large"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_large
    try:
        return json.loads(body)
    except ValueError as e:
        raise APIError(400, f"The body is not JSON ({e}).", code="invalid_json") from e


def _replying(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint``, answering every error in OpenAI's shape (and nothing to a client that left)."""

    async def reply(request: Request) -> Response:
        from starlette.responses import Response

        try:
            return await endpoint(request)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it: the client closed the connection
        except Exception as error:  # noqa: BLE001 - every error becomes a reply without a traceback
            failure = api_error(error)
            return _json(failure.body(), failure.status)

    return reply


async def _http_error(request: Request, error: Exception) -> Response:
    """Starlette's own errors (an unknown path, a wrong method) in OpenAI's shape."""
    status = getattr(error, "status_code", 500)
    message = f"{request.method} {request.url.path}: {getattr(error, 'detail', 'error')}."
    if status == 404:
        message += " This server answers GET /v1/models and POST /v1/chat/completions."
    return _json(APIError(status, message, code="not_found" if status == 404 else None).body(), status)


def _json(body: Any, status: int = 200) -> Response:
    from starlette.responses import Response

    return Response(json_text(body), status_code=status, media_type="application/json")
