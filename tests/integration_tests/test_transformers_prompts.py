"""TransformersBackend prepares each prompt once, in the caller's thread, and batches what it made."""

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest
from langchain_llava_cot.backends.transformers import TransformersBackend
from langchain_llava_cot.conversation import Conversation, Turn, to_chat_messages
from langchain_llava_cot.images import decode_image
from tests.integration_tests.pictures import BLUE_SQUARE, RED_CIRCLE, TEXT_ONLY

TWO_PICTURES = Conversation((Turn("user", "Which has more?", RED_CIRCLE.images + BLUE_SQUARE.images),))


def _processor_batch(backend: TransformersBackend, conversations: list[Conversation], prefix: str) -> Any:
    """What the model's own processor makes of the conversations as one left-padded batch."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(backend.model_name)
    texts = [
        processor.apply_chat_template(to_chat_messages(c), add_generation_prompt=True, tokenize=False)
        + prefix
        for c in conversations
    ]
    images = [[decode_image(image) for image in c.images] for c in conversations]
    return processor(
        text=texts,
        images=images,
        padding=True,
        padding_side="left",
        add_special_tokens=False,
        return_tensors="pt",
    )


@pytest.mark.parametrize(
    "conversations",
    [
        [RED_CIRCLE, BLUE_SQUARE],
        [RED_CIRCLE, TEXT_ONLY, BLUE_SQUARE],
        [TWO_PICTURES, RED_CIRCLE, TEXT_ONLY],
    ],
    ids=["pictures", "text-beside-pictures", "two-pictures-beside-one"],
)
def test_a_batch_of_prepared_prompts_is_what_the_processor_makes(
    conversations: list[Conversation], tiny_vlm_path: Path
) -> None:
    with TransformersBackend(tiny_vlm_path, max_cached_images=0) as backend:
        prompts = [backend._prompts.prompt(c, "<SUMMARY>") for c in conversations]
        batch = backend._inputs.batch(prompts)
        expected = _processor_batch(backend, conversations, "<SUMMARY>")
    assert sorted(batch) == sorted(expected)
    for name, value in expected.items():
        assert batch[name].shape == value.shape, name
        assert torch.equal(batch[name], value.to(batch[name].dtype)), name


def test_each_prompt_is_processed_once_in_the_callers_thread(tiny_vlm_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    class Recording:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(("process", threading.current_thread().name))
            return self._inner(*args, **kwargs)

        def apply_chat_template(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(("render", threading.current_thread().name))
            return self._inner.apply_chat_template(*args, **kwargs)

    caller = threading.current_thread().name
    with TransformersBackend(tiny_vlm_path) as backend:
        backend._prompts.processor = Recording(backend._prompts.processor)
        backend.sample([SampleRequest(RED_CIRCLE, "<SUMMARY>", n=3, temperature=1.0, max_new_tokens=4)])
        backend.choose([ChoiceRequest(RED_CIRCLE, "The better response is", (" 1", " 2"))] * 2)
        backend.choose([ChoiceRequest(TEXT_ONLY, "The answer is", (" 1", " triangles and circles"))])
    # one prompt per request; the multi-token choice adds one prompt per option
    assert [kind for kind, _ in calls] == ["render", "process"] * 3 + ["render", "process"] * 3
    assert {thread for _, thread in calls} == {caller}
