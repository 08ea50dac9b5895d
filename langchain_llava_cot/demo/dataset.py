"""A procedural CLEVR-like dataset: shapes drawn with PIL, questions, four-stage answers.

Every example is a scene (1 to 6 shapes: 4 colours x 3 shapes x 2 sizes), a question
(counting, attribute, spatial relation, comparison, arithmetic over counts, whether
something is there, a description), and the answer in the LLaVA-CoT format, where the
caption lists the objects and the reasoning works only from the caption. Examples come
from one of three *worlds* (:data:`WORLDS`):

- ``free``: what a newcomer draws and asks: shapes anywhere, in shades, on pictures of
  any size, asked in many wordings (:mod:`~langchain_llava_cot.demo.scenes`,
  :mod:`~langchain_llava_cot.demo.styles`, :mod:`~langchain_llava_cot.demo.phrasings`);
- ``novel``: the free world in wordings and looks held out of training (each example has
  new wordings, a new look, or both: :attr:`Example.novelty`);
- ``classic``: the first demo model's world, 64x64 pictures with one shape per cell of a
  3x3 grid and one wording per question; its examples are the same as they always were.

>>> example = get_example("test", 0)
>>> example == get_example("test", 0)  # deterministic
True
>>> from langchain_llava_cot.stages import Stage
>>> is_correct(example.stages[Stage.CONCLUSION], example)
True

Splits are disjoint by construction: a scene belongs to the split its content hash
falls in (train 90%, validation 5%, test 5%), and each split draws from its own seed
stream, keeping only scenes of its own bucket. So no test image, even one drawn again
by chance, is ever seen in training. The novel world has no training split.

This module holds the examples and the splits; the parts live in their own modules
and are re-exported here, so ``from langchain_llava_cot.demo.dataset import ...``
reaches all of them:

- :mod:`~langchain_llava_cot.demo.scenes`: :class:`Shape`, :class:`Scene`, drawing,
  random scenes;
- :mod:`~langchain_llava_cot.demo.questions`: :class:`Spec`, :class:`Filter`, random
  questions;
- :mod:`~langchain_llava_cot.demo.answers`: :func:`write_stages` (the answer text is a
  function of a question spec and an object list, so the same code writes the right
  answer from the true objects and consistent-but-wrong answers from perturbed ones)
  and :func:`parse_caption`;
- :mod:`~langchain_llava_cot.demo.scoring`: :func:`normalize_answer`, :func:`is_correct`;
- :mod:`~langchain_llava_cot.demo.mistakes`: :func:`wrong_stage` makes the negatives of
  the pairwise judge's training data, in the ways a small model errs (a caption with a
  wrong colour, shape, size or place, a missed object, often one of a touching pair, an
  invented one; reasoning that does not follow the caption or miscounts; a conclusion
  that disagrees with the reasoning), and :func:`right_stage` the text that follows
  earlier stages;
- :mod:`~langchain_llava_cot.demo.off_domain`: requests the model cannot answer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from langchain_core.messages import HumanMessage
    from PIL.Image import Image as PILImage

from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.demo.answers import parse_caption, write_stages
from langchain_llava_cot.demo.mistakes import perturb_objects, right_stage, wrong_stage
from langchain_llava_cot.demo.off_domain import SMALL_TALK, off_domain_image, off_domain_stages
from langchain_llava_cot.demo.phrasings import phrase
from langchain_llava_cot.demo.questions import KINDS, Filter, Spec, free_spec, random_spec
from langchain_llava_cot.demo.scenes import (
    COLOURS,
    IMAGE_SIZE,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    Shape,
    Style,
    free_scene,
    random_scene,
)
from langchain_llava_cot.demo.scoring import is_correct, normalize_answer, same_answer
from langchain_llava_cot.demo.styles import NOVEL_STYLES, novel_style, training_style
from langchain_llava_cot.images import image_message
from langchain_llava_cot.stages import Stage, render_answer

__all__ = [
    "COLOURS",
    "IMAGE_SIZE",
    "KINDS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "SMALL_TALK",
    "SPLITS",
    "WORLDS",
    "Example",
    "Filter",
    "Scene",
    "Shape",
    "Spec",
    "bundled_example",
    "examples",
    "get_example",
    "is_correct",
    "iter_examples",
    "normalize_answer",
    "off_domain_image",
    "off_domain_stages",
    "parse_caption",
    "perturb_objects",
    "right_stage",
    "same_answer",
    "split_of",
    "write_stages",
    "wrong_stage",
]

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
World = Literal["free", "novel", "classic"]
WORLDS: tuple[World, ...] = ("free", "novel", "classic")
_TEST_BUCKETS, _VALIDATION_BUCKETS = range(0, 5), range(5, 10)


@dataclass(frozen=True)
class Example:
    """One question about one scene, with its four-stage answer."""

    split: Split
    index: int
    scene: Scene
    spec: Spec
    world: World = "free"
    novelty: str = ""
    """What the novel world holds out in this example: ``words``, ``look`` or ``both`` ("" elsewhere)."""
    look: str = ""
    """Its held-out look, one of :data:`~langchain_llava_cot.demo.styles.NOVEL_STYLES` ("" if none)."""

    @property
    def question(self) -> str:
        """The question text."""
        return self.spec.text

    @property
    def kind(self) -> str:
        """One of :data:`KINDS`."""
        return self.spec.kind

    @cached_property
    def stages(self) -> dict[Stage, str]:
        """The correct four-stage answer."""
        return write_stages(self.spec, self.scene.objects)

    @property
    def answer(self) -> str:
        """The ground-truth answer, normalized (``3``, ``red``, ``yes``)."""
        return self.stages[Stage.CONCLUSION]

    @property
    def target(self) -> str:
        """The whole answer as the model writes it (without the end-of-turn token)."""
        return render_answer(self.stages)

    @property
    def category(self) -> str:
        """The kind of question, and in the novel world what is new: ``count``, ``count, new words``."""
        new = {
            "words": "new words",
            "look": f"new look: {self.look}",
            "both": f"new words and look: {self.look}",
        }
        return f"{self.kind}, {new[self.novelty]}" if self.novelty else self.kind

    def image(self) -> PILImage:
        """The scene as a PIL image (as its file decodes)."""
        return self.scene.render()

    @cached_property
    def image_bytes(self) -> bytes:
        """The scene as an image file: PNG, or JPEG where its look says so."""
        return self.scene.encode()

    def conversation(self) -> Conversation:
        """The request the engine answers: one user turn, the image then the question."""
        return Conversation(turns=(Turn(role="user", text=self.question, images=(self.image_bytes,)),))

    def message(self) -> HumanMessage:
        """The request as a LangChain user message, the image then the question."""
        return image_message(self.image_bytes, self.question)


def split_of(scene: Scene) -> Split:
    """The split a scene belongs to, from its content hash."""
    bucket = int(scene.key[:8], 16) % 100
    if bucket in _TEST_BUCKETS:
        return "test"
    if bucket in _VALIDATION_BUCKETS:
        return "validation"
    return "train"


def iter_examples(split: Split, start: int = 0, *, world: World = "free") -> Iterator[Example]:
    """Examples of ``split`` in ``world``, in order, from index ``start``; endless and deterministic."""
    if split not in SPLITS:
        msg = f"Unknown split {split!r}: use one of {', '.join(SPLITS)}."
        raise ValueError(msg)
    if world not in WORLDS:
        msg = f"Unknown world {world!r}: use one of {', '.join(WORLDS)}."
        raise ValueError(msg)
    if world == "novel" and split == "train":
        msg = "The novel world is held out of training: it has only validation and test examples."
        raise ValueError(msg)
    index, draw = 0, 0
    draw_example = {"free": _free_example, "novel": _novel_example, "classic": _classic_example}[world]
    while True:
        rng = random.Random(f"{split}:{draw}" if world == "classic" else f"{world}:{split}:{draw}")
        draw += 1
        example = draw_example(split, index, rng)
        if example is None:
            continue
        if index >= start:
            yield example
        index += 1


def _classic_example(split: Split, index: int, rng: random.Random) -> Example | None:
    scene = random_scene(rng)
    if split_of(scene) != split:
        return None
    return Example(split, index, scene, random_spec(rng, scene.objects), world="classic")


def _free_example(split: Split, index: int, rng: random.Random) -> Example | None:
    scene = free_scene(rng, training_style(rng))
    if split_of(scene) != split:
        return None
    spec = free_spec(rng, scene.objects)
    return Example(split, index, scene, replace(spec, text=phrase(spec, rng)))


def _novel_example(split: Split, index: int, rng: random.Random) -> Example | None:
    novelty = rng.choice(["words", "look", "both"])
    look = rng.choice(NOVEL_STYLES) if novelty != "words" else ""
    scene = free_scene(rng, novel_style(rng, look) if look else training_style(rng))
    if split_of(scene) != split:
        return None
    spec = free_spec(rng, scene.objects)
    text = phrase(spec, rng, novel=novelty != "look")
    return Example(split, index, scene, replace(spec, text=text), world="novel", novelty=novelty, look=look)


def examples(split: Split, count: int, start: int = 0, *, world: World = "free") -> list[Example]:
    """``count`` examples of ``split`` in ``world``, from index ``start``."""
    iterator = iter_examples(split, start, world=world)
    return [next(iterator) for _ in range(count)]


def get_example(split: Split, index: int, *, world: World = "free") -> Example:
    """The example at ``index`` of ``split`` in ``world``."""
    return next(iter_examples(split, index, world=world))


def bundled_example() -> Example:
    """The bundled example picture's scene, asked :data:`~langchain_llava_cot.demo.DEMO_QUESTION`.

    A test-split scene of the free world (its caption decides its split, so no model was
    trained on it), written out here so that it stays the bundled picture's truth whatever
    the generator draws next. Its stages are the right answer.

    >>> example = bundled_example()
    >>> example.split, split_of(example.scene), example.scene.style.width
    ('test', 'test', 299)
    >>> print(example.stages[Stage.CONCLUSION])
    2
    """
    return Example(
        "test", -1, _BUNDLED_SCENE, Spec("count", _BUNDLED_QUESTION, first=Filter("red", "square"))
    )


_BUNDLED_QUESTION = "How many red squares are there?"
_BUNDLED_SCENE = Scene(
    objects=tuple(
        Shape(shape, colour, size, cell, dx, dy, radius, fill)
        for shape, colour, size, cell, dx, dy, radius, fill in (
            ("square", "blue", "large", 1, 0.0273687, 0.0156010, 0.124159, (11, 79, 180)),
            ("square", "yellow", "small", 2, -0.0931116, 0.0013794, 0.0554716, (253, 232, 36)),
            ("square", "red", "small", 3, 0.0375375, -0.0729878, 0.0747099, (193, 76, 69)),
            ("circle", "red", "small", 3, 0.0664644, 0.1025694, 0.0718107, (180, 32, 39)),
            ("circle", "blue", "small", 6, 0.0208344, 0.0469905, 0.0788730, (45, 101, 155)),
            ("square", "red", "large", 8, -0.0866948, -0.0563323, 0.147910, (244, 11, 26)),
        )
    ),
    background=(255, 255, 255),
    style=Style(width=299, height=299),
)
"""Shape, colour, size, cell, then the offsets dx, dy, radius and fill the picture was drawn with."""
