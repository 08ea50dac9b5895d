"""A grader for open answers: any LangChain chat model scores a prediction 0-1, as MM-Vet's grader does.

The grader is shown the question, the expected answer and the model's answer, and replies with a
score between 0.0 (wrong) and 1.0 (right); partly right answers get what lies between. Its prompt
and its reply are kept in the answer's record. A reply with no score in it counts 0 and is marked
unreadable:

>>> from langchain_core.language_models import FakeListChatModel
>>> from langchain_llava_cot.eval.data import EvalQuestion
>>> import asyncio
>>> grader = Grader(FakeListChatModel(responses=["0.5"]))
>>> question = EvalQuestion("1", 0, "What is on the table?", "a red cup and a blue plate")
>>> grade = asyncio.run(grader.agrade(question, "a red cup"))
>>> grade.score, grade.readable, grade.verdict
(0.5, True, '0.5')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_llava_cot.eval.data import EvalQuestion

__all__ = ["GRADER_PROMPT", "Grade", "Grader", "grader_from_spec", "read_grade"]

GRADER_PROMPT = """You check answers to questions about pictures. Compare the model's answer with the \
correct answer and score it from 0.0 to 1.0: 1.0 when it says what the correct answer says (in any \
wording), 0.0 when it is wrong, says something else, or refuses, and a score in between when it is \
partly right (0.5 when it gets one of two required parts). Reply with the score alone.

Question: How many apples are on the plate?
Correct answer: 3
Model's answer: There are three apples.
Score: 1.0

Question: What colours is the flag?
Correct answer: red and white
Model's answer: red
Score: 0.5

Question: {question}
Correct answer: {answer}
Model's answer: {prediction}
Score:"""
"""The grader's prompt; ``{question}``, ``{answer}`` and ``{prediction}`` are filled in."""

_SCORE = re.compile(r"(?<![\d.])(?:1(?:\.0+)?|0(?:\.\d+)?|\.\d+)(?![\d.])")


@dataclass(frozen=True)
class Grade:
    """A grader's score of one prediction, with what it was asked and what it said."""

    score: float
    readable: bool
    prompt: str
    verdict: str


def read_grade(verdict: str) -> float | None:
    """The first score between 0 and 1 in a grader's reply, or None.

    >>> read_grade("Score: 0.7"), read_grade("1"), read_grade("I cannot tell.")
    (0.7, 1.0, None)
    """
    found = _SCORE.search(verdict)
    return float(found.group()) if found else None


class Grader:
    """Score open answers with a LangChain chat model (MM-Vet-style 0-1 scores).

    Args:
        model: Any LangChain chat model; a deterministic one (temperature 0) gives repeatable scores.
        prompt: The prompt, with ``{question}``, ``{answer}`` and ``{prediction}`` to fill in.
    """

    def __init__(self, model: Any, prompt: str = GRADER_PROMPT) -> None:
        from langchain_core.language_models import BaseChatModel

        if not isinstance(model, BaseChatModel):
            msg = f"The grader must be a LangChain chat model, got {type(model).__name__}."
            raise TypeError(msg)
        self.model = model
        self.prompt = prompt

    async def agrade(self, question: EvalQuestion, prediction: str) -> Grade:
        """Ask the grader to score ``prediction`` against ``question``'s answer."""
        from langchain_core.messages import HumanMessage

        prompt = self.prompt.format(question=question.prompt(), answer=question.answer, prediction=prediction)
        reply = await self.model.ainvoke([HumanMessage(content=prompt)])
        verdict = reply.text if hasattr(reply, "text") and isinstance(reply.text, str) else str(reply.content)
        score = read_grade(verdict)
        return Grade(score if score is not None else 0.0, score is not None, prompt, verdict)


def grader_from_spec(spec: str) -> Grader:
    """A grader from ``--grader PROVIDER:MODEL`` (LangChain's ``init_chat_model``, temperature 0)."""
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as e:
        msg = "--grader needs langchain and the provider's package: pip install langchain langchain-openai."
        raise ImportError(msg) from e
    try:
        return Grader(init_chat_model(spec, temperature=0))
    except ImportError:
        raise
    except Exception as e:
        msg = f"Cannot make the grader {spec!r} ({e}). Write PROVIDER:MODEL, e.g. openai:gpt-4o-mini."
        raise ValueError(msg) from e
