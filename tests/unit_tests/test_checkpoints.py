"""Checkpoints, resuming after a stage, the human judge, and images stored once."""

import logging
import sqlite3

import pytest
from fakes import SCRIPT, ScriptedBackend, prefers_three
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.judges import HumanJudge, resolve_judge
from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.state import checkpoint_serializer

IMAGE_MARK = b"IMAGE-BYTES-7f3a9c1e-unique"
IMAGE = b"\x89PNG\r\n\x1a\n" + IMAGE_MARK + b"-rest-of-the-image"
CONVERSATION = Conversation((Turn("user", "How many red circles?", images=(IMAGE,)),))
CONFIG = {"configurable": {"thread_id": "thread-1"}}


@pytest.fixture
def db(tmp_path):
    conn = sqlite3.connect(tmp_path / "checkpoints.db", check_same_thread=False)
    yield conn
    conn.close()


def saver(conn):
    return SqliteSaver(conn, serde=checkpoint_serializer())


def image_copies(conn) -> int:
    """How many times the image's bytes are stored, over every checkpoint and write."""
    rows = conn.execute("SELECT checkpoint FROM checkpoints").fetchall()
    rows += conn.execute("SELECT value FROM writes").fetchall()
    return sum(bytes(blob).count(IMAGE_MARK) for (blob,) in rows if blob)


def test_run_interrupted_after_a_stage_resumes_there_without_redoing_it(db, caplog):
    backend = ScriptedBackend(SCRIPT, prefer=prefers_three)
    context = SearchContext(backend=backend, candidates=3, judge="pairwise", seed=0)
    graph = build_graph(checkpointer=saver(db), interrupt_after=["judge_caption"])

    paused = graph.invoke({"conversation": CONVERSATION}, CONFIG, context=context)
    assert paused["chosen"] == {"summary": "count the red circles", "caption": "three red circles"}
    assert graph.get_state(CONFIG).next == ("expand_reasoning",)
    assert len(backend.sample_calls) == 2

    # a new process: a fresh graph, backend and connection-level saver read the same database
    fresh_backend = ScriptedBackend(SCRIPT, prefer=prefers_three)
    resumed_graph = build_graph(checkpointer=saver(db))
    with caplog.at_level(logging.WARNING):
        done = resumed_graph.invoke(
            None, CONFIG, context=SearchContext(backend=fresh_backend, candidates=3, judge="pairwise", seed=0)
        )

    assert [call[0].prefix.rsplit("<", 1)[-1] for call in fresh_backend.sample_calls] == [
        "REASONING>",
        "CONCLUSION>",
    ]
    assert done["chosen"]["conclusion"] == "3"
    assert [s["stage"] for s in done["steps"]] == ["summary", "caption", "reasoning", "conclusion"]
    assert done["conversation"] == CONVERSATION  # image bytes round-trip intact
    assert (
        done["usage"]["model_calls"] == 9
    )  # 4 samplings, 4 judge calls, the reasoning pre-check; none repeated
    assert not [r for r in caplog.records if "unregistered" in r.getMessage()]


def test_images_are_not_copied_into_every_checkpoint(db):
    graph = build_graph(checkpointer=saver(db))
    context = SearchContext(backend=ScriptedBackend(SCRIPT), candidates=2, seed=0)
    graph.invoke({"conversation": CONVERSATION}, CONFIG, context=context)
    checkpoints = db.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    assert checkpoints >= 9
    # once as the run's input (LangGraph keeps it in the input checkpoint) and once
    # as the conversation channel's write: 2, however many stages and checkpoints
    assert image_copies(db) == 2
    assert graph.get_state(CONFIG).values["conversation"].images == (IMAGE,)


def test_human_judge_interrupts_with_candidates_and_resumes_with_the_choice(db):
    backend = ScriptedBackend(SCRIPT)
    context = SearchContext(backend=backend, candidates=3, judge="human")
    graph = build_graph(checkpointer=saver(db))

    graph.invoke({"conversation": CONVERSATION}, CONFIG, context=context)
    [request] = graph.get_state(CONFIG).interrupts
    assert request.value["stage"] == "summary" and request.value["event"] == "choose"
    assert request.value["question"] == "How many red circles?"

    choices = {"summary": 0, "caption": 2, "reasoning": 1, "conclusion": 0}
    for stage in ("summary", "caption", "reasoning", "conclusion"):
        [request] = graph.get_state(CONFIG).interrupts
        assert request.value["stage"] == stage and len(request.value["candidates"]) == 3
        state = graph.invoke(Command(resume=choices[stage]), CONFIG, context=context)

    assert state["chosen"] == {
        "summary": "count the red circles",
        "caption": "one blue square",
        "reasoning": "so two",
        "conclusion": "3",
    }
    assert [s["judge"] for s in state["steps"]] == ["human"] * 4
    assert [s["winner"] for s in state["steps"]] == [0, 2, 1, 0]
    # resuming re-runs only the judge node: each stage was sampled exactly once
    assert len(backend.sample_calls) == 4 and not backend.choice_calls


@pytest.mark.parametrize("bad", [3, -1, "1", True, 1.0, {"choice": 1}])
def test_human_judge_asks_again_after_a_bad_choice(db, bad):
    backend = ScriptedBackend(SCRIPT)
    context = SearchContext(backend=backend, candidates=3, judge="human")
    graph = build_graph(checkpointer=saver(db))
    graph.invoke({"conversation": CONVERSATION}, CONFIG, context=context)
    graph.invoke(Command(resume=bad), CONFIG, context=context)
    [again] = graph.get_state(CONFIG).interrupts
    assert again.value["stage"] == "summary" and len(again.value["candidates"]) == 3
    assert f"resumed with {bad!r}; resume with the index of the chosen candidate" in again.value["error"]
    assert "0 to 2" in again.value["error"]
    graph.invoke(Command(resume=1), CONFIG, context=context)
    assert graph.get_state(CONFIG).interrupts[0].value["stage"] == "caption"
    assert len(backend.sample_calls) == 2


async def test_human_judge_works_async(db):
    from langgraph.checkpoint.memory import InMemorySaver

    backend = ScriptedBackend(SCRIPT)
    context = SearchContext(backend=backend, candidates=2, judge="human")
    graph = build_graph(checkpointer=InMemorySaver())
    await graph.ainvoke({"conversation": CONVERSATION}, CONFIG, context=context)
    for _ in range(4):
        state = await graph.ainvoke(Command(resume=1), CONFIG, context=context)
    assert [s["winner"] for s in state["steps"]] == [1, 1, 1, 1]


def test_human_is_a_judge_name():
    assert isinstance(resolve_judge("human"), HumanJudge)
    assert SearchContext(backend=ScriptedBackend(SCRIPT), judge="human").resolved_judge.name == "human"
