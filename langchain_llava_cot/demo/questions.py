"""The questions of the demo dataset: seven kinds, each a :class:`Spec`.

A spec is a question independent of the objects its answer is computed from (counting,
attribute, spatial relation, comparison, arithmetic over counts, whether something is
there, a description of the picture); sets of objects are named by a :class:`Filter`
(``red circles``, ``small objects``). :func:`random_spec` draws a question of the
classic world's five kinds, in their one canonical wording; :func:`free_spec` draws one
of all seven kinds, without its wording, which :mod:`~langchain_llava_cot.demo.phrasings`
writes in one of many:

>>> import random
>>> from langchain_llava_cot.demo.scenes import random_scene
>>> rng = random.Random(0)
>>> spec = random_spec(rng, random_scene(rng).objects)
>>> spec.kind in CLASSIC_KINDS and spec.text.endswith("?")
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from langchain_llava_cot.demo.scenes import COLOURS, SHAPES, SIZES, Shape, caption_order

__all__ = ["CLASSIC_KINDS", "KINDS", "Filter", "Spec", "free_spec", "random_spec"]

CLASSIC_KINDS: tuple[str, ...] = ("count", "attribute", "spatial", "comparison", "arithmetic")
"""The kinds of question the classic world asks."""
KINDS: tuple[str, ...] = (*CLASSIC_KINDS, "exists", "describe")
"""Every kind of question: the classic ones, whether something is there, and a description."""


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
        return self.named("objects")

    @property
    def singular(self) -> str:
        """``small red circle``, ``blue object``."""
        return self.named("object", plural=False)

    def named(self, noun: str, *, plural: bool = True) -> str:
        """The set in words, with ``noun`` (``shapes``, ``things``) where it names no shape."""
        if self.shape:
            noun = f"{self.shape}s" if plural else self.shape
        return " ".join(w for w in (self.size, self.colour, noun) if w)

    @property
    def words(self) -> str:
        """What a walk looks for, in the words it checks each object with: ``red square``, ``small``."""
        return " ".join(w for w in (self.size, self.colour, self.shape) if w)


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


def _find(objects: Sequence[Shape], f: Filter) -> list[Shape]:
    return sorted((o for o in objects if f.matches(o)), key=caption_order)


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


def random_spec(rng: random.Random, objects: Sequence[Shape]) -> Spec:
    """A classic question about ``objects``, of a kind drawn from :data:`CLASSIC_KINDS` with ``rng``.

    A spatial question needs two objects whose colour and shape no other object has;
    without them it becomes a counting question.
    """
    return _classic_spec(rng.choice(CLASSIC_KINDS), rng, objects)


def _classic_spec(kind: str, rng: random.Random, objects: Sequence[Shape]) -> Spec:
    """A classic question of ``kind``, drawn from ``rng`` (a spatial one may become a count)."""
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


_FREE_KINDS = {
    "count": 0.2,
    "exists": 0.1,
    "attribute": 0.16,
    "spatial": 0.16,
    "comparison": 0.12,
    "arithmetic": 0.18,
    "describe": 0.08,
}
"""How often :func:`free_spec` asks each kind."""


def free_spec(rng: random.Random, objects: Sequence[Shape]) -> Spec:
    """A question about ``objects`` of any of the :data:`KINDS`, with its text left empty.

    Questions about one object (an attribute, a spatial relation) name only objects the
    question picks out alone, and a spatial question only compares objects in different
    columns (left, right) or rows (above, below) of the grid; where the scene has none,
    another kind is asked.
    """
    kinds, weights = zip(*_FREE_KINDS.items())
    while True:
        kind = rng.choices(kinds, weights)[0]
        spec = _free_spec_of(kind, rng, objects)
        if spec is not None:
            return spec


def _free_spec_of(kind: str, rng: random.Random, objects: Sequence[Shape]) -> Spec | None:
    if kind == "count":
        if rng.random() < 0.25:
            return Spec("count", "", first=Filter())
        return Spec("count", "", first=_random_filter(rng, objects, present=rng.random() < 0.8))
    if kind == "exists":
        present = rng.random() < 0.5
        return Spec("exists", "", first=_random_filter(rng, objects, present=present))
    if kind == "attribute":
        return _attribute_spec(rng, objects)
    if kind == "spatial":
        return _spatial_spec(rng, objects)
    if kind == "describe":
        return Spec("describe", "")
    return replace(_classic_spec(kind, rng, objects), text="")


def _attribute_spec(rng: random.Random, objects: Sequence[Shape]) -> Spec | None:
    """The colour, shape or size of the one object at a place, or of the one object a filter names."""
    attribute = rng.choice(["colour", "shape", "colour", "shape", "size"])
    if rng.random() < 0.5:
        cells = [o.cell for o in objects]
        alone = [o for o in objects if cells.count(o.cell) == 1]
        if not alone:
            return None
        return Spec("attribute", "", attribute=attribute, cell=rng.choice(alone).cell)
    target = rng.choice(objects)
    named = [a for a in ("size", "colour", "shape") if a != attribute]
    for chosen in rng.sample([[named[0]], [named[1]], named], 3):
        f = Filter(**{a: getattr(target, a) for a in chosen})
        if len(_find(objects, f)) == 1:
            return Spec("attribute", "", first=f, attribute=attribute)
    return None


def _spatial_spec(rng: random.Random, objects: Sequence[Shape]) -> Spec | None:
    counts: dict[tuple[str, str], int] = {}
    for o in objects:
        counts[(o.colour, o.shape)] = counts.get((o.colour, o.shape), 0) + 1
    unique = [o for o in objects if counts[(o.colour, o.shape)] == 1]
    if len(unique) < 2:
        return None
    oa, ob = rng.sample(unique, 2)
    relations = []
    if oa.col != ob.col:
        relations += ["left of", "right of"]
    if oa.row != ob.row:
        relations += ["above", "below"]
    if not relations:
        return None
    a, b = Filter(colour=oa.colour, shape=oa.shape), Filter(colour=ob.colour, shape=ob.shape)
    return Spec("spatial", "", first=a, second=b, relation=rng.choice(relations))
