"""The prefix cache on its own: longest token match, replacement, bounds, continuations, batches."""

import pytest
import torch

from langchain_llava_cot.backends.transformers.prefix_cache import (
    MAX_CONTINUATIONS,
    PrefixCache,
    common_length,
    stack_left_padded,
)


def states(length: int, start: float = 0.0, layers: int = 2):
    """Per layer (keys, values) [1, 1 head, length, 1]: position i holds start + i."""
    ramp = (torch.arange(length, dtype=torch.float32) + start).view(1, 1, length, 1)
    return tuple((ramp.clone(), -ramp.clone()) for _ in range(layers))


def test_the_longest_token_match_wins_under_the_same_key_only():
    cache = PrefixCache()
    cache.add("picture", (1, 2, 3), states(3))
    cache.add("picture", (1, 5), states(2))
    cache.add("other picture", (1, 2, 3, 4), states(4))
    entry, length = cache.longest("picture", [1, 2, 3, 7])
    assert entry.ids == (1, 2, 3) and length == 3
    assert cache.longest("picture", [9]) == (None, 0)
    assert common_length((1, 2, 3), (1, 2, 4, 5)) == 2


def test_an_entry_that_extends_another_replaces_it_and_the_oldest_goes_first():
    cache = PrefixCache(max_entries=2)
    cache.add("p", (1, 2), states(2))
    cache.add("p", (1, 2, 3), states(3))  # extends (1, 2): one entry for the chain
    assert len(cache) == 1
    cache.add("p", (7,), states(1))
    cache.longest("p", [1, 2, 3])  # used: (7,) is now the oldest
    cache.add("p", (8,), states(1))
    assert cache.longest("p", [7])[0] is None and cache.longest("p", [1, 2, 3])[1] == 3


def test_a_zero_bound_stores_nothing_and_a_negative_one_is_refused():
    cache = PrefixCache(max_entries=0)
    cache.add("p", (1, 2), states(2))
    assert len(cache) == 0
    with pytest.raises(ValueError, match="max_entries must be >= 0"):
        PrefixCache(max_entries=-1)


def test_continuations_hold_what_was_written_after_a_prompt():
    cache = PrefixCache()
    cache.add("p", (1, 2), states(2))
    cache.continue_entry("p", (1, 2), [((3, 4), states(2, start=2.0)), ((3, 9), states(2, start=20.0))])
    entry, length = cache.longest("p", [1, 2, 3, 4, 5])
    assert entry.ids == (1, 2, 3, 4) and length == 4
    keys, values = entry.states(4)[0]
    assert keys.flatten().tolist() == [0.0, 1.0, 2.0, 3.0] and values.flatten().tolist() == [
        0.0,
        -1.0,
        -2.0,
        -3.0,
    ]
    assert cache.longest("p", [1, 2, 3, 9])[0].states(4)[1][0].flatten().tolist() == [0.0, 1.0, 20.0, 21.0]
    cache.continue_entry("p", (5, 6), [((7,), states(1))])  # nothing holds (5, 6): ignored
    assert cache.longest("p", [5, 6, 7]) == (None, 0)


def test_an_entry_keeps_its_newest_continuations_only():
    cache = PrefixCache()
    cache.add("p", (1,), states(1))
    rows = [((100 + i,), states(1)) for i in range(MAX_CONTINUATIONS + 3)]
    cache.continue_entry("p", (1,), rows)
    assert cache.longest("p", [1, 100])[1] == 1  # among the oldest three: dropped
    assert cache.longest("p", [1, 100 + MAX_CONTINUATIONS + 2])[1] == 2


def test_stacked_prefixes_are_left_padded_with_zeros_and_repeated():
    [(keys, values)] = stack_left_padded(
        [(states(2, layers=1), 2), (states(3, start=10.0, layers=1), 3)], [2, 1]
    )
    assert keys.shape == (3, 1, 3, 1) and values.shape == (3, 1, 3, 1)
    assert keys[:, 0, :, 0].tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [10.0, 11.0, 12.0]]
