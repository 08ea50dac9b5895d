"""The configuration of a demo model's training run: model sizes, data pool, optimizer.

:data:`DEFAULT_CONFIG` trains the bundled model from scratch
(``python -m langchain_llava_cot.demo.train --steps 3000 --out DIR``);
:data:`TOOLS_CONFIG` fine-tunes a trained one on tool use (``--tools --init DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_CONFIG", "TOOLS_CONFIG", "TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Sizes of the model and of the run."""

    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    vision_hidden_size: int = 96
    vision_layers: int = 3
    image_size: int = 48
    """Side of the pictures the tower reads (the 64 px drawings are resized to it)."""
    patch_size: int = 16
    """Side of a vision patch: 16 px at 48 px is one grid cell per patch, 9 image tokens."""
    vision_steps: int = 3_000
    """Stage 1: steps pretraining the vision tower on cell labels (0 skips it)."""
    vision_pictures: int = 20_000
    """Stage 1: drawings (and a tenth as many off-domain pictures) it trains on."""
    freeze_vision: bool = True
    """Stage 2 leaves the pretrained tower as it is."""
    caption_phase: float = 0.1
    """Share of stage 2's steps spent on summary+caption-only sequences first: it makes the
    language model learn to read the image tokens before anything else."""
    answers: int = 40_000
    """Answer sequences in the pool."""
    judge_pairs: int = 1_000
    """Judge pairs in the pool (each gives two sequences, one per order)."""
    verifier_rows: int = 6_000
    """Verifier sequences: one candidate stage, right or wrong, and the verdict."""
    off_domain: int = 1_500
    """Requests the model cannot answer (small talk, no picture, other pictures)."""
    tokens_per_batch: int = 8_000
    """Padded tokens per batch."""
    lr: float = 1.5e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    verdict_weight: float = 4.0
    """Loss weight of a verdict's deciding token (other reply tokens weigh 1)."""
    tool_questions: int = 1_200
    """Sum questions made into tool-use sequences (a call and its follow-up each)."""
    tool_others: int = 600
    """Other questions asked with the tools prompt and answered directly."""


DEFAULT_CONFIG = TrainConfig()
TOOLS_CONFIG = TrainConfig(
    vision_steps=0,
    caption_phase=0.0,
    answers=3_000,
    judge_pairs=300,
    verifier_rows=600,
    off_domain=300,
    tool_questions=1_200,
    tool_others=600,
    tokens_per_batch=3_000,
    lr=5e-4,
    warmup_steps=20,
)
"""A fine-tuning run on tool use (with some of everything else), from a trained model."""
