"""OpenAI chat requests in: their shape, and the chat model call they become.

Request flow:
    JSON body -> :func:`parse_request` (:class:`ChatRequest`: OpenAI's chat fields; any other
    field must be a search option) -> :func:`call_of` -> :class:`Call`: LangChain messages
    (pictures as ``image_url`` blocks holding data URLs; ``http(s)`` URLs fetched first when
    the server allows it) and the keyword arguments of ``ChatLlavaCoT.astream``: the search
    options of the model's name (:mod:`.model_names`) and of the body, ``stop``, ``tools`` and
    ``tool_choice``, or a forced call whose arguments are the JSON a ``response_format`` asks for.

The values of search options are not checked here: ``ChatLlavaCoT`` checks them per call, as
it does for every other caller, and its errors become 400 replies (:mod:`.errors`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from langchain_llava_cot.cli import one_line
from langchain_llava_cot.options import SearchOptions
from langchain_llava_cot.server.errors import APIError
from langchain_llava_cot.server.model_names import search_of

__all__ = ["SEARCH_OPTIONS", "Call", "ChatRequest", "call_of", "parse_request"]

_DEPLOYER_ONLY = ("max_candidates",)
"""Search options only the server's command line sets."""

SEARCH_OPTIONS: tuple[str, ...] = tuple(
    name for name in SearchOptions.model_fields if name not in {"stop", *_DEPLOYER_ONLY}
)
"""The fields a request may add to OpenAI's: the search options (``stop`` is OpenAI's own)."""

_IGNORED = ("user", "metadata", "store", "service_tier", "parallel_tool_calls")
"""OpenAI fields accepted that change nothing here."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Part):
    """``{"type": "text", "text": ...}``."""

    type: Literal["text"]
    text: str


class ImageURL(_Part):
    """Where a picture is: a data URL (``data:image/png;base64,...``) or an ``http(s)`` URL."""

    url: str


class ImagePart(_Part):
    """``{"type": "image_url", "image_url": {"url": ...}}``."""

    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]  # noqa: UP007


class FunctionCall(_Part):
    """A tool call's function: its name and its arguments as JSON text."""

    name: str
    arguments: str


class ToolCall(_Part):
    """A tool call of an earlier assistant message."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemTurn(_Part):
    """A system (or developer) message."""

    role: Literal["system", "developer"]
    content: str | list[TextPart]


class UserTurn(_Part):
    """A user message: text and pictures."""

    role: Literal["user"]
    content: str | list[ContentPart]


class AssistantTurn(_Part):
    """An earlier answer, with the tool calls it made."""

    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None


class ToolTurn(_Part):
    """A tool's result."""

    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


Turn = Annotated[Union[SystemTurn, UserTurn, AssistantTurn, ToolTurn], Field(discriminator="role")]  # noqa: UP007


class StreamOptions(_Part):
    """``{"include_usage": true}`` adds a last chunk with the usage."""

    include_usage: bool = False


class JSONSchema(_Part):
    """``response_format.json_schema``: the schema the answer must follow."""

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")


class ResponseFormat(_Part):
    """``{"type": "json_schema", "json_schema": {...}}``, ``{"type": "json_object"}`` or ``text``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchema | None = None


class ChatRequest(BaseModel):
    """A ``POST /v1/chat/completions`` body: OpenAI's fields, and search options as extra fields."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Turn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    max_completion_tokens: Any = None
    """OpenAI's newer name of ``max_tokens``."""
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        """Whether a streamed reply ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


def parse_request(body: Any) -> ChatRequest:
    """Read a body into a :class:`ChatRequest`; raises a 400 :class:`APIError` saying what is wrong."""
    if not isinstance(body, dict):
        raise APIError(
            400, "The body must be a JSON object with 'model' and 'messages'.", code="invalid_body"
        )
    try:
        request = ChatRequest.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(part) for part in first.get("loc", ())) or None
        raise APIError(400, one_line(e), code="invalid_value", param=param) from e
    _refuse_unsupported(request)
    return request


def _refuse_unsupported(request: ChatRequest) -> None:
    """OpenAI fields whose effect this server cannot give are refused, not ignored."""
    if request.n not in (None, 1):
        msg = "n must be 1: the search returns one answer; ask it to weigh more candidates with 'candidates'."
        raise APIError(400, msg, code="unsupported_value", param="n")
    if request.logprobs or request.top_logprobs:
        msg = "logprobs are not returned; each candidate's mean log-probability is in the 'llava_cot' record."
        raise APIError(400, msg, code="unsupported_value", param="logprobs")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(request, name):
            raise APIError(
                400, f"{name} is not supported; leave it out or at 0.", code="unsupported_value", param=name
            )
    if request.logit_bias:
        raise APIError(400, "logit_bias is not supported.", code="unsupported_value", param="logit_bias")
    if request.tools and request.response_format and request.response_format.type != "text":
        msg = "Send tools or a JSON response_format, not both: both are served by one forced call."
        raise APIError(400, msg, code="unsupported_value", param="response_format")


@dataclass
class Call:
    """What a request asks of ``ChatLlavaCoT.astream``."""

    messages: list[BaseMessage]
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments: search options, ``stop``, ``tools``, ``tool_choice``."""
    json_answer: bool = False
    """The answer is the forced call's arguments, as JSON content (a ``response_format``)."""


ImageFetcher = Callable[[str], Awaitable[str]]
"""Fetches an ``http(s)`` picture URL and returns it as a data URL."""


