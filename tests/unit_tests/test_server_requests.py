"""What the server reads from a request and which status each failure gets (no app, no sockets)."""

import asyncio

import httpx
import pytest

from langchain_llava_cot.backends.base import PromptTooLongError
from langchain_llava_cot.backends.openai import (
    ModelNotServedError,
    ServerError,
    ServerPromptTooLongError,
    ServerTimeoutError,
    ServerUnreachableError,
)
from langchain_llava_cot.backends.openai.errors import error_for
from langchain_llava_cot.images import ImageError, ImageTooLargeError
from langchain_llava_cot.server import SEARCH_OPTIONS, APIError, listed_models, search_of
from langchain_llava_cot.server.errors import api_error
from langchain_llava_cot.server.requests import call_of, parse_request
from langchain_llava_cot.server.runs import ClientGone, SearchRun

SERVED = "llava-cot-demo"


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("llava-cot-demo", {}),
        ("greedy@llava-cot-demo", {"strategy": "greedy"}),
        ("stage_beam-8@llava-cot-demo", {"strategy": "stage_beam", "candidates": 8}),
        (
            "best_of_n-4-verifier@llava-cot-demo",
            {"strategy": "best_of_n", "candidates": 4, "judge": "verifier"},
        ),
        (
            "stage_beam-adaptive-3@llava-cot-demo",
            {"strategy": "stage_beam", "adaptive": True, "candidates": 3},
        ),
    ],
)
def test_a_model_name_names_search_options(model, options):
    assert search_of(model, SERVED) == options


@pytest.mark.parametrize(
    ("model", "status", "says"),
    [
        ("gpt-4o", 404, "serves 'llava-cot-demo'"),
        ("greedy@other-model", 404, "does not exist here"),
        ("beam-4@llava-cot-demo", 400, "is no strategy"),
        ("stage_beam-four@llava-cot-demo", 400, "a number of candidates, a judge"),
        ("stage_beam-human@llava-cot-demo", 400, "a number of candidates, a judge"),
        ("stage_beam-4-8@llava-cot-demo", 400, "sets candidates twice"),
    ],
)
def test_a_bad_model_name_says_how_to_write_one(model, status, says):
    with pytest.raises(APIError, match=says) as raised:
        search_of(model, SERVED)
    assert raised.value.status == status and raised.value.param == "model"


def test_every_listed_name_is_served():
    from langchain_llava_cot.strategies import strategy_names

    names = listed_models(SERVED)
    assert names[0] == SERVED and len(names) == 1 + len(strategy_names())
    assert all(search_of(name, SERVED) is not None for name in names)


def body(**fields):
    return {"model": SERVED, "messages": [{"role": "user", "content": "How many?"}], **fields}


def call(request_body, fetch=None):
    return asyncio.run(call_of(parse_request(request_body), SERVED, fetch))


def test_search_options_come_from_the_body_and_the_model_name():
    found = call(body(model="stage_beam-8@llava-cot-demo", judge="pairwise", temperature=0.9, seed=None))
    assert found.options == {
        "strategy": "stage_beam",
        "candidates": 8,
        "judge": "pairwise",
        "temperature": 0.9,
    }
    assert call(body(max_completion_tokens=300)).options == {"max_tokens": 300}
    assert call(body(stop="</CONCLUSION>", user="someone")).options == {"stop": ["</CONCLUSION>"]}
    assert "max_candidates" not in SEARCH_OPTIONS and "model" not in SEARCH_OPTIONS


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"candiates": 4}, "candiates", "Unknown field 'candiates'"),
        ({"max_candidates": 100}, "max_candidates", "--max-candidates"),
        ({"model": "greedy@llava-cot-demo", "strategy": "best_of_n"}, "strategy", "keep one"),
        ({"max_tokens": 10, "max_completion_tokens": 20}, "max_completion_tokens", "send one of them"),
        ({"n": 3}, "n", "n must be 1"),
        ({"logprobs": True}, "logprobs", "not returned"),
        ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "needs"),
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0", "robot"),
    ],
)
def test_a_bad_request_is_a_400_naming_its_field(fields, param, says):
    with pytest.raises(APIError, match=says) as raised:
        call(body(**fields))
    assert raised.value.status == 400 and raised.value.param.startswith(param)


