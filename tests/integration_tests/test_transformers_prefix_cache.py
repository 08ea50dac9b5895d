"""TransformersBackend reads each prompt once: the prefix KV cache gives the same answers."""

from pathlib import Path

import pytest

from langchain_llava_cot.backends.base import ChoiceRequest, Sample, SampleRequest
from langchain_llava_cot.backends.transformers import TransformersBackend
from langchain_llava_cot.backends.transformers.prefix_cache import PrefixCache
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.demo import DEMO_MODEL_PATH
from langchain_llava_cot.demo.dataset import get_example
from langchain_llava_cot.judges import VERDICT_PREFIX, JudgeTask, pairwise_prompt
from langchain_llava_cot.model_builders import build_tiny_vlm
from langchain_llava_cot.stages import STAGE_SEPARATOR, STAGES, Stage, render_answer
from tests.integration_tests.pictures import BLUE_SQUARE, RED_CIRCLE, TEXT_ONLY, png


def _stage_chain(backend: TransformersBackend, conversation: Conversation, n: int = 1) -> list[list[str]]:
    """Greedy stages one after another, each continuing the previous ones (as the graph does)."""
    chosen: dict = {}
    texts = []
    for stage in STAGES:
        earlier = render_answer(chosen)
        prefix = f"{earlier}{STAGE_SEPARATOR}{stage.open_tag}" if earlier else stage.open_tag
        request = SampleRequest(conversation, prefix=prefix, n=n, max_new_tokens=12, stop=(stage.close_tag,))
        [samples] = backend.sample([request])
        texts.append([s.text for s in samples])
        chosen[stage] = samples[0].text
    return texts


@pytest.mark.parametrize("arch", ["llava", "mllama", "idefics3"])
def test_stage_to_stage_cache_gives_the_same_greedy_answers(
    arch: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(f"tiny_{arch}_path")
    with TransformersBackend(path, share_prefill=False) as plain:
        expected = [_stage_chain(plain, c, n) for c, n in ((RED_CIRCLE, 1), (BLUE_SQUARE, 3), (TEXT_ONLY, 2))]
    with TransformersBackend(path) as cached:
        found = [_stage_chain(cached, c, n) for c, n in ((RED_CIRCLE, 1), (BLUE_SQUARE, 3), (TEXT_ONLY, 2))]
        assert cached.prompt_tokens_reused > cached.prompt_tokens_read
    assert found == expected


@pytest.mark.parametrize("arch", ["llava", "mllama"])
def test_candidates_share_one_read_of_their_prompt(arch: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(f"tiny_{arch}_path")
    requests = [
        SampleRequest(RED_CIRCLE, prefix="<SUMMARY>", n=3, temperature=1.0, seed=3, max_new_tokens=10),
        SampleRequest(BLUE_SQUARE, prefix="<SUMMARY> Count. </SUMMARY>", n=2, temperature=1.0, seed=3),
    ]
    with TransformersBackend(path, share_prefill=False) as plain:
        expected = plain.sample(requests)
    with TransformersBackend(path) as once:
        found = once.sample(requests)
        assert once.prefill_calls == 2  # each prompt read once, then copied to its rows
        # all but the last token once per prompt; the last token once per row, in generate
        assert once.prompt_tokens_read == sum(
            samples[0].prompt_tokens - 1 + len(samples) for samples in found
        )
    for got_samples, want_samples in zip(found, expected):
        assert [s.text for s in got_samples] == [s.text for s in want_samples]
        for got, want in zip(got_samples, want_samples):
            assert got.prompt_tokens == want.prompt_tokens
            assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-4)


def test_mllama_without_the_image_cache_reads_whole_prompts(tiny_mllama_path: Path) -> None:
    """Its pictures' cross-attention states come from the image cache; without it, nothing is shared."""
    request = SampleRequest(RED_CIRCLE, prefix="<SUMMARY>", n=2, temperature=1.0, seed=3, max_new_tokens=10)
    with TransformersBackend(tiny_mllama_path, share_prefill=False) as plain:
        expected = plain.sample([request])
    with TransformersBackend(tiny_mllama_path, max_cached_images=0) as backend:
        [found] = backend.sample([request])
        assert backend.prefill_calls == 0
    assert [s.text for s in found] == [s.text for s in expected[0]]
    for got, want in zip(found, expected[0]):
        assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-4)


