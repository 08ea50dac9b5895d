r"""The grammar of a forced tool call, for xgrammar, vLLM and llama.cpp.

When a tool call is required (``tool_choice="any"``, a tool's name, or
``with_structured_output``), the continuation is generated under a grammar: whatever
stages it still writes are free text, and its conclusion is exactly one call
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` whose JSON matches one of
the tools' schemas (written as ``json.dumps`` writes it, the format the tools prompt
shows). The grammar starts after the request's prefix, which ends with the opening tag of
the first stage to write, and ends with :data:`CALL_END`.

Only tags write ``<``. The stages' free text cannot hold it, and neither can a JSON value
(:func:`without_raw_angle`; a string that needs one writes the escape ``\u003c``, which
``json.loads`` reads back as ``<``). So no stage tag, tool-call marker or chat token
(``<|eot_id|>``, ``<image>``) can be written inside a value, where a stop string would
end the row or the answer's parser would cut the call short. A row decoded under the
grammar ends where the grammar ends, not at a stop string (:func:`stops_under_grammar`);
the transformers backend decodes under it with
:mod:`langchain_llava_cot.backends.transformers.constrained`.

>>> stages_to_write("<SUMMARY> count </SUMMARY> <CAPTION>")
('caption', 'reasoning', 'conclusion')
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from langchain_llava_cot.backends.base import ToolCallConstraint
from langchain_llava_cot.stages import STAGES, TAG_NAMES, Stage

__all__ = [
    "CALL_END",
    "closing_text",
    "completed_call",
    "stages_to_write",
    "stops_under_grammar",
    "to_gbnf",
    "tool_call_ebnf",
    "tool_call_grammar",
    "without_raw_angle",
    "xgrammar_module",
]

CALL_END = Stage.CONCLUSION.close_tag
"""The text every forced-call grammar ends with; nothing before it can write it."""

_OPEN_TAG = re.compile(rf"<({TAG_NAMES})>")


def stages_to_write(prefix: str) -> tuple[str, ...]:
    """The stages a continuation of ``prefix`` writes: from its last opening tag to the conclusion."""
    found = _OPEN_TAG.findall(prefix)
    if not found:
        msg = "A constrained continuation must start after a stage's opening tag, e.g. '<CONCLUSION>'."
        raise ValueError(msg)
    first = STAGES.index(Stage(found[-1].lower()))
    return tuple(stage.value for stage in STAGES[first:])


def stops_under_grammar(stop: tuple[str, ...]) -> tuple[str, ...]:
    """The stop strings still in force when a forced call's grammar decides where a row ends.

    Only :data:`CALL_END`, which the grammar writes once, at its end: any other stop
    string could match inside the call (``"."`` in a number, a word in a string) and
    cut it short, so the grammar's end is waited for instead.

    >>> stops_under_grammar(("</CONCLUSION>", "."))
    ('</CONCLUSION>',)
    """
    return tuple(s for s in stop if s == CALL_END)


def _before_the_call(stages: tuple[str, ...]) -> str:
    """EBNF of the text from the first stage's content to the opening ``<tool_call>``."""
    parts = []
    for stage in stages[:-1]:
        tag = stage.upper()
        parts.append(f'[^<]* "</{tag}>" [ \\n]*')
        following = stages[stages.index(stage) + 1].upper()
        parts.append(f'"<{following}>"')
    parts.append('[ \\n]* "<tool_call>"')
    return "root ::= " + " ".join(parts)


def xgrammar_module() -> Any:
    """xgrammar, imported on first use, or an ImportError that says how to install it."""
    try:
        import xgrammar
    except ImportError as e:
        msg = (
            "Forced tool calls and structured output decode under a grammar, which needs xgrammar: "
            "pip install 'langchain-llava-cot[transformers]'."
        )
        raise ImportError(msg) from e
    return xgrammar


def tool_call_grammar(tools_key: str, stages: tuple[str, ...]) -> Any:
    """The xgrammar grammar of a continuation that writes ``stages`` and concludes with one call.

    ``tools_key`` is the constraint's :attr:`~ToolCallConstraint.key`.
    """
    xgr = xgrammar_module()
    schema = ToolCallConstraint(tuple(json.loads(tools_key))).json_schema()
    call = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
    return xgr.Grammar.concat(
        xgr.Grammar.from_ebnf(_before_the_call(stages)),
        xgr.Grammar.from_ebnf(without_raw_angle(str(call))),
        xgr.Grammar.from_ebnf(f'root ::= "</tool_call>" [ \\n]* "{CALL_END}"'),
    )


