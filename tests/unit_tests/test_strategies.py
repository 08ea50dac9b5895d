"""vote, adaptive width and retrace (SWIRES) on the scripted backend."""

import statistics

import pytest
from fakes import SCRIPT, ScriptedBackend, says_three
from langgraph.checkpoint.memory import InMemorySaver

from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.judges import VerifierJudge, VoteJudge
from langchain_llava_cot.options import RETRACE_Z, SearchContext
from langchain_llava_cot.stages import Stage

CONVERSATION = Conversation((Turn("user", "How many red circles?"),))


def run(context, **compile_options):
    return build_graph(**compile_options).invoke({"conversation": CONVERSATION}, context=context)


# --- vote ---------------------------------------------------------------------------------


def whole_answer(conclusion):
    return f" s </SUMMARY>\n\n<CAPTION> c </CAPTION>\n\n<REASONING> r </REASONING>\n\n<CONCLUSION> {conclusion} </CONCLUSION>"  # noqa: E501


WHOLE = {Stage.SUMMARY: [whole_answer("2"), whole_answer("3"), whole_answer("2.")]}


def test_vote_samples_whole_answers_and_keeps_the_majority_conclusion():
    backend = ScriptedBackend(WHOLE)
    state = run(SearchContext(backend=backend, strategy="vote", candidates=3, judge="vote"))
    [step] = state["steps"]
    assert backend.sample_calls[0][0].n == 3 and step["judge"] == "vote"
    assert state["chosen"]["conclusion"] in ("2", "2.")
    assert step["scores"] == pytest.approx([2 / 3, 1 / 3, 2 / 3])
    assert not backend.choice_calls  # a plain vote asks nothing


def test_vote_with_a_scoring_judge_weighs_each_vote_by_its_score():
    backend = ScriptedBackend(WHOLE, check=lambda text: -3.0 if text.strip().startswith("2") else 3.0)
    context = SearchContext(backend=backend, strategy="vote", candidates=3, judge="verifier")
    assert isinstance(context.resolved_judge, VoteJudge)
    assert isinstance(context.resolved_judge.scorer, VerifierJudge)
    state = run(context)
    assert state["chosen"]["conclusion"] == "3"  # one confident vote outweighs two doubtful ones
    assert len(backend.choice_calls) == 1


def test_vote_needs_a_judge_that_scores():
    with pytest.raises(ValueError, match="does not score candidates"):
        SearchContext(backend=ScriptedBackend(WHOLE), strategy="vote", judge="pairwise")


# --- adaptive width -------------------------------------------------------------------------


def test_adaptive_step_stops_when_the_first_round_agrees():
    script = {stage: texts[:1] for stage, texts in SCRIPT.items()}
    backend = ScriptedBackend(script)
    state = run(SearchContext(backend=backend, candidates=4, adaptive=True))
    assert [call[0].n for call in backend.sample_calls] == [2, 2, 2, 2]
    assert all(s["stopped_early"] == "agreement" and len(s["candidates"]) == 2 for s in state["steps"])


def test_adaptive_step_samples_the_rest_when_the_first_round_disagrees():
    backend = ScriptedBackend(SCRIPT)
    state = run(SearchContext(backend=backend, candidates=5, adaptive=True, seed=3))
    sizes = [[request.n for request in call] for call in backend.sample_calls]
    assert sizes == [[2], [2], [3], [2], [3], [2], [3]]  # summary agrees; the others take 2, then 3 more
    assert [len(s["candidates"]) for s in state["steps"]] == [2, 5, 5, 5]
    assert [s["stopped_early"] for s in state["steps"]] == ["agreement", None, None, None]
    seeds = [call[0].seed for call in backend.sample_calls[1:3]]
    assert seeds[0] != seeds[1]  # the second round does not repeat the first


def test_adaptive_step_stops_when_the_judge_is_confident_and_keeps_that_verdict():
    backend = ScriptedBackend(SCRIPT, check=says_three)
    context = SearchContext(backend=backend, candidates=4, judge="verifier", adaptive=True, confidence=1.0)
    state = run(context)
    caption = state["steps"][1]
    assert caption["stopped_early"] == "confidence" and len(caption["candidates"]) == 2
    assert state["chosen"]["caption"] == "three red circles"
    assert caption["scores"] == pytest.approx([-2.0, 2.0])
    assert (
        len(backend.choice_calls) == 3
    )  # caption, reasoning, conclusion: each judged once, in the first round
    assert state["usage"]["model_calls"] == len(backend.sample_calls) + len(backend.choice_calls)


def test_adaptive_width_never_goes_below_one_or_above_n():
    backend = ScriptedBackend(SCRIPT)
    state = run(SearchContext(backend=backend, candidates=3, adaptive=True, adaptive_start=10))
    assert all(call[0].n == 3 for call in backend.sample_calls)
    assert all(s["stopped_early"] is None for s in state["steps"])
    with pytest.raises(ValueError, match="adaptive_start must be"):
        SearchContext(backend=backend, adaptive=True, adaptive_start=0)
    with pytest.raises(ValueError, match="adaptive=True is for"):
        SearchContext(backend=backend, strategy="best_of_n", adaptive=True)
    with pytest.raises(ValueError, match="confidence= reads a judge's scores"):
        SearchContext(backend=backend, adaptive=True, confidence=0.5, judge="pairwise")


