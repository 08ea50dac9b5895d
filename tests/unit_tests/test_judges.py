import asyncio
import math

import pytest
from fakes import ScriptedBackend

from langchain_llava_cot._calls import adrive, drive
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.judges import (
    VERDICT_PREFIX,
    FunctionJudge,
    JudgeTask,
    LikelihoodJudge,
    PairwiseJudge,
    pairwise_prompt,
    parse_verdict,
    resolve_judge,
)
from langchain_llava_cot.stages import Stage

CONVERSATION = Conversation((Turn("user", "How many red shapes?", images=(b"png",)),))


def task(candidates, logprobs=()):
    return JudgeTask(
        CONVERSATION, Stage.CAPTION, {Stage.SUMMARY: "count"}, tuple(candidates), tuple(logprobs)
    )


def score_by_number(text):
    return float(text.split()[-1])


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_knockout_finds_the_best_in_log_rounds(n):
    candidates = [f"candidate {i}" for i in [3, 7, 1, 0, 6, 2, 5, 4][:n]]
    backend = ScriptedBackend(script={}, prefer=score_by_number)
    verdict = drive(PairwiseJudge(seed=0).select(task(candidates), backend), backend)
    assert candidates[verdict.winner] == max(candidates, key=score_by_number)
    assert len(verdict.comparisons) == n - 1
    assert verdict.calls == len(backend.choice_calls) == math.ceil(math.log2(n))
    assert all(c.method == "logits" for c in verdict.comparisons)


def test_generated_verdicts_are_parsed_when_backend_cannot_score():
    backend = ScriptedBackend(script={}, prefer=score_by_number, supports_choice=False)
    candidates = ["candidate 1", "candidate 9", "candidate 4"]
    verdict = drive(PairwiseJudge(seed=3).select(task(candidates), backend), backend)
    assert verdict.winner == 1
    assert {c.method for c in verdict.comparisons} == {"generated"}
    assert verdict.completion_tokens > 0 and not backend.choice_calls


def test_garbage_verdict_falls_back_to_likelihood(caplog):
    backend = ScriptedBackend(script={}, supports_choice=False, verdict_text="I like both!!")
    verdict = drive(PairwiseJudge(seed=0).select(task(["a", "b"], logprobs=(-3.0, -0.5)), backend), backend)
    assert verdict.winner == 1
    assert verdict.comparisons[0].method == "unparseable"
    assert "Unparseable judge verdict" in caplog.text


def test_garbage_verdict_without_logprobs_keeps_first_of_pair():
    backend = ScriptedBackend(script={}, supports_choice=False, verdict_text="???")
    verdict = drive(PairwiseJudge(seed=0).select(task(["a", "b"]), backend), backend)
    assert verdict.winner == verdict.comparisons[0].first


def test_identical_candidates_are_not_sent_to_the_model():
    backend = ScriptedBackend(script={})
    verdict = drive(PairwiseJudge().select(task(["same", "same"]), backend), backend)
    assert verdict.calls == 0 and verdict.comparisons[0].method == "identical"


def test_pairwise_prompt_shows_question_context_criterion_and_both_candidates():
    conversation = pairwise_prompt(task(["two red", "three red"]), 1, 0)
    text = conversation.question
    assert "How many red shapes?" in text and "<SUMMARY> count </SUMMARY>" in text
    assert Stage.CAPTION.criterion in text
    assert "Response 1: three red\nResponse 2: two red" in text
    assert conversation.images == (b"png",)


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        (f"{VERDICT_PREFIX} 1.", 1),
        ("Hmm. The better response is Response 2", 2),
        ("the better response is 1, no wait, the better response is 2.", 2),
        ("Response 1 is better", None),
        ("", None),
    ],
)
def test_parse_verdict(text, choice):
    assert parse_verdict(text) == choice


def test_likelihood_judge_picks_highest_mean_logprob():
    verdict = drive(LikelihoodJudge().select(task(["a", "b", "c"], (-2, -0.1, -1)), None), None)
    assert verdict.winner == 1 and verdict.calls == 0


def test_likelihood_judge_without_logprobs_says_what_to_do():
    with pytest.raises(ValueError, match="judge='pairwise'"):
        drive(LikelihoodJudge().select(task(["a", "b"], (None, None)), None), None)


def test_function_judge_sync_and_async():
    backend = ScriptedBackend(script={})

    async def pick_last(t):
        return len(t.candidates) - 1

    assert drive(resolve_judge(lambda t: 0).select(task(["a", "b"]), backend), backend).winner == 0
    verdict = asyncio.run(adrive(FunctionJudge(pick_last).select(task(["a", "b"]), backend), backend))
    assert verdict.winner == 1
    with pytest.raises(TypeError, match="ainvoke"):
        drive(FunctionJudge(pick_last).select(task(["a", "b"]), backend), backend)


@pytest.mark.parametrize("garbage", [7, -1, "1", None])
def test_function_judge_returning_garbage_is_rejected(garbage):
    with pytest.raises(ValueError, match="must return the index"):
        drive(FunctionJudge(lambda t: garbage).select(task(["a", "b"]), None), None)


def test_unknown_judge_name():
    with pytest.raises(ValueError, match="Unknown judge"):
        resolve_judge("oracle")