def test_mllama_pictures_padded_to_several_tiles_read_as_without_caches(tmp_path: Path) -> None:
    """Llama 3.2 Vision pads every picture to its tile count; a square picture's padded tile stays unseen."""
    path = build_tiny_vlm(tmp_path / "tiles", arch="mllama", num_layers=3, image_tiles=2, seed=0)
    square = Conversation((Turn("user", "How many circles?", (png("red", size=(60, 60)),)),))
    wide = Conversation((Turn("user", "What is on the left?", (png("blue", "square", (160, 60)),)),))

    def answers(backend: TransformersBackend) -> tuple:
        chains = [_stage_chain(backend, conversation, n) for conversation, n in ((square, 1), (wide, 2))]
        return chains, backend.choose(_judge_round(square, (" 1", " 2")) + _judge_round(wide, (" 1", " 2")))

    with TransformersBackend(path, share_prefill=False, max_cached_images=0) as plain:
        expected_chains, expected_choices = answers(plain)
    with TransformersBackend(path) as cached:
        chains, choices = answers(cached)
        assert cached.prompt_tokens_reused > 0 and cached.images_encoded == 2
    assert chains == expected_chains
    for got, want in zip(choices, expected_choices):
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_logprobs_match_reading_whole_prompts(tiny_llava_path: Path) -> None:
    sampled = SampleRequest(BLUE_SQUARE, prefix="<SUMMARY>", n=3, temperature=1.0, seed=3, max_new_tokens=10)
    with TransformersBackend(tiny_llava_path, share_prefill=False) as plain:
        [expected] = plain.sample([sampled])
    with TransformersBackend(tiny_llava_path) as cached:
        cached.sample([SampleRequest(BLUE_SQUARE, prefix="", max_new_tokens=2)])  # a shorter prompt, cached
        [found] = cached.sample([sampled])
    assert [s.text for s in found] == [s.text for s in expected]
    for got, want in zip(found, expected):
        assert got.prompt_tokens == want.prompt_tokens
        assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-4)


def test_merged_requests_share_prefills_and_match(tiny_llava_path: Path) -> None:
    requests = [
        SampleRequest(RED_CIRCLE, prefix="<SUMMARY>", n=2, max_new_tokens=10),
        SampleRequest(BLUE_SQUARE, prefix="<SUMMARY> It is a square.", n=1, max_new_tokens=10),
        SampleRequest(TEXT_ONLY, prefix="", n=3, max_new_tokens=10),
    ]
    with TransformersBackend(tiny_llava_path, share_prefill=False) as plain:
        expected = [plain.sample([r])[0] for r in requests]
    with TransformersBackend(tiny_llava_path) as cached:
        found = cached.sample(requests)
        assert cached.generate_calls == 2  # with and without images
        assert cached.prefill_calls == 3
    assert [[s.text for s in samples] for samples in found] == [
        [s.text for s in samples] for samples in expected
    ]


def _judge_round(conversation: Conversation, options: tuple[str, ...]) -> list[ChoiceRequest]:
    candidates = ("two circles", "a red circle on the left", "nothing", "one circle")
    task = JudgeTask(
        conversation=conversation,
        stage=STAGES[1],
        chosen={STAGES[0]: "Count the circles."},
        candidates=candidates,
    )
    return [ChoiceRequest(pairwise_prompt(task, a, b), VERDICT_PREFIX, options) for a, b in ((0, 1), (2, 3))]


