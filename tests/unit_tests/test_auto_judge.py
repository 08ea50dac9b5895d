"""The default judge, judge="auto": which judge fits which model and backend, chosen once per run."""

import asyncio
from dataclasses import dataclass

import pytest
from fakes import SCRIPT, ScriptedBackend, prefers_three
from langchain_core.messages import HumanMessage

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.demo import DEMO_MODEL_PATH
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.judges import (
    DEMO_JUDGE,
    AutoJudge,
    LikelihoodJudge,
    PairwiseJudge,
    VerifierJudge,
    VoteJudge,
    default_judge,
    model_kind,
)
from langchain_llava_cot.options import DEFAULT_JUDGE, SearchContext

QUESTION = [HumanMessage("How many red circles?")]
LLAVA_COT = "Xkev/Llama-3.2V-11B-cot"


def test_the_default_is_auto():
    assert DEFAULT_JUDGE == "auto" and ChatLlavaCoT.model_fields["judge"].default == "auto"
    assert isinstance(SearchContext(backend=ScriptedBackend(SCRIPT)).resolved_judge, AutoJudge)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (str(DEMO_MODEL_PATH), "demo"),
        (f"{DEMO_MODEL_PATH}/", "demo"),
        (LLAVA_COT, "llava_cot"),
        ("/models/Llama-3.2V-11B-cot", "llava_cot"),
        ("llava-o1", "llava_cot"),
        ("LLaVA-CoT-11B", "llava_cot"),
        ("llava:34b", "other"),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "other"),
        ("demo", "other"),  # a server's own name for the demo tells nothing
    ],
)
def test_model_kind_recognises_the_demo_and_llava_cot(name, kind):
    assert model_kind(name) == kind


@pytest.mark.parametrize(
    ("kind", "logprobs", "strategy", "needs_scores", "expected"),
    [
        ("demo", True, "stage_beam", False, DEMO_JUDGE),
        ("demo", False, "stage_beam", False, "pairwise"),
        ("llava_cot", True, "stage_beam", False, "pairwise"),
        ("llava_cot", False, "best_of_n", False, "pairwise"),
        ("other", True, "stage_beam", False, "likelihood"),
        ("other", False, "stage_beam", False, "pairwise"),
        ("other", False, "retrace", True, "verifier"),
        ("llava_cot", True, "retrace", True, "verifier"),
        ("other", True, "retrace", True, "likelihood"),
        ("demo", True, "vote", False, "vote"),
        ("other", False, "vote", False, "vote"),
    ],
)
def test_default_judge_fits_the_model_and_the_backend(kind, logprobs, strategy, needs_scores, expected):
    judge, reason = default_judge(kind, logprobs, strategy=strategy, needs_scores=needs_scores)
    assert judge.name == expected and reason
    if needs_scores:
        assert judge.scores
    if expected == "pairwise" and not logprobs and kind != "llava_cot":
        assert "log-probabilities" in reason


def test_a_vote_is_weighed_by_likelihood_only_where_there_are_log_probabilities():
    weighed, _ = default_judge("other", True, strategy="vote")
    plain, reason = default_judge("other", False, strategy="vote")
    assert isinstance(weighed, VoteJudge) and isinstance(weighed.scorer, LikelihoodJudge)
    assert isinstance(plain, VoteJudge) and plain.scorer is None and "one vote" in reason


def test_the_demo_in_process_keeps_the_judge_measured_best_on_it():
    backend = ScriptedBackend(SCRIPT, model_name=str(DEMO_MODEL_PATH))
    state = build_graph().invoke(
        {"conversation": _conversation()}, context=SearchContext(backend=backend, candidates=2)
    )
    assert state["judge"] == {
        "name": "likelihood",
        "reason": "the demo model: likelihood ranks its candidates best",
    }
    assert {step["judge"] for step in state["steps"][1:]} == {"likelihood"}


def test_a_backend_without_logprobs_gets_the_pairwise_judge_with_written_verdicts():
    """What failed before: the likelihood judge on a server that returns no log-probabilities."""
    backend = ScriptedBackend(SCRIPT, prefer=prefers_three, supports_choice=False, gives_logprobs=False)
    llm = ChatLlavaCoT(backend=backend, strategy="stage_beam", candidates=2, seed=0)
    record = llm.invoke(QUESTION).response_metadata["llava_cot"]
    assert record["judge"]["name"] == "pairwise" and "log-probabilities" in record["judge"]["reason"]
    judged = [step for step in record["steps"] if len({c["text"] for c in step["candidates"]}) > 1]
    assert judged and {c["method"] for s in judged for c in s["comparisons"]} <= {"generated", "precheck"}
    assert "three" in record["chosen"]["caption"]  # the written verdicts were read