@functools.lru_cache(maxsize=64)
def _ebnf(tools_key: str, stages: tuple[str, ...]) -> str:
    return str(tool_call_grammar(tools_key, stages))


def tool_call_ebnf(constraint: ToolCallConstraint, prefix: str) -> str:
    """The grammar of a forced call continuing ``prefix``, as EBNF text (xgrammar's dialect).

    Servers that decode under a grammar take it as is (vLLM's ``structured_outputs``).
    """
    return _ebnf(constraint.key, stages_to_write(prefix))


# -- completing a call from where it stands ------------------------------------------

_CLOSING_CHARACTERS = '<"]},0ta@.' + "".join(chr(code) for code in range(32, 127))
"""Tried in this order where the grammar leaves a choice: a tag, then what closes JSON."""

_MOST_REPEATS = 8
"""A character chosen this often since the last forced text is passed over (it was content, not closing)."""

_MOST_CLOSING_STEPS = 1024


def closing_text(matcher: Any) -> str | None:
    """A short text that completes ``matcher``'s grammar from where it stands (None: none found).

    Greedy: where the grammar forces a text (a key, a tag) it is written; where it
    leaves a choice, the first of ``<`` (a stage's closing tag), ``"`` (end a string or
    write an empty one), ``]``, ``}``, ``,``, ``0``, ``t`` (``true``), then any printable
    character, that the grammar takes; but not one chosen :data:`_MOST_REPEATS` times
    since the grammar last forced a text (a format such as an email address takes ``}``
    as content, and would take it forever). ``matcher`` itself is not changed.
    """
    probe = matcher.fork()
    written: list[str] = []
    chosen: Counter[str] = Counter()
    for _ in range(_MOST_CLOSING_STEPS):
        if probe.is_terminated():
            return "".join(written)
        forced = probe.find_jump_forward_string()
        if forced and probe.accept_string(forced):
            written.append(forced)
            chosen.clear()
            continue
        allowed = (char for char in _CLOSING_CHARACTERS if chosen[char] < _MOST_REPEATS)
        taken = next((char for char in allowed if probe.accept_string(char)), None)
        if taken is None:
            return None
        written.append(taken)
        chosen[taken] += 1
    return None


@functools.lru_cache(maxsize=64)
def _text_grammar(tools_key: str, stages: tuple[str, ...]) -> Any:
    """The call's grammar compiled for matching text (no vocabulary: no token masks)."""
    xgr = xgrammar_module()
    return xgr.GrammarCompiler(xgr.TokenizerInfo([])).compile_grammar(tool_call_grammar(tools_key, stages))


def completed_call(constraint: ToolCallConstraint, prefix: str, text: str) -> str | None:
    """``text``, a continuation of ``prefix`` cut off inside its forced call, completed.

    By :func:`closing_text`; the result ends before :data:`CALL_END`,
    like a continuation cut at that stop string. None when the grammar does not take
    ``text`` (it was not decoded under it) or finds no way to complete it.
    """
    stages = stages_to_write(prefix)
    matcher = xgrammar_module().GrammarMatcher(
        _text_grammar(constraint.key, stages), terminate_without_stop_token=True
    )
    if not matcher.accept_string(text):
        return None
    rest = closing_text(matcher)
    if rest is None:
        return None
    return (text + rest).removesuffix(CALL_END)


# -- EBNF text: its parts, classes without "<", llama.cpp's dialect ----------------------


def _parts(line: str) -> Iterator[tuple[str, str]]:
    """A grammar line as ``(kind, text)`` parts: ``literal``, ``class`` or a single ``char``."""
    i = 0
    while i < len(line):
        char = line[i]
        if char in '"[':  # a literal or a character class, escapes and all
            close, j = ('"' if char == '"' else "]"), i + 1
            while j < len(line) and line[j] != close:
                j += 2 if line[j] == "\\" else 1
            yield ("literal" if char == '"' else "class"), line[i : j + 1]
            i = j + 1
        else:
            yield "char", char
            i += 1


