"""Structured output and forced calls on the bundled demo model: valid every time, by construction.

The demo model was never taught to fill a string or a list (its string fields hold
nonsense, and left alone it writes a list's items until its token limit): the grammar,
not the model, makes every answer valid. Fifty tries over five schemas, ten seeds each,
with search (stage_beam and best_of_n, two candidates each), every candidate checked.
"""

from __future__ import annotations

import time
from typing import Literal

import pytest
from langchain_core.messages import AIMessage
from pydantic import BaseModel, TypeAdapter

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.demo import DEMO_QUESTION, EXAMPLE_IMAGE
from langchain_llava_cot.images import image_message
from langchain_llava_cot.tools import parse_tool_calls

pytestmark = pytest.mark.timeout(1200)

MESSAGES = [image_message(EXAMPLE_IMAGE.read_bytes(), DEMO_QUESTION)]


class Count(BaseModel):
    """How many red squares the picture shows."""

    red_squares: int


class Colour(BaseModel):
    """The colour of the largest shape."""

    colour: str


class Present(BaseModel):
    """Whether the picture shows a red square."""

    present: bool


class Shape(BaseModel):
    """The shape there is most of."""

    shape: Literal["circle", "square", "triangle"]


SHAPES = {
    "title": "Shapes",
    "description": "The shapes in the picture, one name each.",
    "type": "object",
    "properties": {"shapes": {"type": "array", "items": {"type": "string"}}},
    "required": ["shapes"],
}
"""A JSON schema, not a class: with_structured_output returns a dict for it."""

SCHEMAS = {"int": Count, "str": Colour, "bool": Present, "Literal": Shape, "list[str]": SHAPES}
SEEDS = range(10)


def describe(colour: str, shapes: list[str]) -> str:
    """Describe the picture: its main colour and the shapes in it."""
    return f"{colour}: {', '.join(shapes)}"


@pytest.fixture(scope="module")
def searches() -> dict[str, ChatLlavaCoT]:
    stage_beam = ChatLlavaCoT(strategy="stage_beam", candidates=2)
    return {"stage_beam": stage_beam, "best_of_n": stage_beam.model_copy(update={"strategy": "best_of_n"})}


def calls_of_every_candidate(raw: AIMessage) -> list[tuple[list, list]]:
    """Each last-step candidate's calls and invalid calls, read from its conclusion."""
    last = raw.response_metadata["llava_cot"]["steps"][-1]
    return [parse_tool_calls(candidate["stages"]["conclusion"])[1:] for candidate in last["candidates"]]


def test_structured_output_is_valid_in_50_of_50_tries(searches: dict[str, ChatLlavaCoT]) -> None:
    valid, failures, started = 0, [], time.perf_counter()
    for kind, schema in SCHEMAS.items():
        for seed in SEEDS:
            strategy = "stage_beam" if seed % 2 == 0 else "best_of_n"
            result = (
                searches[strategy]
                .with_structured_output(schema, include_raw=True)
                .invoke(MESSAGES, seed=seed)
            )
            candidates = calls_of_every_candidate(result["raw"])
            if result["parsing_error"] is None and all(len(ok) == 1 and not bad for ok, bad in candidates):
                TypeAdapter(schema if isinstance(schema, type) else dict).validate_python(result["parsed"])
                valid += 1
            else:
                failures.append((kind, strategy, seed, result["parsing_error"], result["raw"].content))
    tries, seconds = len(SCHEMAS) * len(SEEDS), time.perf_counter() - started
    print(f"\nstructured output on the demo model: valid {valid} of {tries} in {seconds:.0f} s")
    assert valid == tries, failures[:1]


def test_a_list_of_strings_is_closed_within_the_conclusions_limit(searches: dict[str, ChatLlavaCoT]) -> None:
    llm = searches["stage_beam"].model_copy(update={"max_stage_tokens": {"conclusion": 72}})
    result = llm.with_structured_output(SHAPES, include_raw=True).invoke(MESSAGES, seed=3)
    assert result["parsing_error"] is None and isinstance(result["parsed"]["shapes"], list)
    assert all(
        candidate["completion_tokens"] <= 72
        for candidate in result["raw"].response_metadata["llava_cot"]["steps"][-1]["candidates"]
    )


@pytest.mark.parametrize("seed", range(4))
def test_a_forced_call_with_string_arguments_is_valid(searches: dict[str, ChatLlavaCoT], seed: int) -> None:
    message = searches["stage_beam"].bind_tools([describe], tool_choice="any").invoke(MESSAGES, seed=seed)
    [call] = message.tool_calls
    assert call["name"] == "describe" and not message.invalid_tool_calls
    assert isinstance(call["args"]["colour"], str) and all(isinstance(s, str) for s in call["args"]["shapes"])
    assert all(len(ok) == 1 and not bad for ok, bad in calls_of_every_candidate(message))


def test_stop_strings_that_a_call_contains_do_not_cut_it(searches: dict[str, ChatLlavaCoT]) -> None:
    """The grammar's end is waited for: '"', ':' and ',' are in every call, and end none."""
    llm = searches["stage_beam"].model_copy(update={"strategy": "greedy"})
    message = llm.bind_tools([describe], tool_choice="any").invoke(MESSAGES, stop=['"', ":", ","])
    [call] = message.tool_calls
    assert set(call["args"]) == {"colour", "shapes"} and not message.invalid_tool_calls
