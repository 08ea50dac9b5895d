"""A forced call's grammar: no raw "<" in a JSON value, the grammar's end, closing within a token limit.

Decoding is simulated over the bundled demo model's tokenizer (its stage tags are single
tokens) with made-up scores, so each test can push a row the way that used to break it.
"""

import json
from typing import Literal

import pytest
import torch
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, TypeAdapter
from typing_extensions import TypedDict

from langchain_llava_cot.backends._grammar import (
    CALL_END,
    closing_text,
    completed_call,
    stages_to_write,
    stops_under_grammar,
    to_gbnf,
    tool_call_ebnf,
    tool_call_grammar,
    without_raw_angle,
)
from langchain_llava_cot.backends.base import ToolCallConstraint
from langchain_llava_cot.backends.transformers.constrained import ToolCallGrammars
from langchain_llava_cot.demo import DEMO_MODEL_PATH
from langchain_llava_cot.tools import parse_tool_calls

xgr = pytest.importorskip("xgrammar")


class Colour(BaseModel):
    colour: str


class Shapes(TypedDict):
    shapes: list[str]


class Everything(BaseModel):
    name: str = Field(max_length=12)
    email: str = Field(json_schema_extra={"format": "email"})
    count: int
    present: bool
    kind: Literal["circle", "square"]
    tags: list[str]
    anything: dict


SCHEMAS = [Colour, Shapes, Everything]
CONCLUSION = "<CONCLUSION>"
WHOLE_ANSWER = "<SUMMARY>"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_MODEL_PATH)


@pytest.fixture(scope="module")
def grammars(tokenizer) -> ToolCallGrammars:
    return ToolCallGrammars(tokenizer, len(tokenizer))


def constraint(schema) -> ToolCallConstraint:
    return ToolCallConstraint((convert_to_openai_tool(schema),))


def matcher(schema, prefix: str = CONCLUSION):
    info = xgr.TokenizerInfo([chr(code) for code in range(128)])
    grammar = tool_call_grammar(constraint(schema).key, stages_to_write(prefix))
    return xgr.GrammarMatcher(
        xgr.GrammarCompiler(info).compile_grammar(grammar), terminate_without_stop_token=True
    )


def arguments(text: str) -> dict:
    _, [call], invalid = parse_tool_calls(text)
    assert not invalid, text
    return call["args"]


def valid(schema, args: dict) -> bool:
    TypeAdapter(schema).validate_python(args)
    return True


CALL = ' <tool_call>{"name": "%s", "arguments": {'
EMAIL = '"anything": {}, "count": 1, "email": "a'


@pytest.mark.parametrize(
    ("written", "inside"),
    [
        (CALL % "Colour" + '"colour": "red', "a string"),
        (CALL % "Shapes" + '"shapes": ["a", "b', "a list's string"),
        (CALL % "Everything" + '"anything": {"k": ["', "an untyped value"),
        (CALL % "Everything" + EMAIL, "an email"),
        (CALL % "Everything" + EMAIL + '@b.co", "kind": "circle", "name": "x', "a string of at most 12"),
    ],
)
def test_no_json_value_can_write_a_raw_angle_bracket(written: str, inside: str) -> None:
    schema = next(s for s in SCHEMAS if f'"{s.__name__}"' in written)
    state = matcher(schema)
    assert state.accept_string(written), inside
    for tag in ("<", "</CONCLUSION>", "</tool_call>", "<|eot_id|>", "<image>"):
        assert not state.fork().accept_string(tag), (inside, tag)
    if inside not in ("an email", "a string of at most 12"):  # xgrammar writes these without escapes
        assert state.accept_string("\\u003c")  # a "<" is still writable, escaped


def test_the_escape_reads_back_as_the_angle_bracket() -> None:
    state = matcher(Colour)
    call = CALL % "Colour" + '"colour": "a \\u003cb\\u003e"}}</tool_call> </CONCLUSION>'
    assert state.accept_string(call) and state.is_terminated()
    assert arguments(call) == {"colour": "a <b>"}


def test_classes_lose_the_angle_bracket_and_nothing_else() -> None:
    assert without_raw_angle(r"a ::= [^\"\\] | [ -~] | [<] | [a-z] | " + '"<x>"') == (
        r"a ::= [^<\"\\] | [ -;=-~] | [<] | [a-z] | " + '"<x>"'
    )
    assert without_raw_angle(r"a ::= [\u0020-\u007e]") == "a ::= [ -;=-~]"
    gbnf = to_gbnf(tool_call_ebnf(constraint(Everything), CONCLUSION))
    assert "[^<\\x00-\\x1f" in gbnf  # llama.cpp gets the same strings


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("prefix", [CONCLUSION, WHOLE_ANSWER])
def test_the_closing_text_completes_the_call_from_anywhere(schema, prefix: str) -> None:
    state = matcher(schema, prefix)
    start = closing_text(state)
    assert start is not None and start.endswith(CALL_END)
    full = prefix + start
    args = arguments(full[full.index("<CONCLUSION>") + len("<CONCLUSION>") : -len(CALL_END)])
    assert valid(schema, args)
    assert not state.is_terminated()  # the matcher itself is left where it was


