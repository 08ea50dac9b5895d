"""Search runs checkpointed on a real PostgreSQL: resume, the human judge, async, and a killed worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.types import Command
from postgres import postgres_server
from psycopg import AsyncConnection, Connection
from psycopg.rows import dict_row

from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.state import checkpoint_serializer

pytestmark = [
    pytest.mark.skipif(shutil.which("initdb") is None, reason="needs PostgreSQL (initdb, pg_ctl)"),
    pytest.mark.timeout(120),
]

UNIT_TESTS = Path(__file__).parents[1] / "unit_tests"
sys.path.insert(0, str(UNIT_TESTS))
from fakes import SCRIPT, ScriptedBackend, prefers_three  # noqa: E402

CONVERSATION = Conversation((Turn("user", "How many red circles?", (b"\x89PNG-picture",)),))


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as url:
        with Connection.connect(url, autocommit=True) as conn:
            PostgresSaver(conn).setup()
        yield url


def saver(url: str) -> tuple[Connection, PostgresSaver]:
    """A new connection and saver, as each worker process would open its own."""
    conn = Connection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    return conn, PostgresSaver(conn, serde=checkpoint_serializer())


def context(backend: ScriptedBackend, **options) -> SearchContext:
    return SearchContext(**{"backend": backend, "candidates": 2, "judge": "pairwise", "seed": 0, **options})


def test_a_run_paused_after_a_stage_is_finished_by_another_worker(postgres: str) -> None:
    expected = build_graph().invoke(
        {"conversation": CONVERSATION}, context=context(ScriptedBackend(SCRIPT, prefers_three))
    )
    config = {"configurable": {"thread_id": "paused"}}
    conn, first = saver(postgres)
    with conn:
        graph = build_graph(checkpointer=first, interrupt_after=["judge_caption"])
        graph.invoke(
            {"conversation": CONVERSATION}, config, context=context(ScriptedBackend(SCRIPT, prefers_three))
        )
        assert graph.get_state(config).next == ("expand_reasoning",)
    conn, second = saver(postgres)
    with conn:
        backend = ScriptedBackend(SCRIPT, prefers_three)
        state = build_graph(checkpointer=second).invoke(None, config, context=context(backend))
    assert state["chosen"] == expected["chosen"]
    assert state["conversation"] == CONVERSATION  # the picture came back from the database
    assert len(backend.sample_calls) == 2  # only reasoning and conclusion were sampled again


def test_the_human_judge_waits_on_postgres(postgres: str) -> None:
    config = {"configurable": {"thread_id": "human"}}
    backend = ScriptedBackend(SCRIPT)
    human = context(backend, judge="human")
    conn, first = saver(postgres)
    with conn:
        graph = build_graph(checkpointer=first)
        graph.invoke({"conversation": CONVERSATION}, config, context=human)
        [asked] = graph.get_state(config).interrupts
        assert asked.value["stage"] == "summary"
    conn, second = saver(postgres)
    with conn:
        graph = build_graph(checkpointer=second)
        for _ in range(4):
            candidates = graph.get_state(config).interrupts[0].value["candidates"]
            pick = next((i for i, c in enumerate(candidates) if "three" in c or "3" in c), 0)
            graph.invoke(Command(resume=pick), config, context=human)
        final = graph.get_state(config).values
    assert final["chosen"]["caption"] == "three red circles" and final["chosen"]["conclusion"] == "3"


async def test_async_runs_checkpoint_with_the_async_saver(postgres: str) -> None:
    config = {"configurable": {"thread_id": "async"}}
    async with await AsyncConnection.connect(
        postgres, autocommit=True, prepare_threshold=0, row_factory=dict_row
    ) as conn:
        checkpointer = AsyncPostgresSaver(conn, serde=checkpoint_serializer())
        graph = build_graph(checkpointer=checkpointer, interrupt_after=["judge_reasoning"])
        backend = ScriptedBackend(SCRIPT, prefers_three)
        await graph.ainvoke({"conversation": CONVERSATION}, config, context=context(backend))
        assert (await graph.aget_state(config)).next == ("expand_conclusion",)
        state = await graph.ainvoke(None, config, context=context(backend))
    assert state["chosen"]["conclusion"] == "3" and len(state["steps"]) == 4


WORKER = """
import pathlib, sys, time
sys.path.insert(0, {unit_tests!r})
from fakes import SCRIPT, ScriptedBackend, prefers_three
from psycopg import Connection
from psycopg.rows import dict_row
from langgraph.checkpoint.postgres import PostgresSaver
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.state import checkpoint_serializer
from langchain_llava_cot.options import SearchContext
from test_postgres_runs import CONVERSATION

class StallsAtReasoning(ScriptedBackend):
    def sample(self, requests):
        if any(r.prefix.endswith("<REASONING>") for r in requests):
            pathlib.Path({marker!r}).touch()
            time.sleep(600)
        return super().sample(requests)

conn = Connection.connect({url!r}, autocommit=True, prepare_threshold=0, row_factory=dict_row)
graph = build_graph(checkpointer=PostgresSaver(conn, serde=checkpoint_serializer()))
backend = StallsAtReasoning(SCRIPT, prefers_three)
context = SearchContext(backend=backend, candidates=2, judge="pairwise", seed=0)
# "sync": each stage's checkpoint is written before the next stage starts, so a kill loses nothing
config = {{"configurable": {{"thread_id": "killed"}}}}
graph.invoke({{"conversation": CONVERSATION}}, config, context=context, durability="sync")
"""


def test_a_worker_killed_mid_run_is_resumed_by_another_process_with_nothing_lost(
    postgres: str, tmp_path: Path
) -> None:
    marker = tmp_path / "reasoning-started"
    code = WORKER.format(unit_tests=str(UNIT_TESTS), marker=str(marker), url=postgres)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(UNIT_TESTS)])}
    worker = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
        assert time.monotonic() < deadline, "the worker never reached the reasoning stage"
        time.sleep(0.1)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    config = {"configurable": {"thread_id": "killed"}}
    conn, checkpointer = saver(postgres)
    with conn:
        graph = build_graph(checkpointer=checkpointer)
        left = graph.get_state(config)
        assert left.next == ("expand_reasoning",)  # the last finished stage is the caption
        assert [s["stage"] for s in left.values["steps"]] == ["summary", "caption"]
        backend = ScriptedBackend(SCRIPT, prefers_three)
        state = graph.invoke(None, config, context=context(backend))
    assert [s["stage"] for s in state["steps"]] == ["summary", "caption", "reasoning", "conclusion"]
    assert state["steps"][:2] == left.values["steps"]  # the killed worker's stages, kept as they were
    assert state["chosen"]["caption"] == "three red circles" and state["chosen"]["conclusion"] == "3"
    assert [call[0].prefix.rsplit("<", 1)[-1] for call in backend.sample_calls] == [
        "REASONING>",
        "CONCLUSION>",
    ]
