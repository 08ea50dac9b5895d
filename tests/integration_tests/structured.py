"""Fifty tries of structured output over five schemas: what the in-process and server tests ask.

Five schemas (``int``, ``str``, ``bool``, ``Literal`` and ``list[str]`` fields; four
pydantic models and one JSON schema), ten seeds each, alternating stage_beam and
best_of_n with two candidates, about the bundled picture. A try is valid when
``with_structured_output`` parses the schema and every candidate of the last step
holds exactly one well-formed call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import AIMessage
from pydantic import BaseModel, TypeAdapter

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.demo import DEMO_QUESTION, EXAMPLE_IMAGE
from langchain_llava_cot.images import image_message
from langchain_llava_cot.tools import parse_tool_calls

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

SCHEMAS: dict[str, Any] = {
    "int": Count,
    "str": Colour,
    "bool": Present,
    "Literal": Shape,
    "list[str]": SHAPES,
}
SEEDS = range(10)


def describe(colour: str, shapes: list[str]) -> str:
    """Describe the picture: its main colour and the shapes in it."""
    return f"{colour}: {', '.join(shapes)}"


def calls_of_every_candidate(raw: AIMessage) -> list[tuple[list, list]]:
    """Each last-step candidate's calls and invalid calls, read from its conclusion."""
    last = raw.response_metadata["llava_cot"]["steps"][-1]
    return [parse_tool_calls(candidate["stages"]["conclusion"])[1:] for candidate in last["candidates"]]


@dataclass
class Tries:
    """What fifty tries gave."""

    valid: int = 0
    tries: int = 0
    seconds: float = 0.0
    repaired: int = 0
    """Valid tries with a candidate whose call a server's token limit cut and its grammar closed."""
    failures: list[tuple] = field(default_factory=list)

    def summary(self) -> str:
        """The figure, as the tests print it."""
        closed = (
            f" ({self.repaired} with a call its token limit cut, closed by its grammar)"
            if self.repaired
            else ""
        )
        return f"valid {self.valid} of {self.tries} in {self.seconds:.0f} s{closed}"


def fifty_tries(llm: ChatLlavaCoT) -> Tries:
    """Every schema with every seed, stage_beam on even seeds and best_of_n on odd ones."""
    searches = {"stage_beam": llm.model_copy(update={"strategy": "stage_beam", "candidates": 2})}
    searches["best_of_n"] = searches["stage_beam"].model_copy(update={"strategy": "best_of_n"})
    out, started = Tries(), time.perf_counter()
    for kind, schema in SCHEMAS.items():
        for seed in SEEDS:
            strategy = "stage_beam" if seed % 2 == 0 else "best_of_n"
            result = (
                searches[strategy]
                .with_structured_output(schema, include_raw=True)
                .invoke(MESSAGES, seed=seed)
            )
            out.tries += 1
            candidates = calls_of_every_candidate(result["raw"])
            if result["parsing_error"] is None and all(len(ok) == 1 and not bad for ok, bad in candidates):
                TypeAdapter(schema if isinstance(schema, type) else dict).validate_python(result["parsed"])
                out.valid += 1
                out.repaired += _closed_by_grammar(result["raw"])
            else:
                out.failures.append((kind, strategy, seed, result["parsing_error"], result["raw"].content))
    out.seconds = time.perf_counter() - started
    return out


def _closed_by_grammar(raw: AIMessage) -> bool:
    last = raw.response_metadata["llava_cot"]["steps"][-1]
    return any("grammar closed it" in problem for c in last["candidates"] for problem in c["problems"])
