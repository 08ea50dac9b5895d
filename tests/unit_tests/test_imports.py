import subprocess
import sys

import langchain_llava_cot

EXPECTED_ALL = [
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


def test_all_is_the_public_api():
    assert sorted(langchain_llava_cot.__all__) == sorted(EXPECTED_ALL)
    for name in EXPECTED_ALL:
        assert hasattr(langchain_llava_cot, name)


def test_importing_the_package_and_graph_does_not_import_torch():
    code = "import sys, langchain_llava_cot, langchain_llava_cot.graph; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
