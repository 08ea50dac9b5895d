"""A procedural CLEVR-like dataset: shapes drawn with PIL, questions, four-stage answers.

Every example is a scene (1 to 6 shapes on a 3x3 grid: 4 colours x 3 shapes x 2
sizes, some pairs pushed together until they touch), a question of one of five kinds
(counting, attribute, spatial relation, comparison, arithmetic over counts), and the
answer in the LLaVA-CoT format, where the caption lists the objects and the reasoning
works only from the caption:

>>> example = get_example("test", 0)
>>> example == get_example("test", 0)  # deterministic
True
>>> from langchain_llava_cot.stages import Stage
>>> is_correct(example.stages[Stage.CONCLUSION], example)
True

Splits are disjoint by construction: a scene belongs to the split its content hash
falls in (train 90%, validation 5%, test 5%), and each split draws from its own seed
stream, keeping only scenes of its own bucket. So no test image, even one drawn again
by chance, is ever seen in training.

The answer text is a function of a question *spec* and an object list, so the same
code writes the right answer from the true objects and consistent-but-wrong answers
from perturbed ones. :func:`wrong_stage` uses this to make the negatives of the
pairwise judge's training data, in the ways a small model errs: a caption with a
wrong colour, shape, size or place, a missed object (often one of a touching pair), an
invented one; reasoning that does not follow the caption or miscounts; a conclusion
that disagrees with the reasoning.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from langchain_core.messages import HumanMessage
    from PIL.Image import Image as PILImage

from langchain_llava_cot.conversation import Conversation, Turn
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
    "Example",
    "Scene",
    "Shape",
    "Spec",
    "examples",
    "get_example",
    "is_correct",
    "iter_examples",
    "normalize_answer",
    "off_domain_image",
    "off_domain_stages",
    "perturb_objects",
    "split_of",
    "write_stages",
    "wrong_stage",
]

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")

IMAGE_SIZE = 64
"""Side of the images, in pixels: what the demo model's vision tower reads."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 80, 215),
    "yellow": (235, 200, 35),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.075, "large": 0.13}
"""Radius of each size, as a fraction of the image side."""
POSITIONS: tuple[str, ...] = (
    "top left", "top middle", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom middle", "bottom right",
)  # fmt: skip
"""Name of each grid cell, row by row."""
KINDS: tuple[str, ...] = ("count", "attribute", "spatial", "comparison", "arithmetic")
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_TEST_BUCKETS, _VALIDATION_BUCKETS = range(0, 5), range(5, 10)


