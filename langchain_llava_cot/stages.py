"""The four-stage answer protocol of LLaVA-CoT.

A LLaVA-CoT answer is four tagged stages, in this order::

    <SUMMARY> outline of the task and approach </SUMMARY>

    <CAPTION> the parts of the image that matter </CAPTION>

    <REASONING> step-by-step analysis </REASONING>

    <CONCLUSION> the answer </CONCLUSION>

This module owns the tags, the per-stage judging criteria, rendering a chosen prefix,
and a parser that never raises on malformed model output:

>>> parsed = parse_answer("<SUMMARY> count </SUMMARY> <CONCLUSION> 3")
>>> parsed.stages[Stage.CONCLUSION], [s.value for s in parsed.missing]
('3', ['caption', 'reasoning'])
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "ANSWER_CRITERION",
    "STAGES",
    "STAGE_SEPARATOR",
    "ParsedAnswer",
    "Stage",
    "cut_stage",
    "parse_answer",
    "render_answer",
    "render_stage",
]


class Stage(str, Enum):
    """One stage of a LLaVA-CoT answer."""

    SUMMARY = "summary"
    CAPTION = "caption"
    REASONING = "reasoning"
    CONCLUSION = "conclusion"

    @property
    def tag(self) -> str:
        """The tag name, e.g. ``SUMMARY``."""
        return self.value.upper()

    @property
    def open_tag(self) -> str:
        """The opening tag, e.g. ``<SUMMARY>``."""
        return f"<{self.tag}>"

    @property
    def close_tag(self) -> str:
        """The closing tag, e.g. ``</SUMMARY>``."""
        return f"</{self.tag}>"

    @property
    def criterion(self) -> str:
        """What makes one candidate of this stage better than another."""
        return _CRITERIA[self]

    @property
    def guide(self) -> str:
        """What the stage holds, as a prompt that asks for it says."""
        return _GUIDES[self]


STAGES: tuple[Stage, ...] = tuple(Stage)
"""The stages in the order the model writes them."""

STAGE_SEPARATOR = "\n\n"
"""What stands between two rendered stages."""

_CRITERIA = {
    Stage.SUMMARY: (
        "The better summary states what the question asks and how it will be answered, "
        "without answering it yet."
    ),
    Stage.CAPTION: (
        "The better caption describes the parts of the image the question needs, "
        "with fewer mistakes about what is there."
    ),
    Stage.REASONING: (
        "The better reasoning follows from the caption step by step and makes no logical or counting error."
    ),
    Stage.CONCLUSION: (
        "The better conclusion agrees with the reasoning and gives a direct answer instead of refusing."
    ),
}

_GUIDES = {
    Stage.SUMMARY: "a short outline of the task and how you will solve it, without solving it",
    Stage.CAPTION: "a description of the parts of the image that matter for the question",
    Stage.REASONING: "the step-by-step reasoning from the caption to the answer",
    Stage.CONCLUSION: "the final answer",
}

ANSWER_CRITERION = (
    "The better answer has an accurate caption, reasoning that follows from it, "
    "and a conclusion that agrees with the reasoning."
)
"""The criterion used when whole answers are judged (best-of-N)."""

TAG_NAMES = "|".join(stage.tag for stage in Stage)
"""The tag names as a regular-expression alternation: ``SUMMARY|CAPTION|REASONING|CONCLUSION``."""

_TAG_PATTERN = re.compile(rf"<(/?)({TAG_NAMES})>", re.IGNORECASE)


def render_stage(stage: Stage, text: str) -> str:
    """Render one stage with its tags: ``<CAPTION> text </CAPTION>``."""
    return f"{stage.open_tag} {text.strip()} {stage.close_tag}"


def render_answer(stages: Mapping[Stage, str]) -> str:
    """Render the given stages in protocol order, separated by blank lines."""
    return STAGE_SEPARATOR.join(render_stage(s, stages[s]) for s in STAGES if s in stages)


@dataclass(frozen=True)
class ParsedAnswer:
    """What :func:`parse_answer` found in a model's text."""

    stages: dict[Stage, str]
    """The text of each stage found, without tags."""
    missing: tuple[Stage, ...]
    """Stages with no text at all."""
    problems: tuple[str, ...] = field(default=())
    """Human-readable notes on anything malformed."""

    @property
    def well_formed(self) -> bool:
        """Whether all four stages are present, closed and in order, with nothing else."""
        return not self.missing and not self.problems

    @property
    def conclusion(self) -> str:
        """The conclusion, or the last stage found when there is none."""
        if Stage.CONCLUSION in self.stages:
            return self.stages[Stage.CONCLUSION]
        return next((self.stages[s] for s in reversed(STAGES) if s in self.stages), "")


def parse_answer(text: str) -> ParsedAnswer:
    """Pull the stages out of model text; never raises.

    Tolerates missing, unclosed, repeated and out-of-order tags and text outside tags,
    and reports each in ``problems``. Text with no tags at all is taken as the
    conclusion. The first occurrence of a repeated stage is kept.
    """
    stages: dict[Stage, str] = {}
    problems: list[str] = []
    open_stage: Stage | None = None
    body_start = 0
    cursor = 0
    last_index = -1

    def close(stage: Stage, end: int) -> None:
        nonlocal last_index
        body = text[body_start:end].strip()
        if stage in stages:
            problems.append(f"{stage.open_tag} repeated; the first one is kept")
            return
        if STAGES.index(stage) < last_index:
            problems.append(f"{stage.open_tag} out of order")
        last_index = max(last_index, STAGES.index(stage))
        stages[stage] = body

    for match in _TAG_PATTERN.finditer(text):
        is_close, stage = match.group(1) == "/", Stage(match.group(2).lower())
        if open_stage is None:
            if text[cursor : match.start()].strip():
                problems.append("text outside tags")
            if is_close:
                problems.append(f"{stage.close_tag} without {stage.open_tag}")
            else:
                open_stage, body_start = stage, match.end()
        elif is_close and stage is open_stage:
            close(open_stage, match.start())
            open_stage = None
        elif is_close:
            problems.append(f"{stage.close_tag} inside {open_stage.open_tag}")
        else:
            problems.append(f"{open_stage.open_tag} not closed")
            close(open_stage, match.start())
            open_stage, body_start = stage, match.end()
        cursor = match.end()

    if open_stage is not None:
        problems.append(f"{open_stage.open_tag} not closed")
        close(open_stage, len(text))
    elif not stages and text.strip():
        problems.append("no stage tags; the whole text is taken as the conclusion")
        stages[Stage.CONCLUSION] = text.strip()
    elif text[cursor:].strip():
        problems.append("text outside tags")

    missing = tuple(s for s in STAGES if not stages.get(s))
    return ParsedAnswer(stages=stages, missing=missing, problems=tuple(problems))


def cut_stage(stage: Stage, generated: str) -> tuple[str, bool]:
    """Cut a continuation that began right after ``stage``'s opening tag.

    Returns the stage's text and whether it was properly closed. The text ends at the
    closing tag, or at any other stage tag the model wrote instead; a continuation
    with neither (cut at its token limit) is returned whole and reported unclosed.
    """
    match = _TAG_PATTERN.search(generated)
    if match is None:
        return generated.strip(), False
    closed = match.group(1) == "/" and match.group(2).lower() == stage.value
    return generated[: match.start()].strip(), closed
