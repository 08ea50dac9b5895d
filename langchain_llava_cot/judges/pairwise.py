"""The paper's self-judge: the model compares two candidates at a time, in a knockout.

Each round pairs up the remaining candidates at random and judges all pairs in one
batched backend call, so N candidates take N-1 comparisons in ceil(log2 N) calls. Where
the backend can score choices, a verdict is read from one forward pass (the
log-probabilities of "1" and "2" after
:data:`~langchain_llava_cot.judges.prompts.VERDICT_PREFIX`); otherwise the model writes a
verdict and it is parsed. An unparseable verdict is logged and keeps the
candidate with the higher mean token log-probability, or the first of the pair when that
is unknown. By default, reasoning candidates are first checked alone
(:class:`VerifierJudge`): one found wrong loses without a comparison, unless all are.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from langchain_llava_cot._calls import ChoiceCall, SampleCall, Step
from langchain_llava_cot.backends.base import SampleRequest, VLMBackend
from langchain_llava_cot.judges.base import (
    Comparison,
    Judge,
    JudgeTask,
    Verdict,
    check_verdict_tokens,
    reads_logits,
)
from langchain_llava_cot.judges.prompts import pairwise_prompt, parse_verdict, verdict_choice
from langchain_llava_cot.judges.verifier import VerifierJudge
from langchain_llava_cot.stages import Stage

__all__ = ["PairwiseJudge"]

logger = logging.getLogger(__name__)


@dataclass
class PairwiseJudge(Judge):
    """The paper's self-judge: a knockout of pairwise comparisons by the model itself.

    ``backend`` judges with another model than the one that samples (see
    :func:`~langchain_llava_cot.judges.resolve.chat_model_judge` for any LangChain chat model).
    """

    seed: int | None = None
    """Seed of the random pairing; None draws a fresh pairing each time."""
    read_logits: bool | None = None
    """Read verdicts from one forward pass; None does so whenever the backend can."""
    max_verdict_tokens: int = 32
    """Token limit of a generated verdict."""
    precheck: bool = True
    """The paper's reasoning pre-check: first verify each reasoning candidate alone
    (:class:`VerifierJudge`); one found wrong loses without a comparison, unless all are."""
    backend: VLMBackend | None = None
    """The model that judges; None uses the search's own backend."""
    name: str = field(default="pairwise", init=False)

    def __post_init__(self) -> None:
        check_verdict_tokens(self.max_verdict_tokens)

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Run the pre-check (reasoning), then the knockout, one batched backend call per round."""
        backend = self.backend or backend
        if backend is None:
            msg = "The pairwise judge needs a backend to ask: PairwiseJudge(backend=...) or the search's own."
            raise ValueError(msg)
        rng = random.Random(self.seed)
        alive = list(range(len(task.candidates)))
        comparisons: list[Comparison] = []
        prompt_tokens = completion_tokens = calls = 0
        if self.precheck and task.stage is Stage.REASONING and len(set(task.candidates)) > 1:
            checked = yield from VerifierJudge(
                backend, read_logits=self.read_logits, max_verdict_tokens=self.max_verdict_tokens
            ).score(task, backend)
            passed = [i for i in alive if (checked.scores[i] or 0.0) >= 0.0]
            alive = passed or alive
            for check in checked.comparisons:
                outcome = "passed" if check.first in passed else "failed"
                comparisons.append(replace(check, method="precheck", detail=f"{check.detail} {outcome}"))
            prompt_tokens, completion_tokens = checked.prompt_tokens, checked.completion_tokens
            calls = checked.calls
        rng.shuffle(alive)
        while len(alive) > 1:
            pairs = [(alive[i], alive[i + 1]) for i in range(0, len(alive) - 1, 2)]
            bye = [alive[-1]] if len(alive) % 2 else []
            asked = [p for p in pairs if task.candidates[p[0]] != task.candidates[p[1]]]
            outcomes: dict[tuple[int, int], Comparison] = {
                p: Comparison(p[0], p[1], p[0], "identical") for p in pairs if p not in asked
            }
            if asked:
                calls += 1
                if self._reads_logits(backend):
                    decided, used = yield from self._compare_by_logits(task, asked, backend)
                    prompt_tokens += used
                else:
                    decided, used, written = yield from self._compare_by_text(task, asked, backend)
                    prompt_tokens, completion_tokens = prompt_tokens + used, completion_tokens + written
                outcomes.update(zip(asked, decided))
            comparisons.extend(outcomes[p] for p in pairs)
            alive = bye + [outcomes[p].winner for p in pairs]
        return Verdict(alive[0], tuple(comparisons), prompt_tokens, completion_tokens, calls)

    def _reads_logits(self, backend: VLMBackend) -> bool:
        return reads_logits(backend, self.read_logits)

    def _compare_by_logits(
        self, task: JudgeTask, pairs: Sequence[tuple[int, int]], backend: VLMBackend
    ) -> Step[tuple[list[Comparison], int]]:
        requests = tuple(verdict_choice(task, a, b) for a, b in pairs)
        results = yield ChoiceCall(requests, backend)
        decided = []
        for (a, b), result in zip(pairs, results):
            one, two = result.logprobs
            winner = a if one >= two else b
            decided.append(Comparison(a, b, winner, "logits", f"logprob 1={one:.3f} 2={two:.3f}"))
        return decided, sum(r.prompt_tokens for r in results)

    def _compare_by_text(
        self, task: JudgeTask, pairs: Sequence[tuple[int, int]], backend: VLMBackend
    ) -> Step[tuple[list[Comparison], int, int]]:
        requests = tuple(
            SampleRequest(pairwise_prompt(task, a, b), prefix="", max_new_tokens=self.max_verdict_tokens)
            for a, b in pairs
        )
        results = yield SampleCall(requests, backend)
        decided = []
        for (a, b), [sample] in zip(pairs, results):
            choice = parse_verdict(sample.text)
            if choice is None:
                winner = _fallback_winner(task, a, b)
                logger.warning("Unparseable judge verdict %r; keeping candidate %d.", sample.text, winner)
                decided.append(Comparison(a, b, winner, "unparseable", sample.text))
            else:
                decided.append(Comparison(a, b, a if choice == 1 else b, "generated", sample.text))
        prompt = sum(s.prompt_tokens for [s] in results)
        return decided, prompt, sum(s.completion_tokens for [s] in results)


def _fallback_winner(task: JudgeTask, a: int, b: int) -> int:
    scores = task.mean_logprobs
    first, second = (scores[a], scores[b]) if len(scores) > max(a, b) else (None, None)
    if first is not None and second is not None:
        return a if first >= second else b
    return a
