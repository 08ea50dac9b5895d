"""Judges: pick the best of a stage's candidates.

- :class:`PairwiseJudge` is the paper's self-judge: the model itself compares two
  candidates under the stage's criterion, in a knockout. Each round pairs up the
  remaining candidates at random and judges all pairs in one batched backend call,
  so N candidates take N-1 comparisons in ceil(log2 N) calls. Where the backend can
  score choices, a verdict is read from one forward pass (the log-probabilities of
  "1" and "2" after :data:`VERDICT_PREFIX`); otherwise the model writes a verdict and
  it is parsed. An unparseable verdict is logged and keeps the candidate with the
  higher mean token log-probability, or the first of the pair when that is unknown.
- :class:`LikelihoodJudge` keeps the candidate with the highest mean token log-probability.
- :class:`HumanJudge` asks a person: the judge node interrupts the graph with the
  candidates (LangGraph ``interrupt``) and resumes with ``Command(resume=<index>)``.
  It needs a checkpointer; sampling happens in the expand node, so resuming never
  samples again.
- Any callable ``judge(task: JudgeTask) -> int`` (sync or async) returning the index
  of the best candidate is a judge too.

>>> from langchain_llava_cot.conversation import Conversation, Turn
>>> task = JudgeTask(
...     conversation=Conversation((Turn("user", "How many?"),)),
...     stage=Stage.CONCLUSION, chosen={}, candidates=("2", "3"), mean_logprobs=(-0.9, -0.2))
>>> from langchain_llava_cot._calls import drive
>>> drive(LikelihoodJudge().select(task, backend=None), backend=None).winner
1
"""

from __future__ import annotations

import logging
import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Union

from langchain_core.language_models import BaseChatModel

from langchain_llava_cot._calls import ChoiceCall, FunctionCall, SampleCall, Step, finished
from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest, VLMBackend
from langchain_llava_cot.conversation import Conversation
from langchain_llava_cot.stages import ANSWER_CRITERION, STAGES, Stage, parse_answer, render_answer

__all__ = [
    "VERDICT_PREFIX",
    "VERIFY_OPTIONS",
    "VERIFY_PREFIX",
    "BuiltinJudge",
    "Comparison",
    "FunctionJudge",
    "HumanJudge",
    "Judge",
    "JudgeSpec",
    "JudgeTask",
    "LikelihoodJudge",
    "PairwiseJudge",
    "ScoreJudge",
    "StageJudges",
    "Verdict",
    "VerifierJudge",
    "VoteJudge",
    "best_index",
    "ranked",
    "chat_model_judge",
    "human_judge_request",
    "pairwise_prompt",
    "parse_check",
    "parse_verdict",
    "resolve_judge",
    "reward_text",
    "verdict_choice",
    "verifier_prompt",
    "vote_key",
]

logger = logging.getLogger(__name__)

VERDICT_PREFIX = "The better response is"
"""How a pairwise verdict begins; the next token is ``1`` or ``2``."""

VERIFY_PREFIX = "The candidate is"
"""How a verifier's verdict begins; the next word is ``right`` or ``wrong``."""

VERIFY_OPTIONS = (" right", " wrong")
"""The verifier's two verdicts, as they follow :data:`VERIFY_PREFIX`."""

