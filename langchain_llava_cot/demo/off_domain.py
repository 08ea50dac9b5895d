"""Requests the demo model cannot answer, and the four stages it answers them with.

Small talk (:data:`SMALL_TALK`) asked without a picture, or a picture that is not one of
the drawings (:func:`off_domain_image`), gets :func:`off_domain_stages`: the model says
what it can read, in four stages.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Literal

from langchain_llava_cot.demo.scenes import IMAGE_SIZE
from langchain_llava_cot.stages import Stage

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["SMALL_TALK", "off_domain_image", "off_domain_stages"]

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
