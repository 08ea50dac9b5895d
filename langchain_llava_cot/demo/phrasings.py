"""The many ways a question is asked: wordings the model trains on, and wordings held out.

Every kind of question (:data:`~langchain_llava_cot.demo.questions.KINDS`) has several
wordings; :func:`phrase` writes a :class:`~langchain_llava_cot.demo.questions.Spec` in
one of them. The model never sees the *novel* wordings (:data:`NOVEL`) in training, nor
the novel names of places and nouns, so accuracy on them measures how far its reading of
questions carries. Whatever the wording, the model's summary restates the question in one
canonical form, and the rest of its answer works from that.

>>> import random
>>> from langchain_llava_cot.demo.questions import Filter, Spec
>>> spec = Spec("count", "", first=Filter(colour="red"))
>>> phrase(spec, random.Random(1)) in {w.format(things="red shapes") for w in TRAINING["count"]} | {
...     w.format(things="red objects") for w in TRAINING["count"]}
True
"""

from __future__ import annotations

import random

from langchain_llava_cot.demo.questions import Filter, Spec

__all__ = ["NOVEL", "PLACE_NAMES", "TRAINING", "phrase"]

TRAINING: dict[str, tuple[str, ...]] = {
    "count": (
        "How many {things} are there?",
        "How many {things} are there?",
        "How many {things} are in the picture?",
        "How many {things} are in the image?",
        "How many {things} do you see?",
        "How many {things} can you see?",
        "Count the {things}.",
        "What is the number of {things}?",
        "How many {things}?",
    ),
    "exists": (
        "Is there {a_thing}?",
        "Is there {a_thing} in the picture?",
        "Are there any {things}?",
        "Do you see {a_thing}?",
        "Is there any {thing}?",
    ),
    "attribute_place": (
        "What {attribute} is the object at {place}?",
        "What {attribute} is the object at {place}?",
        "What {attribute} is the shape at the {place}?",
        "What is the {attribute} of the object at {place}?",
        "What {attribute} is the object in the {place}?",
        "Which {attribute} is the thing at the {place}?",
    ),
    "attribute_thing": (
        "What {attribute} is the {thing}?",
        "What is the {attribute} of the {thing}?",
        "Which {attribute} is the {thing}?",
        "What {attribute} is the {thing} in the picture?",
    ),
    "size_place": ("Is the object at {place} small or large?", "Is the shape in the {place} large or small?"),
    "size_thing": ("Is the {thing} small or large?", "Is the {thing} large or small?"),
    "left of": (
        "Is the {a} left of the {b}?",
        "Is the {a} to the left of the {b}?",
        "Is the {a} on the left of the {b}?",
    ),
    "right of": (
        "Is the {a} right of the {b}?",
        "Is the {a} to the right of the {b}?",
        "Is the {a} on the right of the {b}?",
    ),
    "above": ("Is the {a} above the {b}?", "Is the {a} higher than the {b}?", "Is the {a} over the {b}?"),
    "below": ("Is the {a} below the {b}?", "Is the {a} under the {b}?", "Is the {a} lower than the {b}?"),
    "comparison": (
        "Are there more {things} than {others}?",
        "Are there more {things} than {others}?",
        "Is the number of {things} greater than the number of {others}?",
        "Are there more {things} than {others} in the picture?",
    ),
    "subtract": (
        "Subtract all {things}. How many objects are left?",
        "Subtract all {things}. How many objects are left?",
        "Remove all {things}. How many objects are left?",
        "Take away the {things}. How many shapes remain?",
        "If you remove all {things}, how many objects are left?",
    ),
    "add": (
        "How many {things} and {others} are there in total?",
        "How many {things} and {others} are there in total?",
        "What is the total number of {things} and {others}?",
        "How many {things} and {others} are there altogether?",
    ),
    "describe": (
        "Describe the picture.",
        "Describe this picture.",
        "What is in the picture?",
        "What do you see?",
        "List the objects in the picture.",
        "What shapes are in the image?",
    ),
}
"""The wordings the model is trained on, by kind (and, for some kinds, by what the question names)."""

