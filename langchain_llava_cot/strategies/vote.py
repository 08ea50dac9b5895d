"""``strategy="vote"``: self-consistency, N whole answers and a (score-weighted) majority of conclusions."""

from __future__ import annotations

from langchain_llava_cot.judges import AutoJudge, Judge, VoteJudge
from langchain_llava_cot.options import SearchOptions
from langchain_llava_cot.strategies.best_of_n import BestOfN

__all__ = ["Vote"]


class Vote(BestOfN):
    """best_of_n whose judge counts conclusions: a scoring judge named weighs each vote."""

    name = "vote"

    def judge_of(self, judge: Judge, options: SearchOptions) -> Judge:
        """The judge named, as the weights of a :class:`VoteJudge` (it says so if it cannot score)."""
        if isinstance(judge, (VoteJudge, AutoJudge)):  # auto chooses a vote for strategy="vote"
            return judge
        return VoteJudge(scorer=judge)