async def call_of(request: ChatRequest, served: str, fetch_image: ImageFetcher | None) -> Call:
    """The chat model call ``request`` asks for; ``fetch_image`` None refuses picture URLs."""
    options = _search_options(request, served)
    if request.stop is not None:
        options["stop"] = [request.stop] if isinstance(request.stop, str) else request.stop
    json_answer = False
    if request.tools:
        options["tools"] = request.tools
        if request.tool_choice is not None:
            options["tool_choice"] = request.tool_choice
    elif request.response_format and request.response_format.type != "text":
        options["tools"], options["tool_choice"] = _answer_tool(request.response_format)
        json_answer = True
    messages = [await _message(turn, i, request, fetch_image) for i, turn in enumerate(request.messages)]
    return Call(messages, options, json_answer)


def _search_options(request: ChatRequest, served: str) -> dict[str, Any]:
    """The search options of the model's name and of the body's extra fields (they must agree)."""
    named = search_of(request.model, served)
    given = {  # null means "not set", as in OpenAI's API
        name: value
        for name, value in (request.model_extra or {}).items()
        if value is not None and name not in _IGNORED
    }
    if request.max_completion_tokens is not None:
        if given.setdefault("max_tokens", request.max_completion_tokens) != request.max_completion_tokens:
            msg = "max_tokens and max_completion_tokens differ; send one of them."
            raise APIError(400, msg, code="invalid_value", param="max_completion_tokens")
    for name in given:
        if name in _DEPLOYER_ONLY:
            flag = "--" + name.replace("_", "-")
            msg = f"{name} is the server's limit (llava-cot serve {flag}); a request cannot change it."
            raise APIError(400, msg, code="unsupported_value", param=name)
        if name not in SEARCH_OPTIONS:
            msg = (
                f"Unknown field {name!r}. Besides OpenAI's chat fields, a request may set the search "
                f"options {', '.join(SEARCH_OPTIONS)}."
            )
            raise APIError(400, msg, code="unknown_field", param=name)
        if name in named and named[name] != given[name]:
            msg = f"The model name sets {name}={named[name]!r} and the body {name}={given[name]!r}; keep one."
            raise APIError(400, msg, code="invalid_value", param=name)
    return {**named, **given}


def _answer_tool(response_format: ResponseFormat) -> tuple[list[dict[str, Any]], str]:
    """A JSON ``response_format`` as one tool the answer must call: its arguments are the JSON."""
    if response_format.type == "json_object":
        function: dict[str, Any] = {"name": "response", "parameters": {"type": "object"}}
    elif response_format.json_schema is None:
        msg = 'response_format of type json_schema needs "json_schema": {"name": ..., "schema": {...}}.'
        raise APIError(400, msg, code="invalid_value", param="response_format.json_schema")
    else:
        spec = response_format.json_schema
        function = {"name": spec.name, "parameters": spec.schema_}
        if spec.description:
            function["description"] = spec.description
    return [{"type": "function", "function": function}], function["name"]


async def _message(
    turn: Any, index: int, request: ChatRequest, fetch_image: ImageFetcher | None
) -> BaseMessage:
    if isinstance(turn, SystemTurn):
        return SystemMessage(content=_text(turn.content))
    if isinstance(turn, UserTurn):
        if isinstance(turn.content, str):
            return HumanMessage(content=turn.content)
        blocks: list[str | dict[Any, Any]] = [
            await _block(part, f"messages[{index}].content[{j}]", fetch_image)
            for j, part in enumerate(turn.content)
        ]
        return HumanMessage(content=blocks)
    if isinstance(turn, AssistantTurn):
        calls = [
            _tool_call(call, f"messages[{index}].tool_calls[{j}]")
            for j, call in enumerate(turn.tool_calls or ())
        ]
        return AIMessage(content=_text(turn.content), tool_calls=calls)
    return ToolMessage(
        content=_text(turn.content),
        tool_call_id=turn.tool_call_id,
        name=_tool_name(request, turn.tool_call_id),
    )


def _text(content: str | list[TextPart] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part.text for part in content)


async def _block(part: TextPart | ImagePart, where: str, fetch_image: ImageFetcher | None) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    url = part.image_url.url
    if url.startswith(("http://", "https://")):
        if fetch_image is None:
            msg = (
                "Picture URLs are not fetched by this server (start it with --allow-image-urls to allow "
                "it); send the picture as a data URL: data:image/png;base64,<base64 of the file>."
            )
            raise APIError(400, msg, code="image_url_not_allowed", param=f"{where}.image_url.url")
        url = await fetch_image(url)
    elif not url.startswith("data:"):
        msg = "A picture must be a data URL (data:image/png;base64,<base64 of the file>) or an http(s) URL."
        raise APIError(400, msg, code="invalid_image_url", param=f"{where}.image_url.url")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_call(call: ToolCall, where: str) -> dict[str, Any]:
    try:
        args = json.loads(call.function.arguments or "{}")
    except ValueError as e:
        msg = f"The arguments of tool call {call.id!r} are not JSON ({e}); send them as a JSON object's text."
        raise APIError(400, msg, code="invalid_value", param=f"{where}.function.arguments") from e
    if not isinstance(args, dict):
        msg = (
            f"The arguments of tool call {call.id!r} must be a JSON object, got {call.function.arguments!r}."
        )
        raise APIError(400, msg, code="invalid_value", param=f"{where}.function.arguments")
    return {"name": call.function.name, "args": args, "id": call.id, "type": "tool_call"}


def _tool_name(request: ChatRequest, call_id: str) -> str | None:
    """The name of the tool an earlier assistant message called as ``call_id``."""
    for turn in request.messages:
        for call in getattr(turn, "tool_calls", None) or ():
            if call.id == call_id:
                return call.function.name
    return None
