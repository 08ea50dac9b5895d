"""LLaVA-CoT reasoning with stage-level beam search, for LangChain and LangGraph."""

from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.chat_models import ChatLlavaCoT
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.images import ImageError
from langchain_llava_cot.judges import (
    Judge,
    JudgeTask,
    LikelihoodJudge,
    PairwiseJudge,
    ScoreJudge,
    ServedProcessRewardJudge,
    ServedRewardJudge,
    StageJudges,
    Verdict,
    VerifierJudge,
    VoteJudge,
    chat_model_judge,
)
from langchain_llava_cot.messages import convert_messages
from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.stages import STAGES, ParsedAnswer, Stage, parse_answer, render_answer
from langchain_llava_cot.state import SearchState

__version__ = "0.1.0"

__all__ = [
    "STAGES",
    "ChatLlavaCoT",
    "Conversation",
    "ImageError",
    "Judge",
    "JudgeTask",
    "LikelihoodJudge",
    "PairwiseJudge",
    "ParsedAnswer",
    "ScoreJudge",
    "SearchContext",
    "SearchState",
    "ServedProcessRewardJudge",
    "ServedRewardJudge",
    "Stage",
    "StageJudges",
    "Turn",
    "VLMBackend",
    "Verdict",
    "VerifierJudge",
    "VoteJudge",
    "__version__",
    "build_graph",
    "chat_model_judge",
    "convert_messages",
    "parse_answer",
    "render_answer",
]
