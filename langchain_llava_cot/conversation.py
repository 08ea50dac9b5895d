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

__all__ = ["Conversation", "Turn", "check_request", "laid_out", "to_chat_messages"]

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


def laid_out(
    conversation: Conversation, *, last_user_text: str | None = None, tools_prompt: bool = True
) -> list[Turn]:
    """The turns a model is shown, which every message writer below renders.

    The tools prompt opens the system turn (the first turn, added if there is none),
    unless ``tools_prompt`` is False (a chat template that renders the tools itself).
    ``last_user_text`` replaces the text of the last user turn (a served model asked
    for one stage at a time); its images stay.

    >>> asked = Conversation((Turn("system", "Be brief."), Turn("user", "Hi")), tools_prompt="Tools.")
    >>> [(t.role, t.text.splitlines()) for t in laid_out(asked, last_user_text="Hi again")]
    [('system', ['Tools.', '', 'Be brief.']), ('user', ['Hi again'])]
    """
    turns = list(conversation.turns)
    if last_user_text is not None:
        last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
        if last_user is not None:
            turns[last_user] = Turn("user", last_user_text, turns[last_user].images)
    if conversation.tools_prompt and tools_prompt:
        if turns and turns[0].role == "system":
            first = turns.pop(0)
            turns.insert(0, Turn("system", f"{conversation.tools_prompt}\n\n{first.text}", first.images))
        else:
            turns.insert(0, Turn("system", conversation.tools_prompt))
    return turns


def to_chat_messages(conversation: Conversation, *, tools_in_template: bool = False) -> list[dict]:
    """The conversation in the Hugging Face chat-template format (:func:`laid_out`).

    Each image becomes a ``{"type": "image"}`` item before the turn's text, which is how
    LLaVA-CoT's own inference code lays out a user turn. The image data itself is
    passed to the processor separately, in :attr:`Conversation.images` order. With
    ``tools_in_template`` the tools prompt is left out: pass ``tools=conversation.tools``
    to the template.
    """
    messages = []
    for turn in laid_out(conversation, tools_prompt=not tools_in_template):
        content: list[dict] = [{"type": "image"} for _ in turn.images]
        content.append({"type": "text", "text": turn.text})
        messages.append({"role": turn.role, "content": content})
    return messages
