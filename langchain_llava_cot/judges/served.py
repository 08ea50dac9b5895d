"""Reward models served by vLLM's pooling runner as judges: outcome and process scores.

- :class:`ServedRewardJudge`: an outcome reward model (a sequence-classification head read
  at the last token, served with ``--runner pooling``) gives each candidate one score.
- :class:`ServedProcessRewardJudge`: a process reward model gives each step of a candidate
  a score, read at the step tag it was trained with (served with
  ``--pooler-config '{"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": ID}'``);
  the candidate's score aggregates its steps' (``min``, ``prod``, ``last`` or ``mean``), and
  every step's text and score go into the record and the stream.

Both ask the server once per judge step, through
:class:`~langchain_llava_cot.backends.openai.pooling.PoolingClient` (the OpenAI backend's
transport: retries, timeouts, errors): every candidate as text in one request
(:func:`~langchain_llava_cot.judges.prompts.reward_text`: the question, then the answer so
far with the candidate in its stage's tags), or, with ``images=True`` for a served model
that reads pictures, each candidate as a conversation (the picture and question, then the
answer so far) in its own request, all sent at once. Scores are the head's logits, read as
log-odds: a head with several labels gives the log-odds of ``positive_label``. They plug
in wherever a scoring judge does: ``StageJudges``, best_of_n, vote weights, retrace
thresholds and adaptive width.

Example::

    judge = ServedRewardJudge("http://127.0.0.1:8001", "reward-model")
    llm = ChatLlavaCoT(strategy="best_of_n", judge=judge)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from langchain_llava_cot._calls import ClientCall, Step
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.judges.base import Judge, JudgeTask, StepScore, Verdict, best_index
from langchain_llava_cot.judges.prompts import answer_text, reward_text
from langchain_llava_cot.stages import STAGE_SEPARATOR, STAGES, parse_answer, render_stage

__all__ = [
    "Aggregate",
    "ServedProcessRewardJudge",
    "ServedRewardJudge",
    "aggregate_steps",
    "label_log_odds",
    "split_steps",
]

Aggregate = Literal["min", "prod", "last", "mean"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LOGIT_LIMIT = 100.0


def split_steps(text: str) -> list[str]:
    """A stage's steps: its lines, or, for a single line, its sentences.

    >>> split_steps("There are 2 objects. Count red: yes. That is 1.")
    ['There are 2 objects.', 'Count red: yes.', 'That is 1.']
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1:
        lines = [part for part in _SENTENCE_END.split(lines[0]) if part]
    return lines or [text.strip()]


def aggregate_steps(scores: Sequence[float], how: Aggregate) -> float:
    """A candidate's score from its steps' log-odds: ``min``, ``prod``, ``last`` or ``mean``.

    Steps are read as probabilities of being right (the logistic of their log-odds); the
    product and mean are taken of those, and the result is given back as log-odds.

    >>> round(aggregate_steps([0.0, 0.0], "prod"), 4)  # 0.5 x 0.5 = 0.25
    -1.0986
    """
    if not scores:
        msg = "A candidate with no step has no score to aggregate."
        raise ValueError(msg)
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    probabilities = [_probability(s) for s in scores]
    if how == "prod":
        return _log_odds(math.prod(probabilities))
    if how == "mean":
        return _log_odds(sum(probabilities) / len(probabilities))
    msg = f"Unknown aggregate {how!r}: use 'min', 'prod', 'last' or 'mean'."
    raise ValueError(msg)


