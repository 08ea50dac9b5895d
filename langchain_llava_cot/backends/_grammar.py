"""Constrained decoding for a forced tool call, with xgrammar.

When a tool call is required (``tool_choice="any"``, a tool's name, or
``with_structured_output``), the continuation is generated under a grammar: whatever
stages it still writes are free text, and its conclusion is exactly one call
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` whose JSON matches one of
the tools' schemas (written as ``json.dumps`` writes it, the format the tools prompt
shows). The grammar starts after the request's prefix, which ends with the opening tag of
the first stage to write.

>>> stages_to_write("<SUMMARY> count </SUMMARY> <CAPTION>")
('caption', 'reasoning', 'conclusion')
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from langchain_llava_cot.backends.base import ToolCallConstraint
from langchain_llava_cot.stages import STAGES, TAG_NAMES, Stage

__all__ = ["GrammarRows", "ToolCallGrammars", "stages_to_write", "to_gbnf", "tool_call_ebnf"]

_OPEN_TAG = re.compile(rf"<({TAG_NAMES})>")


def stages_to_write(prefix: str) -> tuple[str, ...]:
    """The stages a continuation of ``prefix`` writes: from its last opening tag to the conclusion."""
    found = _OPEN_TAG.findall(prefix)
    if not found:
        msg = "A constrained continuation must start after a stage's opening tag, e.g. '<CONCLUSION>'."
        raise ValueError(msg)
    first = STAGES.index(Stage(found[-1].lower()))
    return tuple(stage.value for stage in STAGES[first:])


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


def _xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as e:
        msg = (
            "Forced tool calls and structured output decode under a grammar, which needs xgrammar: "
            "pip install 'langchain-llava-cot[transformers]'."
        )
        raise ImportError(msg) from e
    return xgrammar


def _tool_call_grammar(tools_key: str, stages: tuple[str, ...]) -> Any:
    """The grammar of a continuation that writes ``stages`` and concludes with one call."""
    xgr = _xgrammar()
    schema = ToolCallConstraint(tuple(json.loads(tools_key))).json_schema()
    return xgr.Grammar.concat(
        xgr.Grammar.from_ebnf(_before_the_call(stages)),
        xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False),
        xgr.Grammar.from_ebnf('root ::= "</tool_call>" [ \\n]* "</CONCLUSION>"'),
    )


@functools.lru_cache(maxsize=64)
def _ebnf(tools_key: str, stages: tuple[str, ...]) -> str:
    return str(_tool_call_grammar(tools_key, stages))


def tool_call_ebnf(constraint: ToolCallConstraint, prefix: str) -> str:
    """The grammar of a forced call continuing ``prefix``, as EBNF text (xgrammar's dialect).

    Servers that decode under a grammar take it as is (vLLM's ``structured_outputs``).
    """
    return _ebnf(constraint.key, stages_to_write(prefix))


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
    out, i = [], 0
    while i < len(line):
        char = line[i]
        if char in '"[':  # a literal or a character class: copied, escapes and all
            close, j = ('"' if char == '"' else "]"), i + 1
            while j < len(line) and line[j] != close:
                j += 2 if line[j] == "\\" else 1
            part = line[i : j + 1]
            out.append(part.replace("\\0", "\\x00") if char == "[" else part)
            i = j + 1
        elif char == "{":
            j = line.index("}", i)
            low, high = (bound.strip() for bound in line[i + 1 : j].split(","))
            bounded = f"{{{low},{high.replace('-1', '')}}}"
            out.append({("0", "-1"): "*", ("1", "-1"): "+"}.get((low, high), bounded))
            i = j + 1
        else:
            out.append("-" if char == "_" else char)
            i += 1
    return "".join(out)


class ToolCallGrammars:
    """Compiles and caches forced-tool-call grammars for one tokenizer."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._cache: dict[tuple[str, tuple[str, ...]], Any] = {}

    @functools.cached_property
    def _compiler(self) -> Any:
        xgr = _xgrammar()
        info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self._vocab_size)
        return xgr.GrammarCompiler(info)

    def _compiled(self, tools_key: str, stages: tuple[str, ...]) -> Any:
        if (tools_key, stages) not in self._cache:
            if len(self._cache) >= 64:
                self._cache.pop(next(iter(self._cache)))
            self._cache[tools_key, stages] = self._compile(tools_key, stages)
        return self._cache[tools_key, stages]

    def _compile(self, tools_key: str, stages: tuple[str, ...]) -> Any:
        return self._compiler.compile_grammar(_tool_call_grammar(tools_key, stages))

    def processor(self, constraint: ToolCallConstraint, prefix: str) -> GrammarRows:
        """A fresh logits processor for one ``generate`` call continuing ``prefix``."""
        return GrammarRows(self._compiled(constraint.key, stages_to_write(prefix)))


class GrammarRows:
    """A logits processor that keeps every row of a batch inside one grammar.

    xgrammar's own processor for transformers asserts on every token a row writes; but a
    row that has written its closing tag is finished while its batch goes on, and
    ``generate`` pads it from then on. Here a row whose token the grammar does not take,
    or that has written the grammar's end, is finished and left alone.
    """

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self._matchers: list[Any] = []
        self._finished: list[bool] = []
        self._bitmask: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import xgrammar as xgr

        if not self._matchers:  # the first step: nothing written yet
            rows = input_ids.shape[0]
            self._matchers = [xgr.GrammarMatcher(self._compiled) for _ in range(rows)]
            self._finished = [False] * rows
            self._bitmask = xgr.allocate_token_bitmask(rows, self._compiled.tokenizer_info.vocab_size)
        else:
            for row, matcher in enumerate(self._matchers):
                if not self._finished[row]:
                    taken = matcher.accept_token(int(input_ids[row, -1]))
                    self._finished[row] = not taken or matcher.is_terminated()
        live = [row for row, done in enumerate(self._finished) if not done]
        for row in live:
            self._matchers[row].fill_next_token_bitmask(self._bitmask, row)
        if live:
            xgr.apply_token_bitmask_inplace(scores, self._bitmask, indices=live)
        return scores
