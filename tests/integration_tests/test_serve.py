"""``llava-cot serve`` on 127.0.0.1 with the bundled demo model, asked by the real ``openai`` client
and LangChain's ``ChatOpenAI``.

The servers run uvicorn in a thread of the test process (:class:`BackgroundServer`), so a test can
look at the engine behind them; one test starts the ``llava-cot serve`` command itself.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI
from PIL import Image
from pydantic import BaseModel
from servers import free_port, running_server

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.demo import DEMO_QUESTION, EXAMPLE_IMAGE
from langchain_llava_cot.demo.dataset import Example, examples, iter_examples
from langchain_llava_cot.server import BackgroundServer, ServerSettings, create_app

sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))
from agent import add, ask, build_agent  # noqa: E402

pytestmark = pytest.mark.timeout(600)

SERVED = "llava-cot-demo"
STAGE_TAGS = ("<SUMMARY>", "<CAPTION>", "<REASONING>")


def data_url(picture: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(picture).decode()


def picture_question(picture: bytes = EXAMPLE_IMAGE.read_bytes(), text: str = DEMO_QUESTION) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(picture)}},
                {"type": "text", "text": text},
            ],
        }
    ]


@pytest.fixture(scope="module")
def demo_llm() -> ChatLlavaCoT:
    llm = ChatLlavaCoT(strategy="stage_beam", candidates=4)
    llm.get_backend()
    return llm


@pytest.fixture(scope="module")
def server(demo_llm: ChatLlavaCoT):
    with BackgroundServer(create_app(demo_llm, ServerSettings(served_model_name=SERVED))) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)


def test_the_openai_client_gets_a_search_over_its_picture(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=SERVED, messages=picture_question())
    message = completion.choices[0].message
    record = completion.model_extra["llava_cot"]
    reasoning = message.model_extra["reasoning_content"]
    assert [reasoning.index(tag) for tag in STAGE_TAGS] == sorted(reasoning.index(tag) for tag in STAGE_TAGS)
    assert message.content == record["chosen"]["conclusion"] and message.content.strip()
    assert record["chosen"]["caption"] in reasoning  # the judged caption is the one shown
    assert record["strategy"] == "stage_beam" and [len(s["candidates"]) for s in record["steps"]] == [4] * 4
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        record["usage"]["input_tokens"],
        record["usage"]["output_tokens"],
    )
    # every candidate's tokens are counted, not only the chosen ones
    chosen = sum(s["candidates"][s["winner"]]["completion_tokens"] for s in record["steps"])
    assert completion.usage.completion_tokens > 2 * chosen
    assert [m.id for m in client.models.list()][0] == SERVED


def test_options_come_from_the_body_or_the_model_name(client: openai.OpenAI) -> None:
    best = client.chat.completions.create(
        model=SERVED, messages=picture_question(), extra_body={"strategy": "best_of_n", "candidates": 3}
    )
    record = best.model_extra["llava_cot"]
    assert record["strategy"] == "best_of_n" and len(record["steps"][0]["candidates"]) == 3
    greedy = client.chat.completions.create(model=f"greedy@{SERVED}", messages=picture_question())
    assert [len(s["candidates"]) for s in greedy.model_extra["llava_cot"]["steps"]] == [1, 1, 1, 1]
    with pytest.raises(openai.BadRequestError, match="keep one"):
        client.chat.completions.create(
            model=f"greedy@{SERVED}", messages=picture_question(), extra_body={"strategy": "stage_beam"}
        )


def sum_question() -> Example:
    """A held-out question asking for the sum of two counts (the demo model calls ``add`` for it)."""
    return next(e for e in iter_examples("test") if e.kind == "arithmetic" and e.spec.operation == "add")


ADD = convert_to_openai_tool(add)


def test_tools_and_json_schema_answers_are_decoded_valid(client: openai.OpenAI) -> None:
    example = sum_question()
    forced = client.chat.completions.create(
        model=f"greedy@{SERVED}",
        messages=picture_question(example.image_bytes, example.question),
        tools=[ADD],
        tool_choice={"type": "function", "function": {"name": "add"}},
    )
    [call] = forced.choices[0].message.tool_calls
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "add" and set(arguments) == {"a", "b"}
    assert (
        all(isinstance(v, int) for v in arguments.values())
        and forced.choices[0].finish_reason == "tool_calls"
    )

    schema = {
        "type": "object",
        "properties": {"count": {"type": "integer"}, "colour": {"enum": ["red", "blue", "green", "yellow"]}},
        "required": ["count", "colour"],
        "additionalProperties": False,
    }
    shaped = client.chat.completions.create(
        model=f"stage_beam-2@{SERVED}",
        messages=picture_question(),
        response_format={"type": "json_schema", "json_schema": {"name": "Count", "schema": schema}},
    )
    answer = json.loads(shaped.choices[0].message.content)
    assert set(answer) == {"count", "colour"} and isinstance(answer["count"], int)
    assert answer["colour"] in schema["properties"]["colour"]["enum"]


class Count(BaseModel):
    """How many shapes the question asks about."""

    count: int


def test_chat_openai_invokes_streams_calls_tools_and_runs_an_agent(server: BackgroundServer) -> None:
    llm = ChatOpenAI(base_url=server.url, api_key="unused", model=f"greedy@{SERVED}", max_retries=0)
    image = {"type": "image_url", "image_url": {"url": data_url(EXAMPLE_IMAGE.read_bytes())}}
    question = HumanMessage(content=[image, {"type": "text", "text": DEMO_QUESTION}])
    answer = llm.invoke([question])
    assert answer.content.strip() and answer.usage_metadata["total_tokens"] > 0
    streamed = "".join(chunk.text for chunk in llm.stream([question]))
    assert streamed == answer.content  # greedy: the same answer, streamed
    options = {"strategy": "stage_beam", "candidates": 2}
    beam = ChatOpenAI(base_url=server.url, api_key="unused", model=SERVED, extra_body=options, max_retries=0)
    assert beam.invoke([question]).content.strip()
    counted = llm.with_structured_output(Count, method="json_schema").invoke([question])
    assert isinstance(counted, Count)

    example = sum_question()
    called = llm.bind_tools([add], tool_choice="add").invoke([example.message()])
    assert called.tool_calls[0]["name"] == "add" and set(called.tool_calls[0]["args"]) == {"a", "b"}
    result = add.invoke(called.tool_calls[0]["args"])
    history = [example.message(), called, ToolMessage(str(result), tool_call_id=called.tool_calls[0]["id"])]
    assert isinstance(llm.invoke(history), AIMessage)
    assert ask(
        build_agent(llm), example.image_bytes, example.question
    ).strip()  # the agent loop, through the server


def test_each_failure_gets_its_status(server: BackgroundServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="candidates must be a whole number"):
        client.chat.completions.create(
            model=SERVED, messages=picture_question(), extra_body={"candidates": -1}
        )
    with pytest.raises(openai.NotFoundError, match="does not exist here"):
        client.chat.completions.create(model="gpt-4o", messages=picture_question())
    with pytest.raises(openai.BadRequestError, match="--allow-image-urls"):
        client.chat.completions.create(
            model=SERVED,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}],
                }
            ],
        )
    buffer = io.BytesIO()
    Image.new("1", (7_000, 7_000)).save(buffer, format="PNG")  # 49 million pixels in a few kB
    with pytest.raises(openai.APIStatusError, match="larger than the limit") as huge:
        client.chat.completions.create(model=SERVED, messages=picture_question(buffer.getvalue()))
    assert huge.value.status_code == 413
    long_question = "How many red squares are there? " * 400
    with pytest.raises(openai.APIStatusError, match="fewer than one per stage") as long:
        client.chat.completions.create(
            model=f"greedy@{SERVED}", messages=picture_question(text=long_question), stream=True
        )
    assert long.value.status_code == 413


def test_a_wrong_key_is_a_401_and_an_unreachable_model_a_503(demo_llm: ChatLlavaCoT) -> None:
    keyed = ServerSettings(served_model_name=SERVED, api_key="s3cret")
    with BackgroundServer(create_app(demo_llm, keyed)) as running:
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
            openai.OpenAI(base_url=running.url, api_key="wrong", max_retries=0).models.list()
        assert openai.OpenAI(base_url=running.url, api_key="s3cret").models.list().data[0].id == SERVED
    nowhere = ChatLlavaCoT(
        base_url=f"http://127.0.0.1:{free_port()}/v1", model="demo", max_retries=0, timeout=5
    )
    with BackgroundServer(create_app(nowhere, ServerSettings(served_model_name="demo"))) as running:
        behind = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError, match="Cannot reach") as unreachable:
            behind.chat.completions.create(model="demo", messages=picture_question())
        assert unreachable.value.status_code == 503
        assert "Traceback" not in unreachable.value.response.text


@pytest.fixture
def picture_site(tmp_path: Path):
    """A plain HTTP server on 127.0.0.1 serving the bundled picture as /example.png; yields its URL."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "example.png").write_bytes(EXAMPLE_IMAGE.read_bytes())
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    site = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


