"""Decoding under a forced call's grammar: token masks, where a row ends, closing in time.

:class:`ToolCallGrammars` compiles each tool set's grammar
(:func:`~langchain_llava_cot.backends._grammar.tool_call_grammar`) once per tokenizer.
:class:`GrammarRows` is the logits processor, and through :meth:`GrammarRows.stopping`
the stopping criterion, of one ``generate`` call whose rows all decode under one grammar:

- a row may write only what its grammar allows next (xgrammar's token masks);
- a row ends where its grammar is accepted, at its final ``</CONCLUSION>``, and nowhere
  else: no stop string can end it inside the call;
- a row does not run out of tokens inside the call: once a short text that completes
  its grammar (:func:`~langchain_llava_cot.backends._grammar.closing_text`), spelt in
  the fewest tokens, plus :data:`CLOSING_HEADROOM` tokens, no longer fits in the tokens
  the row has left, the row writes that text and nothing else, in the fewest tokens.
  A string value is then closed as it stands, a list ends, missing required fields get
  a short value their schema allows (``""``, ``0``, ``true``, one of an enum's values),
  and so do stages still open.

A row still ends at its token limit inside the call when its limit is shorter than the
shortest call, when one token opened more than :data:`CLOSING_HEADROOM` tokens of
closing text at once right at the edge, or when the tokenizer cannot spell the closing
text.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from langchain_llava_cot.backends._grammar import (
    closing_text,
    stages_to_write,
    tool_call_grammar,
    xgrammar_module,
)
from langchain_llava_cot.backends.base import ToolCallConstraint

__all__ = ["CLOSING_HEADROOM", "GrammarRows", "ToolCallGrammars"]

CLOSING_HEADROOM = 16
"""Tokens kept in hand: a row starts closing its call while it still has this many to spare."""


class _TokenIndex:
    """Token ids by their bytes, to find the tokens that spell the start of a text."""

    def __init__(self, decoded_vocab: Sequence[bytes]) -> None:
        self._texts = [bytes(text) for text in decoded_vocab]
        self._ids: dict[bytes, list[int]] = {}
        for token_id, text in enumerate(self._texts):
            if text:
                self._ids.setdefault(text, []).append(token_id)
        self._longest = max(map(len, self._ids), default=0)

    def text(self, token_id: int) -> bytes:
        """The bytes of one token (empty for an id outside the vocabulary)."""
        return self._texts[token_id] if 0 <= token_id < len(self._texts) else b""

    def fewest(self, text: bytes) -> tuple[int | None, list[int]]:
        """How few tokens can spell ``text`` (None: none can), and the tokens that start such a spelling."""
        unspellable = len(text) + 1
        fewest = [unspellable] * len(text) + [0]  # fewest[i]: tokens to spell text[i:]
        for start in range(len(text) - 1, -1, -1):
            for length in range(1, min(len(text) - start, self._longest) + 1):
                if text[start : start + length] in self._ids:
                    fewest[start] = min(fewest[start], 1 + fewest[start + length])
        if fewest[0] >= unspellable:
            return None, []
        first = [
            token_id
            for length in range(1, min(len(text), self._longest) + 1)
            if fewest[length] == fewest[0] - 1
            for token_id in self._ids.get(text[:length], ())
        ]
        return fewest[0], first


class ToolCallGrammars:
    """Compiles and caches forced-tool-call grammars for one tokenizer."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._cache: dict[tuple[str, tuple[str, ...]], Any] = {}

    @functools.cached_property
    def _info(self) -> Any:
        return xgrammar_module().TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self._vocab_size)

    @functools.cached_property
    def _compiler(self) -> Any:
        return xgrammar_module().GrammarCompiler(self._info)

    @functools.cached_property
    def _tokens(self) -> _TokenIndex:
        return _TokenIndex(self._info.decoded_vocab)

    def _compiled(self, tools_key: str, stages: tuple[str, ...]) -> Any:
        if (tools_key, stages) not in self._cache:
            if len(self._cache) >= 64:
                self._cache.pop(next(iter(self._cache)))
            grammar = tool_call_grammar(tools_key, stages)
            self._cache[tools_key, stages] = self._compiler.compile_grammar(grammar)
        return self._cache[tools_key, stages]

    def processor(
        self, constraint: ToolCallConstraint, prefix: str, limits: Sequence[int], prompt_length: int
    ) -> GrammarRows:
        """A fresh :class:`GrammarRows` for one ``generate`` call continuing ``prefix``.

        ``limits``: each row's token limit; ``prompt_length``: the batch's padded prompt length.
        """
        compiled = self._compiled(constraint.key, stages_to_write(prefix))
        return GrammarRows(compiled, self._tokens, limits, prompt_length)


