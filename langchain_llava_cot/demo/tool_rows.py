"""Training rows with tools: calls the model should make, tools it should leave alone, structured output.

Three kinds of rows, each laid out as the engine prompts the model (the tools prompt of
:func:`~langchain_llava_cot.tools.render_tools_prompt` in the system turn):

- *sums*: "How many X and Y are there in total?" with an ``add(a, b)`` tool bound. The
  usual summary, caption and reasoning, then a conclusion that is exactly
  ``<tool_call>{"name": "add", "arguments": {"a": NA, "b": NB}}</tool_call>`` with the
  reasoning's two counts; the follow-up turn (that call in the history, then the user
  turn ``Tool result (add): N``) gets the whole answer, concluding ``N``.
- *offered, not needed*: any other question with one or two tools bound (``add``, or
  tools that have nothing to do with pictures) and no call required: the same answer as
  without tools.
- *structured output*: a question with one schema forced, as ``with_structured_output``
  binds it; the conclusion is one call whose arguments fill the schema's fields from
  the answer and the caption (:func:`structured_call`): a count into an integer field,
  yes or no into a boolean, a colour into a string or ``Literal`` field, the objects'
  names, colours or shapes into lists.

>>> from langchain_llava_cot.demo.dataset import get_example
>>> import random
>>> example = get_example("train", 3)
>>> call = structured_call(example, random.Random(0))
>>> set(call.arguments(example.scene.objects)) == set(call.schema["function"]["parameters"]["properties"])
True
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.demo.answers import write_stages
from langchain_llava_cot.demo.dataset import Example
from langchain_llava_cot.demo.encoding import (
    EOT,
    TrainingSequence,
    answer_pieces,
    encode_pieces,
    prompt_text,
    user_turn,
)
from langchain_llava_cot.demo.mistakes import perturb_objects
from langchain_llava_cot.demo.scenes import COLOURS, SHAPES, SIZES, caption_order
from langchain_llava_cot.demo.train_config import TrainConfig
from langchain_llava_cot.stages import STAGES, Stage, render_answer
from langchain_llava_cot.tools import format_tool_calls, render_tools_prompt

__all__ = [
    "AGENT_SYSTEM_PROMPT",
    "StructuredCall",
    "add_tool_prompt",
    "structured_call",
    "structured_examples",
    "tool_examples",
]

AGENT_SYSTEM_PROMPT = "Count carefully; use the add tool for sums."
"""The system prompt of ``examples/agent.py``."""


def _add(a: int, b: int) -> int:
    return a + b


def _tool(name: str, description: str, **parameters: type) -> dict[str, Any]:
    """An OpenAI-format tool, as ``convert_to_openai_tool`` writes one for a typed function."""
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import create_model

    fields: dict[str, Any] = {key: (kind, ...) for key, kind in parameters.items()}
    model = create_model(name, __doc__=description, **fields)
    return convert_to_openai_tool(model)


@functools.lru_cache(maxsize=1)
def _unrelated_tools() -> tuple[dict[str, Any], ...]:
    """Tools that have nothing to do with a picture of shapes."""
    return (
        _tool("multiply", "Multiply two whole numbers.", a=int, b=int),
        _tool("get_weather", "Get the current weather in a city.", city=str),
        _tool("web_search", "Search the web for a query.", query=str),
        _tool("send_email", "Send an email.", to=str, body=str),
        _tool("lookup", "Look up a word in the dictionary.", word=str),
    )


@functools.lru_cache(maxsize=2)
def _add_tools() -> tuple[dict[str, Any], ...]:
    """The ``add`` tool as the agent example and the README describe it."""
    return (
        _tool("add", "Add two whole numbers, e.g. two counts of shapes.", a=int, b=int),
        _tool("add", "Add two whole numbers.", a=int, b=int),
    )


@functools.lru_cache(maxsize=8)
def add_tool_prompt(tool_choice: str | None = None) -> str:
    """The tools prompt for an ``add(a: int, b: int)`` tool, as ``bind_tools`` renders it."""
    return render_tools_prompt([_add_tools()[0]], tool_choice)


def _is_sum(example: Example) -> bool:
    return example.kind == "arithmetic" and example.spec.operation == "add"


def _with_tools(
    example: Example, rng: random.Random, tools: list[dict[str, Any]], choice: str | None, *history: Turn
) -> Conversation:
    """``example``'s question with ``tools`` bound, then ``history``."""
    turns = [user_turn(example), *history]
    if rng.random() < 0.3:
        turns.insert(0, Turn(role="system", text=AGENT_SYSTEM_PROMPT))
    return Conversation(
        turns=tuple(turns),
        tools_prompt=render_tools_prompt(tools, choice),
        tools=tuple(tools),
        tool_choice=choice,
    )


