"""Prompts read once: the prefix KV cache, what reads through it, and its counters.

A :class:`~langchain_llava_cot.backends.transformers.prefix_cache.PrefixCache` keeps the KV
states of prompts already read, keyed by their images and token ids. A new prompt
(the next stage's prefix: image + question + chosen stages + opening tag) reuses the
longest common token prefix of a cached one and the model reads only the rest
(:meth:`Prefill.read`). For ``generate``, the caches of a call's prompts are left-
padded to one length and repeated for each request's ``n`` rows
(:meth:`Prefill.generate_inputs`), so merged cross-request batches share prefills
too; what the rows write is kept after their prompt, so the next stage continues the
winner without reading it (:meth:`Prefill.keep_written`). A judge round's prompts with
the same images read their shared part once, then one forward pass reads each row's
own tokens (:meth:`Prefill.read_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_llava_cot.backends.base import Sample
from langchain_llava_cot.backends.transformers.attention import SelfAttention
from langchain_llava_cot.backends.transformers.inputs import Inputs
from langchain_llava_cot.backends.transformers.prefix_cache import (
    KVPrefix,
    Layers,
    PrefixCache,
    common_length,
    stack_left_padded,
)
from langchain_llava_cot.backends.transformers.prompts import Prompt


class Prefill:
    """Reads prompts through the prefix cache, and counts what it read and reused.

    Used by the worker thread only. ``attention`` says where the model's pictures live
    (:mod:`.attention`); ``inputs`` encodes the prompts' new pictures and gives a
    prompt's image inputs when it is read alone.
    """

    def __init__(
        self,
        model: Any,
        inputs: Inputs,
        attention: SelfAttention,
        *,
        cache_argument: str,
        pad_token_id: int,
        max_entries: int,
    ) -> None:
        self._model = model
        self._inputs = inputs
        self._attention = attention
        self._cache_argument = cache_argument
        self._pad_token_id = pad_token_id
        self._cache = PrefixCache(max_entries=max_entries)
        self.calls = 0
        """Forward passes that read a prompt's uncached tokens into the cache."""
        self.tokens_reused = 0
        """Prompt positions taken from the cache instead of being read again."""
        self.tokens_read = 0
        """Prompt positions the model read through the cache (every candidate row's last
        prompt token and every judge row's own tokens count)."""

    def clear(self) -> None:
        """Forget every cached prompt."""
        self._cache.clear()

    def can_share(self, prompts: Sequence[Prompt]) -> bool:
        """Whether the cache can serve ``prompts``.

        Their image tokens must be found, and the model's attention must be able to
        reuse them (:meth:`SelfAttention.holds`).
        """
        for prompt in prompts:
            if not prompt.conversation.images:
                continue
            if not prompt.images or not self._attention.holds(prompt):
                return False
        return True

    # -- generate -----------------------------------------------------------------

    def generate_inputs(self, ready: list[Prompt], repeats: list[int]) -> dict[str, Any] | None:
        """``generate`` inputs whose KV cache holds every prompt but its last token.

        Each distinct prompt is read once (:meth:`read`); the caches are left-padded to
        a common length and repeated ``repeats[i]`` times for prompt ``i`` (its request's
        ``n`` rows), so ``generate`` has one token per row left to read. None if a prompt
        cannot be handled this way (the caller then reads whole prompts).
        """
        import torch

        self._inputs.store(ready)
        if not self.can_share(ready):
            return None
        layers = self.read(ready, [len(prompt.ids) - 1 for prompt in ready])
        self.tokens_read += sum(repeats)  # each row reads its prompt's last token
        width = max(len(prompt.ids) for prompt in ready)
        pad = self._pad_token_id
        input_ids = [[pad] * (width - len(p.ids)) + p.ids for p, n in zip(ready, repeats) for _ in range(n)]
        mask = [
            [0] * (width - len(p.ids)) + [1] * len(p.ids) for p, n in zip(ready, repeats) for _ in range(n)
        ]
        device = self._model.device
        stacked = stack_left_padded([(rows, len(p.ids) - 1) for rows, p in zip(layers, ready)], repeats)
        rows = [p for p, n in zip(ready, repeats) for _ in range(n)]
        inputs = {
            "input_ids": torch.tensor(input_ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
            self._cache_argument: self._attention.cache(stacked, ready, repeats),
            **self._attention.mask(rows, [len(p.ids) - width for p in rows], width),
        }
        return inputs

    def keep_written(
        self, prompts: list[Prompt], tokens: list[list[int]], samples: list[Sample], cache: Any, width: int
    ) -> None:
        """Cache each row's written tokens after its prompt, so the next stage need not read them.

        ``cache`` is ``generate``'s batch cache: row ``i`` holds ``prompts[i]`` left-
        padded to ``width`` and then the tokens fed back, which are all written tokens
        but the last one of the longest row. The prompt's last token and the row's
        fed tokens up to where it was cut are cut out and attached to the prompt's
        cache entry (:meth:`PrefixCache.continue_entry`).
        """
        layers = self._attention.layers(cache)
        if layers is None:
            return
        fed = max(len(row) for row in tokens) - 1
        grouped: dict[tuple[tuple[str, ...], tuple[int, ...]], list[int]] = {}
        for row, prompt in enumerate(prompts):
            grouped.setdefault((prompt.key, tuple(prompt.ids[:-1])), []).append(row)

        def written(row: int) -> tuple[list[int], Layers]:
            kept = min(samples[row].completion_tokens, fed)
            span = slice(width - 1, width + kept)
            states = tuple(
                (k[row : row + 1, :, span].clone(), v[row : row + 1, :, span].clone()) for k, v in layers
            )
            return [prompts[row].ids[-1], *tokens[row][:kept]], states

        for (key, ids), rows in grouped.items():
            self._cache.continue_entry(key, ids, (written(row) for row in rows))

    # -- choices ------------------------------------------------------------------

    def read_rows(self, rows: list[Prompt], needs: list[int]) -> tuple[Any, list[int]] | None:
        """Logits over each row's own tokens, the rows' shared prefixes read once.

        Rows with the same images (a knockout round's pairs: image, question and
        earlier stages in common) share their longest common token prefix, leaving at
        least ``needs[row]`` tokens to each row; it is read once through the cache
        (:meth:`read`), and one forward pass then reads every row's own remaining
        tokens. Returns the logits and where each row's own tokens start, or None when
        the rows cannot be read this way (the caller reads whole prompts).
        """
        self._inputs.store(rows)
        shared = _shared_lengths(rows, needs)
        if shared is None or not self.can_share(rows):
            return None
        lengths = {
            key: self._worth_reading(rows[first], length, size)
            for key, (first, length, size) in shared.items()
        }
        keys = list(lengths)
        read = self.read([rows[shared[key][0]] for key in keys], [lengths[key] for key in keys])
        layers = dict(zip(keys, read))
        starts = [lengths[row.key] for row in rows]
        tails = [row.ids[start:] for row, start in zip(rows, starts)]
        output, _ = self._read_tails(rows, tails, [layers[row.key] for row in rows], starts, logits=True)
        self.tokens_read += sum(len(tail) for tail in tails)
        return output.logits, starts

    def _worth_reading(self, row: Prompt, length: int, size: int) -> int:
        """How much of a group's shared prefix to read apart from the batched pass.

        A prefix shared by several rows is read once (all of it); a lone row (the
        last knockout round) takes only what the cache already holds, as long as that
        covers its images, and reads the rest in the batched pass.
        """
        if size > 1:
            return length
        entry, common = self._cache.longest(row.key, row.ids[:length])
        if entry is None or (row.images and row.images[-1] >= common):
            return length
        return common

    # -- reading ------------------------------------------------------------------

    def read(self, prompts: list[Prompt], lengths: list[int]) -> list[Layers]:
        """KV states of each ``prompts[i].ids[:lengths[i]]``; the uncached tails read together.

        Prompts fully cached cost nothing. Tails that continue a cached prefix (the
        next stage's prefix, a judge round's shared part) are read in one batched
        forward pass (:meth:`_read_tails`), and each row's states are cut out of the
        batch and cached. A prompt with nothing cached or with image tokens in its
        tail (a request's first call) is read alone (:meth:`_read_one`).
        """
        found: list[Layers | None] = [None] * len(prompts)
        batch = []
        for index, (prompt, length) in enumerate(zip(prompts, lengths)):
            entry, common = self._cached_part(prompt, length)
            if entry is not None and common == length:
                self.tokens_reused += length
                found[index] = entry.states(length)
            elif entry is None or not common or (prompt.images and prompt.images[-1] >= common):
                found[index] = self._read_one(prompt, length)
            else:
                batch.append((index, entry, common))
        if len(batch) == 1:
            index = batch[0][0]
            found[index] = self._read_one(prompts[index], lengths[index])
        elif batch:
            starts = [common for _, _, common in batch]
            tails = [prompts[i].ids[common : lengths[i]] for i, _, common in batch]
            self.calls += 1
            cached = [entry.states(common) for _, entry, common in batch]
            rows = [prompts[i] for i, _, _ in batch]
            _, cache = self._read_tails(rows, tails, cached, starts, logits=False)
            states = self._attention.layers(cache) or ()
            longest = max(starts)
            for row, ((index, _, common), tail) in enumerate(zip(batch, tails)):
                cut = slice(longest - common, longest + len(tail))
                layers = tuple(
                    (k[row : row + 1, :, cut].clone(), v[row : row + 1, :, cut].clone()) for k, v in states
                )
                self._cache.add(prompts[index].key, prompts[index].ids[: lengths[index]], layers)
                self.tokens_reused += common
                self.tokens_read += len(tail)
                found[index] = layers
        return [layers for layers in found if layers is not None]

    def _cached_part(self, prompt: Prompt, length: int) -> tuple[KVPrefix | None, int]:
        """The cached entry to continue ``prompt.ids[:length]`` from, and how many tokens it gives.

        A span that would hold only some of the prompt's image tokens starts before
        the first one, so the images' features are always scattered in one piece.
        """
        entry, common = self._cache.longest(prompt.key, prompt.ids[:length])
        if prompt.images and prompt.images[-1] >= common:
            common = min(common, prompt.images[0])
        return entry, common

    def _read_one(self, prompt: Prompt, length: int) -> Layers:
        """KV states of ``prompt.ids[:length]``, reading only what the cache lacks.

        The longest cached token prefix is reused (:meth:`_cached_part`); the model
        reads the rest at batch size 1 and the result is cached.
        """
        import torch

        entry, common = self._cached_part(prompt, length)
        if common == length and entry is not None:
            self.tokens_reused += length
            return entry.states(length)
        cached = entry.states(common) if entry is not None and common else None
        cache = self._attention.cache(cached, [prompt], [1])
        device = self._model.device
        self.calls += 1
        self._model(
            input_ids=torch.tensor([prompt.ids[common:length]], device=device),
            attention_mask=torch.ones(1, length, dtype=torch.long, device=device),
            **{self._cache_argument: cache},
            use_cache=True,
            logits_to_keep=1,
            **self._attention.read_alone(prompt, common, length, self._inputs),
        )
        layers = self._attention.layers(cache)
        if layers is None:
            name = type(self._model).__name__
            msg = f"{name} made a KV cache that cannot be reused; pass share_prefill=False."
            raise RuntimeError(msg)
        self._cache.add(prompt.key, prompt.ids[:length], layers)
        self.tokens_reused += common
        self.tokens_read += length - common
        return layers

    def _read_tails(
        self,
        prompts: list[Prompt],
        tails: list[list[int]],
        layers: list[Layers],
        starts: list[int],
        *,
        logits: bool,
    ) -> Any:
        """One forward pass over each row's ``tails[row]``, continuing its cached ``starts[row]`` tokens.

        The cached parts are left-padded to one length and the tails right-padded;
        positions are given explicitly, so each row reads as if alone. Returns the
        model's output (``logits`` for every tail position, else only the last) and
        the batch cache.
        """
        import torch

        width, longest = max(len(t) for t in tails), max(starts)
        device = self._model.device
        input_ids = [t + [self._pad_token_id] * (width - len(t)) for t in tails]
        mask = [
            [0] * (longest - start) + [1] * (start + len(t)) + [0] * (width - len(t))
            for t, start in zip(tails, starts)
        ]
        positions = [list(range(start, start + width)) for start in starts]
        ones = [1] * len(tails)
        cache = self._attention.cache(stack_left_padded(list(zip(layers, starts)), ones), prompts, ones)
        output = self._model(
            input_ids=torch.tensor(input_ids, device=device),
            attention_mask=torch.tensor(mask, device=device),
            position_ids=torch.tensor(positions, device=device),
            **{self._cache_argument: cache},
            use_cache=True,
            logits_to_keep=0 if logits else 1,
            **self._attention.mask(prompts, starts, width),
        )
        return output, cache


def _shared_lengths(rows: list[Prompt], needs: list[int]) -> dict[tuple, tuple[int, int, int]] | None:
    """Per image key: (first row, tokens its rows share, rows), leaving ``needs[row]`` tokens to each.

    None when some group's shared part would not hold all of its image tokens or
    would be empty (those prompts are read whole instead).
    """
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(row.key, []).append(index)
    shared = {}
    for key, members in groups.items():
        first = rows[members[0]]
        length = min(len(rows[i].ids) - needs[i] for i in members)
        for i in members[1:]:
            length = min(length, common_length(first.ids, rows[i].ids))
        if length < 1 or any(row.images and row.images[-1] >= length for row in (rows[i] for i in members)):
            return None
        shared[key] = (members[0], length, len(members))
    return shared
