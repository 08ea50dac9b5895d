"""Stage 1 of the demo model's training: pretrain its vision tower on the scenes' own labels.

LLaVA starts from a pretrained CLIP and only then trains the projector and the language
model. The demo model does the same on its own data: the tower reads a picture (resized
to 96 px, whatever its size and shape) in 16 px patches, a 6x6 grid of image tokens, two
by two to each part of the 3x3 grid places are named by. Two throwaway heads on the
patches' features (the features the projector reads) learn what the caption needs:

- per part of the grid (its four patches together): which kinds of object (2 sizes x 4
  colours x 3 shapes) have their centre there, one or two of each, or that the picture
  is not a drawing (:func:`region_targets`) -- what the caption says;
- per patch: the object that covers the patch's centre, if any (:func:`coverage_labels`),
  which makes the tower see colour and shape where they are.

Trained through a 1.6M-parameter language model alone, an earlier tower learned less
about the scenes than a random one holds; pretrained this way it reads the parts of the
grid within CPU-minutes (see ``training.json``'s ``vision`` record).

>>> from langchain_llava_cot.demo.dataset import get_example
>>> example = get_example("test", 0)
>>> len(coverage_labels(example.scene)), len(region_targets(example.scene)), len(region_targets(None)[0])
(36, 9, 49)
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from langchain_llava_cot.demo.scenes import COLOURS, SHAPES, SIZES

if TYPE_CHECKING:
    from langchain_llava_cot.demo.scenes import Scene, Shape

__all__ = [
    "CLASSES",
    "GRID",
    "OFF_DOMAIN_CLASS",
    "REGION_OUTPUTS",
    "coverage_labels",
    "pretrain_vision_tower",
    "region_targets",
]

logger = logging.getLogger(__name__)

_KINDS = [(size, colour, shape) for size in SIZES for colour in COLOURS for shape in SHAPES]
OFF_DOMAIN_CLASS = len(_KINDS) + 1
"""The class of every patch of a picture that is not a drawing of shapes."""
CLASSES = OFF_DOMAIN_CLASS + 1
"""Number of patch classes: nothing, each kind of object, off-domain."""
REGION_OUTPUTS = 2 * len(_KINDS) + 1
"""Per part of the grid: at least one of each kind, at least two of each kind, off-domain."""
GRID = 6
"""Patches across (and down) the picture the tower reads."""


def region_targets(scene: Scene | None) -> list[list[float]]:
    """For each part of the 3x3 grid, row by row: the kinds with one, two centres there (None: off-domain)."""
    if scene is None:
        return [[0.0] * (REGION_OUTPUTS - 1) + [1.0] for _ in range(9)]
    targets = [[0.0] * REGION_OUTPUTS for _ in range(9)]
    for obj in scene.objects:
        kind = _KINDS.index((obj.size, obj.colour, obj.shape))
        row = targets[obj.cell]
        row[len(_KINDS) + kind if row[kind] else kind] = 1.0
    return targets


def coverage_labels(scene: Scene | None, grid: int = GRID) -> list[int]:
    """The class of the object covering each patch's centre, row by row (0: none; None: off-domain)."""
    if scene is None:
        return [OFF_DOMAIN_CLASS] * grid * grid
    labels = [0] * grid * grid
    for row in range(grid):
        for col in range(grid):
            x, y = (col + 0.5) / grid, (row + 0.5) / grid
            for obj in scene.objects:
                if _covers(obj, x, y, scene):
                    labels[row * grid + col] = 1 + _KINDS.index((obj.size, obj.colour, obj.shape))
    return labels


def _covers(obj: Shape, x: float, y: float, scene: Scene) -> bool:
    """Whether ``obj`` covers the point ``(x, y)`` (fractions of the picture's width and height)."""
    width, height = scene.style.width, scene.style.height
    short = min(width, height)
    r = (obj.radius if obj.radius is not None else SIZES[obj.size]) * short
    dx, dy = (x - obj.x) * width, (y - obj.y) * height
    if obj.shape == "circle":
        return math.hypot(dx, dy) <= r
    if obj.shape == "square":
        return max(abs(dx), abs(dy)) <= 0.88 * r
    depth = (dy + r) if obj.pointing == "up" else (r - dy)  # distance below the apex
    return 0 <= depth <= 2 * r and abs(dx) <= depth / 2