def test_one_candidate_never_agrees_with_itself():
    backend = ScriptedBackend(SCRIPT)
    context = SearchContext(backend=backend, candidates=3, adaptive=True, adaptive_start=1, confidence=1e9)
    state = run(context)  # one candidate first; no score reaches the confidence, so the rest follow
    assert [len(s["candidates"]) for s in state["steps"]] == [3, 3, 3, 3]
    assert all(s["stopped_early"] is None for s in state["steps"])
    with pytest.raises(ValueError, match="one candidate always agrees with itself"):
        SearchContext(backend=backend, adaptive=True, adaptive_start=1)


# --- retrace --------------------------------------------------------------------------------


def retrace(backend, **options):
    return SearchContext(backend=backend, strategy="retrace", candidates=4, judge="verifier", **options)


def test_retrace_keeps_two_captions_and_samples_reasoning_after_each():
    backend = ScriptedBackend(SCRIPT, check=says_three)
    state = run(retrace(backend, retrace_threshold=-5.0))
    stages = [s["stage"] for s in state["steps"]]
    assert stages == ["summary", "caption", "reasoning", "conclusion"]
    caption, reasoning = state["steps"][1], state["steps"][2]
    assert [caption["candidates"][i]["text"] for i in caption["kept"]][0] == "three red circles"
    assert len(caption["kept"]) == 2
    [requests] = [call for call in backend.sample_calls if len(call) == 2]
    assert [r.n for r in requests] == [2, 2]
    assert "three red circles" in requests[0].prefix and "three red circles" not in requests[1].prefix
    assert reasoning["retrace"] == {
        "attempt": 1, "threshold": -5.0, "kth_score": 2.0, "passed": True, "retraced": False,
    }  # fmt: skip
    assert state["chosen"]["caption"] == "three red circles"
    assert state["chosen"]["reasoning"] == "the caption lists three"


def test_retrace_goes_back_to_the_caption_until_the_retraces_run_out():
    backend = ScriptedBackend(SCRIPT, check=says_three)
    events = []
    graph = build_graph()
    for mode, data in graph.stream(
        {"conversation": CONVERSATION},
        context=retrace(backend, retrace_threshold=10.0, max_retraces=2),
        stream_mode=["custom", "values"],
    ):
        if mode == "custom":
            events.append(data)
        else:
            state = data
    stages = [s["stage"] for s in state["steps"]]
    assert stages == ["summary"] + ["caption", "reasoning"] * 3 + ["conclusion"]
    tries = [s["retrace"] for s in state["steps"] if s["stage"] == "reasoning"]
    assert [(t["attempt"], t["passed"], t["retraced"]) for t in tries] == [
        (1, False, True),
        (2, False, True),
        (3, False, False),
    ]
    assert [e["retrace"]["attempt"] for e in events if e["event"] == "retrace"] == [1, 2]
    assert state["chosen"]["reasoning"] == "the caption lists three"  # the best of all tries
    assert state["strategy_state"]["attempts"] == 3


def test_retrace_stops_as_soon_as_a_try_clears_the_threshold():
    calls = {"reasoning": 0}

    def improves(text):  # reasoning scores -3 on the first try (4 checks), +3 after
        if "caption" in text or "so two" in text:
            calls["reasoning"] += 1
            return -3.0 if calls["reasoning"] <= 4 else 3.0
        return says_three(text)

    backend = ScriptedBackend(SCRIPT, check=improves)
    state = run(retrace(backend, retrace_threshold=0.0))
    tries = [s["retrace"] for s in state["steps"] if s["stage"] == "reasoning"]
    assert [(t["passed"], t["retraced"]) for t in tries] == [(False, True), (True, False)]


def test_retrace_default_threshold_is_mean_plus_z_std_of_the_runs_reasoning_scores():
    backend = ScriptedBackend(SCRIPT, check=says_three)
    state = run(retrace(backend))
    first = next(s for s in state["steps"] if s["stage"] == "reasoning")
    scores = [s for s in first["scores"] if s is not None]
    assert first["retrace"]["threshold"] == pytest.approx(
        statistics.fmean(scores) + RETRACE_Z * statistics.pstdev(scores)
    )


