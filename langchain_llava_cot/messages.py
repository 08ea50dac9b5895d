"""LangChain messages in: their conversion into the package's :class:`Conversation`.

:func:`convert_messages` turns system, human, AI and tool messages into the conversation's
turns: text blocks are joined, image blocks (base64, data URLs, local paths when allowed)
are read and checked, reasoning blocks are dropped, and an AI message's tool calls and a
tool's result are written as text. :func:`normalise_tool_choice` turns LangChain's
``tool_choice`` forms into the one the tools prompt takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.images import DEFAULT_MAX_PIXELS, read_base64_image, read_image_bytes
from langchain_llava_cot.tools import format_tool_calls

__all__ = ["convert_messages", "normalise_tool_choice"]


def convert_messages(
    messages: Sequence[BaseMessage],
    *,
    allow_local_images: bool = False,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
) -> Conversation:
    """Convert LangChain messages into a :class:`Conversation`; images are read and checked."""
    if not messages:
        msg = "No messages to answer. Pass at least one HumanMessage with a question."
        raise ValueError(msg)
    turns = []
    for message in messages:
        role = _role(message)
        text, images = _split_content(message.content, allow_local_images, max_image_pixels)
        if isinstance(message, ToolMessage):
            text = f"Tool result ({message.name or message.tool_call_id}): {text}"
        elif isinstance(message, AIMessage) and message.tool_calls:
            text = "\n".join(filter(None, [text, format_tool_calls(message.tool_calls)]))
        turns.append(Turn(role=role, text=text, images=tuple(images)))
    return Conversation(turns=tuple(turns))


def _role(message: BaseMessage) -> Any:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, (HumanMessage, ToolMessage)):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    msg = (
        f"Unsupported message type {type(message).__name__}: use SystemMessage, HumanMessage, "
        "AIMessage or ToolMessage."
    )
    raise TypeError(msg)


_SUPPORTED_BLOCKS = (
    'Supported content blocks: {"type": "text", "text": ...}, '
    '{"type": "image", "base64": ..., "mime_type": "image/png"}, '
    '{"type": "image", "url": "data:image/png;base64,..."}, and '
    '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}.'
)


_SKIPPED_BLOCKS = ("reasoning", "thinking", "tool_use", "tool_call", "tool_call_chunk", "invalid_tool_call")


def _split_content(content: Any, allow_local: bool, max_pixels: int) -> tuple[str, list[bytes]]:
    """Split message content into its text and its images."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[bytes] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
            continue
        if not isinstance(block, dict):
            msg = f"Unsupported content item {block!r}. {_SUPPORTED_BLOCKS}"
            raise ValueError(msg)
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind in _SKIPPED_BLOCKS:
            continue  # reasoning is not re-read; tool calls come from message.tool_calls
        elif kind in ("image", "image_url"):
            source, encoded = _image_source(block)
            if encoded:  # base64 bytes, whatever they start with (JPEG's start with "/9j/")
                images.append(read_base64_image(source, max_pixels=max_pixels))
            else:
                images.append(read_image_bytes(source, allow_local_paths=allow_local, max_pixels=max_pixels))
        else:
            msg = f"Unsupported content block of type {kind!r}. {_SUPPORTED_BLOCKS}"
            raise ValueError(msg)
    return "\n".join(t for t in texts if t), images


def _image_source(block: dict[str, Any]) -> tuple[str, bool]:
    """The base64 data, data URL or path an image block holds, and whether it is base64 data."""
    if block["type"] == "image_url":
        url = block.get("image_url")
        source, encoded = url.get("url") if isinstance(url, dict) else url, False
    elif block.get("base64") or block.get("data"):
        source, encoded = block.get("base64") or block.get("data"), True
    else:
        source, encoded = block.get("url") or block.get("path"), False
    if not isinstance(source, str) or not source:
        msg = f"Image block {_preview(block)} has no image data. {_SUPPORTED_BLOCKS}"
        raise ValueError(msg)
    return source, encoded and not source.startswith("data:")


def _preview(block: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k!r}: ..." for k in block) + "}"


def normalise_tool_choice(choice: str | bool | dict[str, Any] | None, names: list[str]) -> str | None:
    """Turn LangChain's ``tool_choice`` forms into ``auto``/``any``/``none`` or a tool name."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "required":
        return "any"
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if choice in ("auto", "any", "none") or choice in names:
        return choice  # type: ignore[return-value]
    msg = f"tool_choice {choice!r} is not 'auto', 'any', 'none', True, or one of the bound tools {names}."
    raise ValueError(msg)