@pytest.mark.parametrize(
    ("schema", "cut"),
    [
        (Colour, CALL % "Colour" + '"colour": "a long string that never'),
        (Shapes, CALL % "Shapes" + '"shapes": ["b", "b", "b'),
        (Everything, CALL % "Everything" + '"anything": {"k": [1, {"j": "'),
    ],
)
def test_a_call_cut_at_the_token_limit_is_completed_by_its_grammar(schema, cut: str) -> None:
    completed = completed_call(constraint(schema), CONCLUSION, cut)
    assert completed is not None and completed.startswith(cut) and CALL_END not in completed
    assert valid(schema, arguments(completed))


def test_text_the_grammar_does_not_take_is_not_completed() -> None:
    assert completed_call(constraint(Colour), CONCLUSION, " The answer is red.") is None
    assert completed_call(constraint(Colour), CONCLUSION, CALL % "Shapes") is None


def decode(grammars: ToolCallGrammars, tokenizer, schema, prefix: str, limits: list[int], liked: list[str]):
    """Greedy decoding under the grammar with scores that like ``liked`` tokens best, in that order."""
    prompt = tokenizer.encode(prefix, add_special_tokens=False)
    ids = torch.tensor([prompt] * len(limits))
    rows = grammars.processor(constraint(schema), prefix, limits, len(prompt))
    stops = rows.stopping()
    preference = torch.linspace(0, 1, len(tokenizer)).flip(0)  # lower ids a little better
    for rank, text in enumerate(liked):
        preference[tokenizer.convert_tokens_to_ids(text)] = 10.0 - rank
    done = torch.zeros(len(limits), dtype=torch.bool)
    for written in range(1, max(limits) + 1):  # as generate does it: done rows are padded
        scores = rows(ids, preference.repeat(len(limits), 1))
        chosen = torch.where(done, tokenizer.pad_token_id, scores.argmax(dim=-1))
        ids = torch.cat([ids, chosen.unsqueeze(1)], dim=1)
        done |= stops(ids, scores) | (written >= torch.tensor(limits))
        if done.all():
            break
    ends = [end or limit for end, limit in zip(rows.ends, limits)]
    written = [row[len(prompt) : len(prompt) + end] for row, end in zip(ids.tolist(), ends)]
    return rows, [tokenizer.decode(tokens) for tokens in written]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_a_row_that_would_never_end_a_string_is_closed_within_its_limit(grammars, tokenizer, schema) -> None:
    shortest = len(closing_text(matcher(schema)))  # bytes, so at most this many tokens
    limits = [shortest, shortest + 20, shortest + 100]  # each row its own limit
    liked = ["</CONCLUSION>", "<|eot_id|>", "<image>", "</CAPTION>", "b"]  # what ended strings before
    rows, texts = decode(grammars, tokenizer, schema, CONCLUSION, limits, liked)
    assert all(rows.closed_early)
    for text, end, limit in zip(texts, rows.ends, limits):
        assert end is not None and end <= limit, text
        assert text.endswith(CALL_END)
        call = text[: -len(CALL_END)]
        assert valid(schema, arguments(call))
        json_text = call.removeprefix("<tool_call>").removesuffix("</tool_call>")
        assert "<" not in json_text  # no stage tag, no chat token


def test_a_whole_answer_closes_its_stages_and_its_call_within_its_limit(grammars, tokenizer) -> None:
    rows, [text] = decode(grammars, tokenizer, Shapes, WHOLE_ANSWER, [120], liked=["b"])
    [end] = rows.ends
    assert end is not None and end <= 120
    assert [tag in text for tag in ("</SUMMARY>", "</CAPTION>", "</REASONING>", CALL_END)] == [True] * 4
    assert valid(Shapes, arguments(text[text.index("<CONCLUSION>") : text.index(CALL_END)]))


def test_a_row_with_room_writes_freely_and_ends_where_its_grammar_is_accepted(grammars, tokenizer) -> None:
    liked = ['"', "b", "}", "</CONCLUSION>"]
    rows, [text] = decode(grammars, tokenizer, Colour, CONCLUSION, [400], liked)
    assert rows.closed_early == [False]
    [end] = rows.ends
    assert end is not None and text.endswith(CALL_END) and text.count(CALL_END) == 1
    assert arguments(text[: -len(CALL_END)]) == {"colour": ""}


def test_under_a_grammar_only_its_final_tag_stops_a_row() -> None:
    assert stops_under_grammar(("</CONCLUSION>", ".", '"', "</tool_call>")) == ("</CONCLUSION>",)
    assert stops_under_grammar((".",)) == ()
    assert json.loads('"\\u003c"') == "<"
