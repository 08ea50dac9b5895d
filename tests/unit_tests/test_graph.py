import asyncio
from dataclasses import replace

import pytest
from fakes import SCRIPT, ScriptedBackend, prefers_three

from langchain_llava_cot.backends.base import Sample
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.stages import STAGES, Stage

CONVERSATION = Conversation((Turn("user", "How many red circles?"),))


def run(context, conversation=CONVERSATION, **state):
    return build_graph().invoke({"conversation": conversation, **state}, context=context)


def test_graph_drawing_has_one_expand_and_one_judge_node_per_stage(snapshot):
    drawing = build_graph().get_graph().draw_mermaid()
    for stage in STAGES:
        assert f"expand_{stage.value} --> judge_{stage.value};" in drawing
    assert "judge_reasoning -.-> expand_caption;" in drawing  # the retrace back-edge
    assert drawing == snapshot


def test_stage_beam_keeps_the_judged_best_at_every_stage():
    backend = ScriptedBackend(SCRIPT, prefer=prefers_three)
    state = run(SearchContext(backend=backend, candidates=3, judge="pairwise", seed=0))
    assert state["chosen"] == {
        "summary": "count the red circles",
        "caption": "three red circles",
        "reasoning": "the caption lists three",
        "conclusion": "3",
    }
    assert [s["stage"] for s in state["steps"]] == [s.value for s in STAGES]
    assert all(len(s["candidates"]) == 3 for s in state["steps"])
    knockouts = [[c for c in s["comparisons"] if c["method"] != "precheck"] for s in state["steps"]]
    assert all(len(k) == 2 for k in knockouts)
    prechecks = [[c for c in s["comparisons"] if c["method"] == "precheck"] for s in state["steps"]]
    assert [len(p) for p in prechecks] == [
        0,
        0,
        2,
        0,
    ]  # the reasoning stage's 2 distinct candidates, checked alone
    # each stage continues the chosen prefix and stops at its own closing tag
    conclusion_request = backend.sample_calls[3][0]
    assert conclusion_request.prefix.endswith(
        "<REASONING> the caption lists three </REASONING>\n\n<CONCLUSION>"
    )
    assert conclusion_request.stop == ("</CONCLUSION>",) and conclusion_request.n == 3
    assert len(backend.sample_calls) == 4
    assert state["usage"]["model_calls"] == len(backend.sample_calls) + len(backend.choice_calls)


def test_greedy_samples_one_candidate_per_stage_at_temperature_zero_and_never_judges():
    backend = ScriptedBackend(SCRIPT)
    state = run(SearchContext(backend=backend, strategy="greedy", candidates=8))
    assert [len(call[0:1]) and call[0].n for call in backend.sample_calls] == [1, 1, 1, 1]
    assert all(call[0].temperature == 0 for call in backend.sample_calls)
    assert not backend.choice_calls
    assert all(s["judge"] is None for s in state["steps"])
    assert state["chosen"]["caption"] == "two red circles"


def test_best_of_n_samples_whole_answers_and_judges_once():
    script = {
        Stage.SUMMARY: [
            " s </SUMMARY>\n\n<CAPTION> two </CAPTION>\n\n<REASONING> r2 </REASONING>\n\n"
            "<CONCLUSION> 2 </CONCLUSION>",
            " s </SUMMARY>\n\n<CAPTION> three </CAPTION>\n\n<REASONING> r3 </REASONING>\n\n"
            "<CONCLUSION> 3 </CONCLUSION>",
        ]
    }
    backend = ScriptedBackend(script, prefer=prefers_three)
    state = run(SearchContext(backend=backend, strategy="best_of_n", candidates=2, judge="pairwise"))
    assert len(backend.sample_calls) == 1 and backend.sample_calls[0][0].stop == ("</CONCLUSION>",)
    assert len(state["steps"]) == 1 and state["steps"][0]["span"] == [s.value for s in STAGES]
    assert state["chosen"] == {"summary": "s", "caption": "three", "reasoning": "r3", "conclusion": "3"}
    judged = backend.choice_calls[0][0].conversation.question
    assert "whole answer" in judged and "<CAPTION> two </CAPTION>" in judged


def test_best_of_n_winner_with_missing_stages_is_completed_stage_by_stage():
    script = {
        Stage.SUMMARY: [" s </SUMMARY>\n\n<CAPTION> c </CAPTION>\n\nthe answer is 3"],
        Stage.REASONING: [" r </REASONING>\n\n<CONCLUSION> 3 </CONCLUSION>"],
    }
    backend = ScriptedBackend(script)
    state = run(SearchContext(backend=backend, strategy="best_of_n", candidates=1))
    assert state["chosen"] == {"summary": "s", "caption": "c", "reasoning": "r", "conclusion": "3"}
    assert [s["stage"] for s in state["steps"]] == ["summary", "reasoning"]
    assert state["steps"][0]["candidates"][0]["problems"] == ["text outside tags"]


