"""A scripted backend: candidates and verdicts the test decides, no model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_llava_cot.backends.base import ChoiceRequest, ChoiceResult, Sample, SampleRequest, VLMBackend
from langchain_llava_cot.stages import STAGES, Stage


def _open_stage(prefix: str) -> Stage:
    """The stage whose opening tag ends the prefix."""
    return next(s for s in STAGES if prefix.endswith(s.open_tag))


def _is_check(prompt: str) -> bool:
    """Whether a judge prompt asks about one candidate (the verifier) rather than a pair."""
    return "\nCandidate: " in prompt


def _compared(prompt: str) -> tuple[str, str]:
    """The two responses a pairwise judge prompt compares."""
    first = prompt.split("Response 1: ")[1].split("\nResponse 2: ")[0]
    second = prompt.split("Response 2: ")[1].split("\nWhich is better?")[0]
    return first, second


def _checked(prompt: str) -> str:
    return prompt.split("\nCandidate: ")[1].split("\nIs it right?")[0]


SCRIPT = {
    Stage.SUMMARY: [" count the red circles </SUMMARY>"],
    Stage.CAPTION: [
        " two red circles </CAPTION>",
        " three red circles </CAPTION>",
        " one blue square </CAPTION>",
    ],
    Stage.REASONING: [" the caption lists three </REASONING>", " so two </REASONING>"],
    Stage.CONCLUSION: [" 3 </CONCLUSION>", " 2 </CONCLUSION>"],
}
"""A search about red circles: the right candidates say three, or 3."""


def prefers_three(text: str) -> float:
    """A pairwise preference for texts that say three or 3."""
    return text.count("three") + text.count("3")


def says_three(text: str) -> float:
    """A verifier that believes in three: +2 for texts that say three or 3, -2 otherwise."""
    return 2.0 if "three" in text or "3" in text else -2.0


@dataclass
class ScriptedBackend(VLMBackend):
    """Returns scripted continuations per stage and prefers candidates by a score.

    ``script[stage]`` lists the continuations (text after the opening tag, including the
    closing tag when the model would close it) handed out in turn. ``prefer`` scores a
    candidate text; the pairwise verdict favours the higher score.
    """

    script: dict[Stage, list[str]]
    prefer: Callable[[str], float] = lambda text: 0.0
    supports_choice: bool = True
    gives_logprobs: bool | None = True
    """Whether its samples carry token log-probabilities (False: none, as many servers)."""
    verdict_text: str | None = None
    """When set, free-text verdicts return this text instead of a parsed choice."""
    check: Callable[[str], float] = lambda text: 1.0
    """The verifier's score (log p(right) - log p(wrong)) of a candidate text."""
    sample_calls: list[Sequence[SampleRequest]] = field(default_factory=list)
    choice_calls: list[Sequence[ChoiceRequest]] = field(default_factory=list)
    model_name: str = "scripted"

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        self.sample_calls.append(requests)
        return [self._sample_one(r) for r in requests]

    def _sample_one(self, request: SampleRequest) -> list[Sample]:
        if not request.prefix:  # a free-text judge verdict
            question = request.conversation.question
            if _is_check(question):
                verdict = "right" if self.check(_checked(question)) >= 0 else "wrong"
                text = self.verdict_text or f"The candidate is {verdict}."
            else:
                text = self.verdict_text or f"The better response is {self._preferred(question)}."
            return [Sample(text, "stop", prompt_tokens=10, completion_tokens=5)]
        stage = _open_stage(request.prefix)
        scripted = self.script[stage]
        out = []
        for i in range(request.n):
            raw = scripted[i % len(scripted)]
            stop = next((s for s in request.stop if s in raw), None)
            text = raw.split(stop)[0] if stop else raw
            out.append(
                Sample(
                    text,
                    "stop" if stop else "length",
                    token_logprobs=(-0.1 * (i + 1),) * 3 if self.gives_logprobs else None,
                    prompt_tokens=20,
                    completion_tokens=len(text.split()),
                )
            )
        return out

    def _preferred(self, judge_prompt: str) -> int:
        first, second = _compared(judge_prompt)
        return 1 if self.prefer(first) >= self.prefer(second) else 2

    def choose(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        self.choice_calls.append(requests)
        results = []
        for request in requests:
            question = request.conversation.question
            if _is_check(question):
                score = self.check(_checked(question))
                results.append(ChoiceResult((score / 2 - 1.0, -score / 2 - 1.0), prompt_tokens=25))
                continue
            one = self._preferred(question) == 1
            results.append(ChoiceResult((-0.1, -2.0) if one else (-2.0, -0.1), prompt_tokens=30))
        return results


class JudgingChat(BaseChatModel):
    """A LangChain chat model that judges like :class:`ScriptedBackend`.

    It prefers texts with "three", and reports 100 prompt and 7 completion tokens per reply.
    """

    received: list[list[BaseMessage]] = []
    garbled: bool = False
    """Answer every judge prompt with something that is no verdict."""

    @property
    def _llm_type(self) -> str:
        return "judging-fake"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.received.append(messages)
        prompt = messages[-1].text
        if self.garbled:
            reply = "I like both of them."
        elif _is_check(prompt):
            reply = f"The candidate is {'right' if 'three' in _checked(prompt) else 'wrong'}."
        else:
            first, _ = _compared(prompt)
            reply = f"The better response is {1 if 'three' in first else 2}."
        usage = {"input_tokens": 100, "output_tokens": 7, "total_tokens": 107}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply, usage_metadata=usage))])