def pretrain_vision_tower(
    tower: Any,
    pixels: Any,
    scenes: list[Scene | None],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    held_out: int = 500,
    seed: int = 0,
    tests: dict[str, tuple[Any, list[Scene | None]]] | None = None,
) -> dict[str, Any]:
    """Train ``tower`` (a ``CLIPVisionModel``) with the two heads; return a record.

    Args:
        tower: The vision tower, trained in place (the heads are thrown away).
        pixels: Processed pictures, ``(n, 3, H, W)``.
        scenes: What each picture shows (None: a picture that is not a drawing).
        steps: Optimizer steps (AdamW, cosine decay).
        batch_size: Pictures per step.
        lr: Peak learning rate.
        held_out: The last this many pictures are kept out of training and scored.
        seed: Seed of the heads and of the batch order.
        tests: More held-out sets to score, by name: their pixels and scenes.

    Returns:
        Steps, seconds, the final loss, and the share of held-out parts of the grid and
        whole pictures the region head reads right (every kind present or absent as it is).
    """
    import torch

    if not 0 < held_out < len(pixels):
        msg = f"held_out ({held_out}) must leave pictures to train on and be at least 1 (got {len(pixels)})."
        raise ValueError(msg)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    heads = _Heads(tower.config.hidden_size)
    coverage, regions = _targets(scenes)
    train = len(pixels) - held_out
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=lr, weight_decay=0.01)
    tower.train()
    started, smoothed = time.perf_counter(), None
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        rows = torch.randint(train, (batch_size,), generator=generator)
        patch_logits, region_logits = heads(_patch_features(tower, pixels[rows].float()))
        loss = (
            torch.nn.functional.cross_entropy(patch_logits.reshape(-1, CLASSES), coverage[rows].reshape(-1))
            + torch.nn.functional.binary_cross_entropy_with_logits(region_logits, regions[rows])
            * REGION_OUTPUTS
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
        if (step + 1) % 100 == 0:
            logger.info("vision step %d loss %.4f %.0f s", step + 1, smoothed, time.perf_counter() - started)
    tower.eval()
    parts, pictures = _accuracy(tower, heads, pixels[train:], regions[train:])
    record: dict[str, Any] = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "pictures": train,
        "seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(smoothed or float("nan"), 4),
        "held_out_pictures": held_out,
        "held_out_parts_right": round(parts, 4),
        "held_out_pictures_right": round(pictures, 4),
    }
    for name, (test_pixels, test_scenes) in (tests or {}).items():
        parts, pictures = _accuracy(tower, heads, test_pixels, _targets(test_scenes)[1])
        record[name] = {"parts_right": round(parts, 4), "pictures_right": round(pictures, 4)}
    logger.info("Vision tower: %s", record)
    return record


def _targets(scenes: list[Scene | None]) -> tuple[Any, Any]:
    import torch

    coverage = torch.tensor([coverage_labels(scene) for scene in scenes])
    regions = torch.tensor([region_targets(scene) for scene in scenes])
    return coverage, regions


def _Heads(hidden: int) -> Any:  # noqa: N802 (a factory: torch is imported only here)
    """The two throwaway heads: per patch (coverage) and per part of the grid (its 4 patches)."""
    import torch

    class Heads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = torch.nn.Linear(hidden, CLASSES)
            self.region = torch.nn.Linear(4 * hidden, REGION_OUTPUTS)

        def forward(self, features: Any) -> tuple[Any, Any]:
            batch = features.shape[0]
            parts = features.reshape(batch, 3, 2, 3, 2, hidden).permute(0, 1, 3, 2, 4, 5)
            return self.patch(features), self.region(parts.reshape(batch, 9, 4 * hidden))

    return Heads()


def _patch_features(tower: Any, pixels: Any) -> Any:
    """What the LLaVA projector reads: the last layer's patch states, without the CLS token."""
    return tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]


def _accuracy(tower: Any, heads: Any, pixels: Any, regions: Any) -> tuple[float, float]:
    import torch

    with torch.no_grad():
        predicted = heads(_patch_features(tower, pixels.float()))[1] > 0
    right = (predicted == (regions > 0.5)).all(-1)
    return right.float().mean().item(), right.all(-1).float().mean().item()
