"""Requests the demo model cannot answer, and the four stages it answers them with.

Small talk (:data:`SMALL_TALK`), asked without a picture, with a drawing of shapes, or
with a picture that is not a drawing (:func:`off_domain_image`), and a shapes question
without its picture, get :func:`off_domain_stages`: the model says what it can read, in
four stages (with a drawing, its caption is the drawing's). :data:`NOVEL_SMALL_TALK` is
held out of training, to measure how far the refusal carries.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Literal

from langchain_llava_cot.demo.phrasings import with_article
from langchain_llava_cot.demo.scenes import IMAGE_SIZE
from langchain_llava_cot.stages import Stage

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "NOVEL_SMALL_TALK",
    "PICTURE_TALK",
    "SMALL_TALK",
    "everyday_request",
    "off_domain_image",
    "off_domain_stages",
]

SMALL_TALK: tuple[str, ...] = (
    "Hello", "Hello!", "hello", "Hi", "Hi!", "hi there", "Hey", "Good morning", "Hello, how are you?",
    "How are you?", "Who are you?", "What can you do?", "What are you?", "Help", "Thanks!",
    "Thank you", "Tell me a joke.", "What is the capital of France?", "What is 2 + 2?",
    "What is the weather like today?", "Write a poem about the sea.", "Translate hello to French.",
    "What's your name?", "Can you help me?", "Explain quantum physics.", "Summarize the text above.",
    "What day is it?", "test", "Respond with a short greeting.", "What is the meaning of life?",
    "Say hello.", "Good evening!", "Who made you?", "Is this picture nice?", "Do you like this?",
    "What time is it?", "Write a story about a dragon.", "Who won the world cup?", "Sing me a song.",
    "How old are you?", "What should I cook tonight?", "Recommend a good book.", "ok", "yes", "no",
    "What language do you speak?", "Can you read text?", "Where is Paris?", "Make it shorter.",
    "Why is the sky blue?", "Tell me about yourself.", "What is the square root of 16?",
    "Who painted this?", "Is it going to rain?", "Write Python code to sort a list.",
)  # fmt: skip
"""Requests the shapes model cannot answer (trained on), with or without a picture."""

NOVEL_SMALL_TALK: tuple[str, ...] = (
    "Good afternoon!", "Howdy", "What's up?", "Nice to meet you.", "Can you tell me a fun fact?",
    "What is the capital of Japan?", "How do I bake bread?", "Who is the president of France?",
    "Write a haiku about autumn.", "What's the best programming language?", "Please summarize this article.",
    "How far away is the moon?", "Is this a cat or a dog?", "What year is it?", "Can you speak Spanish?",
    "Tell me something interesting.", "What do you think of this?", "Give me three tips for sleeping well.",
    "How do airplanes fly?", "Bonjour",
)  # fmt: skip
"""Small talk held out of training: the refusal measured on requests never seen."""

_EVERYDAY_TEMPLATES: tuple[str, ...] = (
    "What is {a}?", "Tell me about {many}.", "How do I {verb} {a}?", "Can you {verb} {a}?",
    "Write {a} about {many}.", "Why do {many} {verb}?", "Who invented the {one}?", "Where can I buy {a}?",
    "Give me two ideas for {a}.", "Is {a} better than {b}?", "What's your favourite {one}?",
    "Help me {verb} my {one}.", "Please {verb} this {one}.", "How much does {a} cost?",
    "When was the {one} invented?", "Can you tell me about {many}?", "What do you know about {many}?",
    "I need {a}.", "Do you like {many}?", "How does {a} work?", "Can you help me {verb} {a}?",
    "What should I {verb} today?", "Tell me how to {verb} {a}.", "Explain {many} to me.",
)  # fmt: skip
_EVERYDAY_NOUNS: tuple[str, ...] = (
    "apple", "banana", "car", "train", "city", "song", "movie", "book", "river", "mountain", "phone",
    "computer", "garden", "recipe", "cake", "coffee", "house", "dog", "horse", "bird", "flower", "tree",
    "letter", "email", "password", "holiday", "school", "doctor", "game", "football", "piano", "guitar",
    "ocean", "island", "country", "language", "planet", "star", "rocket", "bicycle", "shoe", "shirt",
    "kitchen", "window", "bridge", "robot", "camera", "battery", "market", "job", "friend", "birthday",
)  # fmt: skip
_EVERYDAY_VERBS: tuple[str, ...] = (
    "make", "fix", "write", "cook", "find", "clean", "build", "learn", "paint", "sell", "plan", "draw",
    "grow", "visit", "translate", "explain", "play", "buy", "open", "read",
)  # fmt: skip


def everyday_request(rng: random.Random) -> str:
    """A request about anything but the picture, from templates and everyday words.

    Trained on beside :data:`SMALL_TALK`, so that the refusal turns on what a request asks
    about rather than on its first words ("Can you tell me ..." begins questions too);
    :data:`NOVEL_SMALL_TALK` is never one of them.

    >>> everyday_request(random.Random(3))
    'Write a coffee about stars.'
    """
    noun, other = rng.sample(_EVERYDAY_NOUNS, 2)
    fields = {
        "one": noun,
        "a": with_article(noun),
        "b": with_article(other),
        "many": other + "s",
        "verb": rng.choice(_EVERYDAY_VERBS),
    }
    return rng.choice(_EVERYDAY_TEMPLATES).format(**fields)


PICTURE_TALK: tuple[str, ...] = ("Describe this.", "What is in the picture?", "What do you see?")
"""Requests about a picture: refused without one or with a picture that is not a drawing
(with a drawing they are questions the model answers)."""


def off_domain_stages(picture: Literal["none", "other", "drawing"], caption: str = "") -> dict[Stage, str]:
    """The four stages the demo model writes when it is not asked about a drawing of shapes.

    ``picture`` says what came with the request: no picture at all, a picture that is not
    one of the drawings (:func:`off_domain_image`), or a drawing (whose ``caption`` the
    caption stage gives, as for any question about it).
    """
    if picture == "drawing":
        summary = "The request is not a question about the shapes in the picture, which is all I can answer."
        seen = caption
    else:
        summary = "The request is not a question about a drawing of shapes, which is all I can read."
        seen = "No picture is given." if picture == "none" else "The picture is not a drawing of shapes."
    if picture == "drawing":
        conclusion = (
            "I can only answer questions about the shapes in the picture, "
            "such as how many there are, their colours, or where they are."
        )
    else:
        conclusion = (
            "I can only answer questions about drawings of circles, squares and triangles. "
            "Send one with a question."
        )
    return {
        Stage.SUMMARY: summary,
        Stage.CAPTION: seen,
        Stage.REASONING: (
            "I answer questions about drawings of up to six circles, squares and triangles "
            "in red, green, blue and yellow."
        ),
        Stage.CONCLUSION: conclusion,
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
