"""Made-up mistakes of the kinds a small model makes, and the right stage that follows them.

:func:`wrong_stage` makes the negatives of the judges' training data, in the ways a
small model errs: a caption with a wrong colour, shape, size or place, a missed object
(often one of a touching pair), an invented one (:func:`perturb_objects`); reasoning
that does not follow the caption or miscounts; a conclusion that disagrees with the
reasoning. :func:`right_stage` is the text a stage should have given the earlier stages
chosen, right or wrong:

>>> import random
>>> from langchain_llava_cot.demo.dataset import get_example
>>> from langchain_llava_cot.stages import Stage
>>> example = get_example("test", 0)
>>> wrong = wrong_stage(example, Stage.CAPTION, random.Random(0))
>>> wrong != right_stage(example, Stage.CAPTION) == example.stages[Stage.CAPTION]
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from langchain_llava_cot.demo.answers import parse_caption, write_stages
from langchain_llava_cot.demo.questions import free_spec
from langchain_llava_cot.demo.scenes import COLOURS, POSITIONS, SHAPES, SIZES, Shape, caption_order
from langchain_llava_cot.demo.scoring import normalize_answer
from langchain_llava_cot.stages import Stage

if TYPE_CHECKING:
    from langchain_llava_cot.demo.dataset import Example

__all__ = ["perturb_objects", "right_stage", "wrong_stage"]


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
            return tuple(sorted([*objs, new], key=caption_order))
        if mistake == "move" and free:
            i = rng.randrange(len(objs))
            objs[i] = replace(objs[i], cell=rng.choice(free))
            return tuple(sorted(objs, key=caption_order))
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
            other = free_spec(rng, example.scene.objects)
            text = write_stages(other, example.scene.objects)[Stage.SUMMARY]
        elif stage is Stage.CAPTION:
            text = write_stages(example.spec, perturb_objects(example.scene.objects, rng))[Stage.CAPTION]
        elif stage is Stage.REASONING:
            objects = _objects_of(example, chosen)
            error = rng.choice(["caption", "caption", "count", "flip", "last"])
            if example.kind == "describe":
                error = "caption"
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
        elif example.kind == "describe":
            objects = perturb_objects(_objects_of(example, chosen), rng)
            text = write_stages(example.spec, objects)[Stage.CONCLUSION]
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
        return _answer_of_reasoning(chosen[Stage.REASONING], example.kind) or example.answer
    return write_stages(example.spec, _objects_of(example, chosen))[stage]


def _answer_of_reasoning(reasoning: str, kind: str) -> str | None:
    """The answer a reasoning reaches: its last word, or for a description the objects it lists."""
    if kind == "describe":
        listing, found, _ = reasoning.removeprefix("List all: ").rpartition(". That is ")
        return listing if found else None
    tail = reasoning.rstrip(".").rsplit(" ", 1)[-1]
    return normalize_answer(tail)


def _objects_of(example: Example, chosen: dict[Stage, str] | None) -> tuple[Shape, ...]:
    """The objects a chosen caption lists (the scene's own when it is the correct one)."""
    if not chosen or Stage.CAPTION not in chosen or chosen[Stage.CAPTION] == example.stages[Stage.CAPTION]:
        return example.scene.objects
    return parse_caption(chosen[Stage.CAPTION])
