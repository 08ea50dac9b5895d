"""The scenes of the demo dataset: shapes drawn with PIL, in two worlds.

A scene holds 1 to 6 objects (4 colours x 3 shapes x 2 sizes). Where an object is, in
words, is the part of a 3x3 grid its centre falls in (``top left`` ... ``bottom right``).

- :func:`random_scene` draws the *classic* world the first demo model was trained on:
  64x64 pictures, one object per grid cell, each jittered a little off its cell's
  centre (some pairs pushed together until they touch), one canonical colour each, on a
  plain grey background.
- :func:`free_scene` draws the world a newcomer draws: shapes anywhere (two may share a
  part of the grid), sizes from a range, colours from a range of shades around each of
  the four, light backgrounds of any shade, pictures of any size and aspect ratio, with
  or without anti-aliasing or outlines (:class:`Style`).

Both draw from a seeded ``random.Random``, so the same seed always gives the same scene:

>>> import random
>>> scene = random_scene(random.Random("test:0"))
>>> scene == random_scene(random.Random("test:0"))
True
>>> scene.render().size
(64, 64)
>>> free = free_scene(random.Random(3), Style(width=300, height=200))
>>> free.render().size
(300, 200)
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import random
from dataclasses import dataclass, field, replace
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
    "Style",
    "caption_order",
    "cell_of",
    "free_scene",
    "random_scene",
    "random_shade",
]

IMAGE_SIZE = 64
"""Side of the classic world's pictures, in pixels."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 80, 215),
    "yellow": (235, 200, 35),
}
"""Each colour's classic shade."""
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.075, "large": 0.13}
"""Radius of each size in the classic world, as a fraction of the picture's side."""
FREE_SIZES: dict[str, tuple[float, float]] = {"small": (0.055, 0.08), "large": (0.11, 0.15)}
"""Range of radii of each size in the free world, as a fraction of the picture's shorter side."""
POSITIONS: tuple[str, ...] = (
    "top left", "top middle", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom middle", "bottom right",
)  # fmt: skip
"""Name of each part of the 3x3 grid, row by row."""

_HUES: dict[str, tuple[float, float]] = {
    "red": (-0.03, 0.025),
    "yellow": (0.13, 0.17),
    "green": (0.25, 0.45),
    "blue": (0.55, 0.7),
}
"""The range of hues (0-1) each colour's shades are drawn from."""
_VALUES: dict[str, tuple[float, float]] = {
    "red": (0.55, 1.0),
    "yellow": (0.78, 1.0),
    "green": (0.4, 0.95),
    "blue": (0.45, 1.0),
}
"""The range of brightness each colour's shades are drawn from."""
_BOUNDARY_MARGIN = 0.04
"""Free scenes keep object centres this far (a fraction of the side) from the grid's lines,
where a place name would be a guess."""


@dataclass(frozen=True)
class Shape:
    """One object of a scene.

    Two shapes are equal when a caption would say the same of them (shape, colour, size
    and place); where exactly they are drawn, and in which shade, is left out.
    """

    shape: str
    colour: str
    size: str
    cell: int
    """Part of the 3x3 grid the centre falls in, 0-8, row by row."""
    dx: float = field(default=0.0, compare=False)
    """Offset of the centre from the cell's centre, as a fraction of the picture's width."""
    dy: float = field(default=0.0, compare=False)
    """Offset of the centre from the cell's centre, as a fraction of the picture's height."""
    radius: float | None = field(default=None, compare=False)
    """Radius as a fraction of the picture's shorter side (None: the classic :data:`SIZES`)."""
    fill: tuple[int, int, int] | None = field(default=None, compare=False)
    """The shade it is drawn in (None: the classic :data:`COLOURS`)."""
    pointing: str = field(default="up", compare=False)
    """Where a triangle's apex points: ``up`` or ``down``."""

    @property
    def row(self) -> int:
        """Grid row, 0 at the top."""
        return self.cell // 3

    @property
    def col(self) -> int:
        """Grid column, 0 at the left."""
        return self.cell % 3

    @property
    def x(self) -> float:
        """The centre's distance from the left edge, as a fraction of the width."""
        return (self.col + 0.5) / 3 + self.dx

    @property
    def y(self) -> float:
        """The centre's distance from the top edge, as a fraction of the height."""
        return (self.row + 0.5) / 3 + self.dy

    @property
    def position(self) -> str:
        """The cell's name, e.g. ``top left``."""
        return POSITIONS[self.cell]

    @property
    def name(self) -> str:
        """``large red circle``."""
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Style:
    """How a scene is drawn: the picture's size and the look of its shapes."""

    width: int = IMAGE_SIZE
    height: int = IMAGE_SIZE
    antialias: bool = True
    """Draw at 4x and scale down (smooth edges), or draw at size (hard edges)."""
    outline: tuple[int, int, int] | None = None
    """Colour of a line around each shape (None: no outline, unless ``shaded_outline``)."""
    shaded_outline: bool = False
    """Outline each shape in a darker shade of its own colour."""
    outline_width: float = 0.0
    """The outline's width, as a fraction of the picture's shorter side."""
    jpeg_quality: int | None = None
    """Save as JPEG at this quality (None: PNG)."""
    grain: float = 0.0
    """Standard deviation of the noise added to every pixel (0 to 255; 0: none), as in a photo."""