@dataclass(frozen=True)
class Shape:
    """One object of a scene."""

    shape: str
    colour: str
    size: str
    cell: int
    """Grid cell 0-8, row by row."""
    dx: float = 0.0
    """Offset of the centre from the cell's centre, as a fraction of the image side."""
    dy: float = 0.0

    @property
    def row(self) -> int:
        """Grid row, 0 at the top."""
        return self.cell // 3

    @property
    def col(self) -> int:
        """Grid column, 0 at the left."""
        return self.cell % 3

    @property
    def position(self) -> str:
        """The cell's name, e.g. ``top left``."""
        return POSITIONS[self.cell]

    @property
    def name(self) -> str:
        """``large red circle``."""
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Objects on a plain background, one per grid cell."""

    objects: tuple[Shape, ...]
    background: tuple[int, int, int] = (200, 200, 200)

    @cached_property
    def key(self) -> str:
        """Hash of the content (jitter and background left out); decides the split."""
        text = ";".join(f"{o.cell}{o.size}{o.colour}{o.shape}" for o in sorted(self.objects, key=_cell))
        return hashlib.sha256(text.encode()).hexdigest()

    def render(self, size: int = IMAGE_SIZE) -> PILImage:
        """Draw the scene as an RGB PIL image of ``size`` x ``size`` pixels."""
        from PIL import Image, ImageDraw

        scale = 4
        side = size * scale
        image = Image.new("RGB", (side, side), self.background)
        draw = ImageDraw.Draw(image)
        for obj in self.objects:
            cx = (obj.col + 0.5) / 3 + obj.dx
            cy = (obj.row + 0.5) / 3 + obj.dy
            r = SIZES[obj.size]
            box = [(cx - r) * side, (cy - r) * side, (cx + r) * side, (cy + r) * side]
            fill = COLOURS[obj.colour]
            if obj.shape == "circle":
                draw.ellipse(box, fill=fill)
            elif obj.shape == "square":
                inset = r * 0.12 * side
                draw.rectangle([box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset], fill=fill)
            else:
                draw.polygon([((cx) * side, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)
        return image.resize((size, size), Image.Resampling.LANCZOS)

    def png(self, size: int = IMAGE_SIZE) -> bytes:
        """The rendered scene as PNG bytes."""
        buffer = io.BytesIO()
        self.render(size).save(buffer, format="PNG")
        return buffer.getvalue()


def _cell(obj: Shape) -> int:
    return obj.cell


@dataclass(frozen=True)
class Filter:
    """A set of objects named by attributes: ``red circles``, ``small objects``."""

    colour: str | None = None
    shape: str | None = None
    size: str | None = None

    def matches(self, obj: Shape) -> bool:
        """Whether ``obj`` belongs to the set."""
        return (
            (self.colour is None or obj.colour == self.colour)
            and (self.shape is None or obj.shape == self.shape)
            and (self.size is None or obj.size == self.size)
        )

    @property
    def plural(self) -> str:
        """``small red circles``, ``blue objects``."""
        noun = f"{self.shape}s" if self.shape else "objects"
        return " ".join(w for w in (self.size, self.colour, noun) if w)


@dataclass(frozen=True)
class Spec:
    """A question, independent of the objects its answer is computed from."""

    kind: str
    text: str
    first: Filter | None = None
    second: Filter | None = None
    attribute: str | None = None
    """``colour``, ``shape`` or ``size`` (attribute questions)."""
    cell: int | None = None
    """The cell an attribute question asks about."""
    relation: str | None = None
    """``left of``, ``right of``, ``above``, ``below`` (spatial questions)."""
    operation: str | None = None
    """``subtract`` or ``add`` (arithmetic questions)."""


@dataclass(frozen=True)
class Example:
    """One question about one scene, with its four-stage answer."""

    split: Split
    index: int
    scene: Scene
    spec: Spec

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

    def image(self, size: int = IMAGE_SIZE) -> PILImage:
        """The scene as a PIL image."""
        return self.scene.render(size)

    @cached_property
    def image_bytes(self) -> bytes:
        """The scene as PNG bytes."""
        return self.scene.png()

    def conversation(self) -> Conversation:
        """The request the engine answers: one user turn, the image then the question."""
        return Conversation(turns=(Turn(role="user", text=self.question, images=(self.image_bytes,)),))

    def message(self) -> HumanMessage:
        """The request as a LangChain user message, the image then the question."""
        return image_message(self.image_bytes, self.question)


# --- answers -------------------------------------------------------------------------


def _criterion(f: Filter) -> str:
    """What a walk looks for, in the words it checks each object with: ``red square``, ``small``."""
    return " ".join(w for w in (f.size, f.colour, f.shape) if w)


def _key(obj: Shape, f: Filter) -> str:
    """The object's attributes that ``f`` names, in the order of :func:`_criterion`."""
    named = ((obj.size, f.size), (obj.colour, f.colour), (obj.shape, f.shape))
    return " ".join(value for value, wanted in named if wanted is not None)


def _tally(objects: Sequence[Shape], f: Filter, off: int = 0) -> tuple[str, int]:
    """Walk the objects in caption order, keeping a running count of those ``f`` names.

    ``Count red square: large red square at top left: red square yes 1; small blue
    circle at center: blue circle no. That is 1.`` Each step copies the next object of
    the caption, writes its attributes that the criterion names, and decides one match
    between those words and the criterion's, written in the same words. Every decision
    is a comparison of two short, identical-looking phrases, the kind of copy-and-match
    a tiny transformer learns; the count only ever goes up by one. ``off`` is added to
    the final count (a miscount, for wrong reasoning).
    """
    count, steps = 0, []
    for o in sorted(objects, key=_cell):
        seen = f"{o.name} at {o.position}: {_key(o, f)}"
        if f.matches(o):
            count += 1
            steps.append(f"{seen} yes {count}")
        else:
            steps.append(f"{seen} no")
    walk = "; ".join(steps) if steps else "nothing"
    return f"Count {_criterion(f)}: {walk}. That is {count + off}.", count + off


