"""``langgraph dev`` serves the graph offline; the SDK streams the search as it happens."""

import base64
import io
import os
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from servers import free_port, running_server

ROOT = Path(__file__).parents[2]

OFFLINE_ENV = {
    "LANGGRAPH_NO_VERSION_CHECK": "true",  # no PyPI query for a newer langgraph-api
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # no CLI usage report
    "LANGSMITH_TRACING": "false",  # no traces to LangSmith
    "LANGCHAIN_TRACING_V2": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


@pytest.fixture(scope="module")
def server_url(tmp_path_factory, tiny_llava_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "LLAVA_COT_"))
    }
    env.update(OFFLINE_ENV)
    env.update(  # what the deployer allows: one model, two judges, small limits
        {
            "LLAVA_COT_MODELS": str(tiny_llava_path),
            "LLAVA_COT_JUDGES": "likelihood,pairwise",
            "LLAVA_COT_MAX_CANDIDATES": "4",
            "LLAVA_COT_MAX_STAGE_TOKENS": "64",
        }
    )
    log = tmp_path_factory.mktemp("server") / "langgraph-dev.log"
    langgraph = Path(sys.executable).with_name("langgraph")
    command = [
        str(langgraph),
        "dev",
        "--no-browser",
        "--no-reload",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    with running_server(command, ready_url=f"{url}/ok", log_path=log, env=env, cwd=ROOT, timeout=60):
        yield url


def png_base64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def test_sdk_run_streams_search_events_as_they_happen(server_url, tiny_llava_path):
    from langgraph_sdk import get_client

    client = get_client(url=server_url)
    thread = await client.threads.create()
    message = {
        "role": "user",
        "content": [
            {"type": "image", "base64": png_base64(), "mime_type": "image/png"},
            {"type": "text", "text": "How many red shapes are there?"},
        ],
    }
    context = {
        "strategy": "stage_beam",
        "candidates": 2,
        "max_stage_tokens": 6,
    }
    events = []
    async for part in client.runs.stream(
        thread["thread_id"],
        "llava_cot",
        input={"messages": [message]},
        context=context,
        stream_mode=["custom", "updates"],
    ):
        events.append((part.event, part.data, time.monotonic()))

    custom = [(data["event"], data["stage"]) for event, data, _ in events if event == "custom"]
    stages = ["summary", "caption", "reasoning", "conclusion"]
    assert custom == [(kind, stage) for stage in stages for kind in ("candidates", "chosen")]
    candidates = [data for event, data, _ in events if event == "custom" and data["event"] == "candidates"]
    assert all(len(data["candidates"]) == 2 for data in candidates)
    # interleaved with the node updates, not delivered in one batch at the end
    order = [
        data["event"] if event == "custom" else next(iter(data))
        for event, data, _ in events
        if event != "metadata"
    ]
    assert order.index("expand_caption") < order.index("chosen") + 4 < len(order)
    assert order[:3] == ["prepare", "candidates", "expand_summary"]

    state = await client.threads.get_state(thread["thread_id"])
    values = state["values"]
    assert set(values["chosen"]) == set(stages)
    answer = values["messages"][-1]
    assert answer["type"] == "ai" and answer["content"] == values["chosen"]["conclusion"]
    assert len(answer["response_metadata"]["llava_cot"]["steps"]) == 4


QUESTION = {"role": "user", "content": [{"type": "text", "text": "How many red shapes are there?"}]}


async def run_with(client, context):
    """Stream one run with ``context``; the errors it ended with, and whether any stage was sampled."""
    thread = await client.threads.create()
    errors, sampled = [], False
    async for part in client.runs.stream(
        thread["thread_id"], "llava_cot", input={"messages": [QUESTION]}, context=context,
        stream_mode=["custom"],
    ):  # fmt: skip
        if part.event == "error":
            errors.append(part.data)
        elif part.event == "custom" and part.data.get("event") == "candidates":
            sampled = True
    return errors, sampled


REFUSED = [
    ({"base_url": "http://127.0.0.1:9/v1", "model": "anything"}, "base_url is the deployer's choice"),
    ({"model": "/"}, "model '/' is not served here"),
    ({"model": str(Path(__file__).parent)}, "is not served here"),
    ({"max_candidates": 1000, "candidates": 100}, "max_candidates is the deployer's choice"),
    ({"device": "meta"}, "device is the deployer's choice"),
    ({"candidates": 5}, "candidates=5 is above this server's cap of 4"),
    ({"max_stage_tokens": 65}, "max_stage_tokens=65 is above this server's cap of 64"),
    ({"judge": "verifier"}, "judge 'verifier' is not offered here"),
    ({"temperature": float("1e400")}, "temperature"),
    ({"adaptive": "false"}, "adaptive must be true or false"),
]


async def test_the_server_refuses_what_its_deployer_did_not_allow(server_url):
    """A client tries each field it may not set, or may set only within limits; each run is refused."""
    from langgraph_sdk import get_client

    client = get_client(url=server_url)
    for context, message in REFUSED:
        errors, sampled = await run_with(client, context)
        assert not sampled, context
        assert len(errors) == 1 and message in errors[0]["message"], (context, errors)
    errors, sampled = await run_with(client, {"strategy": "greedy", "max_stage_tokens": 4})
    assert errors == [] and sampled  # what it allows still runs