def url_question(url: str) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": DEMO_QUESTION}]
    return [{"role": "user", "content": parts}]


def test_picture_urls_are_fetched_only_when_the_server_allows_it(
    demo_llm: ChatLlavaCoT, client: openai.OpenAI, picture_site: str
) -> None:
    with pytest.raises(openai.BadRequestError, match="--allow-image-urls"):
        client.chat.completions.create(model=SERVED, messages=url_question(f"{picture_site}/example.png"))
    allowing = ServerSettings(served_model_name=SERVED, allow_image_urls=True, max_request_bytes=100_000)
    with BackgroundServer(create_app(demo_llm, allowing)) as running:
        fetching = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0)
        by_url = fetching.chat.completions.create(
            model=f"greedy@{SERVED}", messages=url_question(f"{picture_site}/example.png")
        )
        inline = fetching.chat.completions.create(model=f"greedy@{SERVED}", messages=picture_question())
        assert by_url.choices[0].message.content == inline.choices[0].message.content  # the same picture
        with pytest.raises(openai.BadRequestError, match="answered HTTP 404"):
            fetching.chat.completions.create(
                model=SERVED, messages=url_question(f"{picture_site}/missing.png")
            )
    small = ServerSettings(
        served_model_name=SERVED, allow_image_urls=True, max_request_bytes=1_000
    )  # < 1,498
    with BackgroundServer(create_app(demo_llm, small)) as running:
        limited = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0)
        with pytest.raises(
            openai.APIStatusError, match="The picture at .* is over the server's limit"
        ) as refused:
            limited.chat.completions.create(
                model=SERVED, messages=url_question(f"{picture_site}/example.png")
            )
        assert refused.value.status_code == 413