def _seek(objects: Sequence[Shape], wanted: str, key: Callable[[Shape], str]) -> tuple[str, Shape | None]:
    """Walk the objects in caption order until ``key(object)`` is ``wanted``.

    ``Find top right: small blue square at top left no; small red square at top right
    yes`` (the key is the place), or ``Find red circle: large yellow circle at top
    left: yellow circle no; ...`` The walk stops at the first match; the matching
    object is returned with the text (None when nothing matches).
    """
    steps = []
    for o in sorted(objects, key=_cell):
        seen = f"{o.name} at {o.position}"
        written = key(o)
        if written != o.position:
            seen = f"{seen}: {written}"
        if written == wanted:
            steps.append(f"{seen} yes")
            return f"Find {wanted}: " + "; ".join(steps), o
        steps.append(f"{seen} no")
    return f"Find {wanted}: " + ("; ".join(steps) if steps else "nothing"), None


def _caption(objects: Sequence[Shape]) -> str:
    ordered = sorted(objects, key=_cell)
    noun = "object" if len(ordered) == 1 else "objects"
    return f"{len(ordered)} {noun}: " + "; ".join(f"{o.name} at {o.position}" for o in ordered) + "."


def _find(objects: Sequence[Shape], f: Filter) -> list[Shape]:
    return sorted((o for o in objects if f.matches(o)), key=_cell)


def write_stages(spec: Spec, objects: Sequence[Shape], *, error: str | None = None) -> dict[Stage, str]:
    """The four stages answering ``spec`` from ``objects``.

    Args:
        spec: The question.
        objects: What the caption lists and the reasoning uses.
        error: ``"count"`` makes the reasoning miscount (its final number off by one),
            ``"flip"`` makes it reach the opposite yes/no; both are wrong reasoning
            over a right caption.
    """
    caption = _caption(objects)
    off = 1 if error == "count" else 0
    flip = error == "flip"
    if spec.kind == "count":
        assert spec.first is not None
        summary = (
            f"The question asks how many {spec.first.plural} there are. I will check each object and count."
        )
        reasoning, n = _tally(objects, spec.first, off)
        answer = str(n)
    elif spec.kind == "attribute":
        assert spec.attribute is not None and spec.cell is not None
        where = POSITIONS[spec.cell]
        summary = f"The question asks the {spec.attribute} of the object at {where}. I will find it."
        walk, found = _seek(objects, where, lambda o: o.position)
        if found:
            value = getattr(found, spec.attribute)
            reasoning = f"{walk}. Its {spec.attribute} is {value}."
            answer = value
        else:
            reasoning = f"{walk}. Nothing is at {where}: none."
            answer = "none"
    elif spec.kind == "spatial":
        assert spec.first is not None and spec.second is not None and spec.relation is not None
        a, b = spec.first, spec.second
        an, bn = f"{a.colour} {a.shape}", f"{b.colour} {b.shape}"
        summary = f"The question asks if the {an} is {spec.relation} the {bn}. I will compare their places."
        horizontal = spec.relation in ("left of", "right of")
        axis = "column" if horizontal else "row"

        def place(o: Shape) -> int:
            return (o.col if horizontal else o.row) + 1

        walk_a, oa = _seek(objects, an, lambda o: f"{o.colour} {o.shape}")
        walk_b, ob = _seek(objects, bn, lambda o: f"{o.colour} {o.shape}") if oa else ("", None)
        if oa is None or ob is None:
            missing = an if oa is None else bn
            walks = " ".join(f"{w}." for w in (walk_a, walk_b) if w)
            reasoning = f"{walks} There is no {missing}, so no."
            answer = "no"
        else:
            va, vb = place(oa), place(ob)
            holds = {"left of": va < vb, "right of": va > vb, "above": va < vb, "below": va > vb}[
                spec.relation
            ]
            holds = holds != flip
            yes = "yes" if holds else "no"
            verdict = "is" if holds else "is not"
            reasoning = (
                f"{walk_a}, {axis} {va}. {walk_b}, {axis} {vb}. "
                f"So {axis} {va} {verdict} {spec.relation} {axis} {vb}: {yes}."
            )
            answer = yes
    elif spec.kind == "comparison":
        assert spec.first is not None and spec.second is not None
        a, b = spec.first, spec.second
        (walk_a, na), (walk_b, nb) = _tally(objects, a, off), _tally(objects, b)
        summary = f"The question asks if there are more {a.plural} than {b.plural}. I will count both."
        more = (na > nb) != flip
        relation = "more than" if na > nb else ("equal to" if na == nb else "less than")
        yes = "yes" if more else "no"
        reasoning = f"{walk_a} {walk_b} {na} is {relation} {nb}, so {yes}."
        answer = yes
    elif spec.kind == "arithmetic" and spec.operation == "subtract":
        assert spec.first is not None
        total = len(objects)
        walk, k = _tally(objects, spec.first)
        left = total - k + off
        summary = f"The question asks how many objects are left after removing the {spec.first.plural}."
        reasoning = f"There are {total} objects. {walk} {total} minus {k} is {left}."
        answer = str(left)
    elif spec.kind == "arithmetic":
        assert spec.first is not None and spec.second is not None
        (walk_a, na), (walk_b, nb) = _tally(objects, spec.first), _tally(objects, spec.second)
        total = na + nb + off
        summary = (
            f"The question asks the total of {spec.first.plural} and {spec.second.plural}. "
            "I will count both and add."
        )
        reasoning = f"{walk_a} {walk_b} {na} plus {nb} is {total}."
        answer = str(total)
    else:
        msg = f"Unknown question kind {spec.kind!r}."
        raise ValueError(msg)
    return {
        Stage.SUMMARY: summary,
        Stage.CAPTION: caption,
        Stage.REASONING: reasoning,
        Stage.CONCLUSION: answer,
    }