def picture_message(url):
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}],
        }
    ]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://example.com/cat.png", "image_url_not_allowed"),
        ("/etc/passwd", "invalid_image_url"),
        ("file:///etc/passwd", "invalid_image_url"),
    ],
)
def test_pictures_come_as_data_urls_unless_the_server_fetches_urls(url, code):
    with pytest.raises(APIError) as raised:
        call(body(messages=picture_message(url)))
    assert (raised.value.status, raised.value.code) == (400, code)
    assert raised.value.param == "messages[0].content[0].image_url.url"


def test_an_allowed_picture_url_is_fetched_and_sent_on_as_a_data_url():
    fetched = []

    async def fetch(url):
        fetched.append(url)
        return "data:image/png;base64,AAAA"

    found = call(body(messages=picture_message("https://example.com/cat.png")), fetch)
    assert fetched == ["https://example.com/cat.png"]
    assert found.messages[0].content[0] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }


def test_a_tool_round_trip_becomes_langchain_messages():
    messages = [
        {"role": "developer", "content": "Use the tool."},
        {"role": "user", "content": "2 + 3?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
    ]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    found = call(body(messages=messages, tools=tools, tool_choice="required"))
    system, _, assistant, tool = found.messages
    assert system.content == "Use the tool." and assistant.tool_calls[0]["args"] == {"a": 2}
    assert (tool.name, tool.tool_call_id, tool.content) == ("add", "c1", "5")
    assert found.options == {"tools": tools, "tool_choice": "required"} and not found.json_answer


def test_a_json_response_format_is_one_forced_call():
    schema = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
    found = call(
        body(response_format={"type": "json_schema", "json_schema": {"name": "Count", "schema": schema}})
    )
    assert found.json_answer and found.options["tool_choice"] == "Count"
    assert found.options["tools"] == [
        {"type": "function", "function": {"name": "Count", "parameters": schema}}
    ]
    assert call(body(response_format={"type": "text"})).options == {}


def test_bad_tool_call_arguments_in_the_history_are_a_400():
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "add", "arguments": "{oops"}}]},
    ]
    with pytest.raises(APIError, match="not JSON") as raised:
        call(body(messages=messages))
    assert raised.value.param == "messages[1].tool_calls[0].function.arguments"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ValueError("candidates must be a whole number"), 400),
        (TypeError("cannot change per call"), 400),
        (ImageError("not a readable image"), 400),
        (ImageTooLargeError("larger than the limit"), 413),
        (PromptTooLongError("reads at most 1,024"), 413),
        (ServerPromptTooLongError("maximum context length", status=400), 413),
        (ServerUnreachableError("Cannot reach"), 503),
        (ModelNotServedError("does not serve", status=404), 503),
        (ServerTimeoutError("did not answer"), 504),
        (ServerError("answered HTTP 500", status=500), 502),
    ],
)
def test_each_failure_gets_its_status(error, status):
    reply = api_error(error)
    assert reply.status == status and reply.body()["error"]["message"] == str(error)


def test_an_unexpected_failure_is_a_500_that_shows_nothing_of_it():
    reply = api_error(KeyError("/secret/path/in/a/traceback"))
    assert reply.status == 500 and "secret" not in str(reply.body())
    assert reply.body()["error"]["type"] == "server_error"


def test_a_servers_context_length_refusal_is_a_prompt_too_long_error():
    refusal = httpx.Response(
        400,
        json={
            "error": {
                "message": "This model's maximum context length is 1024 tokens. However, you requested 1500."
            }
        },
    )
    error = error_for(refusal, {"model": "demo", "messages": []}, "http://127.0.0.1:1/v1")
    assert isinstance(error, ServerPromptTooLongError) and isinstance(error, PromptTooLongError)
    assert api_error(error).status == 413


def test_a_run_cancelled_before_it_started_tells_its_reader():
    async def never():
        await asyncio.sleep(3600)
        yield "never"

    async def read():
        run = SearchRun(never())
        run.cancel()
        with pytest.raises(ClientGone):
            await run.next()
        with pytest.raises(ClientGone):  # and keeps saying so
            await run.next()
        return run.done

    assert asyncio.run(read())


def test_importing_the_server_package_loads_no_model_or_web_library():
    import subprocess
    import sys

    import langchain_llava_cot.server as server

    assert sorted(server.__all__) == sorted(
        ["RECORD_FIELD", "SEARCH_OPTIONS", "APIError", "BackgroundServer", "ServerSettings", "create_app"]
        + ["listed_models", "search_of"]
    )
    heavy = "{'torch', 'starlette', 'uvicorn'}"
    code = f"import sys, langchain_llava_cot.server; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
