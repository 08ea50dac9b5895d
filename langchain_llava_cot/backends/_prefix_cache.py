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
2. :func:`dynamic_cache` builds a fresh ``DynamicCache`` from the first ``length``
   positions of that entry (slices, never modifying the stored tensors; ``generate``
   and ``forward`` replace a layer's tensors by concatenation, never in place);
3. the caller runs the model over the remaining tokens only and stores the result
   with :meth:`PrefixCache.add`. An entry that a newer one extends is replaced by
   it, so a request's chain of stages holds one entry, not one per stage.

:func:`stack_left_padded` turns several prefixes of different lengths into one batch
cache: each row is left-padded with zeros to the longest (the attention mask hides the
padding) and repeated for its candidate rows. Its positions stay 0..length-1, which is
what ``generate`` computes from a left-padded attention mask.

Only caches made of plain ``DynamicLayer`` layers (full attention) are handled;
:func:`kv_layers` returns ``None`` for others (sliding windows, linear attention),
and the backend then reads whole prompts as before.

>>> cache = PrefixCache(max_entries=2)
>>> cache.add("img", (1, 2, 3), layers=())
>>> entry, length = cache.longest("img", [1, 2, 9, 9])
>>> entry.ids, length
((1, 2, 3), 2)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["KVPrefix", "PrefixCache", "common_length", "dynamic_cache", "kv_layers", "stack_left_padded"]

Layers = tuple[tuple[Any, Any], ...]
"""Per layer, the (keys, values) tensors, each ``[1, heads, length, head_dim]``."""


@dataclass(frozen=True)
class KVPrefix:
    """The key/value states of one prompt, read once."""

    ids: tuple[int, ...]
    """The prompt's token ids, one per cached position."""
    layers: Layers
    """Per layer, the (keys, values) tensors at batch size 1."""


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
        self.tokens_reused = 0
        """Prompt positions taken from the cache instead of being read again."""
        self.tokens_read = 0
        """Prompt positions the model had to read (cache misses)."""

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, key: Hashable, ids: Sequence[int]) -> tuple[KVPrefix | None, int]:
        """The entry under ``key`` sharing the most leading tokens with ``ids``, and how many."""
        best: tuple[KVPrefix | None, int] = (None, 0)
        for (entry_key, _), entry in self._entries.items():
            if entry_key == key:
                length = common_length(entry.ids, ids)
                if length > best[1]:
                    best = (entry, length)
        if best[0] is not None:
            self._entries.move_to_end((key, best[0].ids))
        return best

    def add(self, key: Hashable, ids: Sequence[int], layers: Layers) -> None:
        """Store a prompt's states; drop entries it extends and the oldest beyond the bound."""
        if not self._max_entries:
            return
        ids = tuple(ids)
        for entry_key, entry_ids in list(self._entries):
            if entry_key == key and len(entry_ids) < len(ids) and ids[: len(entry_ids)] == entry_ids:
                del self._entries[(entry_key, entry_ids)]
        self._entries[(key, ids)] = KVPrefix(ids, layers)
        self._entries.move_to_end((key, ids))
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def kv_layers(cache: Any) -> Layers | None:
    """The (keys, values) of every layer of a ``DynamicCache``; None if not all full-attention."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer or not layer.is_initialized for layer in layers):
        return None
    return tuple((layer.keys, layer.values) for layer in layers)


def dynamic_cache(layers: Layers, length: int) -> Any:
    """A new ``DynamicCache`` holding the first ``length`` positions of ``layers``."""
    from transformers import DynamicCache

    return DynamicCache([(keys[:, :, :length], values[:, :, :length]) for keys, values in layers])


def stack_left_padded(prefixes: Sequence[tuple[Layers, int]], repeats: Sequence[int]) -> Any:
    """One batch ``DynamicCache``: each (layers, length) left-padded to the longest, repeated.

    Row ``i`` of the inputs becomes ``repeats[i]`` consecutive rows of the batch. The
    padded positions hold zeros; the caller's attention mask must mark them as padding.
    """
    import torch
    from transformers import DynamicCache

    longest = max(length for _, length in prefixes)
    stacked = []
    for layer in range(len(prefixes[0][0])):
        keys, values = [], []
        for (layers, length), count in zip(prefixes, repeats):
            for source, out in ((layers[layer][0], keys), (layers[layer][1], values)):
                part = source[:, :, :length]
                pad = longest - length
                if pad:
                    zeros = part.new_zeros(part.shape[0], part.shape[1], pad, part.shape[3])
                    part = torch.cat([zeros, part], dim=2)
                out.append(part.expand(count, -1, -1, -1))
        stacked.append((torch.cat(keys, dim=0), torch.cat(values, dim=0)))
    return DynamicCache(stacked)