def test_stage_that_never_closes_is_cut_at_its_limit_and_closed():
    script = dict(SCRIPT, **{Stage.REASONING: [" it goes on and on"]})
    backend = ScriptedBackend(script)
    state = run(SearchContext(backend=backend, strategy="greedy", max_stage_tokens={"reasoning": 5}))
    reasoning = state["steps"][2]["candidates"][0]
    assert reasoning["finish_reason"] == "length" and not reasoning["closed"]
    assert reasoning["problems"] == ["<REASONING> cut at the token limit; closed"]
    assert backend.sample_calls[2][0].max_new_tokens == 5
    assert backend.sample_calls[3][0].prefix.endswith(
        "<REASONING> it goes on and on </REASONING>\n\n<CONCLUSION>"
    )
    assert state["chosen"]["conclusion"] == "3"


def test_candidate_that_skips_to_another_stage_is_cut_at_that_tag():
    script = dict(SCRIPT, **{Stage.CAPTION: [" red <REASONING> so 3 </REASONING>"]})
    state = run(SearchContext(backend=ScriptedBackend(script), strategy="greedy"))
    assert state["chosen"]["caption"] == "red"
    caption = state["steps"][1]["candidates"][0]
    assert caption["problems"] == ["<CAPTION> ended at <REASONING> instead of </CAPTION>; cut there"]


class StoppingBackend(ScriptedBackend):
    """A server's continuation: it ended its turn ("stop") without the stage's closing tag."""

    def _sample_one(self, request):
        return [replace(s, finish_reason="stop") for s in super()._sample_one(request)]


def test_a_continuation_that_starts_with_another_stages_tag_is_an_empty_stage_with_its_problems():
    script = dict(SCRIPT, **{Stage.CAPTION: [" <REASONING> so three"]})
    state = run(SearchContext(backend=StoppingBackend(script), strategy="greedy"))
    caption = state["steps"][1]["candidates"][0]
    assert caption["text"] == "" and not caption["closed"]
    assert caption["problems"] == [
        "<CAPTION> ended at <REASONING> instead of </CAPTION>; cut there",
        "<CAPTION> is empty",
    ]


def test_a_continuation_the_server_stopped_at_the_closing_tag_is_clean():
    script = dict(SCRIPT, **{Stage.CAPTION: [" three red circles"]})  # the server cut the stop string off
    state = run(SearchContext(backend=StoppingBackend(script), strategy="greedy"))
    caption = state["steps"][1]["candidates"][0]
    assert caption["closed"] and caption["problems"] == []


def test_malformed_candidates_still_compete_and_lose_to_the_better_one():
    script = dict(SCRIPT, **{Stage.CAPTION: [" <<garbage>> </CAPTION>", " three red circles </CAPTION>", ""]})
    backend = ScriptedBackend(script, prefer=prefers_three)
    state = run(SearchContext(backend=backend, candidates=3, judge="pairwise", seed=1))
    assert state["chosen"]["caption"] == "three red circles"


def test_a_run_with_stages_already_chosen_starts_after_them():
    backend = ScriptedBackend(SCRIPT)
    state = run(
        SearchContext(backend=backend, strategy="greedy"),
        chosen={"summary": "given", "caption": "given too"},
    )
    assert [s["stage"] for s in state["steps"]] == ["reasoning", "conclusion"]
    assert backend.sample_calls[0][0].prefix.startswith("<SUMMARY> given </SUMMARY>")


def test_token_budget_limits_later_stages():
    backend = ScriptedBackend(SCRIPT)
    run(SearchContext(backend=backend, strategy="greedy", max_tokens=6))
    limits = [call[0].max_new_tokens for call in backend.sample_calls]
    assert limits == [3, 1, 1, 1]  # one token kept for each later stage; this fake overspends its limits


class FillingBackend(ScriptedBackend):
    """Writes exactly as many tokens as it may, never closing a stage: the budget's worst case."""

    room: int | None = None
    """The context's room after the request alone (None: unknown); each word of the prefix takes one."""

    def tokens_left(self, conversation, prefix):
        return None if self.room is None else self.room - prefix.split().count("w")

    def _sample_one(self, request):
        tokens = request.max_new_tokens
        return [Sample(" w" * tokens, "length", (-1.0,) * tokens, 10, tokens)] * request.n


@pytest.mark.parametrize("strategy", ["greedy", "stage_beam"])
@pytest.mark.parametrize("max_tokens", [4, 5, 9, 100])
def test_the_token_budget_is_never_overspent(strategy, max_tokens):
    """Stage by stage. (A best_of_n answer that lacks stages is completed with a token per stage.)"""
    backend = FillingBackend({})
    context = SearchContext(backend=backend, strategy=strategy, candidates=2, max_tokens=max_tokens)
    state = run(context)
    spent = sum(step["candidates"][step["winner"]]["completion_tokens"] for step in state["steps"])
    assert len(STAGES) <= spent <= max_tokens


