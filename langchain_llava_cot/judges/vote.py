"""Self-consistency: keep an answer whose conclusion most candidates share (:class:`VoteJudge`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from langchain_llava_cot._calls import Step
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.judges.base import Judge, JudgeTask, Verdict
from langchain_llava_cot.stages import Stage, parse_answer

__all__ = ["VoteJudge", "vote_key"]


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
