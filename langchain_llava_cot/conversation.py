"""The model-neutral request every backend receives: turns of text and images.

LangChain messages are converted into a :class:`Conversation` once, by the chat model;
backends turn it into whatever their model or server reads (a chat template, an
OpenAI ``messages`` list). Images are kept as validated, encoded bytes so that a
conversation can be stored in graph state and checkpoints as it is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

__all__ = ["Conversation", "Turn", "check_request", "to_chat_messages"]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One message: its role, its text, and the images that come before the text."""

    role: Role
    text: str
    images: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Conversation:
    """The turns a model answers, the last one being the user's."""

    turns: tuple[Turn, ...]
    tools_prompt: str | None = field(default=None)
    """Tool descriptions and calling format for the model, when tools are bound."""
    tools: tuple[dict[str, Any], ...] = field(default=())
    """The bound tools as OpenAI function schemas, for chat templates with a tool format."""
    tool_choice: str | None = field(default=None)
    """``any`` or a tool's name when a tool call is required; None or ``auto`` when optional."""

    @property
    def forced_tools(self) -> tuple[dict[str, Any], ...]:
        """The tools one of which the answer must call (empty when no call is required)."""
        if not self.tools or self.tool_choice in (None, "auto", "none"):
            return ()
        if self.tool_choice in ("any", "required"):
            return self.tools
        return tuple(t for t in self.tools if t.get("function", t).get("name") == self.tool_choice)

    @property
    def images(self) -> tuple[bytes, ...]:
        """Every image, in the order the model sees them."""
        return tuple(image for turn in self.turns for image in turn.images)

    @property
    def question(self) -> str:
        """The text of the last user turn."""
        return next((t.text for t in reversed(self.turns) if t.role == "user"), "")

    @cached_property
    def fingerprint(self) -> str:
        """A stable hash of the whole conversation, for caches keyed by request."""
        digest = hashlib.sha256()
        for turn in self.turns:
            digest.update(turn.role.encode())
            digest.update(turn.text.encode())
            for image in turn.images:
                digest.update(hashlib.sha256(image).digest())
        digest.update((self.tools_prompt or "").encode())
        digest.update(json.dumps(self.tools, sort_keys=True).encode())
        digest.update((self.tool_choice or "").encode())
        return digest.hexdigest()

    def with_user_turn(self, text: str) -> Conversation:
        """A one-turn conversation asking ``text`` about all of this one's images (no tools)."""
        return Conversation(turns=(Turn(role="user", text=text, images=self.images),))


def check_request(conversation: Conversation) -> Conversation:
    """Reject a request no model can answer, before any model work; return it unchanged.

    >>> check_request(Conversation((Turn("system", "Be brief."),)))
    Traceback (most recent call last):
    ...
    ValueError: The conversation has no user message: add a HumanMessage with the question.
    """
    users = [turn for turn in conversation.turns if turn.role == "user"]
    if not users:
        msg = "The conversation has no user message: add a HumanMessage with the question."
        raise ValueError(msg)
    last = users[-1]
    if not last.text.strip() and not last.images:
        msg = "The last user message is empty: give a question (and a picture), e.g. 'How many red squares?'."
        raise ValueError(msg)
    for index, turn in enumerate(conversation.turns):
        try:
            turn.text.encode("utf-8")
        except UnicodeEncodeError as e:
            msg = (
                f"Message {index} ({turn.role}) has text that cannot be encoded as UTF-8 "
                f"({e.reason} at character {e.start}), such as a lone surrogate; clean the text first."
            )
            raise ValueError(msg) from e
    return conversation


def to_chat_messages(conversation: Conversation, *, tools_in_template: bool = False) -> list[dict]:
    """The conversation in the Hugging Face chat-template format.

    Each image becomes a ``{"type": "image"}`` item before the turn's text, which is how
    LLaVA-CoT's own inference code lays out a user turn. The image data itself is
    passed to the processor separately, in :attr:`Conversation.images` order. A tools
    prompt opens the system turn, unless the chat template renders the tools itself
    (``tools_in_template``; then pass ``tools=conversation.tools`` to the template).
    """
    turns = list(conversation.turns)
    if conversation.tools_prompt and not tools_in_template:
        if turns and turns[0].role == "system":
            first = turns.pop(0)
            turns.insert(0, Turn("system", f"{conversation.tools_prompt}\n\n{first.text}", first.images))
        else:
            turns.insert(0, Turn("system", conversation.tools_prompt))
    messages = []
    for turn in turns:
        content: list[dict] = [{"type": "image"} for _ in turn.images]
        content.append({"type": "text", "text": turn.text})
        messages.append({"role": turn.role, "content": content})
    return messages
