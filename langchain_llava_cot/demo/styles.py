"""How the free world's pictures are drawn: the styles trained on, and the styles held out.

:func:`training_style` draws the picture sizes and looks the demo model is trained on:
any size from 48 to 1,280 pixels a side, aspect ratios from 2:5 to 5:2 (wide and tall
pictures, as phones and screenshots make them), smooth or hard edges, sometimes an outline
in a darker shade of the shape's own colour.
:func:`novel_style` draws one look the model never sees in training (:data:`NOVEL_STYLES`),
so that accuracy on them measures how far its reading carries:

- ``black outline``: every shape outlined in black or dark grey;
- ``jpeg``: the picture saved as a JPEG of quality 30-70 (blocky, smeared edges);
- ``grain``: noise on every pixel, as in a photo of a drawing (standard deviation 6 to 14).

>>> import random
>>> novel_style(random.Random(0), "jpeg").jpeg_quality is not None
True
"""

from __future__ import annotations

import random

from langchain_llava_cot.demo.scenes import Style

__all__ = ["NOVEL_STYLES", "novel_style", "training_style"]

NOVEL_STYLES: tuple[str, ...] = ("black outline", "jpeg", "grain")
"""Looks held out of training entirely."""


def training_style(rng: random.Random) -> Style:
    """A picture size and look the model is trained on."""
    small, medium, large = rng.randint(48, 128), rng.randint(128, 480), rng.randint(480, 1280)
    side = rng.choice([small, medium, medium, large])
    aspect = rng.choice([1.0, rng.uniform(0.6, 1.67), rng.uniform(0.6, 1.67), rng.uniform(0.4, 2.5)])
    width, height = (side, round(side / aspect)) if aspect >= 1 else (round(side * aspect), side)
    shaded = rng.random() < 0.15
    return Style(
        width=max(width, 32),
        height=max(height, 32),
        antialias=rng.random() < 0.6,
        shaded_outline=shaded,
        outline_width=rng.uniform(0.008, 0.02) if shaded else 0.0,
    )


def novel_style(rng: random.Random, look: str | None = None) -> Style:
    """A picture in one of the looks held out of training (``look``, or one drawn from ``rng``)."""
    look = look or rng.choice(NOVEL_STYLES)
    base = training_style(rng)
    if look == "grain":
        return Style(base.width, base.height, base.antialias, grain=rng.uniform(6.0, 14.0))
    if look == "jpeg":
        return Style(base.width, base.height, base.antialias, jpeg_quality=rng.randint(30, 70))
    if look == "black outline":
        grey = rng.randint(0, 60)
        line = rng.uniform(0.008, 0.02)
        return Style(base.width, base.height, base.antialias, outline=(grey, grey, grey), outline_width=line)
    msg = f"Unknown style {look!r}: use one of {', '.join(NOVEL_STYLES)}."
    raise ValueError(msg)