def test_a_checkpointed_run_resumes_inside_a_retrace():
    backend = ScriptedBackend(SCRIPT, check=says_three)
    graph = build_graph(checkpointer=InMemorySaver(), interrupt_after=["judge_reasoning"])
    config = {"configurable": {"thread_id": "retrace"}}
    context = retrace(backend, retrace_threshold=10.0, max_retraces=1)
    graph.invoke({"conversation": CONVERSATION}, config, context=context)
    paused = graph.get_state(config)
    assert paused.next == ("expand_caption",) and "caption" not in paused.values["chosen"]
    assert paused.values["strategy_state"]["attempts"] == 1
    graph.invoke(None, config, context=context)  # the second try, then it pauses again
    assert graph.get_state(config).next == ("expand_conclusion",)
    graph.invoke(None, config, context=context)
    final = graph.get_state(config).values
    assert final["strategy_state"]["attempts"] == 2 and final["chosen"]["conclusion"]
    assert [s["stage"] for s in final["steps"]] == [
        "summary",
        "caption",
        "reasoning",
        "caption",
        "reasoning",
        "conclusion",
    ]


def test_retrace_needs_a_judge_that_scores():
    with pytest.raises(ValueError, match="compares scores with a threshold"):
        SearchContext(backend=ScriptedBackend(SCRIPT), strategy="retrace", judge="pairwise")


# --- a LangChain chat model as the judge ----------------------------------------------------


@pytest.mark.parametrize("mode", ["pairwise", "verify"])
def test_a_chat_model_judges_with_the_picture_and_its_usage_and_callbacks_flow_through(mode):
    import base64

    from fakes import JudgingChat
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.messages import HumanMessage

    from langchain_llava_cot import ChatLlavaCoT
    from langchain_llava_cot.demo import EXAMPLE_IMAGE
    from langchain_llava_cot.judges import chat_model_judge

    class Starts(BaseCallbackHandler):
        def __init__(self):
            self.models = []

        def on_chat_model_start(self, serialized, messages, **kwargs):
            self.models.append(kwargs.get("invocation_params", {}).get("_type"))

    judge_model = JudgingChat(received=[])
    judge = judge_model if mode == "pairwise" else chat_model_judge(judge_model, mode="verify")
    sampler = ScriptedBackend(SCRIPT)
    llm = ChatLlavaCoT(backend=sampler, candidates=3, judge=judge, seed=0)
    picture = base64.b64encode(EXAMPLE_IMAGE.read_bytes()).decode()
    message = HumanMessage(
        [
            {"type": "image", "base64": picture, "mime_type": "image/png"},
            {"type": "text", "text": "How many red circles?"},
        ]
    )
    starts = Starts()
    answer = llm.invoke([message], config={"callbacks": [starts]})
    record = answer.response_metadata["llava_cot"]
    assert record["chosen"]["caption"] == "three red circles" and answer.content == "3"
    asked = len(judge_model.received)
    assert asked >= 3 and not sampler.choice_calls  # every verdict came from the chat model
    assert all(
        any(block.get("type") == "image" for block in m[-1].content if isinstance(block, dict))
        for m in judge_model.received
    )
    sampled = sum(r.n * 20 for call in sampler.sample_calls for r in call)
    assert answer.usage_metadata["input_tokens"] == sampled + 100 * asked
    assert starts.models.count("judging-fake") == asked  # the judge's runs reach the caller's callbacks


@pytest.mark.parametrize("mode", ["pairwise", "verify"])
def test_a_chat_model_judge_that_writes_no_verdict_never_breaks_the_search(mode, caplog):
    from fakes import JudgingChat

    from langchain_llava_cot.judges import chat_model_judge

    judge = chat_model_judge(JudgingChat(received=[], garbled=True), mode=mode)
    state = run(SearchContext(backend=ScriptedBackend(SCRIPT), candidates=3, judge=judge, seed=0))
    assert set(state["chosen"]) == {"summary", "caption", "reasoning", "conclusion"}
    caption = state["steps"][1]
    if mode == "pairwise":  # each unparseable verdict keeps the likelier candidate, and says so
        assert {c["method"] for c in caption["comparisons"]} == {"unparseable"}
        assert caption["winner"] == 0  # the scripted backend's first candidate is the likeliest
    else:  # a verdict it cannot read scores 0 for every candidate: ties go to the likeliest
        assert caption["scores"] == [0.0, 0.0, 0.0] and caption["winner"] == 0
    assert "Unparseable" in caplog.text


def test_chat_llava_cot_streams_a_retraced_answer_once_and_as_finally_chosen():
    from langchain_core.messages import HumanMessage

    from langchain_llava_cot import ChatLlavaCoT

    llm = ChatLlavaCoT(
        backend=ScriptedBackend(SCRIPT, check=says_three), strategy="retrace", judge="verifier",
        retrace_threshold=10.0, max_retraces=2,
    )  # fmt: skip
    chunks = list(llm.stream([HumanMessage("How many red circles?")]))
    streamed = "".join(c.additional_kwargs.get("reasoning_content", "") for c in chunks)
    assert streamed.count("<CAPTION>") == 1 and "<CAPTION> three red circles </CAPTION>" in streamed
    answer = llm.invoke([HumanMessage("How many red circles?")])
    record = answer.response_metadata["llava_cot"]
    assert [s["stage"] for s in record["steps"]].count("reasoning") == 3 and answer.content == "3"
    assert answer.additional_kwargs["reasoning_content"] == streamed
