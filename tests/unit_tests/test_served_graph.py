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

from langchain_llava_cot.demo import DEMO_MODEL_PATH
from langchain_llava_cot.deployment import Deployment
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


# --- the trust boundary: the deployer configures, a client chooses within it ---------------


class CountingFactory:
    """Makes a scripted backend per model name, and counts what it was asked to load."""

    def __init__(self):
        self.loaded = []

    def __call__(self, model):
        self.loaded.append(model)
        return ScriptedBackend(SCRIPT, model_name=model)


def served(**deployment_options):
    factory = CountingFactory()
    deployment = Deployment(models=("small", "large"), make_backend=factory, **deployment_options)
    return make_graph(deployment), factory


def ask(graph, context):
    return graph.invoke({"messages": [user_message("How many red circles?", png_base64(4))]}, context=context)


def test_a_client_chooses_the_search_and_one_of_the_deployers_models():
    graph, factory = served()
    state = ask(graph, {"model": "large", "strategy": "greedy", "judge": "likelihood"})
    assert state["messages"][-1].response_metadata["model_name"] == "large"
    assert factory.loaded == ["large"]
    ask(graph, {})  # no model: the deployer's first
    assert factory.loaded == ["large", "small"]


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"base_url": "http://attacker.example/v1"}, "base_url is the deployer's choice"),
        ({"device": "cuda:7"}, "device is the deployer's choice"),
        ({"backend": "anything"}, "backend is the deployer's choice"),
        ({"max_candidates": 1000, "candidates": 200}, "max_candidates is the deployer's choice"),
        ({"model": "/etc"}, "model '/etc' is not served here: choose one of \\['small', 'large'\\]"),
        ({"model": "../small"}, "is not served here"),
        ({"candidates": 17}, "candidates=17 is above this server's cap of 16"),
        ({"strategy": "retrace", "max_retraces": 4}, "max_retraces=4 is above this server's cap of 3"),
        ({"max_stage_tokens": {"reasoning": 5000}}, "max_stage_tokens=5000 is above this server's cap"),
        ({"judge": "human"}, "judge 'human' is not offered here"),
        ({"temperature": "hot"}, "temperature must be a finite number"),
        ({"adaptive": "false"}, "adaptive must be true or false"),
    ],
)
def test_a_client_is_refused_what_the_deployer_did_not_allow_before_any_model_work(context, message):
    graph, factory = served(judges=("likelihood", "pairwise"))
    with pytest.raises(ValueError, match=message):
        ask(graph, context)
    assert factory.loaded == []


def test_the_model_cache_is_bounded():
    factory = CountingFactory()
    deployment = Deployment(models=("a", "b", "c"), make_backend=factory, max_loaded_models=2)
    for model in ("a", "b", "a", "c", "a"):
        deployment.backend(model)
    assert deployment.loaded_models == ("c", "a")
    assert factory.loaded == ["a", "b", "c"]  # "a" stayed loaded: it was used last before "c" came


def test_the_deployment_is_read_from_the_environment():
    deployment = Deployment.from_env(
        {
            "LLAVA_COT_MODELS": "big, small",
            "LLAVA_COT_BASE_URL": "http://127.0.0.1:8000/v1",
            "LLAVA_COT_JUDGES": "likelihood,verifier",
            "LLAVA_COT_MAX_CANDIDATES": "8",
            "LLAVA_COT_MAX_LOADED_MODELS": "1",
        }
    )
    assert deployment.models == ("big", "small") and deployment.base_url == "http://127.0.0.1:8000/v1"
    assert (deployment.judges, deployment.max_candidates, deployment.max_loaded_models) == (
        ("likelihood", "verifier"),
        8,
        1,
    )
    default = Deployment.from_env({})
    assert default.models == (str(DEMO_MODEL_PATH),) and default.base_url is None
    with pytest.raises(ValueError, match="LLAVA_COT_MAX_CANDIDATES must be a whole number"):
        Deployment.from_env({"LLAVA_COT_MAX_CANDIDATES": "lots"})
    with pytest.raises(ValueError, match="LLAVA_COT_JUDGES"):
        Deployment.from_env({"LLAVA_COT_JUDGES": "oracle"})


def test_the_client_context_schema_lists_the_refused_fields_so_none_is_dropped_silently():
    schema = make_graph(Deployment(models=("m",), make_backend=CountingFactory())).get_context_jsonschema()
    assert {"base_url", "device", "backend", "max_candidates", "model", "candidates"} <= set(
        schema["properties"]
    )
