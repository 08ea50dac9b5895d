"""Decoding: generation settings and seeds, where a generated row ends, its log-probabilities.

:class:`Decoder` turns a :class:`SampleRequest` into ``generate``'s settings (a copy
of the model's generation config) and seed, and each generated row back into a
:class:`Sample`: cut at EOS, at the request's own ``max_new_tokens``, and at the first
stop string found in the *decoded text* (BPE tokens can run past a stop string, so
``generate``'s own stopping, :class:`_RowStops`, is only an early exit). The text ends
before the stop string; ``completion_tokens`` and ``token_logprobs`` count the
generated tokens up to and including the one that completed the stop string (or the
EOS token). A row decoded under a forced call's grammar ends where its grammar was
accepted instead (:meth:`Decoder.cut_at_grammar_end`): a stop string that shows up
inside the call does not end it. Log-probabilities come from the raw logits, not the
sampling-adjusted scores.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_llava_cot.backends._grammar import CALL_END
from langchain_llava_cot.backends.base import Sample, SampleRequest
from langchain_llava_cot.backends.transformers.loading import rng_devices


class Decoder:
    """Settings in, samples out, for one model and tokenizer."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._added_tokens: dict[str, int] = {
            text: token_id
            for text, token_id in tokenizer.get_added_vocab().items()
            if token_id not in tokenizer.all_special_ids
        }

    def decode(self, tokens: list[int]) -> str:
        """The tokens' text, chat tokens and padding left out (stage tags stay)."""
        return self._tokenizer.decode(tokens, skip_special_tokens=True)

    def single_token_id(self, text: str) -> int | None:
        """The id of the added (never split) token whose text is ``text``, if there is one."""
        return self._added_tokens.get(text)

    def stops(
        self, prompt_length: int, rows: Sequence[SampleRequest], *, by_grammar: bool = False
    ) -> _RowStops:
        """``generate``'s early exit for ``rows``, each at its own limit and stop strings.

        ``by_grammar``: the rows decode under a forced call's grammar, which says where
        they end; only their token limits are watched here.
        """
        limits = [row.max_new_tokens for row in rows]
        stops = [() if by_grammar else row.stop for row in rows]
        return _RowStops(prompt_length, limits, stops, self.decode, self.single_token_id)

    def settings(self, request: SampleRequest, max_new_tokens: int) -> Any:
        """A copy of the model's generation config with this request's settings."""
        config = copy.deepcopy(self._model.generation_config)
        config.max_new_tokens = max_new_tokens
        config.max_length = None
        config.num_return_sequences = 1
        config.num_beams = 1
        config.return_dict_in_generate = True
        config.output_logits = True
        if config.eos_token_id is None:
            config.eos_token_id = self._tokenizer.eos_token_id
        if config.pad_token_id is None:
            config.pad_token_id = self._tokenizer.pad_token_id
        if request.temperature > 0:
            config.do_sample = True
            config.temperature = request.temperature
            config.top_p = request.top_p if request.top_p is not None else 1.0
            config.top_k = 0  # None would be filled with transformers' default, 50
        else:
            config.do_sample = False
            config.temperature = None
            config.top_p = None
            config.top_k = None
        return config

    def seeded(self, request: SampleRequest) -> contextlib.AbstractContextManager:
        """Seed sampling from ``request.seed`` without touching the global random state."""
        import torch

        if request.temperature == 0 or request.seed is None:
            return contextlib.nullcontext()
        rng = torch.random.fork_rng(devices=rng_devices(self._model))

        @contextlib.contextmanager
        def seeded() -> Iterator[None]:
            with rng:
                torch.manual_seed(request.seed)
                yield

        return seeded()

    def cut(
        self,
        tokens: list[int],
        logprobs: list[float],
        request: SampleRequest,
        eos: set[int],
        prompt_tokens: int,
    ) -> Sample:
        """Cut one generated row at EOS, its token limit or its first stop string."""
        end = next((i for i, token in enumerate(tokens) if token in eos), None)
        reason: Literal["stop", "length"]
        if end is not None and end < request.max_new_tokens:
            kept, reason, eos_counted = tokens[:end], "stop", 1
        else:
            kept, reason, eos_counted = tokens[: request.max_new_tokens], "length", 0
        text = self.decode(kept)
        if any(stop in text for stop in request.stop):
            kept = kept[: self._first_stop_length(kept, request.stop)]
            text = _before_stop(self.decode(kept), request.stop)
            reason, eos_counted = "stop", 0
        count = len(kept) + eos_counted
        return Sample(
            text=text,
            finish_reason=reason,
            token_logprobs=tuple(logprobs[:count]),
            prompt_tokens=int(prompt_tokens),
            completion_tokens=count,
        )

    def cut_at_grammar_end(
        self,
        tokens: list[int],
        logprobs: list[float],
        request: SampleRequest,
        end: int | None,
        prompt_tokens: int,
    ) -> Sample:
        """Cut one row decoded under a forced call's grammar where the grammar was accepted.

        ``end`` counts the tokens written up to the one that completed the grammar, or is
        None when it never was (the row ran to its token limit: ``"length"``, the text
        whole). The text ends before the grammar's last tag, :data:`CALL_END`, as if it
        were the stop string; the row's own stop strings are not looked for.
        """
        reason: Literal["stop", "length"]
        if end is not None and end <= request.max_new_tokens:
            kept, reason = tokens[:end], "stop"
            text = _before_stop(self.decode(kept), (CALL_END,))
        else:
            kept, reason = tokens[: request.max_new_tokens], "length"
            text = self.decode(kept)
        count = len(kept)
        return Sample(
            text=text,
            finish_reason=reason,
            token_logprobs=tuple(logprobs[:count]),
            prompt_tokens=int(prompt_tokens),
            completion_tokens=count,
        )

    def _first_stop_length(self, tokens: list[int], stops: tuple[str, ...]) -> int:
        """The fewest leading tokens whose text contains a stop string (binary search)."""
        low, high = 1, len(tokens)
        while low < high:
            middle = (low + high) // 2
            if any(stop in self.decode(tokens[:middle]) for stop in stops):
                high = middle
            else:
                low = middle + 1
        return high


