"""Stage 1 of the demo model's training: pretrain its vision tower on the scenes' own labels.

LLaVA starts from a pretrained CLIP and only then trains the projector and the language
model. The demo model does the same on its own data: the tower reads a picture as one
patch per grid cell (48 px pictures, 16 px patches: 9 image tokens), and a throwaway
linear head on each patch's features (the features the projector reads) names what
that cell holds:

- class 0: an empty cell;
- classes 1-24: one of the 2 sizes x 4 colours x 3 shapes;
- class 25: any cell of a picture that is not a drawing
  (:func:`~langchain_llava_cot.demo.off_domain.off_domain_image`).

Trained through a 1.6M-parameter language model alone, the tower learned less about the
scenes than a random one holds; pretrained this way it reads nearly every cell right
within a few CPU-minutes (see ``training.json``'s ``vision`` record).

>>> from langchain_llava_cot.demo.dataset import get_example
>>> labels = cell_labels(get_example("test", 0).scene)
>>> len(labels), min(labels) >= 0, max(labels) < CLASSES
(9, True, True)
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from langchain_llava_cot.demo.scenes import COLOURS, SHAPES, SIZES

if TYPE_CHECKING:
    from langchain_llava_cot.demo.scenes import Scene

__all__ = ["CLASSES", "OFF_DOMAIN_CLASS", "cell_labels", "pretrain_vision_tower"]

logger = logging.getLogger(__name__)

_KINDS = [(size, colour, shape) for size in SIZES for colour in COLOURS for shape in SHAPES]
OFF_DOMAIN_CLASS = len(_KINDS) + 1
"""The class of every cell of a picture that is not a drawing of shapes."""
CLASSES = OFF_DOMAIN_CLASS + 1
"""Number of cell classes: empty, each kind of object, off-domain."""


def cell_labels(scene: Scene | None) -> list[int]:
    """The class of each of the 9 grid cells, row by row; None means an off-domain picture."""
    if scene is None:
        return [OFF_DOMAIN_CLASS] * 9
    labels = [0] * 9
    for obj in scene.objects:
        labels[obj.cell] = 1 + _KINDS.index((obj.size, obj.colour, obj.shape))
    return labels


def pretrain_vision_tower(
    tower: Any,
    pixels: Any,
    labels: Any,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    held_out: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``tower`` (a ``CLIPVisionModel``) with a per-cell linear head; return a record.

    Args:
        tower: The vision tower, trained in place (the head is thrown away).
        pixels: Processed pictures, ``(n, 3, H, W)``, with one patch per grid cell.
        labels: Their cell classes, ``(n, 9)`` (see :func:`cell_labels`).
        steps: Optimizer steps (AdamW, cosine decay).
        batch_size: Pictures per step.
        lr: Peak learning rate.
        held_out: The last this many pictures are kept out of training and scored.
        seed: Seed of the head and of the batch order.

    Returns:
        Steps, seconds, the final loss, and the share of held-out cells and whole
        pictures the head reads right.
    """
    import torch

    if not 0 < held_out < len(pixels):
        msg = f"held_out ({held_out}) must leave pictures to train on and be at least 1 (got {len(pixels)})."
        raise ValueError(msg)
    generator = torch.Generator().manual_seed(seed)
    hidden = tower.config.hidden_size
    head = torch.nn.Linear(hidden, CLASSES)
    train_pixels, train_labels = pixels[:-held_out], labels[:-held_out]
    parameters = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    tower.train()
    started, smoothed = time.perf_counter(), None
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        rows = torch.randint(len(train_pixels), (batch_size,), generator=generator)
        logits = head(_cell_features(tower, train_pixels[rows]))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, CLASSES), train_labels[rows].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
        if (step + 1) % 100 == 0:
            logger.info("vision step %d loss %.4f %.0f s", step + 1, smoothed, time.perf_counter() - started)
    tower.eval()
    cells, scenes = _accuracy(tower, head, pixels[-held_out:], labels[-held_out:])
    record = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "pictures": len(train_pixels),
        "seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(smoothed or float("nan"), 4),
        "held_out_pictures": held_out,
        "held_out_cells_right": round(cells, 4),
        "held_out_pictures_right": round(scenes, 4),
    }
    logger.info("Vision tower: %s", record)
    return record


def _cell_features(tower: Any, pixels: Any) -> Any:
    """What the LLaVA projector reads: the last layer's patch states, without the CLS token."""
    return tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]


def _accuracy(tower: Any, head: Any, pixels: Any, labels: Any) -> tuple[float, float]:
    import torch

    with torch.no_grad():
        predicted = head(_cell_features(tower, pixels)).argmax(-1)
    right = predicted == labels
    return right.float().mean().item(), right.all(-1).float().mean().item()
