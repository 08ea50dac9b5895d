"""Read each prompt once: an LRU cache of KV prefixes, and batches built from them.

Stage-level beam search asks the model about one growing prompt again and again:
stage ``k``'s candidates continue "image + question + chosen stages + next opening
tag", and each judge round compares two candidates after "image + question + earlier
stages". Re-reading the whole prompt every time costs far more than writing a stage
on a small model, so the transformers backend keeps the key/value states of prompts it
has read and reads only what is new.

:class:`PrefixCache` holds :class:`KVPrefix` entries: the token ids of a prompt and
its per-layer key/value tensors at batch size 1. Entries are grouped under a key (the
prompt's images: equal token ids with different pictures are different prompts). To
reuse one:

1. :meth:`PrefixCache.longest` finds the entry sharing the longest common *token*
   prefix with the new ids. Token ids are compared, not text: BPE can merge
   characters across the join of a cached prompt and its continuation differently,
   so the match simply stops at the first token that differs;
2. :func:`growing_cache` builds a fresh cache from the entry's first ``length``
   positions (:meth:`KVPrefix.states`; a copy: the stored tensors are never written to);
3. the caller runs the model over the remaining tokens only and stores the result
   with :meth:`PrefixCache.add`. An entry that a newer one extends is replaced by
   it, so a request's chain of stages holds one entry, not one per stage.

What ``generate`` wrote is kept too (:meth:`PrefixCache.continue_entry`): each
candidate row's new states, attached to the entry of the prompt it continued. The
next stage's prompt is the winner's text after that prompt, so it is found there
(:meth:`KVPrefix.states` joins prompt and continuation): only the tokens after the
winner (the next opening tag) are read, or, where the re-rendered text tokenizes
differently, those from the first token that differs. Continuations live and die
with their entry and do not count against the bound.

:func:`stack_left_padded` turns several prefixes of different lengths into one batch:
each row is left-padded with zeros to the longest (the attention mask hides the
padding) and repeated for its candidate rows. Its positions stay 0..length-1, which is
what ``generate`` computes from a left-padded attention mask.

The caches built here grow into spare room instead of concatenating at every step
(:func:`growing_layer`). Only plain ``DynamicLayer`` layers (full attention) are
stored; :func:`kv_layers` returns ``None`` for others (sliding windows, linear
attention), and the backend then reads whole prompts as before. Layers that do not
follow the prompt's positions (Mllama's cross-attention layers, which hold its
pictures) are left out of the entries, and given back as ``fixed`` layers of
:func:`growing_cache` when a batch cache is built.

>>> cache = PrefixCache(max_entries=2)
>>> cache.add("img", (1, 2, 3), layers=())
>>> entry, length = cache.longest("img", [1, 2, 9, 9])
>>> entry.ids, length
((1, 2, 3), 2)
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KVPrefix",
    "PrefixCache",
    "cache_argument",
    "common_length",
    "growing_cache",
    "growing_layer",
    "kv_layers",
    "output_cache",
    "stack_left_padded",
]

Layers = tuple[tuple[Any, Any], ...]
"""Per layer, the (keys, values) tensors, each ``[1, heads, length, head_dim]``."""

MAX_CONTINUATIONS = 64
"""Most continuations kept per entry (candidates of concurrent requests with one prompt)."""


@dataclass(frozen=True)
class KVPrefix:
    """The key/value states of one prompt, read once, or of a continuation of one."""

    ids: tuple[int, ...]
    """The prompt's token ids, one per cached position."""
    layers: Layers
    """Per layer, the (keys, values) tensors at batch size 1: of every position, or,
    for a continuation, of the positions after ``base_length``."""
    base: Layers | None = None
    """For a continuation: the states of the entry it continues."""
    base_length: int = 0
    """For a continuation: how many positions of ``base`` come before ``layers``."""

    def states(self, length: int) -> Layers:
        """Per layer, the (keys, values) of the first ``length`` positions."""
        if self.base is None or length <= self.base_length:
            source = self.layers if self.base is None else self.base
            return tuple((keys[:, :, :length], values[:, :, :length]) for keys, values in source)
        import torch

        own = length - self.base_length
        return tuple(
            (
                torch.cat([base_keys[:, :, : self.base_length], keys[:, :, :own]], dim=2),
                torch.cat([base_values[:, :, : self.base_length], values[:, :, :own]], dim=2),
            )
            for (base_keys, base_values), (keys, values) in zip(self.base, self.layers)
        )


