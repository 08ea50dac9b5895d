"""Judges: pick the best of a stage's candidates.

One module per concept:

- :mod:`~langchain_llava_cot.judges.base`: what every judge shares (:class:`JudgeTask`,
  :class:`Verdict`, :class:`Comparison`, :class:`StepScore`, the :class:`Judge` base class,
  :func:`best_index`).
- :mod:`~langchain_llava_cot.judges.auto`: :class:`AutoJudge`, the default (``judge="auto"``):
  the judge that fits the model and the backend (:func:`default_judge`).
- :mod:`~langchain_llava_cot.judges.prompts`: what model judges ask, and how written
  verdicts are read.
- :mod:`~langchain_llava_cot.judges.pairwise`: :class:`PairwiseJudge`, the paper's
  self-judge, a knockout of pairwise comparisons.
- :mod:`~langchain_llava_cot.judges.verifier`: :class:`VerifierJudge`, each candidate
  checked on its own, as a reward model does.
- :mod:`~langchain_llava_cot.judges.likelihood`: :class:`LikelihoodJudge`, the highest mean
  token log-probability, no model asked.
- :mod:`~langchain_llava_cot.judges.vote`: :class:`VoteJudge`, self-consistency.
- :mod:`~langchain_llava_cot.judges.functions`: :class:`FunctionJudge` and
  :class:`ScoreJudge`, judges made from your own function.
- :mod:`~langchain_llava_cot.judges.served`: :class:`ServedRewardJudge` and
  :class:`ServedProcessRewardJudge`, reward models served by vLLM's pooling runner
  (outcome scores, and scores per step).
- :mod:`~langchain_llava_cot.judges.human`: :class:`HumanJudge`, a person chooses.
- :mod:`~langchain_llava_cot.judges.resolve`: what ``judge=`` accepts (:data:`JudgeSpec`),
  :func:`resolve_judge` and :func:`chat_model_judge`.
- :mod:`~langchain_llava_cot.judges.per_stage`: :class:`StageJudges`, a judge per stage.
"""

from langchain_llava_cot.judges.auto import DEMO_JUDGE, AutoJudge, default_judge, model_kind
from langchain_llava_cot.judges.base import (
    Comparison,
    Judge,
    JudgeTask,
    StepScore,
    Verdict,
    best_index,
    ranked,
)
from langchain_llava_cot.judges.functions import FunctionJudge, ScoreJudge
from langchain_llava_cot.judges.human import HumanJudge, human_judge_request
from langchain_llava_cot.judges.likelihood import LikelihoodJudge
from langchain_llava_cot.judges.pairwise import PairwiseJudge
from langchain_llava_cot.judges.per_stage import StageJudges
from langchain_llava_cot.judges.prompts import (
    VERDICT_PREFIX,
    VERIFY_OPTIONS,
    VERIFY_PREFIX,
    answer_text,
    pairwise_prompt,
    parse_check,
    parse_verdict,
    reward_text,
    verdict_choice,
    verifier_prompt,
)
from langchain_llava_cot.judges.resolve import BuiltinJudge, JudgeSpec, chat_model_judge, resolve_judge
from langchain_llava_cot.judges.served import (
    ServedProcessRewardJudge,
    ServedRewardJudge,
    aggregate_steps,
    split_steps,
)
from langchain_llava_cot.judges.verifier import VerifierJudge
from langchain_llava_cot.judges.vote import VoteJudge, vote_key

__all__ = [
    "DEMO_JUDGE",
    "VERDICT_PREFIX",
    "VERIFY_OPTIONS",
    "VERIFY_PREFIX",
    "AutoJudge",
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
    "ServedProcessRewardJudge",
    "ServedRewardJudge",
    "StageJudges",
    "StepScore",
    "Verdict",
    "VerifierJudge",
    "VoteJudge",
    "aggregate_steps",
    "answer_text",
    "best_index",
    "ranked",
    "chat_model_judge",
    "default_judge",
    "human_judge_request",
    "model_kind",
    "pairwise_prompt",
    "parse_check",
    "parse_verdict",
    "resolve_judge",
    "reward_text",
    "split_steps",
    "verdict_choice",
    "verifier_prompt",
    "vote_key",
]
