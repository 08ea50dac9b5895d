"""The server's endpoints on a scripted search, through Starlette's in-process test client (no sockets)."""

import base64
import io
import json
from dataclasses import dataclass

import pytest
from fakes import SCRIPT, ScriptedBackend, prefers_three
from PIL import Image
from starlette.testclient import TestClient

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.server import ServerSettings, create_app
from langchain_llava_cot.stages import Stage

SERVED = "llava-cot-demo"


def png_url(size=(8, 8)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def question(text="How many red circles?", url=None):
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url or png_url()}},
                {"type": "text", "text": text},
            ],
        }
    ]


def served(backend=None, settings=None, **options) -> TestClient:
    llm = ChatLlavaCoT(backend=backend or ScriptedBackend(SCRIPT, prefer=prefers_three), **options)
    return TestClient(create_app(llm, settings or ServerSettings(served_model_name=SERVED)))


def post(client, **fields):
    return client.post("/v1/chat/completions", json={"model": SERVED, "messages": question(), **fields})


def events(response) -> list:
    lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_a_completion_holds_the_stages_the_answer_the_usage_and_the_record():
    reply = post(served(), strategy="stage_beam", candidates=2, judge="pairwise")
    assert reply.status_code == 200
    completion = reply.json()
    message = completion["choices"][0]["message"]
    assert message["content"] == "3" and completion["choices"][0]["finish_reason"] == "stop"
    reasoning = message["reasoning_content"]
    assert reasoning.index("<SUMMARY>") < reasoning.index("<CAPTION>") < reasoning.index("<REASONING>")
    assert "three red circles" in reasoning  # the judge's choice, not the first candidate
    record = completion["llava_cot"]
    assert record["strategy"] == "stage_beam" and [len(s["candidates"]) for s in record["steps"]] == [2] * 4
    usage = completion["usage"]
    assert usage["prompt_tokens"] == record["usage"]["input_tokens"] > 0
    assert usage["completion_tokens"] == record["usage"]["output_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert completion["object"] == "chat.completion" and completion["model"] == SERVED


def test_a_stream_sends_each_stage_then_the_answer_then_the_record_and_usage():
    client = served()
    body = {
        "model": SERVED,
        "messages": question(),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        sent = events(response)
    *chunks, finish, usage, done = sent
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    tags = [d.get("reasoning_content", "").split(">")[0] for d in deltas]
    assert tags == ["<SUMMARY", "<CAPTION", "<REASONING", ""]
    assert deltas[-1]["content"] == "3"
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["llava_cot"]["strategy"] == "stage_beam"
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] > 0 and done == "[DONE]"
    assert len({c["id"] for c in sent[:-1]}) == 1


def test_options_in_the_model_name_and_the_body_reach_the_search():
    client = served()
    record = post(client, model=f"best_of_n-3@{SERVED}").json()["llava_cot"]
    assert record["strategy"] == "best_of_n" and len(record["steps"][0]["candidates"]) == 3
    record = post(client, strategy="greedy").json()["llava_cot"]
    assert record["strategy"] == "greedy" and len(record["steps"]) == 4


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"candidates": 0}, "candidates must be a whole number of at least 1"),
        ({"candidates": 65}, "above the cap of 64"),
        ({"strategy": "beam"}, "Unknown strategy 'beam'"),
        ({"strategy": "retrace", "judge": "pairwise"}, "does not score"),
        ({"temperature": "hot"}, "temperature must be a finite number"),
        ({"max_stage_tokens": {"intro": 5}}, "unknown stage 'intro'"),
        ({"judge": "human"}, "The human judge interrupts the search"),
        ({"adaptive": "yes"}, "adaptive must be true or false"),
    ],
)
def test_the_chat_models_own_checks_answer_bad_options_with_400(fields, says):
    reply = post(served(), **fields)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert says in error["message"] and error["type"] == "invalid_request_error"


