"""The scenes of the demo dataset: shapes on a 3x3 grid, drawn with PIL.

A scene holds 1 to 6 objects (4 colours x 3 shapes x 2 sizes), one per grid cell, each
jittered a little off its cell's centre; in 35% of the scenes with two or more objects
one pair of neighbours (if there is one) is pushed together until they touch.
:func:`random_scene` draws one from a seeded ``random.Random``, so the same seed always
gives the same scene:

>>> import random
>>> scene = random_scene(random.Random("test:0"))
>>> scene == random_scene(random.Random("test:0"))
True
>>> scene.render().size
(64, 64)
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "COLOURS",
    "IMAGE_SIZE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "Scene",
    "Shape",
    "cell_of",
    "random_scene",
]

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
        text = ";".join(f"{o.cell}{o.size}{o.colour}{o.shape}" for o in sorted(self.objects, key=cell_of))
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


def cell_of(obj: Shape) -> int:
    """The object's grid cell: the sort key that puts objects in caption order."""
    return obj.cell


def random_scene(rng: random.Random) -> Scene:
    """A scene of 1 to 6 objects in random cells, drawn from ``rng``; some have a touching pair."""
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
