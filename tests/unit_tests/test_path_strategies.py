"""dvts and particle_filter on the scripted backend: searches that carry several paths."""

import asyncio
import random
from dataclasses import dataclass

import pytest
from fakes import SCRIPT, ScriptedBackend, says_three
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.backends.base import Sample
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.stages import STAGES, Stage
from langchain_llava_cot.strategies.particle_filter import resample

CONVERSATION = Conversation((Turn("user", "How many red circles?"),))

CAPTIONS = {
    **SCRIPT,
    Stage.CAPTION: [
        " two red circles </CAPTION>",
        " one blue square </CAPTION>",
        " three red circles </CAPTION>",
        " two red circles </CAPTION>",
    ],
}
"""Four captions in one call: dvts with subtrees of 2 gives [two, one blue] to the first
subtree and [three, two] to the second."""


@dataclass
class FollowsCaption(ScriptedBackend):
    """A model whose reasoning and conclusion follow the caption it continues: after three, 3."""

    def _sample_one(self, request):
        stage = next((s for s in STAGES if request.prefix.endswith(s.open_tag)), None)
        if stage not in (Stage.REASONING, Stage.CONCLUSION):
            return super()._sample_one(request)
        caption = request.prefix.split("<CAPTION>")[1].split("</CAPTION>")[0]
        word = {"two": "2", "three": "3"}.get(caption.split()[0], "1")
        text = f" so {word} " if stage is Stage.REASONING else f" {word} "
        return [
            Sample(text, "stop", token_logprobs=(-0.1 * (i + 1),) * 3, prompt_tokens=20, completion_tokens=2)
            for i in range(request.n)
        ]


def run(context, **compile_options):
    return build_graph(**compile_options).invoke({"conversation": CONVERSATION}, context=context)


def dvts(backend, **options):
    return SearchContext(
        backend=backend, **{"strategy": "dvts", "candidates": 4, "judge": "verifier", **options}
    )


def particles(backend, **options):
    options = {"strategy": "particle_filter", "candidates": 4, "judge": "verifier", **options}
    return SearchContext(backend=backend, **options)


def path_stages(steps, trail):
    """The stages a path in the record wrote: its candidate of each step, in turn."""
    stages = {}
    for j, index in enumerate(trail):
        stages |= steps[j]["candidates"][index]["stages"]
    return stages


# --- dvts -------------------------------------------------------------------------------------


def test_dvts_subtrees_stay_independent():
    backend = FollowsCaption(CAPTIONS, check=says_three)
    state = run(dvts(backend, subtree_width=2))
    caption = state["steps"][1]
    assert [c["path"] for c in caption["candidates"]] == [0, 0, 1, 1]
    # each subtree keeps its own best: the first keeps "two" although the second's "three" scores higher
    assert caption["kept"] == [0, 2] and caption["paths"] == [[0, 0], [2, 2]]
    reasoning_call = backend.sample_calls[2]
    assert [r.n for r in reasoning_call] == [2, 2]  # every subtree's continuations, in one call
    assert "two red circles" in reasoning_call[0].prefix and "three" not in reasoning_call[0].prefix
    assert "three red circles" in reasoning_call[1].prefix
    for step in state["steps"][2:]:
        assert [c["path"] for c in step["candidates"]] == [0, 0, 1, 1]
        assert step["kept"][0] in (0, 1) and step["kept"][1] in (2, 3)  # never the other subtree's
        assert path_stages(state["steps"], step["paths"][0])["caption"] == "two red circles"


def test_dvts_best_leaf_wins():
    backend = FollowsCaption(CAPTIONS, check=says_three)
    state = run(dvts(backend))
    last = state["steps"][-1]
    assert state["chosen"]["caption"] == "three red circles" and state["chosen"]["conclusion"] == "3"
    assert last["candidates"][last["winner"]]["path"] == 1  # the second subtree's leaf
    assert last["scores"][last["winner"]] == max(last["scores"])
    winning = next(path for path in last["paths"] if path[-1] == last["winner"])
    assert path_stages(state["steps"], winning) == state["chosen"]