def _add_call(example: Example, objects: Any) -> str:
    """The add call on the counts of a sum question's two sets among ``objects``."""
    first, second = example.spec.first, example.spec.second
    assert first is not None and second is not None  # a sum question has both sets
    a, b = (sum(f.matches(o) for o in objects) for f in (first, second))
    return format_tool_calls([{"name": "add", "args": {"a": a, "b": b}, "id": "0", "type": "tool_call"}])


def _answer_with_conclusion(
    example: Example, rng: random.Random, conclusion: Any, *, mistakes: bool = True
) -> list[tuple[str, float]]:
    """The stages as weighted pieces, the conclusion given by ``conclusion(objects)``.

    With ``mistakes``, a quarter show a caption with a mistake (weight zero) and what it gives.
    """
    objects, caption_weight = example.scene.objects, 1.0
    if mistakes and rng.random() < 0.25:
        objects, caption_weight = perturb_objects(objects, rng), 0.0
    stages = write_stages(example.spec, objects)
    stages[Stage.SUMMARY] = example.stages[Stage.SUMMARY]
    stages[Stage.CONCLUSION] = conclusion(objects)
    pieces: list[tuple[str, float]] = []
    for i, stage in enumerate(STAGES):
        if i:
            pieces.append(("\n\n", 1.0))
        pieces.append(
            (render_answer({stage: stages[stage]}), caption_weight if stage is Stage.CAPTION else 1.0)
        )
    return [*pieces, (EOT, 1.0)]


def tool_examples(
    processor: Any,
    fresh: Iterator[Example],
    pool: list[Example],
    config: TrainConfig,
    rng: random.Random,
    image_tokens: int,
) -> list[TrainingSequence]:
    """Sums with ``add`` and questions with tools they do not need, on examples taken from ``fresh``.

    The examples used are appended to ``pool`` (the sequences' pictures are its indices).
    """
    sums = others = 0
    sequences: list[TrainingSequence] = []

    def encode(conversation: Conversation, pieces: list[tuple[str, float]]) -> None:
        ids, weights = encode_pieces(processor, prompt_text(processor, conversation), pieces, image_tokens)
        sequences.append(TrainingSequence(ids, weights, len(pool) - 1))

    for example in fresh:
        if sums >= config.tool_questions and others >= config.tool_others:
            break
        add = rng.choice(_add_tools())
        if _is_sum(example) and sums < config.tool_questions:
            sums += 1
            pool.append(example)
            tools = [add, *rng.sample(_unrelated_tools(), rng.choice([0, 0, 1]))]
            choice = rng.choice([None, None, "any"])
            pieces = _answer_with_conclusion(example, rng, lambda objects: _add_call(example, objects))
            encode(_with_tools(example, rng, tools, choice), pieces)
            result = Turn(role="user", text=f"Tool result (add): {example.answer}")
            call = Turn(role="assistant", text=_add_call(example, example.scene.objects))
            encode(_with_tools(example, rng, tools, None, call, result), [(example.target, 1.0), (EOT, 1.0)])
        elif not _is_sum(example) and others < config.tool_others:
            others += 1
            pool.append(example)
            tools = rng.sample([add, *_unrelated_tools()], rng.choice([1, 1, 2]))
            encode(_with_tools(example, rng, tools, rng.choice([None, "auto"])), answer_pieces(example, rng))
    return sequences


def structured_examples(
    processor: Any,
    fresh: Iterator[Example],
    pool: list[Example],
    count: int,
    rng: random.Random,
    image_tokens: int,
) -> list[TrainingSequence]:
    """``count`` questions from ``fresh`` answered through a forced schema; their examples go on ``pool``."""
    sequences: list[TrainingSequence] = []
    for example in fresh:
        if len(sequences) >= count:
            break
        pool.append(example)
        call = structured_call(example, rng)
        conversation = _with_tools(example, rng, [call.schema], call.name)
        pieces = _answer_with_conclusion(example, rng, call.text, mistakes=False)
        ids, weights = encode_pieces(processor, prompt_text(processor, conversation), pieces, image_tokens)
        sequences.append(TrainingSequence(ids, weights, len(pool) - 1))
    return sequences


_SCHEMA_NAMES = ("Answer", "Result", "Count", "Output", "Response", "Scene", "Picture", "Reply")

