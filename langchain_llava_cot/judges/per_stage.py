"""A judge per stage: :class:`StageJudges`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from langchain_llava_cot._calls import Step
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.judges.base import Judge, JudgeTask, Verdict
from langchain_llava_cot.judges.resolve import JudgeSpec, resolve_judge
from langchain_llava_cot.stages import STAGES, Stage

__all__ = ["StageJudges"]


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
    asks_a_person: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._by_stage = {_stage_key(key): resolve_judge(spec) for key, spec in self.judges.items()}
        self._default = resolve_judge(self.default)
        judges = (*self._by_stage.values(), self._default)
        self.scores = all(judge.scores for judge in judges)
        self.asks_a_person = any(judge.asks_a_person for judge in judges)

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
