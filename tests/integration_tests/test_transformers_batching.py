"""TransformersBackend's image-feature cache and cross-request generation queue."""

import threading
from pathlib import Path

import pytest

from langchain_llava_cot.backends._batching import BatchQueue
from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest
from langchain_llava_cot.backends.transformers import TransformersBackend
from langchain_llava_cot.conversation import Conversation, Turn
from tests.integration_tests.pictures import BLUE_SQUARE, RED_CIRCLE, TEXT_ONLY


def _texts(results) -> list[list[str]]:
    return [[sample.text for sample in samples] for samples in results]


def _greedy(conversation: Conversation, tokens: int = 8, prefix: str = "<SUMMARY>") -> SampleRequest:
    return SampleRequest(conversation, prefix=prefix, max_new_tokens=tokens, stop=("</SUMMARY>",))


@pytest.mark.parametrize("arch", ["llava", "mllama"])
def test_each_image_is_encoded_once(arch: str, request: pytest.FixtureRequest) -> None:
    """LLaVA: cached encoder outputs; Mllama: cached cross-attention keys and values."""
    with TransformersBackend(request.getfixturevalue(f"tiny_{arch}_path")) as backend:
        backend.sample([_greedy(BLUE_SQUARE), _greedy(RED_CIRCLE)])  # two new pictures, one encoder call
        assert (backend.vision_encoder_calls, backend.images_encoded) == (1, 2)
        backend.sample(
            [SampleRequest(RED_CIRCLE, prefix="<SUMMARY>", n=4, temperature=1.0, max_new_tokens=6)]
        )
        backend.sample([_greedy(RED_CIRCLE, prefix="<SUMMARY> a </SUMMARY><CAPTION>")])
        backend.choose([ChoiceRequest(RED_CIRCLE, "The better response is", (" 1", " 2"))] * 3)
        assert (backend.vision_encoder_calls, backend.images_encoded) == (1, 2)


@pytest.mark.parametrize("arch", ["llava", "mllama"])
def test_cached_features_give_the_same_answers(arch: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(f"tiny_{arch}_path")
    sampled = SampleRequest(BLUE_SQUARE, prefix="<SUMMARY>", n=3, temperature=1.0, seed=3, max_new_tokens=10)
    requests = [_greedy(RED_CIRCLE, 12), _greedy(BLUE_SQUARE, 12), sampled]
    choice = [ChoiceRequest(c, "The better response is", (" 1", " 2")) for c in (RED_CIRCLE, BLUE_SQUARE)]
    with TransformersBackend(path, max_cached_images=0) as plain:
        expected, expected_choice = plain.sample(requests), plain.choose(choice)
        assert plain.images_encoded == 0
    with TransformersBackend(path) as cached:
        found = cached.sample(requests)
        assert _texts(found) == _texts(expected)
        for got, want in zip(found[2], expected[2]):
            assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-5)
        for got, want in zip(cached.choose(choice), expected_choice):
            assert got.logprobs == pytest.approx(want.logprobs, abs=1e-5)


@pytest.mark.parametrize("share_prefill", [True, False], ids=["prefix-cache", "whole-prompts"])
@pytest.mark.parametrize("arch", ["llava", "mllama"])
def test_a_text_row_reads_as_alone_beside_pictures(
    arch: str, share_prefill: bool, request: pytest.FixtureRequest
) -> None:
    """Mllama gives a batch's text rows blank pixels; they must not see them."""
    path: Path = request.getfixturevalue(f"tiny_{arch}_path")
    text, pictured = (
        ChoiceRequest(c, "The better response is", (" 1", " 2")) for c in (TEXT_ONLY, RED_CIRCLE)
    )
    with TransformersBackend(path, share_prefill=share_prefill) as backend:
        [alone] = backend.choose([text])
        beside, _ = backend.choose([text, pictured])
    assert beside.logprobs == pytest.approx(alone.logprobs, abs=1e-5)


def test_cache_is_bounded(tiny_llava_path: Path) -> None:
    # Whole prompts: with the prefix cache, the third prompt would need no picture at all.
    with TransformersBackend(tiny_llava_path, max_cached_images=1, share_prefill=False) as backend:
        for conversation in (RED_CIRCLE, BLUE_SQUARE, RED_CIRCLE):
            backend.sample([_greedy(conversation, 2)])
        assert backend.cached_images == 1
        assert backend.images_encoded == 3


def test_concurrent_callers_share_generate_calls(tiny_vlm_path: Path) -> None:
    conversations = [RED_CIRCLE, BLUE_SQUARE, TEXT_ONLY, RED_CIRCLE] * 2
    requests = [_greedy(c, 10, prefix=p) for c, p in zip(conversations, ["<SUMMARY>", ""] * 4)]
    with TransformersBackend(tiny_vlm_path, batch_window=0.2) as backend:
        sequential = [backend.sample([r]) for r in requests]
        before = backend.generate_calls
        results: list = [None] * len(requests)
        barrier = threading.Barrier(len(requests))

        def call(i: int) -> None:
            barrier.wait()
            results[i] = backend.sample([requests[i]])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [_texts(r) for r in results] == [_texts(r) for r in sequential]
        assert backend.generate_calls - before < len(requests)