class _RowStops:
    """A ``generate`` stopping criterion that ends each row at its own limit or stop string.

    Rows of one batch may come from different callers with different stop strings and
    token limits. A row is done once it has written its ``max_new_tokens`` or once it
    shows one of its stop strings; ``generate`` pads done rows until the whole batch is
    done. A stop string that is one token of the vocabulary (the demo model's stage
    tags) is seen by comparing token ids; any other is looked for in the decoded text
    of the row's last few tokens. This is only an early exit: the exact cut is made
    afterwards on the decoded text.
    """

    def __init__(
        self,
        prompt_length: int,
        limits: Sequence[int],
        stops: Sequence[tuple[str, ...]],
        decode: Callable[[list[int]], str],
        token_id: Callable[[str], int | None],
    ) -> None:
        self._prompt_length = prompt_length
        self._limits = list(limits)
        self._stops = list(stops)
        self._stop_ids = [_stop_token_ids(row_stops, token_id) for row_stops in self._stops]
        self._tails = [max((len(stop) for stop in row_stops), default=0) + 2 for row_stops in self._stops]
        self._decode = decode
        self._done = [False] * len(self._limits)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        written = input_ids.shape[1] - self._prompt_length
        last = input_ids[:, -1].tolist()
        for row, done in enumerate(self._done):
            if not done:
                self._done[row] = written >= self._limits[row] or self._stopped(
                    input_ids, row, written, last[row]
                )
        return torch.tensor(self._done, dtype=torch.bool, device=input_ids.device)

    def _stopped(self, input_ids: Any, row: int, written: int, last: int) -> bool:
        stops = self._stops[row]
        if not stops or written < 1:
            return False
        stop_ids = self._stop_ids[row]
        if stop_ids is not None:
            return last in stop_ids
        tail = input_ids[row, input_ids.shape[1] - min(written, self._tails[row]) :].tolist()
        text = self._decode(tail)
        return any(stop in text for stop in stops)


def _stop_token_ids(stops: Sequence[str], token_id: Callable[[str], int | None]) -> frozenset[int] | None:
    """The token ids of ``stops`` when each is a single token of the vocabulary, else None."""
    ids = [token_id(stop) for stop in stops]
    if not ids or any(i is None for i in ids):
        return None
    return frozenset(i for i in ids if i is not None)


def chosen_logprobs(logits: tuple, tokens: Any) -> list[list[float]]:
    """Log-probability of each generated token under the raw (unprocessed) logits."""
    import torch

    stacked = torch.stack(logits, dim=1).float()
    logprobs = torch.log_softmax(stacked, dim=-1)
    return logprobs.gather(-1, tokens[:, : stacked.shape[1]].unsqueeze(-1)).squeeze(-1).tolist()


def _before_stop(text: str, stops: tuple[str, ...]) -> str:
    """``text`` up to the earliest stop string in it."""
    positions = [text.find(stop) for stop in stops if stop in text]
    return text[: min(positions)] if positions else text


def as_set(value: int | list[int] | None) -> set[int]:
    """A generation config's EOS id (one, several or none) as a set."""
    if value is None:
        return set()
    return {value} if isinstance(value, int) else set(value)