@dataclass(frozen=True)
class Scene:
    """Objects on a plain background."""

    objects: tuple[Shape, ...]
    background: tuple[int, int, int] = (200, 200, 200)
    style: Style = Style()

    @cached_property
    def key(self) -> str:
        """Hash of what a caption says of the scene; decides the split."""
        text = ";".join(
            f"{o.cell}{o.size}{o.colour}{o.shape}" for o in sorted(self.objects, key=caption_order)
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def render(self) -> PILImage:
        """Draw the scene as an RGB PIL image of the style's size (as its file decodes)."""
        from PIL import Image

        if self.style.jpeg_quality is not None:
            return Image.open(io.BytesIO(self.encode())).convert("RGB")
        return self._draw()

    def encode(self) -> bytes:
        """The scene as image file bytes: PNG, or JPEG when the style says so."""
        buffer = io.BytesIO()
        if self.style.jpeg_quality is None:
            self._draw().save(buffer, format="PNG")
        else:
            self._draw().save(buffer, format="JPEG", quality=self.style.jpeg_quality)
        return buffer.getvalue()

    def png(self) -> bytes:
        """The rendered scene as PNG bytes."""
        buffer = io.BytesIO()
        self.render().save(buffer, format="PNG")
        return buffer.getvalue()

    def _draw(self) -> PILImage:
        from PIL import Image, ImageDraw

        style = self.style
        scale = _supersampling(style)
        width, height = style.width * scale, style.height * scale
        image = Image.new("RGB", (width, height), self.background)
        draw = ImageDraw.Draw(image)
        short = min(width, height)
        line = max(1, round(style.outline_width * short))
        for obj in self.objects:
            cx, cy = obj.x * width, obj.y * height
            if obj.radius is None:  # classic: radius and inset from the (square) picture's side
                r = SIZES[obj.size] * short
            else:
                r = obj.radius * short
            fill = obj.fill or COLOURS[obj.colour]
            edge = _outline(style, fill)
            stroke = line if edge else 0
            if obj.shape == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=edge, width=stroke)
            elif obj.shape == "square":
                half = r * 0.88
                draw.rectangle(
                    [cx - half, cy - half, cx + half, cy + half], fill=fill, outline=edge, width=stroke
                )
            else:
                apex, base = (cy - r, cy + r) if obj.pointing == "up" else (cy + r, cy - r)
                points = [(cx, apex), (cx - r, base), (cx + r, base)]
                draw.polygon(points, fill=fill, outline=edge, width=stroke)
        if scale != 1:
            image = image.resize((style.width, style.height), Image.Resampling.LANCZOS)
        return _grained(image, style.grain, seed=self.key) if style.grain else image


def _grained(image: PILImage, grain: float, seed: str) -> PILImage:
    """``image`` with Gaussian noise of standard deviation ``grain``, the same for the same ``seed``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(int(seed[:16], 16))
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, grain, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _supersampling(style: Style) -> int:
    """How many times larger to draw a picture before scaling it down to its size.

    Smooth edges need 4x on a small picture; a larger one (over 128 px) is smoothed by
    the scaling down to what the model reads anyway, so it is drawn at its size.
    """
    return 4 if style.antialias and max(style.width, style.height) <= 128 else 1


def _outline(style: Style, fill: tuple[int, int, int]) -> tuple[int, ...] | None:
    """The colour of the line around a shape drawn in ``fill`` (None when the style has no outline)."""
    if style.shaded_outline:
        return tuple(c * 3 // 5 for c in fill)
    return style.outline


def cell_of(obj: Shape) -> int:
    """The object's grid cell."""
    return obj.cell


