"""The many ways a question is asked: wordings the model trains on, and wordings held out.

Every kind of question (:data:`~langchain_llava_cot.demo.questions.KINDS`) has several
wordings; :func:`phrase` writes a :class:`~langchain_llava_cot.demo.questions.Spec` in
one of them, sometimes with a greeting or a thank-you around it (:data:`WRAPPERS`). The
model never sees the *novel* wordings (:data:`NOVEL`) nor the held-out names of places in
training: new sentences made of words it has read, so accuracy on them measures how far its
reading of questions carries. Whatever the wording, the model's summary restates the question in one
canonical form, and the rest of its answer works from that.

>>> import random
>>> from langchain_llava_cot.demo.questions import Filter, Spec
>>> spec = Spec("count", "", first=Filter(colour="red"))
>>> phrase(spec, random.Random(4))
'How many red shapes?'
>>> phrase(spec, random.Random(1))
'Hey, How many red shapes are in the picture?'
"""

from __future__ import annotations

import random

from langchain_llava_cot.demo.questions import Filter, Spec

__all__ = ["NOUNS", "NOVEL", "PLACE_NAMES", "TRAINING", "WRAPPERS", "phrase", "with_article"]

TRAINING: dict[str, tuple[str, ...]] = {
    "count": (
        "How many {things} are there?",
        "How many {things} are there?",
        "How many {things} are in the picture?",
        "How many {things} are in the image?",
        "How many {things} do you see?",
        "How many {things} can you see?",
        "Count the {things}.",
        "Count all the {things} in the picture.",
        "What is the number of {things}?",
        "How many {things}?",
        "Can you tell me how many {things} there are?",
        "What's the count of {things}?",
        "Number of {things}?",
        "How many {things} are shown?",
        "Tell me how many {things} are in this picture.",
        "Give me the count of {things}.",
    ),
    "exists": (
        "Is there {a_thing}?",
        "Is there {a_thing} in the picture?",
        "Are there any {things}?",
        "Do you see {a_thing}?",
        "Is there any {thing}?",
        "Does the picture contain {a_thing}?",
        "Can you find {a_thing}?",
        "Is {a_thing} present?",
        "Is there {a_thing} anywhere?",
        "Can you see any {things}?",
    ),
    "attribute_place": (
        "What {attribute} is the object at {place}?",
        "What {attribute} is the object at {place}?",
        "What {attribute} is the shape at the {place}?",
        "What is the {attribute} of the object at {place}?",
        "What {attribute} is the object in the {place}?",
        "Which {attribute} is the thing at the {place}?",
        "The object at {place}: what {attribute} is it?",
        "Tell me the {attribute} of the shape at the {place}.",
        "Can you tell me the {attribute} of the object in the {place}?",
    ),
    "attribute_thing": (
        "What {attribute} is the {thing}?",
        "What is the {attribute} of the {thing}?",
        "Which {attribute} is the {thing}?",
        "What {attribute} is the {thing} in the picture?",
        "Tell me the {attribute} of the {thing}.",
        "What {attribute} does the {thing} have?",
        "Give me the {attribute} of the {thing} in this image.",
    ),
    "size_place": (
        "Is the object at {place} small or large?",
        "Is the shape in the {place} large or small?",
        "How big is the object at the {place}, small or large?",
    ),
    "size_thing": (
        "Is the {thing} small or large?",
        "Is the {thing} large or small?",
        "How big is the {thing}, small or large?",
        "Tell me if the {thing} is large or small.",
    ),
    "left of": (
        "Is the {a} left of the {b}?",
        "Is the {a} to the left of the {b}?",
        "Is the {a} on the left of the {b}?",
        "Is the {a} further left than the {b}?",
    ),
    "right of": (
        "Is the {a} right of the {b}?",
        "Is the {a} to the right of the {b}?",
        "Is the {a} on the right of the {b}?",
        "Is the {a} further right than the {b}?",
    ),
    "above": (
        "Is the {a} above the {b}?",
        "Is the {a} higher than the {b}?",
        "Is the {a} over the {b}?",
        "Is the {a} higher up than the {b}?",
    ),
    "below": (
        "Is the {a} below the {b}?",
        "Is the {a} under the {b}?",
        "Is the {a} lower than the {b}?",
        "Is the {a} beneath the {b}?",
    ),
    "comparison": (
        "Are there more {things} than {others}?",
        "Are there more {things} than {others}?",
        "Is the number of {things} greater than the number of {others}?",
        "Are there more {things} than {others} in the picture?",
        "Do the {things} outnumber the {others}?",
        "Are the {things} more numerous than the {others}?",
    ),
    "subtract": (
        "Subtract all {things}. How many objects are left?",
        "Subtract all {things}. How many objects are left?",
        "Remove all {things}. How many objects are left?",
        "Take away the {things}. How many shapes remain?",
        "If you remove all {things}, how many objects are left?",
        "Without the {things}, how many objects would remain?",
        "Leave out the {things}: how many are left?",
    ),
    "add": (
        "How many {things} and {others} are there in total?",
        "How many {things} and {others} are there in total?",
        "What is the total number of {things} and {others}?",
        "How many {things} and {others} are there altogether?",
        "Count the {things} and the {others} together.",
        "What do the {things} and {others} add up to?",
    ),
    "describe": (
        "Describe the picture.",
        "Describe this picture.",
        "What is in the picture?",
        "What do you see?",
        "List the objects in the picture.",
        "What shapes are in the image?",
        "Describe the image.",
        "What can you see in this image?",
        "Tell me what is in the picture.",
        "What is shown?",
    ),
}
"""The wordings the model is trained on, by kind (and, for some kinds, by what the question names)."""

