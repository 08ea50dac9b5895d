"""The four-stage answers of the demo dataset, written from a question and an object list.

The answer text is a function of a question :class:`~langchain_llava_cot.demo.questions.Spec`
and an object list, so the same code writes the right answer from the true objects and
consistent-but-wrong answers from perturbed ones (see
:mod:`langchain_llava_cot.demo.mistakes`). The caption lists the objects in cell order,
and the reasoning works only from the caption: it walks the objects one by one, with a
running count (:func:`_tally`) or until it finds one (:func:`_seek`).
:func:`parse_caption` reads a caption back into objects:

>>> from langchain_llava_cot.demo.questions import Filter, Spec
>>> from langchain_llava_cot.demo.scenes import Shape
>>> objects = (Shape("square", "red", "large", 0), Shape("circle", "blue", "small", 4))
>>> spec = Spec("count", "How many red squares are there?", first=Filter("red", "square"))
>>> stages = write_stages(spec, objects)
>>> stages[Stage.CAPTION]
'2 objects: large red square at top left; small blue circle at center.'
>>> stages[Stage.CONCLUSION]
'1'
>>> parse_caption(stages[Stage.CAPTION]) == objects
True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from langchain_llava_cot.demo.questions import Filter, Spec
from langchain_llava_cot.demo.scenes import POSITIONS, Shape, caption_order
from langchain_llava_cot.stages import Stage

__all__ = ["parse_caption", "write_stages"]


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
    if not f.words:
        return _tally_all(objects, off)
    count, steps = 0, []
    for o in sorted(objects, key=caption_order):
        seen = f"{o.name} at {o.position}: {_key(o, f)}"
        if f.matches(o):
            count += 1
            steps.append(f"{seen} yes {count}")
        else:
            steps.append(f"{seen} no")
    walk = "; ".join(steps) if steps else "nothing"
    return f"Count {f.words}: {walk}. That is {count + off}.", count + off


def _tally_all(objects: Sequence[Shape], off: int = 0) -> tuple[str, int]:
    """Count every object.

    ``Count all: large red square at top left 1; small blue circle at center 2. That is 2.``
    """
    steps = [f"{o.name} at {o.position} {i}" for i, o in enumerate(sorted(objects, key=caption_order), 1)]
    walk = "; ".join(steps) if steps else "nothing"
    return f"Count all: {walk}. That is {len(steps) + off}.", len(steps) + off


def _seek(objects: Sequence[Shape], wanted: str, key: Callable[[Shape], str]) -> tuple[str, Shape | None]:
    """Walk the objects in caption order until ``key(object)`` is ``wanted``.

    ``Find top right: small blue square at top left no; small red square at top right
    yes`` (the key is the place), or ``Find red circle: large yellow circle at top
    left: yellow circle no; ...`` The walk stops at the first match; the matching
    object is returned with the text (None when nothing matches).
    """
    steps = []
    for o in sorted(objects, key=caption_order):
        seen = f"{o.name} at {o.position}"
        written = key(o)
        if written != o.position:
            seen = f"{seen}: {written}"
        if written == wanted:
            steps.append(f"{seen} yes")
            return f"Find {wanted}: " + "; ".join(steps), o
        steps.append(f"{seen} no")
    return f"Find {wanted}: " + ("; ".join(steps) if steps else "nothing"), None


def _listing(objects: Sequence[Shape]) -> str:
    """``large red square at top left; small blue circle at center``, in caption order."""
    return "; ".join(f"{o.name} at {o.position}" for o in sorted(objects, key=caption_order))


def _caption(objects: Sequence[Shape]) -> str:
    noun = "object" if len(objects) == 1 else "objects"
    return f"{len(objects)} {noun}: {_listing(objects)}."


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
    elif spec.kind == "exists":
        assert spec.first is not None
        f = spec.first
        summary = f"The question asks if there is a {f.singular}. I will look for one."
        walk, found = _seek(objects, f.words, lambda o: _key(o, f))
        there = (found is not None) != flip
        reasoning = f"{walk}. So yes." if there else f"{walk}. There is no {f.singular}, so no."
        answer = "yes" if there else "no"
    elif spec.kind == "describe":
        summary = "The question asks what is in the picture. I will list the objects."
        count = len(objects)
        reasoning = f"List all: {_listing(objects) or 'nothing'}. That is {count} object{'s' * (count != 1)}."
        answer = _listing(objects) or "nothing"
    elif spec.kind == "attribute" and spec.cell is None:
        assert spec.attribute is not None and spec.first is not None
        f, thing = spec.first, spec.first.singular
        summary = f"The question asks the {spec.attribute} of the {thing}. I will find it."
        walk, found = _seek(objects, f.words, lambda o: _key(o, f))
        if found:
            value = getattr(found, spec.attribute)
            reasoning = f"{walk}. Its {spec.attribute} is {value}."
            answer = value
        else:
            reasoning = f"{walk}. There is no {thing}: none."
            answer = "none"
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


_ITEM = re.compile(r"(small|large) (red|green|blue|yellow) (circle|square|triangle) at ([a-z ]+?)(?:;|\.|$)")


def parse_caption(caption: str) -> tuple[Shape, ...]:
    """The objects a caption in the dataset's format lists (unknown places dropped)."""
    objects = []
    for size, colour, shape, where in _ITEM.findall(caption):
        if where.strip() in POSITIONS:
            objects.append(Shape(shape, colour, size, POSITIONS.index(where.strip())))
    return tuple(objects)