def test_the_model_context_bounds_the_answer_and_a_request_too_long_fails_before_the_first_token():
    backend = FillingBackend({})
    backend.room = 50  # less than the default stage limits: the answer gets the room, no more
    state = run(SearchContext(backend=backend, strategy="greedy"))
    assert sum(step["candidates"][0]["completion_tokens"] for step in state["steps"]) <= 50
    backend.room = 3  # not one token per stage
    with pytest.raises(ValueError, match="room for 3 new tokens, fewer than one per stage"):
        run(SearchContext(backend=backend, strategy="greedy"))
    backend.room = 500
    with pytest.raises(ValueError, match="answer may take 2,048 tokens.*only 500 fit"):
        run(SearchContext(backend=backend, strategy="greedy", max_stage_tokens=512))
    assert len(backend.sample_calls) == 4  # only the first run sampled


def test_a_human_judge_without_a_checkpointer_fails_before_sampling():
    backend = ScriptedBackend(SCRIPT)
    with pytest.raises(ValueError, match="compile the graph with a checkpointer"):
        run(SearchContext(backend=backend, judge="human"))
    assert not backend.sample_calls


def test_stop_strings_apply_to_the_conclusion_only():
    backend = ScriptedBackend(SCRIPT)
    run(SearchContext(backend=backend, strategy="greedy", stop=("Observation:",)))
    stops = [call[0].stop for call in backend.sample_calls]
    assert stops[:3] == [("</SUMMARY>",), ("</CAPTION>",), ("</REASONING>",)]
    assert stops[3] == ("</CONCLUSION>", "Observation:")


def test_async_run_matches_sync_run():
    sync = run(SearchContext(backend=ScriptedBackend(SCRIPT, prefer=prefers_three), candidates=3, seed=5))
    graph = build_graph()
    context = SearchContext(backend=ScriptedBackend(SCRIPT, prefer=prefers_three), candidates=3, seed=5)
    done = asyncio.run(graph.ainvoke({"conversation": CONVERSATION}, context=context))
    assert done["chosen"] == sync["chosen"]
    assert [s["comparisons"] for s in done["steps"]] == [s["comparisons"] for s in sync["steps"]]


def test_custom_stream_reports_candidates_then_choice_for_each_stage():
    context = SearchContext(backend=ScriptedBackend(SCRIPT), candidates=2, seed=0)
    events = [
        e["event"]
        for e in build_graph().stream({"conversation": CONVERSATION}, context=context, stream_mode="custom")
    ]
    assert events == ["candidates", "chosen"] * 4


def test_verifier_scores_are_in_the_record_and_the_stream():
    backend = ScriptedBackend(SCRIPT, check=lambda text: 2.0 * prefers_three(text) - 1.0)
    context = SearchContext(backend=backend, candidates=3, judge="verifier", seed=0)
    chosen = [
        e["step"]
        for e in build_graph().stream({"conversation": CONVERSATION}, context=context, stream_mode="custom")
        if e["event"] == "chosen"
    ]
    assert [c["judge"] for c in chosen] == ["verifier"] * 4
    caption = chosen[1]
    assert caption["scores"] == [-1.0, 1.0, -1.0] and caption["winner"] == 1
    assert [c["stages"]["conclusion"] for c in chosen[3]["candidates"]] == ["3", "2", "3"]
    assert chosen[3]["scores"] == [1.0, -1.0, 1.0] and chosen[3]["winner"] == 0
    # one batched verifier call per judged stage, each over the stage's distinct candidates;
    # none where all candidates are the same (the summary)
    assert chosen[0]["scores"] is None and chosen[0]["winner"] == 0
    assert [len(call) for call in backend.choice_calls] == [3, 2, 2]
    greedy = run(SearchContext(backend=ScriptedBackend(SCRIPT), strategy="greedy"))
    assert all(step["scores"] is None for step in greedy["steps"])


def test_the_candidate_cap_can_be_raised():
    assert SearchContext(backend=ScriptedBackend(SCRIPT), candidates=100, max_candidates=128).width == 100


def test_missing_context_is_a_clear_error():
    with pytest.raises(ValueError, match="context=SearchContext"):
        build_graph().invoke({"conversation": CONVERSATION})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"candidates": 0}, "candidates must be a whole number of at least 1"),
        ({"strategy": "mcts"}, "Unknown strategy"),
        ({"max_stage_tokens": {"epilogue": 3}}, "unknown stage"),
        ({"max_tokens": 3}, "max_tokens must be a whole number of at least 4"),
        ({"candidates": True}, "candidates must be a whole number"),
        ({"candidates": 1000}, "above the cap of 64"),
        ({"temperature": -1}, "temperature must be at least 0"),
        ({"temperature": "hot"}, "temperature must be a finite number"),
        ({"top_p": 1.5}, "top_p must be above 0.0 and at most 1.0"),
        ({"top_p": 0}, "top_p must be above 0"),
        ({"max_stage_tokens": {"reasoning": 0}}, r"max_stage_tokens\['reasoning'\] must be a whole number"),
        ({"max_stage_tokens": True}, "max_stage_tokens must be a whole number"),
        ({"seed": 1.5}, "seed must be a whole number"),
    ],
)
def test_bad_search_options(options, message):
    with pytest.raises(ValueError, match=message):
        SearchContext(backend=ScriptedBackend(SCRIPT), **options)
