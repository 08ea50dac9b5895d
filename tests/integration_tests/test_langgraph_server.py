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
def server_url(tmp_path_factory):
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"))
    }
    env.update(OFFLINE_ENV)
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
        "model": str(tiny_llava_path),
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
