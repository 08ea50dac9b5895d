"""The questions of the demo dataset: five kinds, each a :class:`Spec`.

A spec is a question independent of the objects its answer is computed from (counting,
attribute, spatial relation, comparison, arithmetic over counts); sets of objects are
named by a :class:`Filter` (``red circles``, ``small objects``). :func:`random_spec`
draws a question about a scene's objects from a seeded ``random.Random``:

>>> import random
>>> from langchain_llava_cot.demo.scenes import random_scene
>>> rng = random.Random(0)
>>> spec = random_spec(rng, random_scene(rng).objects)
>>> spec.kind in KINDS and spec.text.endswith("?")
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_llava_cot.demo.scenes import COLOURS, SHAPES, SIZES, Shape, cell_of

__all__ = ["KINDS", "Filter", "Spec", "random_spec"]

KINDS: tuple[str, ...] = ("count", "attribute", "spatial", "comparison", "arithmetic")


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


def _find(objects: Sequence[Shape], f: Filter) -> list[Shape]:
    return sorted((o for o in objects if f.matches(o)), key=cell_of)


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
    """A question about ``objects``, of a kind drawn from :data:`KINDS` with ``rng``.

    A spatial question needs two objects whose colour and shape no other object has;
    without them it becomes a counting question.
    """
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
