"""How a training sequence is laid out: the engine's prompt, then the reply, with loss weights.

Every training sequence is ``apply_chat_template(to_chat_messages(conv),
add_generation_prompt=True, tokenize=False) + reply + <|eot_id|>`` (:func:`prompt_text`),
tokenized as one string (:func:`encode_pieces`), with a per-token loss weight that is
zero outside the assistant's reply, so that the model is trained on exactly what the
engine shows it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_llava_cot.conversation import Conversation, Turn, to_chat_messages
from langchain_llava_cot.demo.answers import write_stages
from langchain_llava_cot.demo.mistakes import perturb_objects
from langchain_llava_cot.stages import STAGES, Stage, render_answer

if TYPE_CHECKING:
    from langchain_llava_cot.demo.dataset import Example

__all__ = [
    "EOT",
    "PICTURE_STAND_IN",
    "Pictures",
    "TrainingSequence",
    "answer_pieces",
    "encode_pieces",
    "prompt_text",
    "request",
    "stage_pieces",
    "user_turn",
]

EOT = "<|eot_id|>"

PICTURE_STAND_IN = b"a picture"
"""What stands for a picture's bytes in a training prompt: the prompt's text does not depend on them."""


def user_turn(example: Example) -> Turn:
    """``example``'s question after its picture, as a training prompt shows it (the picture stands in)."""
    return Turn(role="user", text=example.question, images=(PICTURE_STAND_IN,))


def request(example: Example) -> Conversation:
    """``example``'s one-turn request, as a training prompt shows it (see :func:`user_turn`)."""
    return Conversation(turns=(user_turn(example),))


class Pictures:
    """The training pictures, processed as the saved processor makes them, in batches as they come.

    Holding every PIL picture of a run until the end would take gigabytes (some are
    hundreds of pixels a side); processed, each is 3 x 96 x 96 half-precision floats.
    """

    def __init__(self, processor: Any, batch: int = 512) -> None:
        self._processor, self._batch = processor, batch
        self._waiting: list[Any] = []
        self._done: list[Any] = []
        self.count = 0

    def add(self, picture: Any) -> int:
        """Add a PIL picture; return its index."""
        self._waiting.append(picture)
        self.count += 1
        if len(self._waiting) >= self._batch:
            self._process()
        return self.count - 1

    def tensor(self) -> Any:
        """Every picture's pixels, ``(count, 3, H, W)`` in float16, in the order they were added."""
        import torch

        self._process()
        return torch.cat(self._done) if self._done else torch.empty(0)

    def _process(self) -> None:
        if self._waiting:
            pixels = self._processor.image_processor(self._waiting, return_tensors="pt")["pixel_values"]
            self._done.append(pixels.half())
            self._waiting = []


@dataclass
class TrainingSequence:
    """One training sequence."""

    ids: list[int]
    weights: list[float]
    image: int | None
    """Index of the picture it shows (None: a text-only request)."""


def prompt_text(processor: Any, conversation: Any) -> str:
    """The engine's prompt for ``conversation``: the chat template's text, ready for the reply."""
    return processor.apply_chat_template(
        to_chat_messages(conversation), add_generation_prompt=True, tokenize=False
    )


def encode_pieces(
    processor: Any, prompt: str, pieces: list[tuple[str, float]], image_tokens: int
) -> tuple[list[int], list[float]]:
    """Token ids of ``prompt + pieces``, tokenized as one string, and per-token weights.

    Each piece of the reply has a weight; a token takes the weight of the piece its
    first character falls in (prompt tokens weigh 0).
    """
    tokenizer = processor.tokenizer
    image_token = processor.image_token
    text = prompt + "".join(p for p, _ in pieces)
    expanded = text.replace(image_token, image_token * image_tokens)
    encoding = tokenizer(expanded, add_special_tokens=False, return_offsets_mapping=True)
    offset = len(expanded) - len(text)
    bounds, start = [], len(prompt) + offset
    for piece, weight in pieces:
        bounds.append((start, start + len(piece), weight))
        start += len(piece)
    weights = []
    for begin, _ in encoding["offset_mapping"]:
        weights.append(next((w for lo, hi, w in bounds if lo <= begin < hi), 0.0))
    return encoding["input_ids"], weights


def answer_pieces(example: Example, rng: random.Random) -> list[tuple[str, float]]:
    """The whole answer as weighted pieces.

    A quarter show a caption with a mistake (weight 0) followed by the reasoning and
    conclusion that follow *that* caption.
    """
    stages = dict(example.stages)
    caption_weight = 1.0
    if rng.random() < 0.25:
        wrong = write_stages(example.spec, perturb_objects(example.scene.objects, rng))
        stages = {**wrong, Stage.SUMMARY: stages[Stage.SUMMARY]}
        caption_weight = 0.0
    pieces: list[tuple[str, float]] = []
    for i, stage in enumerate(STAGES):
        rendered = render_answer({stage: stages[stage]})
        if i:
            pieces.append(("\n\n", 1.0))
        pieces.append((rendered, caption_weight if stage is Stage.CAPTION else 1.0))
    pieces.append((EOT, 1.0))
    return pieces


def stage_pieces(stages: dict[Stage, str]) -> list[tuple[str, float]]:
    """The rendered stages, separated as the model writes them, then the end of turn."""
    pieces: list[tuple[str, float]] = []
    for i, stage in enumerate(stages):
        if i:
            pieces.append(("\n\n", 1.0))
        pieces.append((render_answer({stage: stages[stage]}), 1.0))
    return [*pieces, (EOT, 1.0)]
