"""The default judge, ``judge="auto"``: chosen once per run from the model and the backend.

:class:`AutoJudge` asks its backend, at its first verdict (after the step's candidates
were sampled, so a server has been probed), what the model is and whether it gives token
log-probabilities, then keeps the judge :func:`default_judge` names for the whole run:

=====================  ====================================  ======================================
model                  backend gives log-probabilities       backend gives none
=====================  ====================================  ======================================
the bundled demo       ``likelihood`` (ranks best on it)     ``pairwise``, verdicts written
LLaVA-CoT's weights    ``pairwise`` (the paper's judge)      ``pairwise``, verdicts written
any other model        ``likelihood`` (no extra call)        ``pairwise``, verdicts written
=====================  ====================================  ======================================

``strategy="vote"`` gets a vote weighed by likelihood (or one vote each without
log-probabilities); ``retrace`` and ``confidence=`` need scores, so where the table says
pairwise they get the verifier (each candidate checked alone). The judge's name and the
reason are the run's ``record["judge"]``.

>>> judge, reason = default_judge("llava_cot", logprobs=True)
>>> judge.name, reason
('pairwise', "LLaVA-CoT's own weights: the paper's pairwise self-judge")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from langchain_llava_cot._calls import FunctionCall, Step
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.judges.base import Judge, JudgeTask, Verdict
from langchain_llava_cot.judges.likelihood import LikelihoodJudge
from langchain_llava_cot.judges.pairwise import PairwiseJudge
from langchain_llava_cot.judges.verifier import VerifierJudge
from langchain_llava_cot.judges.vote import VoteJudge

__all__ = ["DEMO_JUDGE", "AutoJudge", "ModelKind", "default_judge", "model_kind"]

ModelKind = Literal["demo", "llava_cot", "other"]

DEMO_JUDGE: Literal["likelihood", "verifier"] = "likelihood"
"""The judge that ranks the demo model's candidates best (``benchmarks/judge_rank.py`` and the
README's eval), and so the demo's default."""

_LLAVA_COT_NAMES = re.compile(r"llava[-_ ]?(cot|o1)\b|llama-3\.2v-11b-cot", re.IGNORECASE)
"""LLaVA-CoT's published names (``Xkev/Llama-3.2V-11B-cot``, LLaVA-CoT, its first name LLaVA-o1)."""


def model_kind(name: str) -> ModelKind:
    """What a backend's ``model_name`` names: the bundled demo, LLaVA-CoT's weights, or another model.

    The demo is recognised by its folder (as loaded in-process, or as the name a server
    that serves the folder gives it); LLaVA-CoT by its published names in the folder or
    hub id.

    >>> model_kind("Xkev/Llama-3.2V-11B-cot"), model_kind("/models/llava-cot-11b"), model_kind("llava:34b")
    ('llava_cot', 'llava_cot', 'other')
    """
    from langchain_llava_cot.bundled import DEMO_MODEL_PATH

    try:
        if Path(name).expanduser().resolve() == DEMO_MODEL_PATH.resolve():
            return "demo"
    except (OSError, ValueError):
        pass
    return "llava_cot" if _LLAVA_COT_NAMES.search(name) else "other"


def default_judge(
    kind: ModelKind,
    logprobs: bool,
    *,
    strategy: str = "stage_beam",
    needs_scores: bool = False,
    seed: int | None = None,
) -> tuple[Judge, str]:
    """The judge for this model and backend, and why (the table in this module's docstring).

    Args:
        kind: what the model is (:func:`model_kind`).
        logprobs: whether the backend gives token log-probabilities.
        strategy: the search strategy (``vote`` counts conclusions).
        needs_scores: the search compares scores with a threshold (retrace, ``confidence=``).
        seed: the pairwise judge's pairing seed.
    """
    if strategy == "vote":
        if logprobs:
            return VoteJudge(
                scorer=LikelihoodJudge()
            ), "vote: each answer's vote weighs its mean token probability"
        return (
            VoteJudge(),
            "vote: one vote per answer, as the backend gives no log-probabilities to weigh them",
        )
    if kind == "llava_cot" and needs_scores:
        return (
            VerifierJudge(),
            "LLaVA-CoT's own weights, and the search needs scores: the model checks each candidate",
        )
    if kind == "llava_cot":
        return PairwiseJudge(seed=seed), "LLaVA-CoT's own weights: the paper's pairwise self-judge"
    if not logprobs and needs_scores:
        reason = "the backend gives no token log-probabilities and the search needs scores: written verdicts"
        return VerifierJudge(), reason
    if not logprobs:
        reason = (
            "the backend gives no token log-probabilities (likelihood needs them): written pairwise verdicts"
        )
        return PairwiseJudge(seed=seed), reason
    if kind == "demo":
        from langchain_llava_cot.judges.resolve import resolve_judge

        return resolve_judge(DEMO_JUDGE), f"the demo model: {DEMO_JUDGE} ranks its candidates best"
    reason = (
        "no judge was measured on this model: likelihood asks no extra model call (open VLMs judging "
        "their own candidates gain little); name a judge or a reward model to do better"
    )
    return LikelihoodJudge(), reason


@dataclass
class AutoJudge(Judge):
    """The default judge: the one that fits the model and the backend, chosen at its first verdict.

    The choice holds for the rest of the run (a :class:`~langchain_llava_cot.options.SearchContext`
    makes one per run); :meth:`describe` says which judge it is and why.
    """

    strategy: str = "stage_beam"
    """The search strategy (``vote`` counts conclusions)."""
    needs_scores: bool = False
    """The search compares scores with a threshold: choose only among scoring judges."""
    seed: int | None = None
    """The pairwise judge's pairing seed."""
    name: str = field(default="auto", init=False)
    chosen: Judge | None = field(default=None, init=False)
    """The judge chosen; None until the first verdict."""
    reason: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.scores = self.needs_scores or self.strategy == "vote"

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """The chosen judge's choice."""
        judge = yield from self._choose(backend)
        return (yield from judge.select(task, backend))

    def score(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """The chosen judge's scores."""
        judge = yield from self._choose(backend)
        return (yield from judge.score(task, backend))

    def vote_weight(self, score: float) -> float:
        """As the chosen judge weighs it."""
        return (self.chosen or LikelihoodJudge()).vote_weight(score)

    def describe(self) -> dict[str, str]:
        """The chosen judge's name and why it was chosen (``auto`` before the first verdict)."""
        return {"name": self.name, "reason": self.reason or "not chosen yet: no step had candidates to judge"}

    def _choose(self, backend: VLMBackend | None) -> Step[Judge]:
        if self.chosen is not None:
            return self.chosen
        if backend is None:
            msg = "judge='auto' chooses a judge from the backend; run it with one (the search's own)."
            raise ValueError(msg)
        if backend.gives_logprobs is None and callable(getattr(backend, "probe", None)):
            yield FunctionCall(_probe, backend, blocking=True)  # a server not asked yet: ask it now
        kind = model_kind(backend.model_name)
        judge, reason = default_judge(
            kind,
            bool(backend.gives_logprobs),
            strategy=self.strategy,
            needs_scores=self.needs_scores,
            seed=self.seed,
        )
        self.chosen, self.reason, self.name = judge, reason, judge.name
        return judge


def _probe(backend: VLMBackend) -> None:
    backend.probe()  # type: ignore[attr-defined]