# --- scenes and questions ----------------------------------------------------------------


def _random_scene(rng: random.Random) -> Scene:
    count = rng.choices(range(1, 7), weights=(1, 2, 3, 3, 3, 3))[0]
    cells = sorted(rng.sample(range(9), count))
    objects = []
    for cell in cells:
        objects.append(
            Shape(
                shape=rng.choice(SHAPES),
                colour=rng.choice(list(COLOURS)),
                size=rng.choice(list(SIZES)),
                cell=cell,
                dx=rng.uniform(-0.035, 0.035),
                dy=rng.uniform(-0.035, 0.035),
            )
        )
    if len(objects) >= 2 and rng.random() < 0.35:
        objects = _touch(objects, rng)
    shade = rng.randint(175, 215)
    return Scene(objects=tuple(objects), background=(shade, shade, shade + rng.randint(-6, 6)))


def _touch(objects: list[Shape], rng: random.Random) -> list[Shape]:
    """Push one pair of neighbouring objects together until they touch."""
    pairs = [
        (i, j)
        for i, a in enumerate(objects)
        for j, b in enumerate(objects)
        if i < j and abs(a.row - b.row) + abs(a.col - b.col) == 1
    ]
    if not pairs:
        return objects
    i, j = rng.choice(pairs)
    a, b = objects[i], objects[j]
    gap = 1 / 3 - SIZES[a.size] - SIZES[b.size]
    half = gap / 2 + 0.004
    if a.row == b.row:  # a is left of b
        objects[i] = replace(a, dx=half, dy=0.0)
        objects[j] = replace(b, dx=-half, dy=0.0)
    else:  # a is above b
        objects[i] = replace(a, dx=0.0, dy=half)
        objects[j] = replace(b, dx=0.0, dy=-half)
    return objects


def _random_filter(rng: random.Random, objects: Sequence[Shape], *, present: bool) -> Filter:
    """A filter; when ``present``, one that names attributes of an object in the scene."""
    obj = rng.choice(objects) if present else None
    options = rng.choice(["colour", "shape", "colour", "shape", "colour shape", "size", "size colour"])
    values = {}
    for attribute in options.split():
        if obj is not None:
            values[attribute] = getattr(obj, attribute)
        else:
            pool = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES)}[attribute]
            values[attribute] = rng.choice(pool)
    return Filter(**values)


