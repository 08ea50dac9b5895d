"""``llava-cot serve`` in front of a real vLLM (its CPU build) serving the demo model: the search's
model calls go to vLLM, the clients talk to the server (the real-server lane, ``make test-servers``)."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import openai
import pytest
from servers import STAGE_LIMITS, VLLM_PYTHON, vllm_serving_demo

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.demo import DEMO_QUESTION, EXAMPLE_IMAGE
from langchain_llava_cot.demo.dataset import examples
from langchain_llava_cot.server import BackgroundServer, ServerSettings, create_app

pytestmark = [
    pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="the real-server lane: make test-servers"),
    pytest.mark.timeout(900),
]

SERVED = "llava-cot"


def picture_question(picture: bytes = EXAMPLE_IMAGE.read_bytes(), text: str = DEMO_QUESTION) -> list[dict]:
    url = "data:image/png;base64," + base64.b64encode(picture).decode()
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
        }
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """The server on 127.0.0.1, its search's model calls going to vLLM; yields (server, chat model)."""
    with vllm_serving_demo(tmp_path_factory.mktemp("vllm")) as vllm_url:
        llm = ChatLlavaCoT(
            base_url=f"{vllm_url}/v1", model="demo", candidates=4, max_stage_tokens=STAGE_LIMITS, timeout=300
        )
        with BackgroundServer(create_app(llm, ServerSettings(served_model_name=SERVED))) as server:
            yield server, llm


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[0].url, api_key="unused", max_retries=0, timeout=300)


def test_a_picture_in_the_stages_streamed_then_the_answer(client: openai.OpenAI) -> None:
    started = time.perf_counter()
    completion = client.chat.completions.create(model=SERVED, messages=picture_question())
    seconds = time.perf_counter() - started
    message, record = completion.choices[0].message, completion.model_extra["llava_cot"]
    assert message.content == record["chosen"]["conclusion"] and message.content.strip()
    assert record["chosen"]["caption"] in message.model_extra["reasoning_content"]
    assert [len(step["candidates"]) for step in record["steps"]] == [4] * 4
    assert completion.usage.completion_tokens == record["usage"]["output_tokens"] > 0

    kinds = []
    for chunk in client.chat.completions.create(model=SERVED, messages=picture_question(), stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta and (delta.model_extra or {}).get("reasoning_content"):
            kinds.append(delta.model_extra["reasoning_content"].split(">")[0] + ">")
        elif delta and delta.content:
            kinds.append("content")
    assert kinds == ["<SUMMARY>", "<CAPTION>", "<REASONING>", "content"]
    print(f"\nstage_beam, 4 candidates, through llava-cot serve and vLLM: {seconds:.2f} s an answer")


def test_options_tools_and_json_schema_per_request(client: openai.OpenAI) -> None:
    best = client.chat.completions.create(model=f"best_of_n-3@{SERVED}", messages=picture_question())
    assert [len(step["candidates"]) for step in best.model_extra["llava_cot"]["steps"]] == [3]
    add = {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two whole numbers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
    forced = client.chat.completions.create(
        model=f"greedy@{SERVED}", messages=picture_question(), tools=[add], tool_choice="required"
    )
    [call] = forced.choices[0].message.tool_calls
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "add" and all(isinstance(arguments[k], int) for k in "ab")
    schema = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
    shaped = client.chat.completions.create(
        model=f"greedy@{SERVED}",
        messages=picture_question(),
        response_format={"type": "json_schema", "json_schema": {"name": "Count", "schema": schema}},
    )
    assert isinstance(json.loads(shaped.choices[0].message.content)["count"], int)


def test_a_prompt_vllm_refuses_as_too_long_is_a_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError, match="too long") as refused:
        client.chat.completions.create(
            model=f"greedy@{SERVED}", messages=picture_question(text="How many red squares are there? " * 400)
        )
    assert refused.value.status_code == 413


def test_sixteen_clients_at_once_each_get_their_own_answer(served, client: openai.OpenAI) -> None:
    _, llm = served
    questions = examples("test", 16, start=100)
    alone = [llm.invoke([e.message()], strategy="greedy") for e in questions]
    answers: list = [None] * len(questions)
    barrier = threading.Barrier(len(questions))

    def ask(i: int) -> None:
        barrier.wait()
        answers[i] = client.chat.completions.create(
            model=f"greedy@{SERVED}",
            messages=picture_question(questions[i].image_bytes, questions[i].question),
        )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    for answer, direct in zip(answers, alone):
        assert answer.model_extra["llava_cot"]["chosen"] == direct.response_metadata["llava_cot"]["chosen"]
    print(f"\n16 concurrent greedy answers through llava-cot serve and vLLM: {seconds:.2f} s")


def test_a_client_that_leaves_stops_its_search(served, client: openai.OpenAI) -> None:
    server, _ = served
    body = {"model": SERVED, "messages": picture_question(), "stream": True}
    with httpx.stream("POST", f"{server.url}/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if "SUMMARY" in line:
                break
    runs = server.app.state.server.runs
    deadline = time.monotonic() + 10
    while runs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not runs
    assert client.chat.completions.create(model=f"greedy@{SERVED}", messages=picture_question()).choices