def test_llava_cot_weights_get_the_papers_pairwise_self_judge():
    backend = ScriptedBackend(SCRIPT, prefer=prefers_three, model_name=LLAVA_COT)
    record = (
        ChatLlavaCoT(backend=backend, candidates=2, seed=0).invoke(QUESTION).response_metadata["llava_cot"]
    )
    assert record["judge"] == {
        "name": "pairwise",
        "reason": "LLaVA-CoT's own weights: the paper's pairwise self-judge",
    }
    assert {c["method"] for s in record["steps"] for c in s["comparisons"]} >= {"logits"}


def test_another_model_with_logprobs_gets_likelihood_and_the_record_says_why():
    record = ChatLlavaCoT(backend=ScriptedBackend(SCRIPT), candidates=2).invoke(QUESTION)
    judge = record.response_metadata["llava_cot"]["judge"]
    assert judge["name"] == "likelihood" and "no judge was measured on this model" in judge["reason"]


def test_a_named_judge_is_recorded_as_named():
    record = ChatLlavaCoT(backend=ScriptedBackend(SCRIPT), candidates=2, judge="verifier").invoke(QUESTION)
    assert record.response_metadata["llava_cot"]["judge"] == {
        "name": "verifier",
        "reason": "named by the judge option",
    }


def test_greedy_judges_nothing_and_says_so():
    record = ChatLlavaCoT(backend=ScriptedBackend(SCRIPT), strategy="greedy").invoke(QUESTION)
    assert record.response_metadata["llava_cot"]["judge"] is None


@pytest.mark.parametrize(("logprobs", "expected"), [(True, "likelihood"), (False, "verifier")])
def test_retrace_and_confidence_get_a_judge_that_scores(logprobs, expected):
    backend = ScriptedBackend(SCRIPT, supports_choice=False, gives_logprobs=logprobs)
    for options in ({"strategy": "retrace"}, {"strategy": "stage_beam", "adaptive": True, "confidence": 5.0}):
        llm = ChatLlavaCoT(backend=backend, candidates=2, **options)
        record = llm.invoke(QUESTION).response_metadata["llava_cot"]
        assert record["judge"]["name"] == expected
        assert all(
            step["scores"] for step in record["steps"] if len({c["text"] for c in step["candidates"]}) > 1
        )


@pytest.mark.parametrize(("logprobs", "weighed"), [(True, True), (False, False)])
def test_vote_by_default_counts_conclusions(logprobs, weighed):
    backend = ScriptedBackend(SCRIPT, gives_logprobs=logprobs)
    record = ChatLlavaCoT(backend=backend, strategy="vote", candidates=3).invoke(QUESTION).response_metadata
    judge = record["llava_cot"]["judge"]
    assert judge["name"] == "vote" and ("mean token probability" in judge["reason"]) == weighed


@dataclass
class UnprobedBackend(ScriptedBackend):
    """A server whose capabilities are not known until it is probed."""

    probes: int = 0

    def __post_init__(self) -> None:
        self.gives_logprobs = None

    def probe(self) -> None:
        self.probes += 1
        self.gives_logprobs = True


def test_a_server_not_yet_probed_is_probed_once_and_the_choice_holds_for_the_run():
    backend = UnprobedBackend(SCRIPT)
    judge = AutoJudge()
    task = _task(("a", "b"))
    from langchain_llava_cot._calls import drive

    assert judge.describe()["name"] == "auto" and "not chosen yet" in judge.describe()["reason"]
    assert drive(judge.select(task, backend), backend).winner == 0
    assert drive(judge.score(task, backend), backend).scores == (-0.1, -0.5)
    assert backend.probes == 1 and judge.name == "likelihood" and isinstance(judge.chosen, LikelihoodJudge)
    assert asyncio.run(_adrive_select(judge, task, backend)) == 0 and backend.probes == 1


def test_each_run_chooses_for_its_own_backend():
    llm = ChatLlavaCoT(backend=ScriptedBackend(SCRIPT, gives_logprobs=False), candidates=2, seed=0)
    first = llm.search_context()
    second = llm.search_context()
    assert first.resolved_judge is not second.resolved_judge  # a context, and its choice, per run


def test_auto_needs_a_backend_to_choose_from():
    from langchain_llava_cot._calls import drive

    with pytest.raises(ValueError, match="chooses a judge from the backend"):
        drive(AutoJudge().select(_task(("a", "b")), None), None)


def test_the_pairwise_and_verifier_judges_it_names_are_the_real_ones():
    assert isinstance(default_judge("llava_cot", True)[0], PairwiseJudge)
    assert isinstance(default_judge("other", False, needs_scores=True)[0], VerifierJudge)


def _conversation():
    from langchain_llava_cot.conversation import Conversation, Turn

    return Conversation((Turn("user", "How many red circles?"),))


def _task(candidates):
    from langchain_llava_cot.judges import JudgeTask
    from langchain_llava_cot.stages import Stage

    return JudgeTask(_conversation(), Stage.CAPTION, {}, candidates, mean_logprobs=(-0.1, -0.5))


async def _adrive_select(judge, task, backend):
    from langchain_llava_cot._calls import adrive

    return (await adrive(judge.select(task, backend), backend)).winner