def test_sixteen_clients_at_once_share_batches_and_each_gets_its_own_answer(
    server: BackgroundServer, client: openai.OpenAI, demo_llm: ChatLlavaCoT
) -> None:
    questions = examples("test", 16, start=100)
    alone = [demo_llm.invoke([e.message()], strategy="greedy") for e in questions]
    backend = demo_llm.get_backend()
    calls_before = backend.generate_calls
    answers: list = [None] * len(questions)
    barrier = threading.Barrier(len(questions))

    def ask_server(i: int) -> None:
        barrier.wait()
        answers[i] = client.chat.completions.create(
            model=f"greedy@{SERVED}",
            messages=picture_question(questions[i].image_bytes, questions[i].question),
        )

    threads = [threading.Thread(target=ask_server, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for answer, direct in zip(answers, alone):
        message = answer.choices[0].message
        assert message.content == direct.content
        assert message.model_extra["reasoning_content"] == direct.additional_kwargs["reasoning_content"]
    shared_calls = backend.generate_calls - calls_before
    assert shared_calls < len(questions) * 4 / 2, shared_calls  # alone, each answer takes 4 generate calls
    print(f"\n16 concurrent greedy answers: {shared_calls} generate calls (64 one at a time)")


async def slow_judge(task) -> int:
    """Keeps the first candidate, after half a second: a judge slow enough to watch the stream."""
    await asyncio.sleep(0.5)
    return 0


@pytest.fixture(scope="module")
def slow_server():
    llm = ChatLlavaCoT(strategy="stage_beam", candidates=2, judge=slow_judge)
    llm.get_backend()
    with BackgroundServer(create_app(llm, ServerSettings(served_model_name=SERVED))) as running:
        yield running, llm


def test_stages_stream_as_their_judge_decides_them(slow_server) -> None:
    running, _ = slow_server
    client = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0)
    started = time.monotonic()
    arrivals = []
    for chunk in client.chat.completions.create(
        model=SERVED, messages=picture_question(), stream=True, stream_options={"include_usage": True}
    ):
        if chunk.choices and (delta := chunk.choices[0].delta):
            text = (delta.model_extra or {}).get("reasoning_content") or delta.content
            if text:
                arrivals.append(
                    (time.monotonic() - started, "reasoning" if delta.content is None else "content", text)
                )
    kinds = [kind for _, kind, _ in arrivals]
    assert kinds == ["reasoning"] * 3 + ["content"]
    assert [text.split(">")[0] + ">" for _, _, text in arrivals[:3]] == list(STAGE_TAGS)
    gaps = [later - earlier for (earlier, _, _), (later, _, _) in zip(arrivals, arrivals[1:])]
    assert all(gap >= 0.45 for gap in gaps), gaps  # each stage waits for its own judge, no more


def leave_after_the_summary(url: str) -> None:
    body = {"model": SERVED, "messages": picture_question(), "stream": True}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if "SUMMARY" in line:
                return  # closing the response closes the connection


def give_up_waiting(url: str) -> None:
    with pytest.raises(httpx.ReadTimeout):  # the whole answer takes over 2 s: four judges of 0.5 s
        httpx.post(
            f"{url}/chat/completions", json={"model": SERVED, "messages": picture_question()}, timeout=0.8
        )


@pytest.mark.parametrize("leave", [leave_after_the_summary, give_up_waiting])
def test_a_client_that_disconnects_frees_the_engine(slow_server, leave) -> None:
    running, llm = slow_server
    backend, app_server = llm.get_backend(), running.app.state.server
    calls_before = backend.generate_calls
    leave(running.url)
    deadline = time.monotonic() + 10
    while app_server.runs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not app_server.runs, "the search went on after its client left"
    calls = backend.generate_calls - calls_before
    time.sleep(1.5)  # longer than a stage and its judge
    assert backend.generate_calls - calls_before == calls <= 2  # summary, perhaps the caption; never the rest
    finished = openai.OpenAI(base_url=running.url, api_key="unused").chat.completions.create(
        model=f"greedy@{SERVED}", messages=picture_question()
    )
    assert finished.choices[0].message.content.strip()


def test_the_command_serves_with_a_key(tmp_path: Path) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "langchain_llava_cot.cli", "serve", "--port", str(port), "--strategy", "greedy",
        "--api-key-env", "LLAVA_COT_TEST_KEY", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "LLAVA_COT_TEST_KEY": "k3y", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}"
    with running_server(
        command, ready_url=f"{url}/health", log_path=tmp_path / "serve.log", env=env, timeout=300
    ):
        assert httpx.get(f"{url}/v1/models").status_code == 401
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k3y", max_retries=0)
        completion = client.chat.completions.create(model=SERVED, messages=picture_question())
        record = completion.model_extra["llava_cot"]
    assert record["strategy"] == "greedy" and completion.choices[0].message.content.strip()