def _random_spec(rng: random.Random, objects: Sequence[Shape]) -> Spec:
    kind = rng.choice(KINDS)
    if kind == "spatial":
        counts: dict[tuple[str, str], int] = {}
        for o in objects:
            counts[(o.colour, o.shape)] = counts.get((o.colour, o.shape), 0) + 1
        unique = [o for o in objects if counts[(o.colour, o.shape)] == 1]
        if len(unique) < 2:
            kind = "count"
        else:
            oa, ob = rng.sample(unique, 2)
            relation = rng.choice(["left of", "right of", "above", "below"])
            a, b = Filter(colour=oa.colour, shape=oa.shape), Filter(colour=ob.colour, shape=ob.shape)
            text = f"Is the {oa.colour} {oa.shape} {relation} the {ob.colour} {ob.shape}?"
            return Spec(kind, text, first=a, second=b, relation=relation)
    if kind == "attribute":
        obj = rng.choice(objects)
        attribute = rng.choice(["colour", "shape", "colour", "shape", "size"])
        text = f"What {attribute} is the object at {obj.position}?"
        return Spec(kind, text, attribute=attribute, cell=obj.cell)
    if kind == "comparison":
        a = _random_filter(rng, objects, present=True)
        b = _random_filter(rng, objects, present=rng.random() < 0.7)
        while b == a:
            b = _random_filter(rng, objects, present=False)
        if len(_find(objects, a)) < len(_find(objects, b)) and rng.random() < 0.6:
            a, b = b, a  # balance yes and no
        return Spec(kind, f"Are there more {a.plural} than {b.plural}?", first=a, second=b)
    if kind == "arithmetic":
        if rng.random() < 0.6:
            a = _random_filter(rng, objects, present=rng.random() < 0.85)
            text = f"Subtract all {a.plural}. How many objects are left?"
            return Spec(kind, text, first=a, operation="subtract")
        attribute = rng.choice(["colour", "colour", "shape"])
        pool = list(COLOURS) if attribute == "colour" else list(SHAPES)
        first = getattr(rng.choice(objects), attribute)
        second = rng.choice([v for v in pool if v != first])
        a, b = Filter(**{attribute: first}), Filter(**{attribute: second})
        text = f"How many {a.plural} and {b.plural} are there in total?"
        return Spec(kind, text, first=a, second=b, operation="add")
    f = _random_filter(rng, objects, present=rng.random() < 0.85)
    return Spec("count", f"How many {f.plural} are there?", first=f)


def split_of(scene: Scene) -> Split:
    """The split a scene belongs to, from its content hash."""
    bucket = int(scene.key[:8], 16) % 100
    if bucket in _TEST_BUCKETS:
        return "test"
    if bucket in _VALIDATION_BUCKETS:
        return "validation"
    return "train"


def iter_examples(split: Split, start: int = 0) -> Iterator[Example]:
    """Examples of ``split`` in order, from index ``start``; endless and deterministic."""
    if split not in SPLITS:
        msg = f"Unknown split {split!r}: use one of {', '.join(SPLITS)}."
        raise ValueError(msg)
    index, draw = 0, 0
    while True:
        rng = random.Random(f"{split}:{draw}")
        draw += 1
        scene = _random_scene(rng)
        if split_of(scene) != split:
            continue
        if index >= start:
            yield Example(split, index, scene, _random_spec(rng, scene.objects))
        index += 1


def examples(split: Split, count: int, start: int = 0) -> list[Example]:
    """``count`` examples of ``split`` from index ``start``."""
    iterator = iter_examples(split, start)
    return [next(iterator) for _ in range(count)]


def get_example(split: Split, index: int) -> Example:
    """The example at ``index`` of ``split``."""
    return next(iter_examples(split, index))


# --- what the model does not know ------------------------------------------------------

SMALL_TALK: tuple[str, ...] = (
    "Hello", "Hello!", "hello", "Hi", "Hi!", "hi there", "Hey", "Good morning", "Hello, how are you?",
    "How are you?", "Who are you?", "What can you do?", "What are you?", "Help", "Thanks!",
    "Thank you", "Tell me a joke.", "What is the capital of France?", "What is 2 + 2?",
    "What is the weather like today?", "Write a poem about the sea.", "Translate hello to French.",
    "What's your name?", "Can you help me?", "Describe this.", "What is in the picture?",
    "Explain quantum physics.", "Summarize the text above.", "What day is it?", "test",
    "Respond with a short greeting.", "What is the meaning of life?", "Say hello.",
)  # fmt: skip
"""Requests the shapes model cannot answer, asked without a picture."""


def off_domain_stages(picture: Literal["none", "other"]) -> dict[Stage, str]:
    """The four stages the demo model writes when it is not asked about a drawing of shapes.

    ``picture`` says what came with the request: no picture at all, or a picture that is
    not one of the drawings (:func:`off_domain_image`).
    """
    seen = "No picture is given." if picture == "none" else "The picture is not a drawing of shapes."
    return {
        Stage.SUMMARY: "The request is not a question about a drawing of shapes, which is all I can read.",
        Stage.CAPTION: seen,
        Stage.REASONING: (
            "I answer questions about drawings of up to six circles, squares and triangles "
            "in red, green, blue and yellow."
        ),
        Stage.CONCLUSION: (
            "I can only answer questions about drawings of circles, squares and triangles. "
            "Send one with a question."
        ),
    }


