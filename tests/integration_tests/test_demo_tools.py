"""The bundled demo model calls the ``add`` tool from its conclusion, and drives an agent loop."""

import re
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.demo.dataset import Example, iter_examples
from langchain_llava_cot.demo.tool_rows import add_tool_prompt
from langchain_llava_cot.tools import render_tools_prompt

sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))
from agent import add, ask, build_agent  # noqa: E402


def _sum_questions(count: int) -> list[Example]:
    """The first ``count`` test-split questions that ask for the sum of two counts."""
    found = (e for e in iter_examples("test") if e.kind == "arithmetic" and e.spec.operation == "add")
    return [next(found) for _ in range(count)]


def _is_add_call(message: AIMessage) -> bool:
    return any(
        c["name"] == "add"
        and set(c["args"]) == {"a", "b"}
        and all(isinstance(v, int) for v in c["args"].values())
        for c in message.tool_calls
    )


@pytest.fixture(scope="module")
def greedy() -> ChatLlavaCoT:
    return ChatLlavaCoT(strategy="greedy")


def test_training_data_uses_the_agent_examples_add_tool() -> None:
    assert add_tool_prompt("any") == render_tools_prompt([convert_to_openai_tool(add)], "any")


def test_bound_model_calls_add_on_held_out_sum_questions(greedy: ChatLlavaCoT) -> None:
    bound = greedy.bind_tools([add])
    questions = _sum_questions(12)
    calls = [_is_add_call(bound.invoke([e.message()])) for e in questions]
    assert sum(calls) >= 0.75 * len(questions), calls


def test_agent_loop_ends_with_a_numeric_answer(greedy: ChatLlavaCoT) -> None:
    agent = build_agent(greedy)
    example = _sum_questions(1)[0]
    state = agent.invoke({"messages": [example.message()]})
    kinds = [type(m) for m in state["messages"]]
    assert kinds[:3] == [HumanMessage, AIMessage, ToolMessage], kinds
    assert state["messages"][1].tool_calls[0]["name"] == "add"
    assert re.fullmatch(r"\d+", ask(agent, example.image_bytes, example.question).strip())
