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
    corpus_examples: int = 3_000
    """Training examples whose text (questions, answers, prompts) the tokenizer is trained on."""
    hidden_size: int = 128
    num_layers: int = 5
    num_heads: int = 4
    vision_hidden_size: int = 96
    vision_layers: int = 3
    image_size: int = 96
    """Side of the pictures the tower reads (every picture is resized to it, whatever its shape)."""
    patch_size: int = 16
    """Side of a vision patch: 16 px at 96 px is a 6x6 grid of patches, 36 image tokens."""
    vision_steps: int = 5_000
    """Stage 1: steps pretraining the vision tower (0 skips it)."""
    vision_batch: int = 128
    """Stage 1: pictures per step."""
    vision_lr: float = 2e-3
    """Stage 1: peak learning rate."""
    vision_pictures: int = 40_000
    """Stage 1: drawings (and a tenth as many off-domain pictures) it trains on."""
    vision_checks: int = 300
    """Stage 1: validation pictures of each world its record scores the tower on."""
    classic_share: float = 0.15
    """Share of the drawings (and of the answers) from the classic world; the rest are free."""
    freeze_vision: bool = True
    """Stage 2 leaves the pretrained tower as it is."""
    caption_phase: float = 0.1
    """Share of stage 2's steps spent on summary+caption-only sequences first: it makes the
    language model learn to read the image tokens before anything else."""
    answers: int = 50_000
    """Answer sequences in the pool."""
    judge_pairs: int = 1_200
    """Judge pairs in the pool (each gives two sequences, one per order)."""
    verifier_rows: int = 6_000
    """Verifier sequences: one candidate stage, right or wrong, and the verdict."""
    off_domain: int = 3_000
    """Requests the model cannot answer (small talk with or without a picture, questions without one)."""
    everyday_share: float = 0.0
    """The share of that small talk drawn from everyday requests (templates and everyday words)."""
    tokens_per_batch: int = 8_000
    """Padded tokens per batch."""
    lr: float = 1.5e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    verdict_weight: float = 4.0
    """Loss weight of a verdict's deciding token (other reply tokens weigh 1)."""
    tool_questions: int = 1_200
    """Sum questions made into tool-use sequences (a call and its follow-up each)."""
    tool_others: int = 1_500
    """Other questions asked with tools they do not need, and answered directly."""
    structured: int = 3_000
    """Questions answered through a forced schema (structured output)."""


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
    structured=1_000,
    tokens_per_batch=3_000,
    lr=5e-4,
    warmup_steps=20,
)
"""A fine-tuning run on tool use (with some of everything else), from a trained model."""
REFUSALS_CONFIG = TrainConfig(
    vision_steps=0,
    caption_phase=0.0,
    answers=20_000,
    judge_pairs=600,
    verifier_rows=2_000,
    off_domain=8_000,
    everyday_share=0.6,
    tool_questions=500,
    tool_others=600,
    structured=1_200,
    lr=1e-3,
    warmup_steps=20,
)
"""A fine-tuning run on what the model cannot answer: more small talk, most of it everyday
requests, so that the refusal turns on what a request asks about (with some of everything else)."""