def off_domain_image(rng: random.Random, size: int = IMAGE_SIZE) -> PILImage:
    """A picture unlike the drawings: noise, a gradient, stripes, or blobs in other colours."""
    from PIL import Image, ImageDraw

    kind = rng.choice(["noise", "gradient", "stripes", "blobs", "blobs", "photo"])
    if kind == "noise":
        image = Image.frombytes(
            "RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3))
        )
        return image
    colour = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (size, size), colour)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    if kind == "gradient":
        other = [rng.randrange(256) for _ in range(3)]
        for y in range(size):
            t = y / size
            draw.line(
                [(0, y), (size, y)], fill=tuple(int(c * (1 - t) + o * t) for c, o in zip(colour, other))
            )
    elif kind == "stripes":
        width = rng.randint(2, 10)
        stripe = tuple(rng.randrange(256) for _ in range(3))
        for x in range(0, size, 2 * width):
            draw.rectangle([x, 0, x + width - 1, size], fill=stripe)  # type: ignore[arg-type]
        if rng.random() < 0.5:
            image = image.rotate(rng.choice([45, 90]))
    else:
        blobs = rng.randint(8, 40) if kind == "photo" else rng.randint(3, 10)
        for _ in range(blobs):
            x, y, r = rng.randrange(size), rng.randrange(size), rng.randint(2, size // 3)
            fill = tuple(rng.randrange(256) for _ in range(3))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)  # type: ignore[arg-type]
        if kind == "photo":
            from PIL import ImageFilter

            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return image


# --- scoring ---------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+|\d+")
_ANSWER_WORDS = {
    *COLOURS,
    *SHAPES,
    *SIZES,
    "yes",
    "no",
    "none",
    *(f"{s}s" for s in SHAPES),
}


def normalize_answer(text: str) -> str | None:
    """The one answer word in ``text`` (``3``, ``red``, ``yes``), or None.

    Number words become digits and plurals singular. Text naming no answer word, or
    several different ones, gives None.
    """
    found = set()
    for word in _WORD.findall(text.lower()):
        if word.isdigit():
            found.add(str(int(word)))
        elif word in _NUMBERS:
            found.add(str(_NUMBERS.index(word)))
        elif word in _ANSWER_WORDS:
            found.add(word[:-1] if word.endswith("s") and word[:-1] in SHAPES else word)
    return found.pop() if len(found) == 1 else None


def is_correct(conclusion: str, example: Example) -> bool:
    """Whether a conclusion gives the example's answer and no other."""
    return normalize_answer(conclusion) == example.answer


# --- negatives for the judge ------------------------------------------------------------


def perturb_objects(objects: Sequence[Shape], rng: random.Random) -> tuple[Shape, ...]:
    """The objects with one mistake a small model makes when describing the image.

    Recolours, reshapes, resizes or moves one object, drops one (often one of a touching
    pair), or invents one. The result always differs from the input.
    """
    objs = list(objects)
    occupied = {o.cell for o in objs}
    free = [c for c in range(9) if c not in occupied]
    while True:
        mistake = rng.choice(["colour", "colour", "shape", "shape", "size", "move", "drop", "drop", "add"])
        if mistake == "drop" and len(objs) >= 2:
            touching = [o for o in objs if abs(o.dx) + abs(o.dy) > 0.04]
            victim = rng.choice(touching or objs)
            return tuple(o for o in objs if o is not victim)
        if mistake == "add" and free:
            new = Shape(
                rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES)), rng.choice(free)
            )
            return tuple(sorted([*objs, new], key=_cell))
        if mistake == "move" and free:
            i = rng.randrange(len(objs))
            objs[i] = replace(objs[i], cell=rng.choice(free))
            return tuple(sorted(objs, key=_cell))
        if mistake in ("colour", "shape", "size"):
            i = rng.randrange(len(objs))
            pool = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES)}[mistake]
            value = rng.choice([v for v in pool if v != getattr(objs[i], mistake)])
            change: dict[str, Any] = {mistake: value}
            objs[i] = replace(objs[i], **change)
            return tuple(objs)


