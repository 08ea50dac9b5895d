"""Forced tool calls decode under a grammar: a random-weight model still writes valid calls."""

from typing import Literal

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.tools import parse_tool_calls


def paint(colour: Literal["red", "blue"], coats: bool) -> str:
    """Paint the part."""
    return colour


class Verdict(BaseModel):
    passed: bool
    colour: Literal["red", "green"]


LIMITS = {"summary": 3, "caption": 3, "reasoning": 3, "conclusion": 200}  # byte-level tokens


@pytest.fixture(scope="module")
def llm(tiny_llava_path) -> ChatLlavaCoT:
    return ChatLlavaCoT(model=str(tiny_llava_path), max_stage_tokens=LIMITS, seed=0, judge="likelihood")


@pytest.mark.parametrize(("strategy", "n"), [("greedy", 1), ("stage_beam", 3), ("best_of_n", 2)])
def test_a_random_model_forced_to_call_writes_only_valid_calls(llm, strategy, n) -> None:
    message = llm.bind_tools([paint], tool_choice="any").invoke(
        [HumanMessage("Paint it.")], strategy=strategy, candidates=n
    )
    [call] = message.tool_calls
    assert call["name"] == "paint" and call["args"]["colour"] in ("red", "blue")
    assert isinstance(call["args"]["coats"], bool) and not message.invalid_tool_calls
    last = message.response_metadata["llava_cot"]["steps"][-1]
    for candidate in last["candidates"]:  # every candidate, not only the winner
        _, calls, invalid = parse_tool_calls(candidate["stages"]["conclusion"])
        assert len(calls) == 1 and not invalid, candidate


def test_structured_output_from_a_random_model_is_always_the_schema(llm) -> None:
    verdict = llm.with_structured_output(Verdict).invoke([HumanMessage("Did it pass?")], strategy="greedy")
    assert isinstance(verdict, Verdict) and verdict.colour in ("red", "green")


def test_without_a_forced_call_nothing_is_constrained(llm) -> None:
    message = llm.bind_tools([paint]).invoke([HumanMessage("Paint it.")], strategy="greedy")
    conclusion = message.response_metadata["llava_cot"]["chosen"]["conclusion"]
    assert "<tool_call>" not in conclusion  # a random model left alone does not write one
