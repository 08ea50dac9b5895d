"""Structured output and forced calls on the bundled demo model: valid every time, by construction.

The grammar, not the model, makes every answer valid: the tries count a call that parses and
fits its schema, whatever the model writes in it (the previous demo model, never taught to
fill a string or a list, passed them too). The fifty tries are :mod:`structured`'s.
"""

from __future__ import annotations

import pytest
from servers import STAGE_LIMITS
from structured import MESSAGES, SHAPES, calls_of_every_candidate, describe, fifty_tries

from langchain_llava_cot import ChatLlavaCoT

pytestmark = pytest.mark.timeout(3600)  # the fifty tries: about 1.5 CPU-minutes, far longer when busy


@pytest.fixture(scope="module")
def llm() -> ChatLlavaCoT:
    return ChatLlavaCoT(strategy="stage_beam", candidates=2)


def test_structured_output_is_valid_in_50_of_50_tries(llm: ChatLlavaCoT) -> None:
    tries = fifty_tries(llm)
    print(f"\nstructured output, in-process: {tries.summary()}")
    assert tries.valid == tries.tries == 50, tries.failures[:1]


def test_a_list_of_strings_is_closed_within_the_conclusions_limit(llm: ChatLlavaCoT) -> None:
    tight = llm.model_copy(update={"max_stage_tokens": {**STAGE_LIMITS, "conclusion": 72}})
    result = tight.with_structured_output(SHAPES, include_raw=True).invoke(MESSAGES, seed=3)
    assert result["parsing_error"] is None and isinstance(result["parsed"]["shapes"], list)
    last = result["raw"].response_metadata["llava_cot"]["steps"][-1]
    assert all(candidate["completion_tokens"] <= 72 for candidate in last["candidates"])


@pytest.mark.parametrize("seed", range(4))
def test_a_forced_call_with_string_arguments_is_valid(llm: ChatLlavaCoT, seed: int) -> None:
    message = llm.bind_tools([describe], tool_choice="any").invoke(MESSAGES, seed=seed)
    [call] = message.tool_calls
    assert call["name"] == "describe" and not message.invalid_tool_calls
    assert isinstance(call["args"]["colour"], str) and all(isinstance(s, str) for s in call["args"]["shapes"])
    assert all(len(ok) == 1 and not bad for ok, bad in calls_of_every_candidate(message))


def test_stop_strings_that_a_call_contains_do_not_cut_it(llm: ChatLlavaCoT) -> None:
    """The grammar's end is waited for: '"', ':' and ',' are in every call, and end none."""
    greedy = llm.model_copy(update={"strategy": "greedy"})
    message = greedy.bind_tools([describe], tool_choice="any").invoke(MESSAGES, stop=['"', ":", ","])
    [call] = message.tool_calls
    assert set(call["args"]) == {"colour", "shapes"} and not message.invalid_tool_calls
