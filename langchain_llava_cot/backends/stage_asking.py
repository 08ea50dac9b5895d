r"""The stage-asking protocol: how a model that cannot continue a message is asked for a stage.

The engine asks every backend to continue an assistant prefix (the chosen stages, then
the next opening tag). A generic chat model, or a server that ignores a partial
assistant message, cannot; the LangChain chat-model backend and the OpenAI-compatible
backend both ask for the stage explicitly instead, and read it back, with these helpers:

Asking:
    prefix
      -> :func:`read_prefix`: the prefix as a :class:`StageAsk`: which stages were chosen,
         which to write next (None for a prefix that is not the engine's)
      -> :func:`stage_request_text`: the question, the stages so far and an instruction to
         write only the next stage(s) in their tags; :func:`prefix_request_text` for any
         other prefix

Reading back:
    reply text
      -> :func:`extract_stages`: the stage text between its tags, repaired when the model
         drifts (untagged text, a whole four-stage answer, a missing close tag);
         :func:`after_prefix` skips an echoed prefix
      -> :func:`cut_at_stop`: cut before the request's stop strings
      -> :func:`stage_repairs`: what was mended; :func:`span_logprobs`: the log-probabilities
         of the kept tokens

All functions are pure.

>>> ask = read_prefix("<SUMMARY> count </SUMMARY>\n\n<CAPTION>", ("</CAPTION>",))
>>> ask.first.value, ask.chosen
('caption', {<Stage.SUMMARY: 'summary'>: 'count'})
>>> extract_stages("Three red squares.", ask).text
'Three red squares.'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_llava_cot.stages import STAGES, TAG_NAMES, Stage, parse_answer, render_answer

__all__ = [
    "Extracted",
    "StageAsk",
    "after_prefix",
    "cut_at_stop",
    "extract_stages",
    "prefix_request_text",
    "read_prefix",
    "span_logprobs",
    "stage_repairs",
    "stage_request_text",
]

_OPEN_TAG_AT_END = re.compile(rf"<({TAG_NAMES})>\s*$")
_CLOSE_TAG = re.compile(rf"</({TAG_NAMES})>")
_ANY_TAG = re.compile(rf"</?(?:{TAG_NAMES})>", re.IGNORECASE)


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


def after_prefix(reply: str, prefix: str) -> int:
    """Where a reply to :func:`prefix_request_text` goes on after the prefix it echoed (0 if it did not)."""
    stripped = reply.lstrip()
    if prefix and stripped.startswith(prefix.strip()):
        return len(reply) - len(stripped) + len(prefix.strip())
    return 0


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