def without_raw_angle(ebnf: str) -> str:
    r"""An xgrammar EBNF grammar whose character classes never match ``<``.

    A negated class excludes it too; a class of ranges is split around it. Quoted
    literals are left alone: a schema's own ``const``, ``enum`` or ``pattern`` that
    spells out a ``<`` keeps it. Applied to a JSON grammar, no value can write a raw
    ``<`` (a string may still hold one, written ``\u003c``).

    >>> without_raw_angle(r'sub ::= ([^\0-\x1f\"] sub) | [ -~] | "<a>"')
    'sub ::= ([^<\\0-\\x1f\\"] sub) | [ -;=-~] | "<a>"'
    """
    lines = []
    for line in ebnf.splitlines():
        parts = (_class_without_angle(text) if kind == "class" else text for kind, text in _parts(line))
        lines.append("".join(parts))
    return "\n".join(lines)


_ANGLE = ord("<")
_NAMED_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def _class_without_angle(text: str) -> str:
    if text.startswith("[^"):
        return "[^<" + text[2:]
    ranges = _class_ranges(text[1:-1])
    if not any(low <= _ANGLE <= high for low, high in ranges):
        return text
    split = [
        piece
        for low, high in ranges
        for piece in ((low, min(high, _ANGLE - 1)), (max(low, _ANGLE + 1), high))
        if piece[0] <= piece[1]
    ]
    if not split:  # the class is "<" alone: the schema spells it out
        return text
    items = (_class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}" for a, b in split)
    return "[" + "".join(items) + "]"


def _class_ranges(body: str) -> list[tuple[int, int]]:
    r"""The code point ranges of a character class's body (``a-z\n`` -> ``[(97, 122), (10, 10)]``)."""
    chars: list[int | None] = []  # None marks a range's "-"
    i = 0
    while i < len(body):
        if body[i] == "\\":
            kind = body[i + 1]
            if kind in _HEX_ESCAPES:
                width = _HEX_ESCAPES[kind]
                chars.append(int(body[i + 2 : i + 2 + width], 16))
                i += 2 + width
            else:
                chars.append(ord(_NAMED_ESCAPES.get(kind, kind)))
                i += 2
        elif body[i] == "-" and chars and chars[-1] is not None and i + 1 < len(body):
            chars.append(None)
            i += 1
        else:
            chars.append(ord(body[i]))
            i += 1
    ranges, k = [], 0
    while k < len(chars):
        low = chars[k]
        assert low is not None
        if k + 2 < len(chars) and chars[k + 1] is None:
            high = chars[k + 2]
            assert high is not None
            ranges.append((low, high))
            k += 3
        else:
            ranges.append((low, low))
            k += 1
    return ranges


def _class_char(code: int) -> str:
    """One code point as a character class writes it: plain when unambiguous, else escaped."""
    char = chr(code)
    if " " <= char <= "~" and char not in "\\]-^\"'":
        return char
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


_LOOKAHEAD = re.compile(r"\s\(=.*\)$")


def to_gbnf(ebnf: str) -> str:
    r"""An xgrammar EBNF grammar in llama.cpp's GBNF dialect (its ``grammar`` field).

    Three things differ: rule names may not hold ``_`` (they get ``-``), repetitions are
    written ``*``, ``+`` or ``{m,n}`` (not ``{m, -1}``), and there are no lookahead
    hints (xgrammar puts one at the end of a rule; they only speed matching up, so they go).

    >>> to_gbnf('root_1 ::= ("a_b" [^\\0-\\x1f] d_2{1, -1}) (=("x"))')
    'root-1 ::= ("a_b" [^\\x00-\\x1f] d-2+)'
    """
    return "\n".join(_gbnf_line(_LOOKAHEAD.sub("", line)) for line in ebnf.splitlines())


def _gbnf_line(line: str) -> str:
    out: list[str] = []
    repetition: list[str] | None = None
    for kind, text in _parts(line):
        if repetition is not None:  # inside "{m, n}"
            if text != "}":
                repetition.append(text)
                continue
            low, high = (bound.strip() for bound in "".join(repetition).split(","))
            bounded = f"{{{low},{high.replace('-1', '')}}}"
            out.append({("0", "-1"): "*", ("1", "-1"): "+"}.get((low, high), bounded))
            repetition = None
        elif kind == "class":
            out.append(text.replace("\\0", "\\x00"))
        elif kind == "literal":
            out.append(text)
        elif text == "{":
            repetition = []
        else:
            out.append("-" if text == "_" else text)
    return "".join(out)