class GrammarRows:
    """Keeps every row of a batch inside one grammar; ends and closes each row in time.

    ``generate`` gets it twice: as a logits processor and, through :meth:`stopping`, as
    a stopping criterion. Both see each new token; the first to be called feeds it to
    the row's matcher. A row that is done (its grammar accepted, or a token its grammar
    does not take, such as the padding of a row its limit ended) is left alone while
    its batch goes on.
    """

    def __init__(self, compiled: Any, tokens: _TokenIndex, limits: Sequence[int], prompt_length: int) -> None:
        xgr = xgrammar_module()
        self._matchers = [
            xgr.GrammarMatcher(compiled, terminate_without_stop_token=True) for _ in range(len(limits))
        ]
        self._vocab_size = compiled.tokenizer_info.vocab_size
        self._tokens = tokens
        self._limits = list(limits)
        self._prompt_length = prompt_length
        self._fed = prompt_length
        self._done = [False] * len(limits)
        self._closing: list[bytes | None] = [None] * len(limits)
        self._ends: list[int | None] = [None] * len(limits)
        self._bitmask: Any = None

    @property
    def ends(self) -> list[int | None]:
        """Per row, how many tokens it had written when its grammar was accepted (None: never)."""
        return list(self._ends)

    @property
    def closed_early(self) -> list[bool]:
        """Per row, whether it had to write the shortest close of its call to fit its limit."""
        return [rest is not None for rest in self._closing]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import xgrammar as xgr

        self._feed(input_ids)
        written = self._fed - self._prompt_length
        free, closing = [], {}
        for row, done in enumerate(self._done):
            if not done:
                forced = self._closing_tokens(row, self._limits[row] - written)
                if forced:
                    closing[row] = forced
                else:
                    free.append(row)
        if free:
            if self._bitmask is None:
                self._bitmask = xgr.allocate_token_bitmask(len(self._matchers), self._vocab_size)
            for row in free:
                self._matchers[row].fill_next_token_bitmask(self._bitmask, row)
            xgr.apply_token_bitmask_inplace(scores, self._bitmask, indices=free)
        for row, token_ids in closing.items():
            scores[row] = _only(scores[row], token_ids)
        return scores

    def stopping(self) -> _GrammarStops:
        """The stopping criterion that ends each row where its grammar is accepted."""
        return _GrammarStops(self)

    def done(self, input_ids: Any) -> list[bool]:
        """Which rows are done, once the newest token of ``input_ids`` is fed."""
        self._feed(input_ids)
        return list(self._done)

    def _closing_tokens(self, row: int, left: int) -> list[int]:
        """The tokens that start what is left of the row's closing text, once it must close; else none.

        The closing text is chosen once, when the row starts closing, and then written out.
        """
        if left < 1:
            return []
        rest = self._closing[row]
        if rest is None:
            text = closing_text(self._matchers[row])
            if text is None or len(text.encode()) + CLOSING_HEADROOM < left:  # a token spells a byte or more
                return []
            needed, first = self._tokens.fewest(text.encode())
            if needed is None or needed + CLOSING_HEADROOM < left:
                return []
            self._closing[row] = text.encode()
            return first
        return self._tokens.fewest(rest)[1]

    def _feed(self, input_ids: Any) -> None:
        """Give each live row's matcher the token written since the last call, if any."""
        length = input_ids.shape[1]
        if length == self._fed:
            return
        self._fed = length
        last = input_ids[:, -1].tolist()
        for row, matcher in enumerate(self._matchers):
            if self._done[row]:
                continue
            if not matcher.accept_token(last[row]):
                self._done[row] = True
                continue
            rest = self._closing[row]
            if rest is not None:
                self._closing[row] = rest.removeprefix(self._tokens.text(last[row]))
            if matcher.is_terminated():
                self._done[row] = True
                self._ends[row] = length - self._prompt_length


def _only(row_scores: Any, token_ids: list[int]) -> Any:
    """``row_scores`` with every token but ``token_ids`` set to minus infinity."""
    import torch

    kept = torch.full_like(row_scores, float("-inf"))
    kept[token_ids] = row_scores[token_ids]
    return kept


class _GrammarStops:
    """A ``generate`` stopping criterion: the rows :class:`GrammarRows` has seen done."""

    def __init__(self, rows: GrammarRows) -> None:
        self._rows = rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.tensor(self._rows.done(input_ids), dtype=torch.bool, device=input_ids.device)