def test_a_key_is_asked_for_when_the_server_has_one():
    client = served(settings=ServerSettings(served_model_name=SERVED, api_key="s3cret"))
    missing = client.get("/v1/models")
    wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert (
        missing.json()["error"]["code"] == "missing_api_key"
        and wrong.json()["error"]["code"] == "invalid_api_key"
    )
    assert client.get("/health").json() == {"status": "ok", "searches_running": 0}
    good = client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert [m["id"] for m in good.json()["data"]][:2] == [SERVED, f"greedy@{SERVED}"]
    assert client.get(
        f"/v1/models/stage_beam-4@{SERVED}", headers={"Authorization": "Bearer s3cret"}
    ).is_success


def test_limits_are_413s():
    client = served(settings=ServerSettings(served_model_name=SERVED, max_request_bytes=2_000))
    big_body = post(client, messages=question(text="x" * 3_000))
    assert big_body.status_code == 413 and big_body.json()["error"]["code"] == "request_too_large"
    big_picture = post(served(max_image_pixels=100), messages=question(url=png_url((20, 20))))
    assert big_picture.status_code == 413 and "larger than the limit of 100 pixels" in big_picture.text


@dataclass
class TooShortContext(ScriptedBackend):
    """A model whose context leaves three tokens after the prompt."""

    def tokens_left(self, conversation, prefix):
        return 3


def test_a_prompt_over_the_models_context_is_a_413_even_when_streamed():
    client = served(backend=TooShortContext(SCRIPT))
    for stream in (False, True):  # the search's own check, before the first token
        reply = post(client, stream=stream)
        assert reply.status_code == 413 and "room for 3 new tokens" in reply.json()["error"]["message"]
    assert not client.app.state.server.llm.get_backend().sample_calls


@dataclass
class FailsAtTheCaption(ScriptedBackend):
    """Answers the summary, then fails with an error nobody foresaw."""

    def sample(self, requests):
        if any(r.prefix.endswith(Stage.CAPTION.open_tag) for r in requests):
            raise RuntimeError("CUDA error at /home/someone/secret.py line 12")
        return super().sample(requests)


def test_an_error_after_the_stream_started_is_its_last_event_and_shows_no_internals():
    client = served(backend=FailsAtTheCaption(SCRIPT))
    body = {"model": SERVED, "messages": question(), "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        *chunks, error, done = events(response)
    assert "<SUMMARY>" in chunks[0]["choices"][0]["delta"]["reasoning_content"]
    assert error["error"]["type"] == "server_error" and "secret" not in json.dumps(error) and done == "[DONE]"
    whole = post(client)
    assert whole.status_code == 500 and "secret" not in whole.text and "Traceback" not in whole.text


def test_bad_bodies_unknown_paths_and_methods_answer_in_openais_shape():
    client = served()
    assert client.post("/v1/chat/completions", content=b"{not json").json()["error"]["code"] == "invalid_json"
    assert client.post("/v1/chat/completions", json=[1]).status_code == 400
    assert post(client, model="gpt-4o").status_code == 404
    unknown = client.get("/v1/embeddings")
    assert unknown.status_code == 404 and "POST /v1/chat/completions" in unknown.json()["error"]["message"]
    assert client.get("/v1/chat/completions").status_code == 405


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            },
        },
    }
]
CALLING = {
    **SCRIPT,
    Stage.CONCLUSION: [
        ' <tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call> </CONCLUSION>'
    ],
}


def test_a_tool_call_comes_back_in_openais_format_whole_and_streamed():
    client = served(backend=ScriptedBackend(CALLING), strategy="greedy")
    completion = post(client, tools=TOOLS, tool_choice="auto").json()
    choice = completion["choices"][0]
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "add"
    assert json.loads(call["function"]["arguments"]) == {"a": 2, "b": 3} and call["id"].startswith("call_")
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": SERVED, "messages": question(), "tools": TOOLS, "stream": True},
    ) as response:
        *chunks, finish, _ = events(response)
    [streamed] = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert streamed["index"] == 0 and streamed["function"]["name"] == "add"
    assert finish["choices"][0]["finish_reason"] == "tool_calls"


def test_a_json_schema_answer_is_the_content():
    client = served(backend=ScriptedBackend(CALLING), strategy="greedy")
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "add", "schema": TOOLS[0]["function"]["parameters"]},
    }
    choice = post(client, response_format=response_format).json()["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"a": 2, "b": 3}
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