@pytest.mark.parametrize("options", [(" 1", " 2"), (" 1.", " response two")])
@pytest.mark.parametrize("arch", ["llava", "idefics3", "mllama"])
def test_judge_pairs_share_their_prompt(arch: str, options: tuple, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(f"tiny_{arch}_path")
    rounds = (
        _judge_round(RED_CIRCLE, options)
        + _judge_round(BLUE_SQUARE, options)
        + _judge_round(TEXT_ONLY, options)
    )
    with TransformersBackend(path, share_prefill=False) as plain:
        expected = plain.choose(rounds)
    with TransformersBackend(path) as cached:
        found = cached.choose(rounds)
        assert cached.prefill_calls == 3  # one shared part per picture
        again = cached.choose(rounds[:2]) + cached.choose(rounds[3:4])  # a pair, then a lone row
        assert cached.prompt_tokens_reused > 0
    for got, want in zip(found + again, expected + expected[:2] + expected[3:4]):
        assert got.prompt_tokens == want.prompt_tokens
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_prefix_cache_is_bounded_and_keeps_extensions_once() -> None:
    cache = PrefixCache(max_entries=2)
    cache.add("a", (1, 2), ())
    cache.add("a", (1, 2, 3), ())  # extends (1, 2): replaces it
    assert len(cache) == 1
    cache.add("b", (1, 2, 3), ())
    cache.add("c", (5,), ())
    assert len(cache) == 2
    assert cache.longest("a", [1, 2, 3]) == (None, 0)
    entry, length = cache.longest("b", [1, 2, 4])
    assert entry is not None and length == 2
    assert cache.longest("b", [9]) == (None, 0)


def test_continuations_join_their_entry_and_go_with_it() -> None:
    import torch

    def states(length: int, value: float) -> tuple:
        return ((torch.full((1, 1, length, 2), value), torch.full((1, 1, length, 2), value)),)

    cache = PrefixCache(max_entries=1)
    cache.add("a", (1, 2), states(2, 0.0))
    cache.continue_entry("a", (1, 2), [((3, 4), states(2, 1.0)), ((3, 5), states(2, 2.0))])
    assert len(cache) == 1  # continuations do not count against the bound
    entry, length = cache.longest("a", [1, 2, 3, 5, 6])
    assert entry is not None and (entry.ids, length) == ((1, 2, 3, 5), 4)
    keys, _ = entry.states(3)[0]
    assert keys[0, 0, :, 0].tolist() == [0.0, 0.0, 2.0]  # the prompt's states, then its own
    cache.continue_entry("a", (1, 2), [((3, 6), states(2, 3.0))])  # another caller's rows join them
    assert cache.longest("a", [1, 2, 3, 4])[1] == 4 and cache.longest("a", [1, 2, 3, 6])[1] == 4
    cache.continue_entry("a", (1, 2, 3, 5), [((7,), states(1, 4.0))])  # a continuation holds the prompt
    entry, length = cache.longest("a", [1, 2, 3, 5, 7])
    assert entry is not None and length == 5
    assert entry.states(5)[0][0][0, 0, :, 0].tolist() == [0.0, 0.0, 2.0, 2.0, 4.0]
    cache.add("a", (1, 2, 3, 5, 7, 8), states(6, 5.0))  # extends the entry: it goes, continuations too
    assert len(cache) == 1 and cache.longest("a", [1, 2, 3, 4])[1] == 3
    cache.add("b", (7,), states(1, 0.0))  # evicts "a"
    assert cache.longest("a", [1, 2, 3]) == (None, 0)
    cache.continue_entry("a", (1, 2), [((3,), states(1, 1.0))])  # no entry holds the prompt: dropped
    assert cache.longest("a", [1, 2, 3]) == (None, 0)


@pytest.mark.parametrize("arch", ["llava", "mllama", "idefics3"])
def test_merged_stages_read_their_new_tokens_together(arch: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(f"tiny_{arch}_path")
    conversations = (RED_CIRCLE, BLUE_SQUARE)
    prefixes = ("<SUMMARY>", "<SUMMARY> Count them. </SUMMARY>\n\n<CAPTION>")

    def stages(backend: TransformersBackend, merged: bool) -> list:
        found = []
        for prefix in prefixes:
            requests = [SampleRequest(c, prefix=prefix, n=2, max_new_tokens=8) for c in conversations]
            results = backend.sample(requests) if merged else [backend.sample([r])[0] for r in requests]
            found.append([[s.text for s in samples] for samples in results])
        return found

    with TransformersBackend(path, share_prefill=False) as plain:
        expected = stages(plain, merged=False)
    with TransformersBackend(path) as cached:
        assert stages(cached, merged=True) == expected
        assert cached.prefill_calls == 3  # each prompt alone, then both new stages in one pass


def test_growing_cache_appends_in_place_and_never_overwrites() -> None:
    import torch

    from langchain_llava_cot.backends.transformers.prefix_cache import growing_cache

    ones = torch.ones(1, 2, 3, 4)
    cache = growing_cache([(ones, ones)])
    layer = cache.layers[0]
    held = layer.keys
    keys, _ = cache.update(torch.full((1, 2, 1, 4), 2.0), torch.full((1, 2, 1, 4), 2.0), 0)
    assert keys.shape[2] == 4 and keys.data_ptr() == held.data_ptr()  # written into spare room
    layer.crop(-2)  # back to 2 positions: the next update must not overwrite positions 2 and 3
    cache.update(torch.full((1, 2, 1, 4), 5.0), torch.full((1, 2, 1, 4), 5.0), 0)
    assert torch.equal(keys[:, :, 3], torch.full((1, 2, 4), 2.0))
    assert torch.equal(held, ones)
    assert layer.keys.shape[2] == 3 and float(layer.keys[0, 0, 2, 0]) == 5.0


def test_growing_cache_places_fixed_layers_and_leaves_gaps_empty() -> None:
    """Mllama: self-attention states where given, pictures in fixed layers, other layers empty."""
    import torch

    from langchain_llava_cot.backends.transformers.prefix_cache import growing_cache, kv_layers

    own, picture = torch.ones(1, 2, 3, 4), torch.full((1, 2, 5, 4), 7.0)
    cache = growing_cache(
        [(own, own), None, (own, own)], fixed={1: (picture, picture), 4: (picture, picture)}
    )
    assert len(cache.layers) == 5
    assert [layer.is_initialized for layer in cache.layers] == [True, True, True, False, True]
    assert cache.layers[1].keys is picture  # held as given, not copied into a growing buffer
    assert cache.get_seq_length() == 3
    assert kv_layers(cache, skip=(1, 4)) is None  # layer 3 is empty
    cache.update(own, own, 3)
    kept = kv_layers(cache, skip=(1, 4))
    assert kept is not None and len(kept) == 3 and all(keys.shape[2] == 3 for keys, _ in kept)


def test_next_stage_continues_from_the_written_candidates() -> None:
    """The states ``generate`` wrote for a candidate carry into the next stage: only the tag is read."""
    conversation = get_example("test", 0).conversation()
    summary = SampleRequest(
        conversation,
        prefix=Stage.SUMMARY.open_tag,
        n=4,
        temperature=1.0,
        seed=0,
        stop=(Stage.SUMMARY.close_tag,),
    )

    def caption_after(backend: TransformersBackend, winner: str) -> tuple[Sample, int]:
        prefix = render_answer({Stage.SUMMARY: winner}) + STAGE_SEPARATOR + Stage.CAPTION.open_tag
        caption = SampleRequest(
            conversation, prefix=prefix, max_new_tokens=16, stop=(Stage.CAPTION.close_tag,)
        )
        before = backend.prompt_tokens_read
        [[sample]] = backend.sample([caption])
        return sample, backend.prompt_tokens_read - before

    with TransformersBackend(DEMO_MODEL_PATH) as cached:
        [candidates] = cached.sample([summary])
        winner = min(candidates, key=lambda s: s.completion_tokens)  # not the longest row: all of it was fed
        found, read = caption_after(cached, winner.text)
    with TransformersBackend(DEMO_MODEL_PATH, share_prefill=False) as plain:
        expected, _ = caption_after(plain, winner.text)
    # at most the winner's last token (when it tokenizes again differently), the separator and the
    # next tag: never the winner's text
    assert read <= 4 < winner.completion_tokens
    assert found.text == expected.text
    assert found.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-4)


def test_merged_requests_continue_every_candidate_as_if_read_whole() -> None:
    """Prompts of different lengths in one batch (left padding), every row continued, the longest included."""
    conversations = [get_example("test", i).conversation() for i in (0, 3)]
    summaries = [
        SampleRequest(c, prefix=Stage.SUMMARY.open_tag, n=3, temperature=1.0, stop=(Stage.SUMMARY.close_tag,))
        for c in conversations
    ]

    def captions(backend: TransformersBackend, chosen: list[list[Sample]]) -> list[Sample]:
        requests = [
            SampleRequest(
                conversation,
                prefix=render_answer({Stage.SUMMARY: sample.text}) + STAGE_SEPARATOR + Stage.CAPTION.open_tag,
                max_new_tokens=12,
            )
            for conversation, samples in zip(conversations, chosen)
            for sample in samples
        ]
        return [samples[0] for samples in backend.sample(requests)]

    with TransformersBackend(DEMO_MODEL_PATH) as cached:
        written = cached.sample(summaries)
        read = cached.prompt_tokens_read
        found = captions(cached, written)
        assert cached.prompt_tokens_read - read <= 6 * 4  # the tags after each winner, not its text
    with TransformersBackend(DEMO_MODEL_PATH, share_prefill=False) as plain:
        expected = captions(plain, written)
    assert [s.text for s in found] == [s.text for s in expected]
    for got, want in zip(found, expected):
        assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-4)