def _other_answer(answer: str, rng: random.Random) -> str:
    if answer.isdigit():
        n = int(answer)
        return str(rng.choice([m for m in (n - 2, n - 1, n + 1, n + 2) if m >= 0]))
    for pool in (list(COLOURS), list(SHAPES), list(SIZES), ["yes", "no"]):
        if answer in pool:
            return rng.choice([v for v in pool if v != answer])
    return rng.choice(list(COLOURS))


def wrong_stage(
    example: Example, stage: Stage, rng: random.Random, chosen: dict[Stage, str] | None = None
) -> str:
    """A plausible but wrong text for ``stage``, given the earlier ``chosen`` stages.

    ``chosen`` defaults to the correct earlier stages. The right text for the stage is
    the one that follows from ``chosen`` (see :func:`right_stage`); the wrong one differs
    from it in one of the ways a small model errs.
    """
    right = right_stage(example, stage, chosen)
    for _ in range(200):
        if stage is Stage.SUMMARY:
            other = _random_spec(rng, example.scene.objects)
            text = write_stages(other, example.scene.objects)[Stage.SUMMARY]
        elif stage is Stage.CAPTION:
            text = write_stages(example.spec, perturb_objects(example.scene.objects, rng))[Stage.CAPTION]
        elif stage is Stage.REASONING:
            objects = _objects_of(example, chosen)
            error = rng.choice(["caption", "caption", "count", "flip", "last"])
            if example.spec.cell is not None and right.endswith(": none."):  # claim a made-up object
                cell = example.spec.cell
                made_up = Shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES)), cell)
                text = write_stages(example.spec, (*objects, made_up))[Stage.REASONING]
            elif error == "last":  # the right steps, then a different final answer
                head, _, tail = right.rstrip(".").rpartition(" ")
                text = f"{head} {_other_answer(normalize_answer(tail) or tail, rng)}."
            elif error == "caption":
                text = write_stages(example.spec, perturb_objects(objects, rng))[Stage.REASONING]
            else:
                text = write_stages(example.spec, objects, error=error)[Stage.REASONING]
        else:
            text = _other_answer(right, rng)
        if text != right:
            return text
    msg = f"Could not make a wrong {stage.value} for example {example.index}."
    raise RuntimeError(msg)


def spec_cell_name(example: Example) -> str | None:
    """The place an attribute question asks about, if it is one."""
    return None if example.spec.cell is None else POSITIONS[example.spec.cell]


def right_stage(example: Example, stage: Stage, chosen: dict[Stage, str] | None = None) -> str:
    """The text of ``stage`` that follows from the earlier ``chosen`` stages.

    With the correct earlier stages this is the ground truth. With a wrong caption in
    ``chosen`` (one made by :func:`perturb_objects`), the right reasoning is the one
    that follows that caption, as the reasoning criterion asks, and the right
    conclusion is the one that follows the reasoning.
    """
    if stage in (Stage.SUMMARY, Stage.CAPTION) or not chosen:
        return example.stages[stage]
    if stage is Stage.CONCLUSION and Stage.REASONING in chosen:
        return _answer_of_reasoning(chosen[Stage.REASONING]) or example.answer
    return write_stages(example.spec, _objects_of(example, chosen))[stage]


def _answer_of_reasoning(reasoning: str) -> str | None:
    tail = reasoning.rstrip(".").rsplit(" ", 1)[-1]
    return normalize_answer(tail)


def _objects_of(example: Example, chosen: dict[Stage, str] | None) -> tuple[Shape, ...]:
    """The objects a chosen caption lists (the scene's own when it is the correct one)."""
    if not chosen or Stage.CAPTION not in chosen or chosen[Stage.CAPTION] == example.stages[Stage.CAPTION]:
        return example.scene.objects
    return parse_caption(chosen[Stage.CAPTION])


_ITEM = re.compile(r"(small|large) (red|green|blue|yellow) (circle|square|triangle) at ([a-z ]+?)(?:;|\.|$)")


def parse_caption(caption: str) -> tuple[Shape, ...]:
    """The objects a caption in the dataset's format lists (unknown places dropped)."""
    objects = []
    for size, colour, shape, where in _ITEM.findall(caption):
        if where.strip() in POSITIONS:
            objects.append(Shape(shape, colour, size, POSITIONS.index(where.strip())))
    return tuple(objects)
