"""What model judges ask, and how their written verdicts are read.

- :func:`pairwise_prompt` asks which of two candidates is better; :func:`verdict_choice`
  reads the answer from one forward pass, :func:`parse_verdict` from a written verdict
  (``1`` or ``2`` after :data:`VERDICT_PREFIX`).
- :func:`verifier_prompt` asks whether one candidate is right; :func:`parse_check` reads
  a written verdict (``right`` or ``wrong`` after :data:`VERIFY_PREFIX`) as a score.
- :func:`reward_text` renders a candidate in its context for a text reward model
  (:func:`answer_text`: the answer so far, for a reward model that reads the conversation).
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from langchain_llava_cot.backends.base import ChoiceRequest
from langchain_llava_cot.conversation import Conversation
from langchain_llava_cot.judges.base import JudgeTask
from langchain_llava_cot.stages import ANSWER_CRITERION, Stage, render_answer

__all__ = [
    "VERDICT_PREFIX",
    "VERIFY_OPTIONS",
    "VERIFY_PREFIX",
    "answer_text",
    "pairwise_prompt",
    "parse_check",
    "parse_verdict",
    "reward_text",
    "verdict_choice",
    "verifier_prompt",
]

logger = logging.getLogger(__name__)

VERDICT_PREFIX = "The better response is"
"""How a pairwise verdict begins; the next token is ``1`` or ``2``."""

VERIFY_PREFIX = "The candidate is"
"""How a verifier's verdict begins; the next word is ``right`` or ``wrong``."""

VERIFY_OPTIONS = (" right", " wrong")
"""The verifier's two verdicts, as they follow :data:`VERIFY_PREFIX`."""

_VERDICT_PATTERN = re.compile(r"better response is\s*(?:response\s*)?([12])\b", re.IGNORECASE)

_VERDICT_WORDS = re.compile(r"candidate is\s*(not\s+)?(right|wrong|correct|incorrect)\b", re.IGNORECASE)
_BARE_WORDS = re.compile(r"\b(not\s+)?(right|wrong|correct|incorrect)\b", re.IGNORECASE)


def pairwise_prompt(task: JudgeTask, first: int, second: int) -> Conversation:
    """The conversation that asks the model to compare two candidates.

    The demo model is trained on exactly this format (see ``langchain_llava_cot.demo``).
    """
    return _judge_turn(
        task,
        "Compare two candidates",
        [f"Response 1: {task.candidates[first]}", f"Response 2: {task.candidates[second]}"],
        f'Which is better? Answer "{VERDICT_PREFIX} 1." or "{VERDICT_PREFIX} 2."',
    )


def verifier_prompt(task: JudgeTask, index: int) -> Conversation:
    """The conversation that asks the model whether one candidate is right.

    The demo model is trained on exactly this format (see ``langchain_llava_cot.demo``).
    """
    return _judge_turn(
        task,
        "Check one candidate",
        [f"Candidate: {task.candidates[index]}"],
        f'Is it right? Answer "{VERIFY_PREFIX} right." or "{VERIFY_PREFIX} wrong."',
    )


def _judge_turn(task: JudgeTask, ask: str, candidates: list[str], answer: str) -> Conversation:
    """A judge's question after the picture: the question, the chosen stages, the candidates."""
    label, criterion = _label_and_criterion(task.stage)
    earlier = render_answer(task.chosen) if task.chosen else "none"
    lines = [
        f"Question: {task.conversation.question}",
        f"Earlier stages: {earlier}",
        f"{ask} for the {label}. {criterion}",
        *candidates,
        answer,
    ]
    return task.conversation.with_user_turn("\n".join(lines))


def _label_and_criterion(stage: Stage | None) -> tuple[str, str]:
    if stage is None:
        return "whole answer", ANSWER_CRITERION
    return f"{stage.value} stage", stage.criterion


def verdict_choice(task: JudgeTask, first: int, second: int) -> ChoiceRequest:
    """Ask which of two candidates is better, read as the log-probabilities of " 1" and " 2"."""
    return ChoiceRequest(pairwise_prompt(task, first, second), prefix=VERDICT_PREFIX, options=(" 1", " 2"))


def parse_verdict(text: str) -> Literal[1, 2] | None:
    """Read ``1`` or ``2`` from a generated verdict; None when it names neither."""
    matches = _VERDICT_PATTERN.findall(text)
    if not matches:
        return None
    return 1 if matches[-1] == "1" else 2


def parse_check(text: str) -> float:
    """A generated verifier verdict as a score: +1 right, -1 wrong, 0 when it says neither."""
    matches = _VERDICT_WORDS.findall(text) or _BARE_WORDS.findall(text)
    if not matches:
        logger.warning("Unparseable verifier verdict %r; scoring it 0.", text)
        return 0.0
    negated, word = matches[-1]  # the verdict comes last, as in "The candidate is wrong."
    right = word.lower() in ("right", "correct")
    return 1.0 if right != bool(negated) else -1.0


def answer_text(task: JudgeTask, index: int) -> str:
    """The answer so far with candidate ``index`` in its stage's tags (a whole answer as it is)."""
    candidate = task.candidates[index]
    return candidate if task.stage is None else render_answer({**task.chosen, task.stage: candidate})


def reward_text(task: JudgeTask, index: int) -> str:
    """Candidate ``index`` in its context, as a text reward model reads it.

    The question, then the answer so far with the candidate in its stage's tags.
    """
    return f"Question: {task.conversation.question}\n\n{answer_text(task, index)}"