@dataclass
class ServedRewardJudge(Judge):
    """An outcome reward model served by vLLM (``--runner pooling``): one score per candidate.

    Example::

        # vllm serve path/to/reward-model --runner pooling --served-model-name rm --port 8001
        judge = ServedRewardJudge("http://127.0.0.1:8001", "rm")
    """

    base_url: str
    """The server's root, e.g. ``http://127.0.0.1:8001`` (a trailing ``/v1`` is dropped)."""
    model: str
    """The served model's name."""
    images: bool = False
    """The served model reads pictures: send each candidate as a conversation with the
    picture, one request each (at once). False sends every candidate as text in one request."""
    positive_label: int = 1
    """With several labels, the one whose log-odds is the score (one label: its logit)."""
    api_key: str | None = None
    timeout: float = 60.0
    max_retries: int = 2
    name: str = "served_reward"
    scores: bool = field(default=True, init=False)
    task_name: Literal["classify", "token_classify"] = field(default="classify", init=False, repr=False)
    """The pooling task asked for: ``classify`` (one score), ``token_classify`` (one per step)."""

    def __post_init__(self) -> None:
        from langchain_llava_cot.backends.openai.pooling import PoolingClient

        self.client = PoolingClient(
            self.base_url,
            self.model,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Score the candidates in one request (asking nothing when all are the same); keep the best."""
        if len(set(task.candidates)) == 1:
            return Verdict(0)
        scored = yield from self.score(task, backend)
        return replace(scored, winner=best_index(scored.scores, task.mean_logprobs))

    def score(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Each candidate's score; identical candidates are read once."""
        distinct = list(dict.fromkeys(task.candidates))
        first = [task.candidates.index(text) for text in distinct]
        inputs = [self._input(task, i) for i in first]
        pooled = yield ClientCall(self._pool, self._apool, inputs)
        by_text = dict(zip(distinct, pooled.outputs))
        return Verdict(
            0, prompt_tokens=pooled.prompt_tokens, calls=1,
            scores=tuple(self._score(by_text[text]) for text in task.candidates),
        )  # fmt: skip

    def _input(self, task: JudgeTask, index: int) -> Any:
        """Candidate ``index`` as the server reads it: text, or the conversation and the answer."""
        if self.images:
            return (task.conversation, answer_text(task, index))
        return reward_text(task, index)

    def _score(self, output: Any) -> float:
        return label_log_odds(output, self.positive_label, self.base_url)

    def _pool(self, inputs: list[Any]) -> Any:
        return self.client.pool(inputs, self.task_name)

    async def _apool(self, inputs: list[Any]) -> Any:
        return await self.client.apool(inputs, self.task_name)


@dataclass
class ServedProcessRewardJudge(ServedRewardJudge):
    r"""A process reward model served by vLLM: a score per step, aggregated per candidate.

    Each candidate is split into steps (a stage by :func:`split_steps`, or ``split``; a
    whole answer by its stages), each step followed by ``step_tag``, the token the model was
    trained to score at and the server's ``step_tag_id``. The server answers with one
    score per tag; the candidate's score is :func:`aggregate_steps` of them, and each step's
    text and score go into the record (``steps[i]["step_scores"]``) and the stream.

    Example::

        # vllm serve path/to/prm --runner pooling --served-model-name prm --port 8002 \\
        #   --pooler-config '{"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": 12902}'
        judge = ServedProcessRewardJudge("http://127.0.0.1:8002", "prm", step_tag=" ки", aggregate="min")
    """

    step_tag: str = field(default="", kw_only=True)
    """The text of the step tag (its token is the server's ``step_tag_id``)."""
    aggregate: Aggregate = field(default="min", kw_only=True)
    """How steps make the candidate's score: ``min``, ``prod``, ``last`` or ``mean``."""
    split: Callable[[str], Sequence[str]] = field(default=split_steps, kw_only=True)
    """How a stage's text splits into steps, as the model was trained."""
    step_separator: str = field(default="\n", kw_only=True)
    """What joins a stage's tagged steps."""
    name: str = "served_process_reward"
    task_name: Literal["classify", "token_classify"] = field(default="token_classify", init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.step_tag:
            msg = (
                "ServedProcessRewardJudge needs step_tag=, the text of the token the model scores steps at "
                "(the server's step_tag_id), e.g. step_tag='<step>'."
            )
            raise ValueError(msg)
        if self.aggregate not in ("min", "prod", "last", "mean"):
            msg = f"Unknown aggregate {self.aggregate!r}: use 'min', 'prod', 'last' or 'mean'."
            raise ValueError(msg)
        super().__post_init__()

    def score(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Each candidate's step scores, aggregated; identical candidates are read once."""
        distinct = list(dict.fromkeys(task.candidates))
        first = [task.candidates.index(text) for text in distinct]
        steps = {text: self._steps(task, i) for text, i in zip(distinct, first)}
        inputs = [self._input(task, i) for i in first]
        pooled = yield ClientCall(self._pool, self._apool, inputs)
        scored: dict[str, tuple[StepScore, ...]] = {}
        for text, output in zip(distinct, pooled.outputs):
            rows = output if isinstance(output, list) else []
            if len(rows) != len(steps[text]):
                msg = (
                    f"The reward model at {self.base_url} scored {len(rows)} steps of a candidate split "
                    f"into {len(steps[text])}: check that step_tag={self.step_tag!r} is the token of its "
                    "step_tag_id and that the candidate holds no other."
                )
                raise ValueError(msg)
            scored[text] = tuple(
                StepScore(step, label_log_odds(row, self.positive_label, self.base_url))
                for step, row in zip(steps[text], rows)
            )
        return Verdict(
            0, prompt_tokens=pooled.prompt_tokens, calls=1,
            scores=tuple(self._aggregated(scored[text]) for text in task.candidates),
            step_scores=tuple(scored[text] for text in task.candidates),
        )  # fmt: skip

    def _aggregated(self, steps: tuple[StepScore, ...]) -> float:
        return aggregate_steps([step.score for step in steps], self.aggregate)

    def _steps(self, task: JudgeTask, index: int) -> list[str]:
        """Candidate ``index``'s steps: a whole answer's stages, or a stage's pieces."""
        candidate = task.candidates[index]
        if task.stage is None:
            stages = parse_answer(candidate).stages
            return [render_stage(stage, stages[stage]) for stage in STAGES if stage in stages] or [candidate]
        return [step for step in self.split(candidate) if step.strip()] or [candidate]

    def _input(self, task: JudgeTask, index: int) -> Any:
        """Candidate ``index`` with a step tag after each of its steps."""
        steps = self._steps(task, index)
        joiner = STAGE_SEPARATOR if task.stage is None else self.step_separator
        tagged = joiner.join(f"{step}{self.step_tag}" for step in steps)
        return super()._input(replace(task, candidates=(tagged,), mean_logprobs=()), 0)


def label_log_odds(output: Any, positive_label: int, source: str) -> float:
    """A reward head's output vector as log-odds: its only logit, or the log-odds of ``positive_label``.

    >>> round(label_log_odds([0.0, 1.0], 1, "a model"), 4)
    1.0
    """
    try:
        values = [float(v) for v in output]
    except (TypeError, ValueError):
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        msg = f"The reward model at {source} answered {output!r}, not a vector of logits."
        raise ValueError(msg)
    if len(values) == 1:
        return max(-_LOGIT_LIMIT, min(_LOGIT_LIMIT, values[0]))
    if not -len(values) <= positive_label < len(values):
        msg = (
            f"positive_label={positive_label} is not one of the {len(values)} labels the reward model gives."
        )
        raise ValueError(msg)
    positive = values[positive_label]
    others = [v for i, v in enumerate(values) if i != positive_label % len(values)]
    top = max(others)
    rest = top + math.log(sum(math.exp(v - top) for v in others))
    return max(-_LOGIT_LIMIT, min(_LOGIT_LIMIT, positive - rest))


def _probability(log_odds: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * log_odds))


def _log_odds(probability: float) -> float:
    if probability <= 0.0:
        return -_LOGIT_LIMIT
    if probability >= 1.0:
        return _LOGIT_LIMIT
    return max(-_LOGIT_LIMIT, min(_LOGIT_LIMIT, math.log(probability) - math.log1p(-probability)))