_VERDICT_PATTERN = re.compile(r"better response is\s*(?:response\s*)?([12])\b", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeTask:
    """What a judge sees: the request, what was chosen so far, and the candidates."""

    conversation: Conversation
    stage: Stage | None
    """The stage being judged; None when whole answers are judged."""
    chosen: Mapping[Stage, str]
    """Stages chosen before this one."""
    candidates: tuple[str, ...]
    mean_logprobs: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """One pairwise decision."""

    first: int
    second: int
    winner: int
    method: Literal["logits", "generated", "unparseable", "identical", "precheck"]
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    """A judge's choice and how it was reached."""

    winner: int
    comparisons: tuple[Comparison, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    scores: tuple[float | None, ...] = ()
    """Each candidate's score, for judges that score (higher is better)."""


class Judge(ABC):
    """Base class of the built-in judges."""

    name: str = "judge"
    scores: bool = False
    """Whether its verdicts score every candidate (``Verdict.scores``): what vote weights,
    retracing and adaptive width read."""

    @abstractmethod
    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Choose the best candidate, yielding any backend calls it needs."""

    def score(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Every candidate's score, even when all are the same text (for thresholds).

        Only for judges with :attr:`scores`; the default is :meth:`select`'s verdict.
        """
        if not self.scores:
            msg = f"The {self.name!r} judge does not score candidates."
            raise TypeError(msg)
        return self.select(task, backend)

    def vote_weight(self, score: float) -> float:
        """How much a candidate with ``score`` counts in a weighted vote.

        The score is read as log-odds that the candidate is right (a verifier's margin, a
        reward model's logit), so the weight is that probability.
        """
        return 0.5 * (1.0 + math.tanh(0.5 * score))  # the logistic function, without overflow


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


@dataclass
class PairwiseJudge(Judge):
    """The paper's self-judge: a knockout of pairwise comparisons by the model itself.

    ``backend`` judges with another model than the one that samples (see
    :func:`chat_model_judge` for any LangChain chat model).
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
        return _reads_logits(backend, self.read_logits)

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


@dataclass
class LikelihoodJudge(Judge):
    """Keep the candidate the model itself found most likely (mean token log-probability)."""

    name: str = field(default="likelihood", init=False)
    scores: bool = field(default=True, init=False)

    def vote_weight(self, score: float) -> float:
        """The geometric-mean probability of the candidate's tokens, ``exp(mean log-probability)``."""
        return math.exp(min(score, 0.0))

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Pick the highest mean log-probability; makes no backend call."""
        scores = task.mean_logprobs
        if len(scores) != len(task.candidates) or any(s is None for s in scores):
            msg = (
                "The likelihood judge needs token log-probabilities, and this backend gave "
                "none. Use judge='pairwise', or a server that returns logprobs."
            )
            raise ValueError(msg)
        best = max(range(len(scores)), key=lambda i: scores[i])  # type: ignore[arg-type,return-value]
        return finished(Verdict(best, scores=tuple(scores)))


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
        earlier stages, and the answer's score is the lowest (its weakest stage). Identical
        candidates are scored once.
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
        if _reads_logits(scorer, self.read_logits):
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
        return Verdict(0, comparisons, prompt, written, calls=1, scores=scores)

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


_VERDICT_WORDS = re.compile(r"candidate is\s*(not\s+)?(right|wrong|correct|incorrect)\b", re.IGNORECASE)
_BARE_WORDS = re.compile(r"\b(not\s+)?(right|wrong|correct|incorrect)\b", re.IGNORECASE)


_MARGIN_LIMIT = 100.0


def _margin(right: float, wrong: float) -> float:
    """``right - wrong``, kept finite (a verdict missing from a server's top tokens is -inf)."""
    if right == wrong or math.isnan(right) or math.isnan(wrong):
        return 0.0
    return max(-_MARGIN_LIMIT, min(_MARGIN_LIMIT, right - wrong))


def parse_check(text: str) -> float:
    """A generated verifier verdict as a score: +1 right, -1 wrong, 0 when it says neither."""
    matches = _VERDICT_WORDS.findall(text) or _BARE_WORDS.findall(text)
    if not matches:
        logger.warning("Unparseable verifier verdict %r; scoring it 0.", text)
        return 0.0
    negated, word = matches[-1]  # the verdict comes last, as in "The candidate is wrong."
    right = word.lower() in ("right", "correct")
    return 1.0 if right != bool(negated) else -1.0


def best_index(scores: Sequence[float | None], mean_logprobs: Sequence[float | None]) -> int:
    """The index of the highest score; ties go to the higher mean log-probability, then the first."""
    return ranked(scores, mean_logprobs)[0]


def ranked(scores: Sequence[float | None], mean_logprobs: Sequence[float | None]) -> list[int]:
    """Candidate indices, best first, by :func:`best_index`'s order (no score ranks last)."""

    def key(i: int) -> tuple[float, float, int]:
        likelihood = mean_logprobs[i] if i < len(mean_logprobs) else None
        score = scores[i]
        return (
            float("-inf") if score is None else score,
            float("-inf") if likelihood is None else likelihood,
            -i,
        )

    return sorted(range(len(scores)), key=key, reverse=True)


def _reads_logits(backend: VLMBackend, read_logits: bool | None) -> bool:
    """Whether to read verdicts from one forward pass (None: whenever the backend can)."""
    if read_logits is None:
        return backend.supports_choice
    if read_logits and not backend.supports_choice:
        msg = f"{type(backend).__name__} cannot score choices; set read_logits=None or False."
        raise ValueError(msg)
    return read_logits


@dataclass
class VoteJudge(Judge):
    """Self-consistency: keep an answer whose conclusion most candidates share.

    Conclusions are compared after :func:`vote_key` (case, spacing and a final full stop
    ignored). Without a ``scorer`` each candidate has one vote, and a tie goes to the
    conclusion whose best candidate has the higher mean token log-probability (no model
    call). With a scoring judge as ``scorer`` (``VerifierJudge()``, a reward model), each
    vote weighs that judge's confidence in its candidate (:meth:`Judge.vote_weight`: a
    weighted majority), and ties go to the higher score. Within the winning conclusion the
    best-scored candidate is kept. Each candidate's score in the record is its conclusion's
    share of the (weighted) votes.
    """

    scorer: Judge | None = None
    """A scoring judge that weighs the votes (None: one vote each)."""
    name: str = field(default="vote", init=False)
    scores: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if self.scorer is not None and not self.scorer.scores:
            msg = (
                f"The {self.scorer.name!r} judge does not score candidates, so it cannot weigh votes; "
                "use a scoring judge (likelihood, verifier, a reward model) or none."
            )
            raise ValueError(msg)

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Count the (weighted) conclusions; break ties by score."""
        keys = [vote_key(_conclusion_of(text, task.stage)) for text in task.candidates]
        if len(set(task.candidates)) == 1:
            return Verdict(0, scores=(1.0,) * len(keys))  # all the same: nothing to count or ask
        if self.scorer is None:
            scores: tuple[float | None, ...] = task.mean_logprobs
            verdict = Verdict(0)
            weights = [1.0] * len(keys)
        else:
            verdict = yield from self.scorer.score(task, backend)
            scores = verdict.scores
            weights = [0.0 if s is None else self.scorer.vote_weight(s) for s in scores]
        totals: dict[str, float] = {}
        for key, weight in zip(keys, weights):
            totals[key] = totals.get(key, 0.0) + weight

        def rank(i: int) -> tuple[float, float, int]:
            score = scores[i] if i < len(scores) else None
            return (totals[keys[i]], float("-inf") if score is None else score, -i)

        winner = max(range(len(keys)), key=rank)
        whole = sum(totals.values()) or 1.0
        shares = tuple(totals[key] / whole for key in keys)
        return replace(verdict, winner=winner, scores=shares)


def vote_key(conclusion: str) -> str:
    """A conclusion as votes compare it: lower case, single spaces, no final full stop.

    >>> vote_key("  Two Red squares. ")
    'two red squares'
    """
    return " ".join(conclusion.lower().split()).rstrip(".").strip()


def _conclusion_of(text: str, stage: Stage | None) -> str:
    """The conclusion a candidate reaches: a whole answer's conclusion stage, or the text itself."""
    if stage is None:
        return parse_answer(text).stages.get(Stage.CONCLUSION, "")
    return text


@dataclass
class ScoreJudge(Judge):
    """Score every candidate with a function ``(JudgeTask) -> list[float]`` (sync or async).

    The highest score wins (ties: the higher mean token log-probability, then the earlier
    candidate), and the scores go into the record, the stream, vote weights and retrace
    thresholds like a verifier's. This is how a VLM reward model that needs the picture
    plugs in (``task.conversation`` holds it); :func:`reward_text` renders a candidate in
    its context for text reward models. Scores are read as log-odds when votes are weighed.
    """

    function: Callable[[JudgeTask], Sequence[float] | Awaitable[Sequence[float]]]
    name: str = "score"
    scores: bool = field(default=True, init=False)

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Call the function once for all candidates; keep the highest score."""
        scored = yield from self.score(task, backend)
        return replace(scored, winner=best_index(scored.scores, task.mean_logprobs))

    def score(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """The function's scores, checked: one finite number per candidate."""
        scores = yield FunctionCall(self.function, task, blocking=True)
        checked = _checked_scores(scores, len(task.candidates), self.name)
        return Verdict(0, calls=1, scores=checked)


def _checked_scores(scores: object, count: int, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in scores)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        msg = (
            f"The {name!r} judge's function returned {scores!r}; it must return {count} finite "
            "numbers, one per candidate."
        )
        raise ValueError(msg)
    return values


@dataclass
class StageJudges(Judge):
    """A judge per stage: ``StageJudges({"caption": "likelihood"}, default=reward_judge)``.

    Keys are stage names (or :class:`Stage`), and ``"answer"`` for whole answers
    (best_of_n, vote); stages not named go to ``default``. Values are anything ``judge=``
    takes. It scores when every judge in it does, and a vote weighs answers the way the
    whole-answer judge does.
    """

    judges: Mapping[Stage | str, JudgeSpec]
    default: JudgeSpec = "likelihood"
    name: str = "stage_judges"
    scores: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._by_stage = {_stage_key(key): resolve_judge(spec) for key, spec in self.judges.items()}
        self._default = resolve_judge(self.default)
        self.scores = all(judge.scores for judge in (*self._by_stage.values(), self._default))

    def judge_of(self, stage: Stage | None) -> Judge:
        """The judge of ``stage`` (None: whole answers)."""
        return self._by_stage.get(stage, self._default)

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """The stage's judge's choice."""
        return (yield from self.judge_of(task.stage).select(task, backend))

    def score(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """The stage's judge's scores."""
        if not self.scores:
            return (yield from super().score(task, backend))
        return (yield from self.judge_of(task.stage).score(task, backend))

    def vote_weight(self, score: float) -> float:
        """As the whole-answer judge weighs it."""
        return self.judge_of(None).vote_weight(score)


def _stage_key(key: Stage | str) -> Stage | None:
    if key == "answer":
        return None
    try:
        return Stage(key)
    except ValueError as e:
        names = [stage.value for stage in STAGES]
        msg = f"StageJudges has unknown stage {key!r}: use {names} or 'answer' (whole answers)."
        raise ValueError(msg) from e


def reward_text(task: JudgeTask, index: int) -> str:
    """Candidate ``index`` in its context, as a text reward model reads it.

    The question, then the answer so far with the candidate in its stage's tags.
    """
    candidate = task.candidates[index]
    answer = candidate if task.stage is None else render_answer({**task.chosen, task.stage: candidate})
    return f"Question: {task.conversation.question}\n\n{answer}"


@dataclass
class FunctionJudge(Judge):
    """Wrap a function ``(JudgeTask) -> int`` (sync or async) as a judge."""

    function: Callable[[JudgeTask], int | Awaitable[int]]
    name: str = field(default="function", init=False)

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Call the function and check its answer."""
        winner = yield FunctionCall(self.function, task)
        if not isinstance(winner, int) or not 0 <= winner < len(task.candidates):
            msg = (
                f"Judge function returned {winner!r}; it must return the index (0 to "
                f"{len(task.candidates) - 1}) of the best candidate."
            )
            raise ValueError(msg)
        return Verdict(winner, calls=1)


@dataclass
class HumanJudge(Judge):
    """Let a person choose: interrupt the graph with the candidates, resume with an index.

    The interrupt's value is a JSON-ready dict (``event``, ``stage``, ``question``,
    ``chosen`` and ``candidates``); resume the run with ``Command(resume=<index>)``.
    A resume value that is not a candidate's index interrupts again, with the same
    candidates and an ``error`` saying what to send, so the thread stays usable.
    The graph must be compiled with a checkpointer.

    Example::

        graph = build_graph(checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": "1"}}
        graph.invoke({"conversation": conversation}, config, context=SearchContext(backend, judge="human"))
        graph.get_state(config).interrupts[0].value["candidates"]  # shown to the person
        graph.invoke(Command(resume=1), config, context=SearchContext(backend, judge="human"))
    """

    name: str = field(default="human", init=False)

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Interrupt with the candidates; on resume, check and return the person's choice."""
        from langgraph.types import interrupt

        request = human_judge_request(task)
        while True:
            answer = interrupt(request)
            error = _choice_error(answer, len(task.candidates))
            if error is None:
                return finished(Verdict(answer))  # type: ignore[arg-type]
            logger.warning("Human judge: %s", error)
            request = {**request, "error": error}


def human_judge_request(task: JudgeTask) -> dict:
    """The interrupt value a :class:`HumanJudge` shows: plain JSON types only."""
    return {
        "event": "choose",
        "stage": task.stage.value if task.stage else "answer",
        "question": task.conversation.question,
        "chosen": {stage.value: text for stage, text in task.chosen.items()},
        "candidates": list(task.candidates),
    }


def _choice_error(answer: object, count: int) -> str | None:
    """Why ``answer`` is not a candidate's index, or None when it is one."""
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < count:
        return (
            f"resumed with {answer!r}; resume with the index of the chosen candidate, "
            f"a whole number from 0 to {count - 1}, e.g. Command(resume=0)."
        )
    return None


BuiltinJudge = Literal["pairwise", "likelihood", "verifier", "vote", "human"]
JudgeSpec = Union[BuiltinJudge, Judge, BaseChatModel, Callable[[JudgeTask], int]]  # noqa: UP007
"""What ``judge=`` accepts: a built-in name, a :class:`Judge`, a LangChain chat model (see
:func:`chat_model_judge`), or a function."""


def chat_model_judge(
    chat_model: BaseChatModel, *, mode: Literal["pairwise", "verify"] = "pairwise", **options: Any
) -> Judge:
    """Judge with any LangChain chat model that reads images (a bigger VLM, say).

    ``mode="pairwise"`` runs the paper's knockout under each stage's criterion
    (:class:`PairwiseJudge`); ``mode="verify"`` scores each candidate alone
    (:class:`VerifierJudge`: the model's written verdict, right +1 or wrong -1). The model
    sees the picture; its token usage is counted in the answer's usage, and its runs show
    under the search's callbacks and traces. ``options`` go to the judge.
    ``judge=chat_model`` is ``chat_model_judge(chat_model)``.
    """
    from langchain_llava_cot.backends.langchain import ChatModelBackend

    backend = ChatModelBackend(chat_model)
    if mode == "pairwise":
        return PairwiseJudge(backend=backend, **options)
    if mode == "verify":
        return VerifierJudge(backend=backend, **options)
    msg = f"Unknown chat-model judge mode {mode!r}: use 'pairwise' or 'verify'."
    raise ValueError(msg)


def resolve_judge(spec: JudgeSpec, *, seed: int | None = None) -> Judge:
    """Turn a ``judge=`` option into a :class:`Judge`."""
    if isinstance(spec, Judge):
        return spec
    if isinstance(spec, BaseChatModel):
        return chat_model_judge(spec, seed=seed)
    if spec == "pairwise":
        return PairwiseJudge(seed=seed)
    if spec == "likelihood":
        return LikelihoodJudge()
    if spec == "verifier":
        return VerifierJudge()
    if spec == "vote":
        return VoteJudge()
    if spec == "human":
        return HumanJudge()
    if callable(spec):
        return FunctionJudge(spec)
    msg = (
        f"Unknown judge {spec!r}: use 'pairwise', 'likelihood', 'verifier', 'vote', 'human', a Judge, "
        "a LangChain chat model, or a function (JudgeTask) -> int."
    )
    raise ValueError(msg)