class PrefixCache:
    """Prompts' KV states by (key, token ids), least recently used evicted first.

    Args:
        max_entries: Most prompts kept (0 turns the cache off: nothing is stored).
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 0:
            msg = f"max_entries must be >= 0 (0 turns the prefix cache off), got {max_entries}."
            raise ValueError(msg)
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[Hashable, tuple[int, ...]], KVPrefix] = OrderedDict()
        self._continuations: dict[tuple[Hashable, tuple[int, ...]], tuple[KVPrefix, ...]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, key: Hashable, ids: Sequence[int]) -> tuple[KVPrefix | None, int]:
        """The entry or continuation under ``key`` sharing the most leading tokens with ``ids``, and how many.

        Read what it holds through :meth:`KVPrefix.states` (a continuation's ``layers``
        hold only its own positions).
        """
        best: tuple[KVPrefix | None, int] = (None, 0)
        owner = None
        for name, entry in self._entries.items():
            if name[0] != key:
                continue
            for candidate in (entry, *self._continuations.get(name, ())):
                length = common_length(candidate.ids, ids)
                if length > best[1]:
                    best, owner = (candidate, length), name
        if owner is not None:
            self._entries.move_to_end(owner)
        return best

    def add(self, key: Hashable, ids: Sequence[int], layers: Layers) -> None:
        """Store a prompt's states; drop entries it extends and the oldest beyond the bound."""
        if not self._max_entries:
            return
        ids = tuple(ids)
        for entry_key, entry_ids in list(self._entries):
            if entry_key == key and len(entry_ids) < len(ids) and ids[: len(entry_ids)] == entry_ids:
                self._drop((entry_key, entry_ids))
        self._continuations.pop((key, ids), None)
        self._entries[(key, ids)] = KVPrefix(ids, layers)
        self._entries.move_to_end((key, ids))
        while len(self._entries) > self._max_entries:
            self._drop(next(iter(self._entries)))

    def continue_entry(
        self, key: Hashable, prompt: Sequence[int], rows: Iterable[tuple[Sequence[int], Layers]]
    ) -> None:
        """Attach what was written after ``prompt`` to the entry holding it.

        Each row is (token ids after ``prompt``, their states); ``rows`` is consumed
        only when something holds ``prompt``. A continuation that holds it is made an
        entry first. The newest :data:`MAX_CONTINUATIONS` rows of an entry are kept.
        """
        prompt = tuple(prompt)
        entry, length = self.longest(key, prompt)
        if entry is None or length < len(prompt):
            return
        if entry.base is not None:
            self.add(key, prompt, entry.states(len(prompt)))
            entry = self._entries[(key, prompt)]
        name = (key, entry.ids)
        kept = {c.ids: c for c in self._continuations.get(name, ())}
        for ids, layers in rows:
            continuation = KVPrefix(prompt + tuple(ids), layers, base=entry.layers, base_length=len(prompt))
            kept.pop(continuation.ids, None)
            kept[continuation.ids] = continuation
        self._continuations[name] = tuple(kept.values())[-MAX_CONTINUATIONS:]

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._continuations.clear()

    def _drop(self, name: tuple[Hashable, tuple[int, ...]]) -> None:
        del self._entries[name]
        self._continuations.pop(name, None)


