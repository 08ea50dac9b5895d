"""A judge that checks each candidate on its own, as a reward model does: :class:`VerifierJudge`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from langchain_llava_cot._calls import ChoiceCall, SampleCall, Step
from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest, VLMBackend
from langchain_llava_cot.judges.base import (
    Comparison,
    Judge,
    JudgeTask,
    StepScore,
    Verdict,
    best_index,
    check_verdict_tokens,
    reads_logits,
)
from langchain_llava_cot.judges.prompts import VERIFY_OPTIONS, VERIFY_PREFIX, parse_check, verifier_prompt
from langchain_llava_cot.stages import STAGES, Stage, parse_answer, render_stage

__all__ = ["VerifierJudge"]


@dataclass
class VerifierJudge(Judge):
    """Score each candidate on its own, as a reward model does, and keep the best.

    Each candidate is shown alone after the picture, the question and the chosen stages,
    with the stage's criterion, and the model is asked whether it is right
    (:func:`verifier_prompt`). The score is ``log p(right) - log p(wrong)`` read from one
    forward pass, all candidates in one batched call; where the backend cannot score
    choices the verdict is generated and parsed (``right`` +1, ``wrong`` -1, anything
    else 0). Whole answers (best-of-N) are scored stage by stage, and an answer scores
    its weakest stage. Identical candidates are scored once. Ties go to the higher mean
    token log-probability, then to the earlier candidate; when all candidates are the
    same text, nothing is asked.

    ``backend`` scores with another model than the one that samples: a bigger VLM, or a
    served generative reward model.
    """

    backend: VLMBackend | None = None
    """The model that verifies; None uses the search's own backend."""
    read_logits: bool | None = None
    """Read verdicts from one forward pass; None does so whenever the backend can."""
    max_verdict_tokens: int = 16
    """Token limit of a generated verdict."""
    answer_stages: tuple[Stage, ...] = (Stage.CAPTION, Stage.REASONING, Stage.CONCLUSION)
    """The stages verified when whole answers are judged (best-of-N)."""
    name: str = field(default="verifier", init=False)
    scores: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        check_verdict_tokens(self.max_verdict_tokens)
        if not self.answer_stages:
            msg = "answer_stages must name at least one stage, e.g. (Stage.REASONING, Stage.CONCLUSION)."
            raise ValueError(msg)

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Score every distinct candidate in one batched call; keep the highest score."""
        if len(set(task.candidates)) == 1:
            return Verdict(0)  # all the same: nothing to tell apart, no call
        scored = yield from self.score(task, backend)
        return replace(scored, winner=best_index(scored.scores, task.mean_logprobs))

    def score(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Each candidate's score, in a :class:`Verdict` whose winner is not chosen yet (0).

        Whole answers (``task.stage`` None, best-of-N) are scored stage by stage, as a process
        reward model scores steps: each of ``answer_stages`` is verified after the answer's own
        earlier stages, the answer's score is the lowest (its weakest stage), and each stage's
        score is in ``step_scores``. Identical candidates are scored once.
        """
        scorer = self.backend or backend
        if scorer is None:
            msg = "The verifier judge needs a backend to ask: VerifierJudge(backend=...) or the search's own."
            raise ValueError(msg)
        distinct = list(dict.fromkeys(task.candidates))
        first = {text: task.candidates.index(text) for text in distinct}
        checks = [(text, check) for text in distinct for check in self._checks(task, first[text])]
        if not checks:  # whole answers without any stage to verify
            return Verdict(0, scores=(None,) * len(task.candidates))
        margins: list[float]
        if reads_logits(scorer, self.read_logits):
            requests = tuple(
                ChoiceRequest(verifier_prompt(check, 0), prefix=VERIFY_PREFIX, options=VERIFY_OPTIONS)
                for _, check in checks
            )
            results = yield ChoiceCall(requests, scorer)
            margins = [_margin(*r.logprobs[:2]) for r in results]
            details = [f"logprob right-wrong={m:.3f}" for m in margins]
            method: Literal["logits", "generated"] = "logits"
            prompt, written = sum(r.prompt_tokens for r in results), 0
        else:
            asks = tuple(
                SampleRequest(verifier_prompt(check, 0), prefix="", max_new_tokens=self.max_verdict_tokens)
                for _, check in checks
            )
            replies = yield SampleCall(asks, scorer)
            margins = [parse_check(sample.text) for [sample] in replies]
            details = [sample.text for [sample] in replies]
            method = "generated"
            prompt = sum(s.prompt_tokens for [s] in replies)
            written = sum(s.completion_tokens for [s] in replies)
        by_text: dict[str, list[float]] = {}
        for (text, _), margin in zip(checks, margins):
            by_text.setdefault(text, []).append(margin)
        comparisons = tuple(
            Comparison(first[text], first[text], first[text], method, detail)
            for (text, _), detail in zip(checks, details)
        )
        scores = tuple(min(by_text[text]) if text in by_text else None for text in task.candidates)
        steps: tuple[tuple[StepScore, ...] | None, ...] = ()
        if task.stage is None:  # a whole answer's stages are its steps
            by_stage: dict[str, list[StepScore]] = {}
            for (text, check), margin in zip(checks, margins):
                assert check.stage is not None
                by_stage.setdefault(text, []).append(
                    StepScore(render_stage(check.stage, check.candidates[0]), margin)
                )
            steps = tuple(tuple(by_stage[text]) if text in by_stage else None for text in task.candidates)
        return Verdict(0, comparisons, prompt, written, calls=1, scores=scores, step_scores=steps)

    def _checks(self, task: JudgeTask, index: int) -> list[JudgeTask]:
        """The one-candidate questions that score candidate ``index``."""
        if task.stage is not None:
            return [replace(task, candidates=(task.candidates[index],), mean_logprobs=())]
        stages = parse_answer(task.candidates[index]).stages
        checks = []
        for stage in self.answer_stages:
            if stage in stages:
                earlier = {s: stages[s] for s in STAGES[: STAGES.index(stage)] if s in stages}
                checks.append(
                    JudgeTask(task.conversation, stage, {**task.chosen, **earlier}, (stages[stage],))
                )
        return checks


_MARGIN_LIMIT = 100.0


def _margin(right: float, wrong: float) -> float:
    """``right - wrong``, kept finite (a verdict missing from a server's top tokens is -inf)."""
    if right == wrong or math.isnan(right) or math.isnan(wrong):
        return 0.0
    return max(-_MARGIN_LIMIT, min(_MARGIN_LIMIT, right - wrong))