def test_errors_reach_only_their_caller(tiny_llava_path: Path) -> None:
    import dataclasses

    with TransformersBackend(tiny_llava_path, batch_window=0.2) as backend:
        good = backend._prompts.choice(ChoiceRequest(RED_CIRCLE, "The answer is", (" 1",)))
        bad = dataclasses.replace(good, options=((10**9,),))  # a token the model does not have
        futures = [backend._queue.submit("choose", [good]), backend._queue.submit("choose", [bad])]
        assert len(futures[0].result()) == 1
        with pytest.raises(IndexError):
            futures[1].result()
        [[after]] = backend.sample([_greedy(RED_CIRCLE, 4)])
        assert after.completion_tokens > 0


def test_a_bad_option_fails_in_the_caller(tiny_llava_path: Path) -> None:
    with TransformersBackend(tiny_llava_path) as backend:
        with pytest.raises(ValueError, match="adds no token"):
            backend.choose([ChoiceRequest(RED_CIRCLE, "The answer is", (" 1", ""))])
        assert backend._queue.batches == 0


def test_closed_backend_says_so(tiny_llava_path: Path) -> None:
    backend = TransformersBackend(tiny_llava_path)
    backend.close()
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.sample([_greedy(RED_CIRCLE, 2)])


def test_queue_hands_exceptions_to_callers() -> None:
    def run(jobs):
        if any(job.payload == "boom" for job in jobs):
            raise KeyError("boom")
        return [job.payload.upper() for job in jobs]

    queue = BatchQueue(run, window=0.05)
    futures = [queue.submit("x", payload) for payload in ("a", "boom", "b")]
    assert futures[0].result() == "A"
    assert futures[2].result() == "B"
    with pytest.raises(KeyError):
        futures[1].result()
    queue.close()
    assert not queue._worker.is_alive()


def test_bad_image_fails_in_the_caller(tiny_llava_path: Path) -> None:
    broken = Conversation((Turn("user", "What is this?", (b"not an image",)),))
    with TransformersBackend(tiny_llava_path) as backend:
        with pytest.raises(Exception):  # noqa: B017 - whatever PIL raises
            backend.sample([_greedy(broken)])
        assert backend._queue.batches == 0


def test_shared_prefill_matches_full_prefill(tiny_vlm_path: Path) -> None:
    greedy = SampleRequest(RED_CIRCLE, prefix="<SUMMARY>", n=3, max_new_tokens=10)
    sampled = SampleRequest(BLUE_SQUARE, prefix="<SUMMARY>", n=3, temperature=1.0, seed=3, max_new_tokens=10)
    with TransformersBackend(tiny_vlm_path, share_prefill=False) as plain:
        expected = [plain.sample([greedy])[0], plain.sample([sampled])[0]]
    with TransformersBackend(tiny_vlm_path) as shared:
        found = [shared.sample([greedy])[0], shared.sample([sampled])[0]]
    assert _texts(found) == _texts(expected)
    for got, want in zip(found[0] + found[1], expected[0] + expected[1]):
        assert got.prompt_tokens == want.prompt_tokens
        assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-4)


def test_a_picture_is_processed_once_across_a_requests_stages(tiny_vlm_path: Path) -> None:
    with TransformersBackend(tiny_vlm_path) as backend:
        backend.sample([_greedy(RED_CIRCLE)])
        backend.sample([SampleRequest(RED_CIRCLE, "<SUMMARY>", n=4, temperature=1.0, max_new_tokens=6)])
        backend.sample([_greedy(RED_CIRCLE, prefix="<SUMMARY> a </SUMMARY><CAPTION>")])
        backend.choose([ChoiceRequest(RED_CIRCLE, "The better response is", (" 1", " 2"))])
        assert backend.image_processor_runs == 1
        backend.sample([_greedy(BLUE_SQUARE)])
        assert backend.image_processor_runs == 2
        backend.choose([ChoiceRequest(RED_CIRCLE, "The better response is", (" 1", " 2"))] * 2)
        backend.choose([ChoiceRequest(BLUE_SQUARE, "The answer is", (" 1", " triangles and circles"))])
        assert backend.image_processor_runs == 2  # several copies in one round, prompt + option: still once
    with TransformersBackend(tiny_vlm_path, max_cached_images=0) as plain:
        plain.sample([_greedy(RED_CIRCLE)])
        assert plain.image_processor_runs is None


def test_the_pairwise_judge_processes_a_requests_picture_once(tiny_vlm_path: Path) -> None:
    """Every stage's candidates and every knockout round's verdict prompts reuse one picture's pixels."""
    from langchain_core.messages import HumanMessage

    from langchain_llava_cot import ChatLlavaCoT
    from langchain_llava_cot.images import image_block

    with TransformersBackend(tiny_vlm_path) as backend:
        llm = ChatLlavaCoT(
            backend=backend, strategy="stage_beam", candidates=4, judge="pairwise", seed=0, max_stage_tokens=4
        )
        for number, picture in enumerate((RED_CIRCLE.images[0], BLUE_SQUARE.images[0]), start=1):
            message = llm.invoke(
                [HumanMessage([image_block(picture), {"type": "text", "text": "How many?"}])]
            )
            rounds = [s for s in message.response_metadata["llava_cot"]["steps"] if s.get("comparisons")]
            assert rounds  # the pairwise judge compared candidates
            assert backend.image_processor_runs == number


def test_a_remembering_processor_still_copies_pickles_and_saves(
    tiny_llava_path: Path, tmp_path: Path
) -> None:
    import copy
    import pickle

    with TransformersBackend(tiny_llava_path) as backend:
        processor = backend._prompts.processor
        copy.deepcopy(processor)
        pickle.loads(pickle.dumps(processor))
        again = TransformersBackend.from_loaded(backend._model, processor)
        assert again._prompts.processor.image_processor is not processor.image_processor
        again.close()