def cache_argument(model: Any) -> str:
    """The keyword a model's ``forward``/``generate`` takes its KV cache by.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and
    goes in 5.40); older 5.x releases know only ``past_key_values``.
    """
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache a forward pass or ``generate`` returned, under either name."""
    found = output.get("cache") if hasattr(output, "get") else None
    return found if found is not None else output.past_key_values


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def kv_layers(cache: Any, skip: Collection[int] = ()) -> Layers | None:
    """The (keys, values) of a ``DynamicCache``'s layers but ``skip``; None if not all full-attention.

    ``skip`` names layers that do not follow the prompt's positions (Mllama's
    cross-attention layers, which hold its pictures): they are left out.
    """
    from transformers.cache_utils import DynamicLayer

    plain = (DynamicLayer, growing_layer())
    layers = [layer for index, layer in enumerate(getattr(cache, "layers", None) or ()) if index not in skip]
    if not layers or any(type(layer) not in plain or not layer.is_initialized for layer in layers):
        return None
    return tuple((layer.keys, layer.values) for layer in layers)


def growing_cache(
    states: Sequence[tuple[Any, Any] | None] = (), fixed: Mapping[int, tuple[Any, Any]] | None = None
) -> Any:
    """A ``DynamicCache`` of layers that grow into spare room (:func:`growing_layer`), holding ``states``.

    ``states[i]`` fills layer ``i`` (None leaves it empty). ``fixed`` maps layer indices
    to states held as given and never grown (Mllama's pictures in its cross-attention
    layers).
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache()
    cache.layer_class_to_replicate = growing_layer()
    fixed = fixed or {}
    for index in range(max(len(states), max(fixed, default=-1) + 1)):
        while len(cache.layers) < index:
            cache.layers.append(growing_layer()())
        if index in fixed:
            layer = DynamicLayer()
            keys, values = fixed[index]
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
            cache.layers.append(layer)
        elif index < len(states) and states[index] is not None:
            keys, values = states[index]  # type: ignore[misc]
            cache.update(keys, values, index)
    return cache


@functools.cache
def growing_layer() -> type:
    """A ``DynamicLayer`` that writes new states into spare room instead of concatenating.

    ``DynamicLayer.update`` concatenates, copying the whole cache at every decoding
    step: with many rows and long prompts that copy costs as much as the model. This
    layer keeps a buffer with room to spare (a quarter more, at least 64 positions);
    its ``keys``/``values`` are views of the buffer's first positions, and an update
    writes after them. Positions once written are never overwritten (views of them
    may be held by the prefix cache): after a crop or a batch change, or when the
    room runs out, the next update copies into a new buffer.
    """
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        _buffers: tuple[Any, Any] | None = None
        _written = 0

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            length, new = self.get_seq_length(), key_states.shape[-2]
            if not self._can_append(key_states, length, new):
                self._reallocate(key_states, length + new)
            assert self._buffers is not None  # _reallocate ran if it was None
            keys, values = self._buffers
            keys[:, :, length : length + new] = key_states
            values[:, :, length : length + new] = value_states
            self._written = length + new
            self.keys, self.values = keys[:, :, : length + new], values[:, :, : length + new]
            return self.keys, self.values

        def _can_append(self, key_states: Any, length: int, new: int) -> bool:
            if self._buffers is None or length != self._written:
                return False
            keys = self._buffers[0]
            same = length == 0 or (self.keys is not None and self.keys.data_ptr() == keys.data_ptr())
            return same and keys.shape[0] == key_states.shape[0] and length + new <= keys.shape[2]

        def _reallocate(self, key_states: Any, needed: int) -> None:
            length = self.get_seq_length()
            shape = (*key_states.shape[:2], needed + max(64, needed // 4), key_states.shape[-1])
            keys = key_states.new_empty(shape)
            values = key_states.new_empty(shape)
            if length:
                keys[:, :, :length] = self.keys
                values[:, :, :length] = self.values
            self._buffers = (keys, values)
            self._written = length

    return GrowingLayer


def stack_left_padded(
    prefixes: Sequence[tuple[Layers, int]], repeats: Sequence[int]
) -> list[tuple[Any, Any]]:
    """Per layer, the batch (keys, values): each (layers, length) left-padded to the longest, repeated.

    Row ``i`` of the inputs becomes ``repeats[i]`` consecutive rows of the batch. The
    padded positions hold zeros; the caller's attention mask must mark them as padding.
    """
    import torch

    longest = max(length for _, length in prefixes)
    stacked = []
    for layer in range(len(prefixes[0][0])):
        keys: list[Any] = []
        values: list[Any] = []
        for (layers, length), count in zip(prefixes, repeats):
            for source, out in ((layers[layer][0], keys), (layers[layer][1], values)):
                part = source[:, :, :length]
                pad = longest - length
                if pad:
                    zeros = part.new_zeros(part.shape[0], part.shape[1], pad, part.shape[3])
                    part = torch.cat([zeros, part], dim=2)
                out.append(part.expand(count, -1, -1, -1))
        stacked.append((torch.cat(keys, dim=0), torch.cat(values, dim=0)))
    return stacked
