"""What ``judge=`` accepts (:data:`JudgeSpec`) and how it becomes a :class:`Judge`.

:func:`resolve_judge` turns a built-in judge's name (``"auto"``: the one that fits the model
and the backend, :class:`~langchain_llava_cot.judges.auto.AutoJudge`), a :class:`Judge`, a
LangChain chat model (:func:`chat_model_judge`) or a function into a judge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Union

from langchain_core.language_models import BaseChatModel

from langchain_llava_cot.judges.auto import AutoJudge
from langchain_llava_cot.judges.base import Judge, JudgeTask
from langchain_llava_cot.judges.functions import FunctionJudge
from langchain_llava_cot.judges.human import HumanJudge
from langchain_llava_cot.judges.likelihood import LikelihoodJudge
from langchain_llava_cot.judges.pairwise import PairwiseJudge
from langchain_llava_cot.judges.verifier import VerifierJudge
from langchain_llava_cot.judges.vote import VoteJudge

__all__ = ["BuiltinJudge", "JudgeSpec", "chat_model_judge", "resolve_judge"]


BuiltinJudge = Literal["auto", "pairwise", "likelihood", "verifier", "vote", "human"]
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


def resolve_judge(
    spec: JudgeSpec, *, seed: int | None = None, strategy: str = "stage_beam", needs_scores: bool = False
) -> Judge:
    """Turn a ``judge=`` option into a :class:`Judge`.

    ``strategy`` and ``needs_scores`` (the search compares scores with a threshold) are what
    ``"auto"`` chooses for.
    """
    if isinstance(spec, Judge):
        return spec
    if isinstance(spec, BaseChatModel):
        return chat_model_judge(spec, seed=seed)
    if spec == "auto":
        return AutoJudge(strategy=strategy, needs_scores=needs_scores, seed=seed)
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
        f"Unknown judge {spec!r}: use 'auto', 'pairwise', 'likelihood', 'verifier', 'vote', 'human', "
        "a Judge, a LangChain chat model, or a function (JudgeTask) -> int."
    )
    raise ValueError(msg)
