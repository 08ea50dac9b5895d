import dataclasses

import pytest
from fakes import ScriptedBackend
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, Field

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.stages import Stage
from langchain_llava_cot.tools import parse_tool_calls, render_tools_prompt


def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


class Count(BaseModel):
    """How many shapes of a colour the image shows."""

    colour: str = Field(description="the colour counted")
    count: int


def scripted(conclusion):
    return ScriptedBackend(
        {
            Stage.SUMMARY: [" add the counts </SUMMARY>"],
            Stage.CAPTION: [" two red, three blue </CAPTION>"],
            Stage.REASONING: [" 2 + 3 needs the add tool </REASONING>"],
            Stage.CONCLUSION: [f" {conclusion} </CONCLUSION>"],
        }
    )


def test_tool_call_in_the_conclusion_becomes_a_tool_call():
    backend = scripted('<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>')
    msg = ChatLlavaCoT(backend=backend, strategy="greedy").bind_tools([add]).invoke("red plus blue?")
    assert msg.content == ""
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("add", {"a": 2, "b": 3})]
    prompt = backend.sample_calls[0][0].conversation.tools_prompt
    assert '"name": "add"' in prompt and "<tool_call>" in prompt


def test_tool_calls_stream_as_tool_call_chunks():
    backend = scripted('sum: <tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>')
    chunks = list(ChatLlavaCoT(backend=backend, strategy="greedy").bind_tools([add]).stream("red plus blue?"))
    with_calls = [c for c in chunks if c.tool_call_chunks]
    assert len(with_calls) == 1 and with_calls[0].tool_call_chunks[0]["name"] == "add"
    assert with_calls[0].content == "sum:"


def test_malformed_tool_call_is_reported_as_invalid():
    backend = scripted('<tool_call>{"name": "add", "arguments": </tool_call>')
    msg = ChatLlavaCoT(backend=backend, strategy="greedy").bind_tools([add]).invoke("?")
    assert msg.tool_calls == [] and len(msg.invalid_tool_calls) == 1


def test_without_bound_tools_the_text_is_left_alone():
    backend = scripted('<tool_call>{"name": "add", "arguments": {}}</tool_call>')
    msg = ChatLlavaCoT(backend=backend, strategy="greedy").invoke("?")
    assert msg.tool_calls == [] and "<tool_call>" in msg.content


@pytest.mark.parametrize(
    ("choice", "line"),
    [
        ("any", "You must call at least one tool."),
        (True, "You must call at least one tool."),
        ("add", "You must call the tool add."),
    ],
)
def test_tool_choice_is_stated_in_the_prompt(choice, line):
    backend = scripted("5")
    ChatLlavaCoT(backend=backend, strategy="greedy").bind_tools([add], tool_choice=choice).invoke("?")
    assert backend.sample_calls[0][0].conversation.tools_prompt.endswith(line)


def test_tool_choice_none_hides_the_tools_and_unknown_choice_fails():
    backend = scripted("5")
    ChatLlavaCoT(backend=backend, strategy="greedy").bind_tools([add], tool_choice="none").invoke("?")
    assert backend.sample_calls[0][0].conversation.tools_prompt is None
    with pytest.raises(ValueError, match="not 'auto'"):
        ChatLlavaCoT(backend=backend).bind_tools([add], tool_choice="multiply")


def test_tool_messages_in_the_history_reach_the_next_turn():
    backend = scripted("5")
    history = [
        HumanMessage("red plus blue?"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "c1"}]),
        ToolMessage("5", tool_call_id="c1", name="add"),
    ]
    ChatLlavaCoT(backend=backend, strategy="greedy").bind_tools([add]).invoke(history)
    turns = backend.sample_calls[0][0].conversation.turns
    assert '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>' in turns[1].text
    assert turns[2].text == "Tool result (add): 5"


@pytest.mark.parametrize("schema", [Count, Count.model_json_schema()])
def test_structured_output_through_a_tool_call(schema):
    if isinstance(schema, dict):
        schema = {"title": "Count", "description": "How many.", **schema}
    backend = scripted('<tool_call>{"name": "Count", "arguments": {"colour": "red", "count": 2}}</tool_call>')
    result = (
        ChatLlavaCoT(backend=backend, strategy="greedy")
        .with_structured_output(schema)
        .invoke("how many red?")
    )
    if isinstance(result, Count):
        assert (result.count, result.colour) == (2, "red")
    else:
        assert result == {"colour": "red", "count": 2}
    assert backend.sample_calls[0][0].conversation.tools_prompt.endswith("You must call the tool Count.")
    [conclusion] = backend.sample_calls[3]
    assert [t["function"]["name"] for t in conclusion.tool_call.tools] == ["Count"]  # decoded under it


def test_parse_tool_calls_keeps_text_around_calls():
    text, calls, bad = parse_tool_calls('It is <tool_call>{"name": "f", "arguments": {}}</tool_call> done')
    assert text == "It is  done" and calls[0]["name"] == "f" and not bad


def test_tools_prompt_lists_each_tool_once():
    prompt = render_tools_prompt(
        [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]
    )
    assert prompt.count('"name": "f"') == 1