NOVEL: dict[str, tuple[str, ...]] = {
    "count": (
        "Count all the {things} in the picture.",
        "Can you tell me how many {things} there are?",
        "What's the count of {things}?",
        "Number of {things}?",
    ),
    "exists": ("Does the picture contain {a_thing}?", "Can you find {a_thing}?", "Is {a_thing} present?"),
    "attribute_place": (
        "The object at {place}: what {attribute} is it?",
        "Tell me the {attribute} of the shape at the {place}.",
    ),
    "attribute_thing": ("Tell me the {attribute} of the {thing}.", "What {attribute} does the {thing} have?"),
    "size_place": ("How big is the object at the {place}, small or large?",),
    "size_thing": ("How big is the {thing}, small or large?",),
    "left of": ("Is the {a} further left than the {b}?",),
    "right of": ("Is the {a} further right than the {b}?",),
    "above": ("Is the {a} higher up than the {b}?",),
    "below": ("Is the {a} beneath the {b}?",),
    "comparison": (
        "Do the {things} outnumber the {others}?",
        "Are the {things} more numerous than the {others}?",
    ),
    "subtract": (
        "Without the {things}, how many objects would remain?",
        "Leave out the {things}: how many are left?",
    ),
    "add": ("Count the {things} and the {others} together.", "What do the {things} and {others} add up to?"),
    "describe": ("Describe the image.", "What can you see in this image?", "Tell me what is in the picture."),
}
"""Wordings held out of training entirely, by kind."""

PLACE_NAMES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("top left", "top left", "top-left", "upper left"), ("top left corner",)),
    (("top middle", "top middle", "top center", "top"), ("top centre",)),
    (("top right", "top right", "top-right", "upper right"), ("top right corner",)),
    (("middle left", "middle left", "left", "center left"), ("centre left",)),
    (("center", "center", "centre", "middle"), ("very middle",)),
    (("middle right", "middle right", "right", "center right"), ("centre right",)),
    (("bottom left", "bottom left", "bottom-left", "lower left"), ("bottom left corner",)),
    (("bottom middle", "bottom middle", "bottom center", "bottom"), ("bottom centre",)),
    (("bottom right", "bottom right", "bottom-right", "lower right"), ("bottom right corner",)),
)
"""Each place's names: those trained on, and those held out."""

_NOUNS = (("objects", "shapes", "objects", "shapes", "things"), ("items", "figures"))
"""Words for "objects" where a question names no shape: trained on, held out."""


def phrase(spec: Spec, rng: random.Random, *, novel: bool = False) -> str:
    """``spec`` in words: a trained wording, or a held-out one when ``novel``.

    A trained wording is sometimes written in lower case or without its question mark.
    """
    kind = _template_kind(spec, rng)
    templates = (NOVEL if novel else TRAINING)[kind]
    noun = rng.choice(_NOUNS[novel])
    first = spec.first or Filter()
    fields = {
        "things": first.named(noun),
        "thing": first.named(noun[:-1], plural=False),
        "a_thing": _a(first.named(noun[:-1], plural=False)),
        "others": (spec.second or Filter()).named(noun),
        "attribute": _attribute_word(spec.attribute, rng),
        "place": _place(spec.cell, rng, novel) if spec.cell is not None else "",
    }
    if spec.kind == "spatial":
        assert spec.first is not None and spec.second is not None  # a spatial spec names two objects
        fields["a"], fields["b"] = spec.first.words, spec.second.words
    text = rng.choice(templates).format(**fields)
    if not novel and rng.random() < 0.1:
        text = text[0].lower() + text[1:]
    if not novel and text.endswith("?") and rng.random() < 0.1:
        text = text[:-1]
    return text


def _template_kind(spec: Spec, rng: random.Random) -> str:
    if spec.kind == "attribute":
        what = "place" if spec.cell is not None else "thing"
        return f"size_{what}" if spec.attribute == "size" and rng.random() < 0.5 else f"attribute_{what}"
    if spec.kind == "spatial":
        assert spec.relation is not None  # a spatial spec has its relation
        return spec.relation
    if spec.kind == "arithmetic":
        assert spec.operation is not None  # an arithmetic spec has its operation
        return spec.operation
    return spec.kind


def _attribute_word(attribute: str | None, rng: random.Random) -> str:
    if attribute == "colour":
        return rng.choice(["colour", "color"])
    return attribute or ""


def _place(cell: int, rng: random.Random, novel: bool) -> str:
    trained, held_out = PLACE_NAMES[cell]
    return rng.choice(held_out if novel else trained)


def _a(words: str) -> str:
    return f"an {words}" if words[0] in "aeiou" else f"a {words}"