def caption_order(obj: Shape) -> tuple[int, float, float]:
    """The sort key that puts objects in caption order: by cell, then left to right."""
    return obj.cell, obj.dx, obj.dy


def random_scene(rng: random.Random) -> Scene:
    """A classic scene: 1 to 6 objects in random cells, drawn from ``rng``; some have a touching pair."""
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


def random_shade(rng: random.Random, colour: str) -> tuple[int, int, int]:
    """A shade of ``colour``: hue, saturation and brightness drawn from the colour's range."""
    low, high = _HUES[colour]
    hue = rng.uniform(low, high) % 1.0
    value = rng.uniform(*_VALUES[colour])
    saturation = rng.uniform(0.6, 1.0)
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def light_background(rng: random.Random) -> tuple[int, int, int]:
    """A light background: white, a light grey, or a faint tint of any hue."""
    kind = rng.random()
    if kind < 0.3:
        return (255, 255, 255)
    if kind < 0.6:
        grey = rng.randint(190, 250)
        return (grey, grey, grey)
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.03, 0.14), rng.uniform(0.82, 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def free_scene(rng: random.Random, style: Style, background: tuple[int, int, int] | None = None) -> Scene:
    """A scene drawn freely: 1 to 6 shapes anywhere on a ``style`` picture, none overlapping.

    Sizes, shades, triangles' direction and places are drawn from ``rng``. Centres stay
    clear of the grid's lines (so every place name is clear), and no two centres fall in
    the same sixth of the picture in both directions (the vision tower's patches); a shape
    may cross into a neighbouring part of the grid, and two may share one.
    """
    count = rng.choices(range(1, 7), weights=(1, 2, 3, 3, 3, 3))[0]
    placed: list[Shape] = []
    while not placed:
        placed = _place_shapes(rng, style, count)
    return Scene(
        objects=tuple(sorted(placed, key=caption_order)),
        background=background or light_background(rng),
        style=style,
    )


def _place_shapes(rng: random.Random, style: Style, count: int) -> list[Shape]:
    """Up to ``count`` shapes, each placed where it overlaps none placed before it."""
    short = min(style.width, style.height)
    placed: list[Shape] = []
    for _ in range(count):
        for _try in range(60):
            shape = _free_shape(rng, style, short)
            if shape is not None and all(_apart(shape, other, style) for other in placed):
                placed.append(shape)
                break
    return placed


def _free_shape(rng: random.Random, style: Style, short: int) -> Shape | None:
    """One shape at a random place fully inside the picture, or None if its centre is unclear."""
    size = rng.choice(list(FREE_SIZES))
    radius = rng.uniform(*FREE_SIZES[size])
    rx, ry = radius * short / style.width, radius * short / style.height
    x, y = rng.uniform(rx, 1 - rx), rng.uniform(ry, 1 - ry)
    if _near_a_line(x) or _near_a_line(y):
        return None
    col, row = min(int(x * 3), 2), min(int(y * 3), 2)
    colour = rng.choice(list(COLOURS))
    return Shape(
        shape=rng.choice(SHAPES),
        colour=colour,
        size=size,
        cell=row * 3 + col,
        dx=x - (col + 0.5) / 3,
        dy=y - (row + 0.5) / 3,
        radius=radius,
        fill=random_shade(rng, colour),
        pointing="down" if rng.random() < 0.15 else "up",
    )


def _near_a_line(t: float) -> bool:
    return any(abs(t - line) < _BOUNDARY_MARGIN for line in (1 / 3, 2 / 3))


def _apart(a: Shape, b: Shape, style: Style) -> bool:
    """Whether two shapes neither overlap nor have centres in the same patch of a 6x6 grid."""
    if (int(a.x * 6), int(a.y * 6)) == (int(b.x * 6), int(b.y * 6)):
        return False
    short = min(style.width, style.height)
    distance = math.hypot((a.x - b.x) * style.width, (a.y - b.y) * style.height)
    assert a.radius is not None and b.radius is not None  # free shapes carry their radius
    return distance > (a.radius + b.radius) * short * 1.05 + 1