def test_profile_declares_images_tools_structured_output_and_reasoning():
    profile = ChatLlavaCoT(backend=scripted("x")).profile
    assert profile["image_inputs"] and profile["tool_calling"] and profile["structured_output"]
    assert profile["reasoning_output"]


def test_a_bare_json_call_as_llama_templates_ask_is_a_tool_call():
    text, calls, bad = parse_tool_calls('{"name": "add", "parameters": {"a": 2, "b": 3}}')
    assert text == "" and [(c["name"], c["args"]) for c in calls] == [("add", {"a": 2, "b": 3})] and not bad


@pytest.mark.parametrize(
    "text", ['{"a": 1}', '{"name": 3, "parameters": {}}', "{not json}", "The answer is {3}"]
)
def test_other_json_or_braces_stay_text(text):
    assert parse_tool_calls(text) == (text, [], [])


def test_bound_tools_travel_as_schemas_too():
    backend = scripted("5")
    ChatLlavaCoT(backend=backend, strategy="greedy").bind_tools([add]).invoke("?")
    [tool] = backend.sample_calls[0][0].conversation.tools
    assert tool["function"]["name"] == "add"


# --- forced calls: the request says so, the answer never silently lacks one -----------------


def test_a_forced_call_constrains_the_conclusion_request_only():
    from langchain_llava_cot.backends.base import ToolCallConstraint

    backend = scripted('<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>')
    llm = ChatLlavaCoT(backend=backend, strategy="greedy")
    llm.bind_tools([add, Count], tool_choice="any").invoke("red plus blue?")
    constraints = [call[0].tool_call for call in backend.sample_calls]
    assert constraints[:3] == [None, None, None] and isinstance(constraints[3], ToolCallConstraint)
    assert [t["function"]["name"] for t in constraints[3].tools] == ["add", "Count"]

    backend.sample_calls.clear()
    llm.bind_tools([add, Count], tool_choice="Count").invoke("?")
    assert [t["function"]["name"] for t in backend.sample_calls[3][0].tool_call.tools] == ["Count"]
    backend.sample_calls.clear()
    llm.bind_tools([add]).invoke("?")  # auto: the model may answer in words
    assert all(call[0].tool_call is None for call in backend.sample_calls)


@pytest.mark.parametrize(("strategy", "n"), [("greedy", 1), ("stage_beam", 2), ("best_of_n", 2)])
def test_a_tool_offered_but_not_forced_changes_the_prompt_and_nothing_else(strategy, n):
    """Tools with tool_choice="auto" reach the model as a system turn; every decoding setting stays."""
    plain, offered = scripted("3"), scripted("3")
    ChatLlavaCoT(backend=plain, strategy=strategy, candidates=n, seed=0).invoke("how many?")
    ChatLlavaCoT(backend=offered, strategy=strategy, candidates=n, seed=0).bind_tools([add]).invoke(
        "how many?"
    )
    without = [request for call in plain.sample_calls for request in call]
    with_tool = [request for call in offered.sample_calls for request in call]
    assert len(with_tool) == len(without) and with_tool != without
    for asked, alone in zip(with_tool, without):
        assert asked.conversation.tools_prompt and asked.tool_call is None
        bare = dataclasses.replace(asked.conversation, tools_prompt=None, tools=(), tool_choice=None)
        assert dataclasses.replace(asked, conversation=bare) == alone


def test_best_of_n_constrains_its_whole_answer_steps():
    backend = scripted('<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>')
    llm = ChatLlavaCoT(backend=backend, strategy="best_of_n", candidates=2, judge="likelihood")
    llm.bind_tools([add], tool_choice="any").invoke("?")
    request = backend.sample_calls[0][0]  # the whole answer, conclusion included
    assert request.prefix == "<SUMMARY>" and request.tool_call is not None


def test_the_constraint_schema_names_a_tool_and_its_arguments():
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from langchain_llava_cot.backends.base import ToolCallConstraint

    one = ToolCallConstraint((convert_to_openai_tool(add),)).json_schema()
    assert one["properties"]["name"] == {"const": "add"}
    assert one["properties"]["arguments"]["required"] == ["a", "b"] and one["required"] == [
        "name",
        "arguments",
    ]
    both = ToolCallConstraint((convert_to_openai_tool(add), convert_to_openai_tool(Count))).json_schema()
    assert [option["properties"]["name"]["const"] for option in both["anyOf"]] == ["add", "Count"]


def test_structured_output_never_returns_none_silently():
    from langchain_core.exceptions import OutputParserException

    backend = scripted("five")  # a backend that cannot constrain, and a model that ignored the prompt
    llm = ChatLlavaCoT(backend=backend, strategy="greedy")
    with pytest.raises(OutputParserException, match="no call in the requested schema"):
        llm.with_structured_output(Count).invoke("How many red?")
    raw = llm.with_structured_output(Count, include_raw=True).invoke("How many red?")
    assert raw["parsed"] is None and isinstance(raw["parsing_error"], OutputParserException)
    assert raw["raw"].content == "five"
