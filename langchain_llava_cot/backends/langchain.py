r"""Any LangChain chat model with image input as a backend, one stage per call.

A generic chat model cannot continue a partial assistant message, so each stage is
asked for explicitly and its tags are enforced by parsing.

Input flow:
    SampleRequest
      -> :func:`read_prefix`: the engine's prefix (chosen stages + the next opening tag)
         as a :class:`StageAsk`: which stages were chosen, which one to write next
      -> :func:`stage_request_text`: the question, the stages so far and an instruction
         to write only the next stage in its tags
      -> :func:`to_langchain_messages`: the conversation as LangChain messages, images as
         standard ``{"type": "image", "base64": ...}`` blocks before the text
      -> ``chat_model.batch`` / ``abatch``: one input per candidate (``n`` of them),
         at most ``max_concurrency`` at a time; callbacks and tracing come from the
         caller's runnable context, untouched

Output flow:
    AIMessage
      -> :func:`extract_stages`: the stage text between its tags, repaired when the
         model drifts (untagged text, a whole four-stage answer, a missing close tag)
      -> :func:`cut_at_stop`: cut before the request's stop strings
      -> :class:`Sample` with ``usage_metadata`` token counts and, when the model gives
         them (``response_metadata["logprobs"]``), the log-probabilities of the kept tokens

:func:`read_prefix`, :func:`stage_request_text`, :func:`extract_stages`,
:func:`cut_at_stop` and :func:`span_logprobs` are pure helpers that the
OpenAI-compatible backend reuses where a server ignores a partial assistant message.

>>> ask = read_prefix("<SUMMARY> count </SUMMARY>\n\n<CAPTION>", ("</CAPTION>",))
>>> ask.first.value, ask.chosen
('caption', {<Stage.SUMMARY: 'summary'>: 'count'})
>>> extract_stages("Three red squares.", ask).text
'Three red squares.'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langchain_llava_cot.backends.base import Sample, SampleRequest, VLMBackend
from langchain_llava_cot.conversation import Conversation, laid_out
from langchain_llava_cot.images import image_block
from langchain_llava_cot.stages import STAGES, TAG_NAMES, Stage, parse_answer, render_answer

__all__ = [
    "ChatModelBackend",
    "Extracted",
    "StageAsk",
    "cut_at_stop",
    "extract_stages",
    "prefix_request_text",
    "read_prefix",
    "span_logprobs",
    "stage_repairs",
    "stage_request_text",
    "to_langchain_messages",
]

logger = logging.getLogger(__name__)

_OPEN_TAG_AT_END = re.compile(rf"<({TAG_NAMES})>\s*$")
_CLOSE_TAG = re.compile(rf"</({TAG_NAMES})>")
_ANY_TAG = re.compile(rf"</?(?:{TAG_NAMES})>", re.IGNORECASE)


# --- stage prompting (shared with the OpenAI-compatible backend) ----------------------


@dataclass(frozen=True)
class StageAsk:
    """What a prefix asks for: the stages chosen so far and the stages to write next."""

    chosen: dict[Stage, str]
    """Stages already chosen, in protocol order."""
    first: Stage
    """The stage whose opening tag ends the prefix."""
    last: Stage
    """The last stage wanted: ``first`` for one stage, later for a whole answer."""


@dataclass(frozen=True)
class Extracted:
    """The wanted text found in a reply, and where it lies in the reply."""

    text: str
    closed: bool
    """Whether the last wanted stage was closed by its tag."""
    start: int
    end: int
    repair: str | None = None
    """How the reply was repaired, when it drifted from the asked format."""
    tagged: bool = True
    """Whether the reply opened the wanted stage with its tag."""


def read_prefix(prefix: str, stop: Sequence[str] = ()) -> StageAsk | None:
    """Read an engine prefix (chosen stages, then an opening tag); None for any other prefix.

    The last stage wanted is the one whose closing tag is among ``stop`` (a whole answer
    stops at ``</CONCLUSION>``), else the stage just opened.
    """
    match = _OPEN_TAG_AT_END.search(prefix)
    if match is None:
        return None
    first = Stage(match.group(1).lower())
    chosen = parse_answer(prefix[: match.start()]).stages if prefix[: match.start()].strip() else {}
    last = first
    for text in stop:
        closing = _CLOSE_TAG.fullmatch(text.strip())
        if closing and STAGES.index(Stage(closing.group(1).lower())) > STAGES.index(first):
            last = Stage(closing.group(1).lower())
    return StageAsk(chosen=dict(chosen), first=first, last=last)


def stage_request_text(question: str, ask: StageAsk) -> str:
    """The user turn that asks for the next stage(s) explicitly."""
    guide = "\n".join(f"{s.open_tag} {s.guide} {s.close_tag}" for s in STAGES)
    so_far = render_answer(ask.chosen) if ask.chosen else "none yet"
    if ask.first is ask.last:
        task = (
            f"Now write only the {ask.first.value} stage, as {ask.first.open_tag} ... "
            f"{ask.first.close_tag}, and nothing else."
        )
    else:
        task = (
            f"Now write the stages from {ask.first.value} to {ask.last.value}, each wrapped in "
            "its tags, and nothing else."
        )
    return (
        f"{question}\n\nAnswer in four stages, each wrapped in its tags:\n{guide}\n\n"
        f"Stages written so far:\n{so_far}\n\n{task}"
    )


def prefix_request_text(question: str, prefix: str) -> str:
    """The question, asking a model that cannot continue a message to begin with ``prefix``."""
    return f"{question}\n\nBegin your reply with exactly: {prefix}"


def extract_stages(reply: str, ask: StageAsk) -> Extracted:
    """Find the wanted stage text in a reply; repairs drift instead of failing.

    The text starts after ``ask.first``'s opening tag and ends before ``ask.last``'s
    closing tag (for one stage, before any other stage tag). A reply with no opening
    tag is taken whole as the stage, its stray tags removed.
    """
    opened = reply.find(ask.first.open_tag)
    if opened < 0:
        return _untagged(reply, ask)
    start = opened + len(ask.first.open_tag)
    if ask.first is ask.last:
        match = _ANY_TAG.search(reply, start)
        end = match.start() if match else len(reply)
        closed = match is not None and match.group(0) == ask.first.close_tag
    else:
        found = reply.find(ask.last.close_tag, start)
        end, closed = (found, True) if found >= 0 else (len(reply), False)
    repair = None if opened == 0 or not reply[:opened].strip() else "text before the opening tag dropped"
    return Extracted(reply[start:end], closed, start, end, repair)


def stage_repairs(found: Extracted, ask: StageAsk, stopped: bool) -> tuple[str, ...]:
    """What was mended in a reply.

    That is ``found.repair``, and a closing tag that never came (unless a stop string
    ended the reply, as it does right before the closing tag).
    """
    repairs: tuple[str, ...] = (found.repair,) if found.repair else ()
    if found.tagged and not found.closed and not stopped:
        repairs += (f"{ask.last.close_tag} missing; the text up to the next tag is kept",)
    return repairs


def _untagged(reply: str, ask: StageAsk) -> Extracted:
    parsed = parse_answer(reply)
    if ask.first in parsed.stages and ask.first is ask.last:
        text = parsed.stages[ask.first]
        start = reply.find(text)
        return Extracted(text, True, max(start, 0), max(start, 0) + len(text), "stage tag case repaired")
    if not _ANY_TAG.search(reply):
        repair = f"no {ask.first.open_tag} tag; the whole reply is the stage"
        return Extracted(reply, False, 0, len(reply), repair, tagged=False)
    text = _ANY_TAG.sub(" ", reply)
    return Extracted(
        text, False, 0, len(reply), f"no {ask.first.open_tag} tag; other tags removed", tagged=False
    )


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; returns the text and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    if not hits:
        return text, False
    return text[: min(hits)], True


def span_logprobs(tokens: Sequence[tuple[str, float]], text: str, start: int) -> tuple[float, ...]:
    """Log-probabilities of the tokens that make up ``text``, found at ``start`` of their joined text.

    Tokens that only touch the whitespace around ``text`` are left out.

    >>> span_logprobs([(" a", -1.0), (" b", -2.0), (" </X>", -3.0)], " a b ", 0)
    (-1.0, -2.0)
    """
    start += len(text) - len(text.lstrip())
    end = start + len(text.strip())
    kept, offset = [], 0
    for token, logprob in tokens:
        token_end = offset + len(token)
        if token_end > start and offset < end:
            kept.append(logprob)
        offset = token_end
        if offset >= end:
            break
    return tuple(kept)


# --- LangChain messages ---------------------------------------------------------------


def to_langchain_messages(conversation: Conversation, last_user_text: str | None = None) -> list[BaseMessage]:
    """The conversation as LangChain messages (:func:`laid_out`), images as image blocks before the text.

    Args:
        conversation: The request's conversation.
        last_user_text: Replaces the text of the last user turn (the stage request).
    """
    messages: list[BaseMessage] = []
    for turn in laid_out(conversation, last_user_text=last_user_text):
        if turn.role == "system":
            messages.append(SystemMessage(turn.text))
        elif turn.role == "assistant":
            messages.append(AIMessage(turn.text))
        else:
            blocks: list[Any] = [image_block(image) for image in turn.images]
            blocks.append({"type": "text", "text": turn.text})
            messages.append(HumanMessage(content=blocks))
    return messages


# --- the backend ----------------------------------------------------------------------


class ChatModelBackend(VLMBackend):
    """Drive any LangChain chat model with image input, asking for one stage per call.

    Sampling options (temperature, top-p, token limit, seed) are the chat model's own:
    set them when you build it, since chat models name them differently. For ``n > 1``
    candidates to differ, give it a temperature above 0.

    Setup:
        .. code-block:: python

            from langchain_ollama import ChatOllama
            from langchain_llava_cot.backends.langchain import ChatModelBackend

            backend = ChatModelBackend(ChatOllama(model="llava", temperature=0.6))

    Args:
        chat_model: A chat model that accepts standard image content blocks.
        max_concurrency: Most calls to the chat model in flight at once.
    """

    supports_choice = False

    def __init__(self, chat_model: BaseChatModel, *, max_concurrency: int = 8) -> None:
        if max_concurrency < 1:
            msg = f"max_concurrency must be at least 1, got {max_concurrency}."
            raise ValueError(msg)
        self.chat_model = chat_model
        self.max_concurrency = max_concurrency
        self.model_name = _model_name(chat_model)

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        inputs, owners = self._inputs(requests)
        replies = self.chat_model.batch(inputs, config={"max_concurrency": self.max_concurrency})
        return self._samples(requests, owners, replies)

    async def asample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        inputs, owners = self._inputs(requests)
        replies = await self.chat_model.abatch(inputs, config={"max_concurrency": self.max_concurrency})
        return self._samples(requests, owners, replies)

    def _inputs(self, requests: Sequence[SampleRequest]) -> tuple[list[LanguageModelInput], list[int]]:
        inputs: list[LanguageModelInput] = []
        owners: list[int] = []
        for index, request in enumerate(requests):
            messages = stage_messages(request)
            for _ in range(request.n):
                inputs.append(messages)
                owners.append(index)
        return inputs, owners

    def _samples(
        self, requests: Sequence[SampleRequest], owners: Sequence[int], replies: Sequence[BaseMessage]
    ) -> list[list[Sample]]:
        out: list[list[Sample]] = [[] for _ in requests]
        for index, reply in zip(owners, replies):
            out[index].append(sample_from_message(requests[index], reply))
        return out


def stage_messages(request: SampleRequest) -> list[BaseMessage]:
    """The messages that ask a chat model for what ``request`` wants."""
    ask = read_prefix(request.prefix, request.stop)
    conversation = request.conversation
    if ask is not None:
        return to_langchain_messages(conversation, stage_request_text(conversation.question, ask))
    if request.prefix:
        return to_langchain_messages(conversation, prefix_request_text(conversation.question, request.prefix))
    return to_langchain_messages(conversation)


def sample_from_message(request: SampleRequest, message: BaseMessage) -> Sample:
    """Turn a chat model's reply into a :class:`Sample` of what ``request`` asked for."""
    reply = message.text if isinstance(message.text, str) else str(message.content)
    ask = read_prefix(request.prefix, request.stop)
    if ask is not None:
        found = extract_stages(reply, ask)
        start, end, closed = found.start, found.end, found.closed
    else:
        found, start, end, closed = None, _after_prefix(reply, request.prefix), len(reply), False
    text, stopped = cut_at_stop(reply[start:end], request.stop)
    repairs = stage_repairs(found, ask, stopped) if found and ask else ()
    if repairs:
        logger.debug("Repaired a drifting stage: %s.", "; ".join(repairs))
    usage = getattr(message, "usage_metadata", None) or {}
    tokens = message_logprobs(message.response_metadata)
    metadata = message.response_metadata
    reason = metadata.get("finish_reason") or metadata.get("done_reason")
    return Sample(
        text=text,
        finish_reason="length" if reason == "length" and not (stopped or closed) else "stop",
        token_logprobs=span_logprobs(tokens, text, start) if tokens else None,
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
        repairs=repairs,
    )


def message_logprobs(metadata: Mapping[str, Any]) -> list[tuple[str, float]]:
    """``(token, logprob)`` pairs from ``response_metadata["logprobs"]``; empty when absent.

    Reads the OpenAI shape (``{"content": [{"token", "logprob"}, ...]}``) and a bare list
    of such entries (as Ollama gives them).
    """
    raw = metadata.get("logprobs")
    entries = raw.get("content") if isinstance(raw, Mapping) else raw
    if not isinstance(entries, list):
        return []
    return [
        (str(e.get("token", "")), float(e["logprob"]))
        for e in entries
        if isinstance(e, Mapping) and isinstance(e.get("logprob"), (int, float))
    ]


def _after_prefix(reply: str, prefix: str) -> int:
    stripped = reply.lstrip()
    if prefix and stripped.startswith(prefix.strip()):
        return len(reply) - len(stripped) + len(prefix.strip())
    return 0


def _model_name(chat_model: BaseChatModel) -> str:
    for attribute in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(chat_model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return chat_model._llm_type