def test_dvts_samples_each_stage_of_every_subtree_in_one_call_and_counts_its_calls():
    backend = FollowsCaption(CAPTIONS, check=says_three)
    state = run(dvts(backend, candidates=6, subtree_width=2))
    assert len(backend.sample_calls) == len(STAGES)
    assert [sum(r.n for r in call) for call in backend.sample_calls] == [6, 6, 6, 6]
    assert len(state["steps"][0]["paths"]) == 3
    assert state["usage"]["model_calls"] == len(backend.sample_calls) + len(backend.choice_calls)


def test_dvts_needs_a_scoring_judge_and_whole_subtrees():
    with pytest.raises(ValueError, match="keeps each subtree's best candidate by score") as raised:
        SearchContext(backend=ScriptedBackend(SCRIPT), strategy="dvts", judge="pairwise")
    assert "\n" not in str(raised.value.errors()[0]["msg"])
    with pytest.raises(ValueError, match="make candidates a multiple of subtree_width"):
        SearchContext(backend=ScriptedBackend(SCRIPT), strategy="dvts", candidates=5, subtree_width=2)
    auto = SearchContext(backend=ScriptedBackend(SCRIPT), strategy="dvts")
    assert auto.resolved_judge.scores  # auto chooses among the judges that score


# --- particle_filter --------------------------------------------------------------------------


def test_resampling_follows_the_softmax_of_the_scores():
    rng = random.Random(0)
    draws = [i for _ in range(4000) for i in resample([0.0, 1.0986], 1.0, rng)]  # log 3: p = 1/4, 3/4
    assert draws.count(1) / len(draws) == pytest.approx(0.75, abs=0.02)
    hot = [i for _ in range(4000) for i in resample([0.0, 1.0986], 100.0, rng)]
    assert hot.count(1) / len(hot) == pytest.approx(0.5, abs=0.03)  # a high temperature flattens it
    assert resample([None, None, None], 1.0, rng) != [] and resample([None, 5.0], 1.0, rng) == [1, 1]


def test_particles_resample_by_score_and_share_a_request_when_they_share_a_path():
    backend = FollowsCaption(CAPTIONS, check=says_three)
    state = run(particles(backend, resample_temperature=0.05, seed=3))
    caption = state["steps"][1]
    assert caption["scores"] == [-2.0, -2.0, 2.0, -2.0]
    assert caption["resampled"] == [2, 2, 2, 2]  # the one good caption takes over
    [reasoning_request] = backend.sample_calls[2]
    assert reasoning_request.n == 4 and "three red circles" in reasoning_request.prefix
    assert "resampled" not in state["steps"][-1]  # after the conclusion the best particle wins
    assert state["chosen"]["conclusion"] == "3"


def test_seeded_resampling_is_reproducible_and_follows_the_scores():
    def resampled(seed):
        state = run(particles(FollowsCaption(CAPTIONS, check=says_three), seed=seed))
        return [s["resampled"] for s in state["steps"][:-1]]

    assert resampled(11) == resampled(11)
    counts = [0, 0, 0, 0]
    for seed in range(40):
        for i in resampled(seed)[1]:  # the caption step: scores -2, -2, 2, -2 at temperature 1
            counts[i] += 1
    assert counts[2] / sum(counts) == pytest.approx(0.95, abs=0.05)  # e^4 / (e^4 + 3)


def test_particle_filter_needs_a_scoring_judge():
    with pytest.raises(ValueError, match="resamples its particles by score") as raised:
        SearchContext(backend=ScriptedBackend(SCRIPT), strategy="particle_filter", judge="pairwise")
    assert "\n" not in str(raised.value.errors()[0]["msg"])
    with pytest.raises(ValueError, match="resample_temperature must be above 0"):
        SearchContext(backend=ScriptedBackend(SCRIPT), strategy="particle_filter", resample_temperature=0)


# --- both -------------------------------------------------------------------------------------

BOTH = [dvts, particles]