_ANSWER_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "number": (("count", "int"), ("number", "int"), ("total", "int"), ("answer", "int"), ("n", "int")),
    "yes/no": (
        ("answer", "bool"),
        ("result", "bool"),
        ("is_true", "bool"),
        ("answer", "yes/no"),
        ("answer", "str"),
    ),
    "word": (("answer", "str"), ("value", "str"), ("{attribute}", "str"), ("{attribute}", "literal")),
    "listing": (("objects", "list:name"), ("items", "list:name"), ("names", "list:name")),
}
"""Fields that hold a question's answer, by the kind of answer: name and type."""

_SCENE_FIELDS: tuple[tuple[str, str], ...] = (
    ("object_count", "int:objects"),
    ("num_objects", "int:objects"),
    ("colours", "list:colour"),
    ("colors", "list:colour"),
    ("shapes", "list:shape"),
    ("sizes", "list:size"),
)
"""Fields about the whole picture, whatever the question."""


def _answer_kind(example: Example) -> str:
    if example.kind == "describe":
        return "listing"
    if example.answer in ("yes", "no"):
        return "yes/no"
    return "number" if example.answer.isdigit() else "word"


@dataclass(frozen=True)
class StructuredCall:
    """A schema made for one question, and how its fields are filled."""

    example: Example
    schema: dict[str, Any]
    """The schema as an OpenAI-format tool, as ``with_structured_output`` binds it."""
    fields: tuple[tuple[str, str], ...]
    """Each field's name and what it holds (``int``, ``bool``, ``list:colour``...)."""

    @property
    def name(self) -> str:
        """The schema's (and the forced tool's) name."""
        return self.schema["function"]["name"]

    def arguments(self, objects: Any) -> dict[str, Any]:
        """The call's arguments, from the answer ``objects`` give the question."""
        answer = write_stages(self.example.spec, objects)[Stage.CONCLUSION]
        ordered = sorted(objects, key=caption_order)
        arguments: dict[str, Any] = {}
        for name, holds in self.fields:
            if holds == "int":
                arguments[name] = int(answer) if answer.isdigit() else 0
            elif holds == "int:objects":
                arguments[name] = len(ordered)
            elif holds == "bool":
                arguments[name] = answer == "yes"
            elif holds in ("str", "literal", "yes/no"):
                arguments[name] = answer
            elif holds == "list:name":
                arguments[name] = [o.name for o in ordered]
            else:  # list:colour, list:shape, list:size
                arguments[name] = [getattr(o, holds.split(":")[1]) for o in ordered]
        return arguments

    def text(self, objects: Any) -> str:
        """The conclusion: the one call, as the model writes it."""
        return (
            "<tool_call>"
            + json.dumps({"name": self.name, "arguments": self.arguments(objects)})
            + "</tool_call>"
        )


def structured_call(example: Example, rng: random.Random) -> StructuredCall:
    """A schema for ``example``'s question, drawn from ``rng``, whose fields its answer and caption fill."""
    kind = _answer_kind(example)
    attribute = example.spec.attribute or "answer"
    fields: list[tuple[str, str]] = []
    if rng.random() < 0.85:
        name, type_ = rng.choice(_ANSWER_FIELDS[kind])
        fields.append(
            (name.format(attribute=attribute.replace("colour", rng.choice(["colour", "color"]))), type_)
        )
        if kind == "number" and example.kind == "count" and example.spec.first and rng.random() < 0.3:
            fields[0] = (_snake(example.spec.first.plural), "int")
    for extra in rng.sample(_SCENE_FIELDS, rng.choice([0, 1, 1, 2] if fields else [1, 2])):
        if extra[0] not in {f for f, _ in fields}:
            fields.insert(rng.randrange(len(fields) + 1), extra)
    types = {name: _python_type(type_, example) for name, type_ in fields}
    schema = _tool(
        rng.choice(_SCHEMA_NAMES), rng.choice(["", "The answer.", "Answer the question."]), **types
    )
    return StructuredCall(example, schema, tuple(fields))


def _python_type(type_: str, example: Example) -> Any:
    if type_ in ("int", "int:objects"):
        return int
    if type_ == "bool":
        return bool
    if type_ == "yes/no":
        return Literal["yes", "no"]
    if type_ == "literal":
        values = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES)}[
            example.spec.attribute or "colour"
        ]
        return Literal[values]  # type: ignore[valid-type]
    if type_.startswith("list:"):
        return list[str]
    return str


def _snake(words: str) -> str:
    return re.sub(r"\W+", "_", words.strip().lower())
