import asyncio
import math

import pytest
from fakes import ScriptedBackend

from langchain_llava_cot._calls import adrive, drive
from langchain_llava_cot.backends.base import ChoiceResult
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.judges import (
    VERDICT_PREFIX,
    VERIFY_OPTIONS,
    VERIFY_PREFIX,
    FunctionJudge,
    JudgeTask,
    LikelihoodJudge,
    PairwiseJudge,
    VerifierJudge,
    VoteJudge,
    pairwise_prompt,
    parse_check,
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
    with pytest.raises(ValueError, match="judge='auto' or 'pairwise'"):
        drive(LikelihoodJudge().select(task(["a", "b"], (None, None)), None), None)


def test_a_candidate_without_logprobs_ranks_last_under_likelihood():
    verdict = drive(LikelihoodJudge().select(task(["", "b", "c"], (None, -3.0, -1.0)), None), None)
    assert verdict.winner == 2 and verdict.scores == (None, -3.0, -1.0)


def test_function_judge_sync_and_async():
    backend = ScriptedBackend(script={})

    async def pick_last(t):
        return len(t.candidates) - 1

    assert drive(resolve_judge(lambda t: 0).select(task(["a", "b"]), backend), backend).winner == 0
    verdict = asyncio.run(adrive(FunctionJudge(pick_last).select(task(["a", "b"]), backend), backend))
    assert verdict.winner == 1
    with pytest.raises(TypeError, match="ainvoke"):
        drive(FunctionJudge(pick_last).select(task(["a", "b"]), backend), backend)


@pytest.mark.parametrize("garbage", [7, -1, "1", None, True, False, 1.0])
def test_function_judge_returning_garbage_is_rejected(garbage):
    with pytest.raises(ValueError, match="must return the index"):
        drive(FunctionJudge(lambda t: garbage).select(task(["a", "b"]), None), None)


def test_function_judge_may_return_a_numpy_integer():
    numpy = pytest.importorskip("numpy")
    verdict = drive(FunctionJudge(lambda t: numpy.int64(1)).select(task(["a", "b"]), None), None)
    assert verdict.winner == 1 and type(verdict.winner) is int


@pytest.mark.parametrize("judge", [VerifierJudge, PairwiseJudge])
@pytest.mark.parametrize("tokens", [0, -3, True, 2.5])
def test_a_verdict_token_limit_that_cannot_hold_a_verdict_is_refused_at_once(judge, tokens):
    with pytest.raises(ValueError, match="max_verdict_tokens must be a whole number of at least 1"):
        judge(max_verdict_tokens=tokens)


def test_unknown_judge_name():
    with pytest.raises(ValueError, match="Unknown judge"):
        resolve_judge("oracle")


# --- the verifier judge -------------------------------------------------------------


def test_verifier_scores_every_candidate_in_one_batched_call():
    backend = ScriptedBackend(script={}, check=score_by_number)
    candidates = ["candidate 3", "candidate -2", "candidate 7", "candidate 1"]
    verdict = drive(VerifierJudge().select(task(candidates), backend), backend)
    assert verdict.winner == 2
    assert verdict.scores == pytest.approx((3.0, -2.0, 7.0, 1.0))
    assert verdict.calls == 1 and len(backend.choice_calls) == 1 and len(backend.choice_calls[0]) == 4
    [request] = backend.choice_calls[0][:1]
    assert request.prefix == VERIFY_PREFIX and request.options == VERIFY_OPTIONS
    assert "Candidate: candidate 3" in request.conversation.question
    assert request.conversation.turns[0].images == (b"png",)  # the picture stays in the prompt
    assert verdict.prompt_tokens == 4 * 25 and not backend.sample_calls


def test_verifier_scores_identical_candidates_once():
    backend = ScriptedBackend(script={}, check=score_by_number)
    verdict = drive(VerifierJudge().select(task(["a 1", "b 5", "a 1", "b 5"]), backend), backend)
    assert len(backend.choice_calls[0]) == 2
    assert verdict.scores == pytest.approx((1.0, 5.0, 1.0, 5.0)) and verdict.winner == 1


def test_verifier_asks_nothing_when_all_candidates_are_the_same():
    backend = ScriptedBackend(script={}, check=score_by_number)
    verdict = drive(VerifierJudge().select(task(["same 1"] * 3), backend), backend)
    assert verdict.winner == 0 and verdict.calls == 0 and not backend.choice_calls


def test_verifier_ties_go_to_likelihood_then_to_the_first():
    backend = ScriptedBackend(script={}, check=lambda text: 1.0)
    tied = task(["x", "y", "z"], logprobs=(-2.0, -0.5, -0.5))
    assert drive(VerifierJudge().select(tied, backend), backend).winner == 1
    unknown = task(["x", "y", "z"])
    assert drive(VerifierJudge().select(unknown, backend), backend).winner == 0


def test_verifier_generates_and_parses_verdicts_without_choice_scoring(caplog):
    backend = ScriptedBackend(script={}, check=score_by_number, supports_choice=False)
    verdict = drive(VerifierJudge().select(task(["c -1", "c 2", "c -4"]), backend), backend)
    assert verdict.scores == (-1.0, 1.0, -1.0) and verdict.winner == 1
    assert {c.method for c in verdict.comparisons} == {"generated"}
    assert len(backend.sample_calls) == 1 and not backend.choice_calls

    garbled = ScriptedBackend(script={}, supports_choice=False, verdict_text="hmm, maybe")
    verdict = drive(VerifierJudge().select(task(["p", "q"], logprobs=(-3.0, -1.0)), garbled), garbled)
    assert verdict.scores == (0.0, 0.0) and verdict.winner == 1  # unparseable: 0, then likelihood
    assert "Unparseable verifier verdict" in caplog.text


def test_parse_check_reads_the_verdict_word():
    assert parse_check("The candidate is right.") == 1.0
    assert parse_check("The candidate is wrong.") == -1.0
    assert parse_check("It is incorrect") == -1.0
    assert parse_check("no idea") == 0.0
    assert parse_check("The candidate is not right.") == -1.0
    assert parse_check("All right, the candidate is wrong.") == -1.0
    assert parse_check("Not correct.") == -1.0
    assert parse_check("Hmm, wrong at first, but the candidate is right.") == 1.0


def test_verifier_with_its_own_backend_never_asks_the_sampler():
    sampler = ScriptedBackend(script={})
    verifier = ScriptedBackend(script={}, check=score_by_number, model_name="bigger")
    judge = VerifierJudge(backend=verifier)
    verdict = drive(judge.select(task(["c 1", "c 9"]), sampler), sampler)
    assert verdict.winner == 1 and len(verifier.choice_calls) == 1 and not sampler.choice_calls
    verdict = asyncio.run(adrive(judge.select(task(["c 8", "c 2"]), sampler), sampler))
    assert verdict.winner == 0 and len(verifier.choice_calls) == 2 and not sampler.choice_calls


def test_verifier_is_a_named_judge():
    assert isinstance(resolve_judge("verifier"), VerifierJudge)


# --- the paper's reasoning pre-check ------------------------------------------------------


def reasoning_task(candidates):
    return JudgeTask(CONVERSATION, Stage.REASONING, {Stage.CAPTION: "3 red"}, tuple(candidates))


def test_precheck_drops_reasoning_found_wrong_before_any_comparison():
    # the pairwise judge would prefer "r 9", but the check finds it wrong
    backend = ScriptedBackend(script={}, prefer=score_by_number, check=lambda t: -1.0 if t == "r 9" else 1.0)
    verdict = drive(PairwiseJudge(seed=0).select(reasoning_task(["r 1", "r 9", "r 4"]), backend), backend)
    assert verdict.winner == 2
    checks = [c for c in verdict.comparisons if c.method == "precheck"]
    assert [c.detail.endswith("failed") for c in checks] == [False, True, False]
    knockout = [c for c in verdict.comparisons if c.method != "precheck"]
    assert len(knockout) == 1 and {knockout[0].first, knockout[0].second} == {0, 2}
    assert verdict.calls == 2  # one check call for all candidates, one knockout round


def test_precheck_keeps_everyone_when_all_fail_and_can_be_turned_off():
    all_wrong = ScriptedBackend(script={}, prefer=score_by_number, check=lambda t: -1.0)
    verdict = drive(PairwiseJudge(seed=0).select(reasoning_task(["r 1", "r 9"]), all_wrong), all_wrong)
    assert verdict.winner == 1
    backend = ScriptedBackend(script={}, prefer=score_by_number, check=lambda t: -1.0 if t == "r 9" else 1.0)
    off = drive(
        PairwiseJudge(seed=0, precheck=False).select(reasoning_task(["r 1", "r 9"]), backend), backend
    )
    assert off.winner == 1 and all(c.method == "logits" for c in off.comparisons)


def test_precheck_is_for_the_reasoning_stage_only():
    backend = ScriptedBackend(script={}, prefer=score_by_number, check=lambda t: -1.0)
    verdict = drive(PairwiseJudge(seed=0).select(task(["c 1", "c 9"]), backend), backend)
    assert verdict.winner == 1 and len(backend.choice_calls) == 1


def test_verifier_scores_stay_finite_when_one_verdict_is_missing_from_the_top_tokens():
    class HalfBlind(ScriptedBackend):
        def choose(self, requests):
            return [
                ChoiceResult((-0.5, float("-inf")))
                if "good" in r.conversation.question
                else ChoiceResult((float("-inf"), -0.5))
                for r in requests
            ]

    backend = HalfBlind(script={})
    verdict = drive(VerifierJudge().select(task(["bad", "good"]), backend), backend)
    assert verdict.scores == (-100.0, 100.0) and verdict.winner == 1


def test_verifier_scores_zero_when_neither_verdict_was_among_the_top_tokens():
    class Blind(ScriptedBackend):
        def choose(self, requests):
            self.choice_calls.append(requests)
            return [ChoiceResult((float("-inf"), float("-inf"))) for _ in requests]

    backend = Blind(script={})
    verdict = drive(VerifierJudge().select(task(["a", "b"], logprobs=(-2.0, -1.0)), backend), backend)
    assert verdict.scores == (0.0, 0.0) and verdict.winner == 1


def test_verifier_scores_whole_answers_by_their_weakest_stage():
    from langchain_llava_cot.stages import render_answer

    def answer(caption, reasoning, conclusion):
        return render_answer(
            {
                Stage.SUMMARY: "count",
                Stage.CAPTION: caption,
                Stage.REASONING: reasoning,
                Stage.CONCLUSION: conclusion,
            }
        )

    verdicts = {"cap ok": 2.0, "cap bad": -3.0, "why ok": 1.0, "why bad": -1.0, "3": 0.5, "4": 0.25}
    backend = ScriptedBackend(script={}, check=lambda text: verdicts[text])
    candidates = (
        answer("cap bad", "why ok", "3"),
        answer("cap ok", "why bad", "4"),
        answer("cap ok", "why ok", "3"),
    )
    whole = JudgeTask(CONVERSATION, None, {}, candidates)
    verdict = drive(VerifierJudge().select(whole, backend), backend)
    assert verdict.scores == pytest.approx((-3.0, -1.0, 0.5)) and verdict.winner == 2
    [call] = backend.choice_calls  # every stage of every answer in one batched call
    assert len(call) == 9
    asked = [request.conversation.question for request in call[:3]]
    assert "Check one candidate for the caption stage" in asked[0]
    assert "Earlier stages: <SUMMARY> count </SUMMARY>\n\n<CAPTION> cap bad </CAPTION>" in asked[1]


# --- self-consistency -----------------------------------------------------------------------


def whole(conclusion):
    from langchain_llava_cot.stages import render_answer

    return render_answer(
        {Stage.SUMMARY: "s", Stage.CAPTION: "c", Stage.REASONING: "r", Stage.CONCLUSION: conclusion}
    )


def test_vote_keeps_the_most_common_conclusion_and_asks_nothing():
    answers = (whole("3"), whole("2"), whole("2."), whole(" 2 "), whole("4"))
    votes = JudgeTask(CONVERSATION, None, {}, answers, mean_logprobs=(-0.1, -0.9, -0.5, -0.7, -0.2))
    backend = ScriptedBackend(script={})
    verdict = drive(VoteJudge().select(votes, backend), backend)
    assert verdict.winner == 2  # "2" wins 3 votes to 1; of the three, the likeliest
    assert verdict.scores == pytest.approx((0.2, 0.6, 0.6, 0.6, 0.2))
    assert not backend.choice_calls and not backend.sample_calls


def test_vote_ties_go_to_the_likelihood_without_a_scorer():
    answers = (whole("yes"), whole("no"), whole("Yes"), whole("no"))
    votes = JudgeTask(CONVERSATION, None, {}, answers, mean_logprobs=(-1.0, -0.2, -1.5, -0.3))
    backend = ScriptedBackend(script={})
    verdict = drive(VoteJudge().select(votes, backend), backend)
    assert verdict.winner == 1 and verdict.scores == pytest.approx((0.5, 0.5, 0.5, 0.5))


def test_a_scoring_judge_weighs_the_votes_and_can_overturn_the_majority():
    answers = (whole("no"), whole("yes"), whole("no"), whole("Yes"), whole("no"))
    votes = JudgeTask(CONVERSATION, None, {}, answers, mean_logprobs=(-0.1, -0.9, -0.2, -0.8, -0.3))
    scored = ScriptedBackend(script={}, check=lambda text: -2.0 if text.strip() == "no" else 3.0)
    verdict = drive(VoteJudge(scorer=VerifierJudge()).select(votes, scored), scored)
    assert answers[verdict.winner] in (whole("yes"), whole("Yes"))  # 2 confident votes beat 3 doubtful
    yes, no = 2 / (1 + math.exp(-3.0)), 3 / (1 + math.exp(2.0))
    assert verdict.scores[1] == pytest.approx(yes / (yes + no)) and verdict.scores[0] == pytest.approx(
        no / (yes + no)
    )
    assert len(scored.choice_calls) == 1  # the scorer's one batched call


def test_likelihood_weighs_a_vote_by_the_mean_token_probability():
    from langchain_llava_cot.judges import LikelihoodJudge

    answers = (whole("2"), whole("3"), whole("3"))
    votes = JudgeTask(CONVERSATION, None, {}, answers, mean_logprobs=(-0.01, -3.0, -3.0))
    verdict = drive(VoteJudge(scorer=LikelihoodJudge()).select(votes, None), None)
    assert verdict.winner == 0  # exp(-0.01) outweighs 2 x exp(-3)
    assert LikelihoodJudge().vote_weight(-0.5) == pytest.approx(math.exp(-0.5))


def test_a_judge_that_does_not_score_cannot_weigh_votes():
    with pytest.raises(ValueError, match="does not score candidates"):
        VoteJudge(scorer=PairwiseJudge())


def test_vote_is_a_named_judge():
    from langchain_llava_cot.judges import vote_key

    assert isinstance(resolve_judge("vote"), VoteJudge)
    assert vote_key("  Two  Red. ") == "two red"