NOVEL: dict[str, tuple[str, ...]] = {
    "count": (
        "Please tell me how many {things} you can see.",
        "How many {things} are shown in this image?",
        "Can you count the {things} in this picture?",
        "Give me the number of {things}.",
    ),
    "exists": (
        "Can you see {a_thing} in the image?",
        "Is there {a_thing} anywhere in the picture?",
        "Does this image contain any {things}?",
    ),
    "attribute_place": (
        "Tell me which {attribute} the shape at the {place} is.",
        "At the {place}, what {attribute} is the object?",
    ),
    "attribute_thing": (
        "Which {attribute} does the {thing} have?",
        "Can you tell me which {attribute} the {thing} is?",
    ),
    "size_place": ("Is the shape at the {place} small or is it large?",),
    "size_thing": ("Tell me if the {thing} is small or large.",),
    "left of": ("Can you tell me if the {a} is to the left of the {b}?",),
    "right of": ("Tell me if the {a} is further right than the {b}.",),
    "above": ("Is the {a} further up than the {b}?",),
    "below": ("Can you tell me if the {a} is under the {b}?",),
    "comparison": (
        "Do you see more {things} than {others}?",
        "Are there more {things} in the picture than {others}?",
    ),
    "subtract": (
        "How many objects remain if you take away the {things}?",
        "Remove the {things}: how many are left?",
    ),
    "add": (
        "Count the {things} and {others} in total.",
        "Tell me the total number of {things} and {others}.",
    ),
    "describe": (
        "Can you describe this image?",
        "Tell me what you see in this picture.",
        "What objects can you see?",
    ),
}
"""Wordings held out of training entirely, by kind: new sentences, made of words the trained
wordings use (a word the model never read is beyond a model trained from scratch)."""

PLACE_NAMES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("top left", "top left", "top-left", "upper left", "top left corner"), ("upper left corner",)),
    (("top middle", "top middle", "top center", "top", "top centre"), ("upper middle",)),
    (("top right", "top right", "top-right", "upper right", "top right corner"), ("upper right corner",)),
    (("middle left", "middle left", "left", "center left", "centre left"), ("left middle",)),
    (("center", "center", "centre", "middle", "very middle"), ("very centre",)),
    (("middle right", "middle right", "right", "center right", "centre right"), ("right middle",)),
    (
        ("bottom left", "bottom left", "bottom-left", "lower left", "bottom left corner"),
        ("lower left corner",),
    ),
    (("bottom middle", "bottom middle", "bottom center", "bottom", "bottom centre"), ("lower middle",)),
    (
        ("bottom right", "bottom right", "bottom-right", "lower right", "bottom right corner"),
        ("lower right corner",),
    ),
)
"""Each place's names: those trained on, and those held out (new pairs of trained words)."""

NOUNS = ("objects", "shapes", "objects", "shapes", "things", "items", "figures")
"""Words for "objects" where a question names no shape."""

WRAPPERS = ("{}", "{}", "{}", "{}", "{}", "{}", "Please: {}", "Hey, {}", "Quick question: {}", "{} Thanks!")
"""What a newcomer puts around a trained wording (none, mostly)."""


def phrase(spec: Spec, rng: random.Random, *, novel: bool = False) -> str:
    """``spec`` in words: a trained wording, or a held-out one when ``novel``.

    A trained wording is sometimes written in lower case or without its question mark.
    """
    kind = _template_kind(spec, rng)
    templates = (NOVEL if novel else TRAINING)[kind]
    noun = rng.choice(NOUNS)
    first = spec.first or Filter()
    fields = {
        "things": first.named(noun),
        "thing": first.named(noun[:-1], plural=False),
        "a_thing": with_article(first.named(noun[:-1], plural=False)),
        "others": (spec.second or Filter()).named(noun),
        "attribute": _attribute_word(spec.attribute, rng),
        "place": _place(spec.cell, rng, novel) if spec.cell is not None else "",
    }
    if spec.kind == "spatial":
        assert spec.first is not None and spec.second is not None  # a spatial spec names two objects
        fields["a"], fields["b"] = spec.first.words, spec.second.words
    text = rng.choice(templates).format(**fields)
    if novel:
        return text
    if rng.random() < 0.1:
        text = text[0].lower() + text[1:]
    if text.endswith("?") and rng.random() < 0.1:
        text = text[:-1]
    return rng.choice(WRAPPERS).format(text)


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


def with_article(words: str) -> str:
    """``words`` after "a" or "an": ``a red circle``, ``an object``."""
    return f"an {words}" if words[0] in "aeiou" else f"a {words}"
