"""Where a generated row ends: per-row stop strings and limits, and the kept tokens' log-probabilities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_llava_cot.backends.base import SampleRequest


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
        rows: Sequence[SampleRequest],
        decode: Callable[[list[int]], str],
        token_id: Callable[[str], int | None],
    ) -> None:
        self._prompt_length = prompt_length
        self._limits = [row.max_new_tokens for row in rows]
        self._stops = [row.stop for row in rows]
        self._stop_ids = [_stop_token_ids(row.stop, token_id) for row in rows]
        self._tails = [max((len(stop) for stop in row.stop), default=0) + 2 for row in rows]
        self._decode = decode
        self._done = [False] * len(rows)

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


def _chosen_logprobs(logits: tuple, tokens: Any) -> list[list[float]]:
    """Log-probability of each generated token under the raw (unprocessed) logits."""
    import torch

    stacked = torch.stack(logits, dim=1).float()
    logprobs = torch.log_softmax(stacked, dim=-1)
    return logprobs.gather(-1, tokens[:, : stacked.shape[1]].unsqueeze(-1)).squeeze(-1).tolist()


def _before_stop(text: str, stops: tuple[str, ...]) -> str:
    """``text`` up to the earliest stop string in it."""
    positions = [text.find(stop) for stop in stops if stop in text]
    return text[: min(positions)] if positions else text


def _as_set(value: int | list[int] | None) -> set[int]:
    if value is None:
        return set()
    return {value} if isinstance(value, int) else set(value)
