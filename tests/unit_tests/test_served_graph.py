"""The deployable graph of ``graphs/llava_cot.py``: JSON messages in, an AIMessage out."""

import base64
import io
import sqlite3
import sys
from pathlib import Path

import pytest
from fakes import SCRIPT, ScriptedBackend, prefers_three
from langgraph.checkpoint.sqlite import SqliteSaver
from PIL import Image

from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.state import checkpoint_serializer

sys.path.insert(0, str(Path(__file__).parents[2]))
from graphs.llava_cot import make_graph  # noqa: E402

CONFIG = {"configurable": {"thread_id": "served-1"}}


def png_base64(seed: int) -> str:
    image = Image.effect_noise((32, 32), 40 + seed).convert("RGB")  # noise: no two alike
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def user_message(text: str, image_b64: str) -> dict:
    return {
        "role": "user",
        "content": [
            {"type": "image", "base64": image_b64, "mime_type": "image/png"},
            {"type": "text", "text": text},
        ],
    }


@pytest.fixture
def db(tmp_path):
    conn = sqlite3.connect(tmp_path / "served.db", check_same_thread=False)
    yield conn
    conn.close()


def test_json_messages_in_answer_message_out_with_search_record(db):
    graph = make_graph(checkpointer=SqliteSaver(db, serde=checkpoint_serializer()))
    backend = ScriptedBackend(SCRIPT, prefer=prefers_three)
    image = png_base64(0)
    state = graph.invoke(
        {"messages": [user_message("How many red circles?", image)]},
        CONFIG,
        context=SearchContext(backend=backend, candidates=3, seed=0),
    )
    answer = state["messages"][-1]
    assert answer.type == "ai" and answer.content == "3"
    assert answer.additional_kwargs["reasoning_content"].startswith(
        "<SUMMARY> count the red circles </SUMMARY>"
    )
    assert [s["stage"] for s in answer.response_metadata["llava_cot"]["steps"]] == [
        "summary",
        "caption",
        "reasoning",
        "conclusion",
    ]
    # the model saw the image and the question
    request = backend.sample_calls[0][0]
    assert request.conversation.question == "How many red circles?"
    assert request.conversation.images == (base64.b64decode(image),)


def test_each_image_is_stored_once_in_the_checkpoints(db):
    graph = make_graph(checkpointer=SqliteSaver(db, serde=checkpoint_serializer()))
    image = png_base64(1)
    context = SearchContext(backend=ScriptedBackend(SCRIPT), candidates=2, seed=0)
    graph.invoke({"messages": [user_message("How many?", image)]}, CONFIG, context=context)
    graph.invoke({"messages": [user_message("And now?", png_base64(2))]}, CONFIG, context=context)

    rows = db.execute("SELECT checkpoint FROM checkpoints").fetchall()
    rows += db.execute("SELECT value FROM writes").fetchall()
    stored = b"".join(bytes(blob) for (blob,) in rows if blob)
    assert len(rows) > 30  # two runs of 11 steps each
    # the message's write holds it; the run's input checkpoint holds the raw input
    assert stored.count(image[100:160].encode()) == 2
    assert base64.b64decode(image)[100:160] not in stored  # no decoded copy in state


def test_second_question_in_a_thread_starts_a_fresh_search_that_sees_the_history(db):
    graph = make_graph(checkpointer=SqliteSaver(db, serde=checkpoint_serializer()))
    backend = ScriptedBackend(SCRIPT)
    context = SearchContext(backend=backend, strategy="greedy")
    graph.invoke({"messages": [user_message("How many?", png_base64(3))]}, CONFIG, context=context)
    state = graph.invoke(
        {"messages": [{"role": "user", "content": "Are you sure?"}]}, CONFIG, context=context
    )
    assert [m.type for m in state["messages"]] == ["human", "ai", "human", "ai"]
    assert len(state["steps"]) == 4 and len(backend.sample_calls) == 8
    later = backend.sample_calls[4][0].conversation
    assert [t.role for t in later.turns] == ["user", "assistant", "user"] and len(later.images) == 1


def test_a_bad_image_fails_before_any_model_call():
    backend = ScriptedBackend(SCRIPT)
    bad = {
        "role": "user",
        "content": [{"type": "image", "base64": "bm90IGFuIGltYWdl", "mime_type": "image/png"}],
    }
    with pytest.raises(Exception, match="(?i)image"):
        make_graph().invoke({"messages": [bad]}, context=SearchContext(backend=backend))
    assert not backend.sample_calls


def test_context_from_json_names_the_model_instead_of_a_backend():
    context = SearchContext(**{"model": "/some/model", "strategy": "greedy", "judge": "human", "stop": ["x"]})
    assert context.backend is None and context.model == "/some/model" and context.stop == ("x",)
    with pytest.raises(ValueError, match="name the served model"):
        SearchContext(base_url="http://127.0.0.1:1/v1")