@pytest.mark.parametrize("make", BOTH, ids=["dvts", "particle_filter"])
def test_the_record_holds_every_candidate_its_path_and_score(make):
    state = run(make(FollowsCaption(CAPTIONS, check=says_three), seed=1))
    steps = state["steps"]
    assert [s["stage"] for s in steps] == [s.value for s in STAGES]
    for j, step in enumerate(steps):
        assert len(step["candidates"]) == 4 and len(step["scores"]) == 4
        assert all(score is not None for score in step["scores"])
        assert all("path" in c for c in step["candidates"])
        for trail in step["paths"]:
            assert len(trail) == j + 1
        if j:  # a candidate's path is one of the previous step's
            assert all(c["path"] < len(steps[j - 1]["paths"]) for c in step["candidates"])
            for c in step["candidates"]:
                written = path_stages(steps, steps[j - 1]["paths"][c["path"]])
                assert set(written) == {s.value for s in STAGES[:j]}
    last = steps[-1]
    winning = next(path for path in last["paths"] if path[-1] == last["winner"])
    assert path_stages(steps, winning) == state["chosen"]


@pytest.mark.parametrize("make", BOTH, ids=["dvts", "particle_filter"])
def test_a_checkpointed_run_resumes_mid_search(make):
    whole = run(make(FollowsCaption(CAPTIONS, check=says_three), seed=2))
    backend = FollowsCaption(CAPTIONS, check=says_three)
    graph = build_graph(checkpointer=InMemorySaver(), interrupt_after=["judge_caption"])
    config = {"configurable": {"thread_id": "paths"}}
    graph.invoke({"conversation": CONVERSATION}, config, context=make(backend, seed=2))
    paused = graph.get_state(config)
    assert paused.next == ("expand_reasoning",) and "caption" not in paused.values.get("chosen", {})
    assert all(
        set(path["stages"]) == {"summary", "caption"} for path in paused.values["strategy_state"]["paths"]
    )
    graph.invoke(None, config, context=make(backend, seed=2))
    final = graph.get_state(config).values
    assert len(backend.sample_calls) == len(STAGES)  # nothing sampled twice
    assert final["chosen"] == whole["chosen"]
    assert [s["paths"] for s in final["steps"]] == [s["paths"] for s in whole["steps"]]


@pytest.mark.parametrize("make", BOTH, ids=["dvts", "particle_filter"])
def test_events_stream_for_every_stage_and_async_matches_sync(make):
    events = []
    for mode, data in build_graph().stream(
        {"conversation": CONVERSATION},
        context=make(FollowsCaption(CAPTIONS, check=says_three), seed=4),
        stream_mode=["custom", "values"],
    ):
        if mode == "custom":
            events.append(data)
        else:
            state = data
    assert [e["event"] for e in events] == ["candidates", "chosen"] * len(STAGES)
    assert all(len(e["step"]["paths"]) for e in events if e["event"] == "chosen")
    context = make(FollowsCaption(CAPTIONS, check=says_three), seed=4)
    done = asyncio.run(build_graph().ainvoke({"conversation": CONVERSATION}, context=context))
    assert done["chosen"] == state["chosen"]
    assert [s["paths"] for s in done["steps"]] == [s["paths"] for s in state["steps"]]


@pytest.mark.parametrize("strategy", ["dvts", "particle_filter"])
def test_the_chat_model_streams_the_chosen_path_once_at_the_end(strategy):
    llm = ChatLlavaCoT(
        backend=FollowsCaption(CAPTIONS, check=says_three), strategy=strategy, judge="verifier", seed=0
    )
    chunks = list(llm.stream([HumanMessage("How many red circles?")]))
    streamed = "".join(c.additional_kwargs.get("reasoning_content", "") for c in chunks)
    assert streamed.count("<CAPTION>") == 1 and "<CAPTION> three red circles </CAPTION>" in streamed
    answer = llm.invoke([HumanMessage("How many red circles?")])
    assert answer.content == "3" and answer.additional_kwargs["reasoning_content"] == streamed
    assert len(answer.response_metadata["llava_cot"]["steps"]) == len(STAGES)


def test_the_eval_names_both():
    from langchain_llava_cot.eval.strategies import parse_strategy

    assert parse_strategy("dvts:likelihood:4").strategy == "dvts"
    assert parse_strategy("particle_filter:likelihood:4").candidates == 4
    with pytest.raises(ValueError, match="keeps each subtree's best candidate by score"):
        parse_strategy("dvts:pairwise:4")
