"""Train the bundled demo model: a tiny LLaVA that answers shapes questions in four stages.

LLaVA's own recipe, in two stages:

1. **Vision.** The CLIP vision tower is pretrained alone on the scenes' own labels
   (:mod:`langchain_llava_cot.demo.vision`): pictures resized to 96 px, read in 16 px
   patches (6x6), a throwaway linear head naming the object whose centre is in each patch.
2. **Language.** The projector and the language model learn four-stage answers with the
   tower frozen; the first ``caption_phase`` of the steps see summary+caption-only
   answers, which makes the model learn to read its 36 image tokens first.

Data flow of stage 2:

- :mod:`langchain_llava_cot.demo.dataset` gives scenes, questions and four-stage answers
  (counting reasoning walks the caption object by object with a running count), mostly
  from the free world a newcomer draws and asks in, some from the classic one;
- :func:`~langchain_llava_cot.demo.sequences.build_examples` turns them into training
  sequences laid out exactly as the engine prompts the model, each with a per-token loss
  weight that is zero outside the assistant's reply: answers, verifier and pairwise
  judge verdicts, off-domain requests, tool use and structured output (see
  :mod:`langchain_llava_cot.demo.sequences`);
- :func:`train_demo` builds the model with
  :func:`~langchain_llava_cot.model_builders.build_tiny_vlm` (its tokenizer is trained
  on the dataset's text, with the stage tags as single tokens), runs both stages with
  AdamW for a step budget (sizes in :class:`~langchain_llava_cot.demo.train_config.TrainConfig`),
  and saves it with ``save_pretrained`` (safetensors) and a ``training.json`` that
  records each stage (steps, tokens, seconds, phases).

The bundled model is exactly this, on one torch thread (``training.json`` records the
steps, tokens and minutes)::

    python -m langchain_llava_cot.demo.train --steps 4500 --out DIR

``--init DIR`` goes on training a saved model (stage 1 is skipped).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from langchain_llava_cot.demo.dataset import examples
from langchain_llava_cot.demo.encoding import Pictures, TrainingSequence, request
from langchain_llava_cot.demo.off_domain import PICTURE_TALK, SMALL_TALK, off_domain_image, off_domain_stages
from langchain_llava_cot.demo.sequences import (
    JUDGE_STAGES,
    build_examples,
    caption_sequences,
    check_layout,
    judge_pair,
    training_pool,
)
from langchain_llava_cot.demo.tool_rows import add_tool_prompt, structured_call
from langchain_llava_cot.demo.train_config import DEFAULT_CONFIG, REFUSALS_CONFIG, TOOLS_CONFIG, TrainConfig
from langchain_llava_cot.judges import (
    VERDICT_PREFIX,
    VERIFY_PREFIX,
    JudgeTask,
    pairwise_prompt,
    verifier_prompt,
)
from langchain_llava_cot.stages import render_answer

__all__ = [
    "DEFAULT_CONFIG",
    "REFUSALS_CONFIG",
    "TOOLS_CONFIG",
    "TrainConfig",
    "train_demo",
]

logger = logging.getLogger(__name__)


def _corpus(count: int = 3000) -> list[str]:
    """Text the tokenizer is trained on: questions, answers, judge prompts, tool prompts and calls.

    Only training text: no held-out wording reaches the tokenizer.
    """
    rng = random.Random(1)
    lines = [add_tool_prompt(), add_tool_prompt("any")]
    for example in training_pool(count, 0.15):
        lines.append(example.question)
        call = structured_call(example, rng)
        lines.append(call.text(example.scene.objects))
        lines.append(json.dumps(call.schema["function"]))
        lines.extend(render_answer({s: t}) for s, t in example.stages.items())
        stage = rng.choice(JUDGE_STAGES)
        chosen, right, wrong = judge_pair(example, stage, rng)
        task = JudgeTask(request(example), stage, chosen, (right, wrong))
        lines.append(pairwise_prompt(task, 0, 1).question)
        lines.append(verifier_prompt(task, 0).question)
        lines.append(f"{VERDICT_PREFIX} 1. {VERDICT_PREFIX} 2. {VERIFY_PREFIX} right. {VERIFY_PREFIX} wrong.")
    lines.extend(SMALL_TALK + PICTURE_TALK)
    for picture in ("none", "other", "drawing"):
        lines.extend(render_answer({s: t}) for s, t in off_domain_stages(picture).items())  # type: ignore[arg-type]
    return lines


def _batches(sequences: list[TrainingSequence], tokens_per_batch: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length, at most ``tokens_per_batch`` padded tokens each."""
    order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i].ids), rng.random()))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = len(sequences[i].ids)
        if current and max(longest, n) * (len(current) + 1) > tokens_per_batch:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def train_demo(
    output_dir: str | Path,
    *,
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    config: TrainConfig = DEFAULT_CONFIG,
    threads: int | None = 1,
    log_every: int = 20,
    init: str | Path | None = None,
    save_every: int | None = 200,
    vision_steps: int | None = None,
) -> Path:
    """Build and train the demo model (or go on training one), and save it to ``output_dir``.

    Stage 1 pretrains the vision tower on the scenes' cell labels
    (:mod:`langchain_llava_cot.demo.vision`); stage 2 trains the projector and the language
    model on the sequences of :func:`build_examples` (the tower frozen), the first
    ``config.caption_phase`` of its steps on summary+caption-only answers.

    Args:
        output_dir: Folder to write the model, processor and ``training.json`` to.
        steps: Optimizer steps of stage 2; the learning rate decays over them. Budget by
            steps, not minutes: a busy machine trains less in the same time.
        minutes: Optional wall-clock budget of stage 2; the first budget reached ends it.
        seed: Seed of the weights, the data and the batch order.
        config: Model and run sizes.
        threads: Torch CPU threads (None leaves torch's default).
        log_every: Log the loss every this many steps.
        init: A saved demo model to continue from (its weights and processor are copied
            to ``output_dir``, and its ``training.json`` is kept in the new one as
            ``init_record``) instead of building a new one. Stage 1 is skipped unless
            ``vision_steps`` is given.
        save_every: Every this many steps of stage 2, save the model so far to
            ``output_dir/checkpoint`` (replaced whole, never half-written), so that a run
            that is killed loses at most that many steps: ``--init`` goes on from it.
            A finished run removes it. None saves only at the end.
        vision_steps: Stage 1's steps: ``config.vision_steps`` for a new model by default,
            none for ``init``; given with ``init``, they go on pretraining its tower (new
            looks, fresh heads).

    Returns:
        ``output_dir``, loadable with ``AutoProcessor`` / ``AutoModelForImageTextToText``.
    """
    if minutes is None and steps is None:
        msg = "Give steps= (or minutes=, or both), so training knows when to stop."
        raise ValueError(msg)
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    output_dir = Path(output_dir)
    if init is not None:
        shutil.copytree(init, output_dir, dirs_exist_ok=True)
    else:
        _build(output_dir, config, seed)
    processor = AutoProcessor.from_pretrained(output_dir)
    model = AutoModelForImageTextToText.from_pretrained(output_dir)
    record: dict[str, Any] = {
        "config": config.__dict__,
        "init": None if init is None else str(init),
        "seed": seed,
        "threads": torch.get_num_threads(),
    }
    tower = model.model.vision_tower
    if vision_steps is None:
        vision_steps = config.vision_steps if init is None else 0
    if vision_steps:
        record["vision"] = _pretrain_vision(
            processor, tower, replace(config, vision_steps=vision_steps), seed
        )
    if config.freeze_vision:
        tower.requires_grad_(False)
    image_tokens = model.config.image_seq_length
    sequences, pictures, answers = build_examples(processor, config, seed=seed, image_tokens=image_tokens)
    check_layout(processor, examples("train", 1)[0], image_tokens)
    captions = caption_sequences(processor, answers, image_tokens=image_tokens)
    pixels = pictures.tensor()
    record["prepare_seconds"] = round(time.perf_counter() - started, 1)
    logger.info("Prepared %d sequences in %.0f s", len(sequences), record["prepare_seconds"])

    trainer = _Trainer(model, processor.tokenizer.pad_token_id, pixels, config, steps, minutes, log_every)
    rng = random.Random(seed)
    phases = [("captions", captions, config.caption_phase), ("all", sequences, 1.0)]
    for name, pool, until in phases:
        while pool and not trainer.done(until):
            for batch in _batches(pool, config.tokens_per_batch, rng):
                if trainer.done(until):
                    break
                trainer.step([pool[i] for i in batch])
                if save_every and trainer.count % save_every == 0:
                    _save_checkpoint(model, processor, output_dir / "checkpoint", trainer.count)
        trainer.mark(name)
    model.eval()
    model.save_pretrained(output_dir, safe_serialization=True)
    name_vision_weights_for_servers(output_dir)
    processor.save_pretrained(output_dir)
    record.update(trainer.record())
    record["parameters"] = sum(p.numel() for p in model.parameters())
    if init is not None and (Path(init) / "training.json").is_file():
        record["init_record"] = json.loads((Path(init) / "training.json").read_text())
    (output_dir / "training.json").write_text(json.dumps(record, indent=1))
    shutil.rmtree(output_dir / "checkpoint", ignore_errors=True)  # the finished model supersedes it
    logger.info("Trained %d steps; loss %.4f; saved to %s", record["steps"], record["final_loss"], output_dir)
    return output_dir


_TOWER_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


def name_vision_weights_for_servers(model_dir: str | Path) -> None:
    """Rename the CLIP tower's weights to ``vision_tower.vision_model.*`` in ``model.safetensors``.

    transformers 5 saves them as ``vision_tower.embeddings.*``, a name vLLM does not load;
    the ``vision_model`` names are the original LLaVA layout, which transformers reads as
    well, so the one file serves both.
    """
    from safetensors.torch import load_file, save_file

    path = Path(model_dir) / "model.safetensors"
    weights = load_file(path)
    renamed = {}
    for key, value in weights.items():
        head, _, tail = key.partition("vision_tower.")
        shared = tail.startswith(_TOWER_PARTS)
        renamed[f"{head}vision_tower.vision_model.{tail}" if shared else key] = value
    save_file(renamed, path, metadata={"format": "pt"})


def _save_checkpoint(model: Any, processor: Any, folder: Path, steps: int) -> None:
    """Save the model so far to ``folder``: written beside it, then swapped in whole."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    name_vision_weights_for_servers(partial)
    processor.save_pretrained(partial)
    (partial / "checkpoint.json").write_text(json.dumps({"steps": steps}))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    logger.info("Checkpoint after %d steps: %s", steps, folder)


class _Trainer:
    """Stage 2's optimizer, learning-rate schedule and bookkeeping over one step budget."""

    def __init__(
        self,
        model: Any,
        pad: int,
        pixels: Any,
        config: TrainConfig,
        steps: int | None,
        minutes: float | None,
        log_every: int,
    ) -> None:
        import torch

        self.model, self.pad, self.pixels, self.config = model, pad, pixels, config
        self.steps, self.budget, self.log_every = steps, None if minutes is None else minutes * 60, log_every
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        decay = [p for n, p in trained if p.ndim >= 2 and "embed" not in n]
        rest = [p for n, p in trained if not (p.ndim >= 2 and "embed" not in n)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=config.lr,
            betas=(0.9, 0.98),
        )
        self.count, self.seen, self.smoothed = 0, 0, float("nan")
        self.history: list[dict[str, Any]] = []
        self.phases: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        model.train()

    def progress(self) -> float:
        elapsed = time.perf_counter() - self.t0
        return max(
            elapsed / self.budget if self.budget else 0.0, self.count / self.steps if self.steps else 0.0
        )

    def done(self, until: float) -> bool:
        return self.progress() >= until

    def step(self, batch: list[TrainingSequence]) -> None:
        import torch

        config, progress = self.config, self.progress()
        warm = min(1.0, (self.count + 1) / config.warmup_steps)
        lr = config.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        longest = max(len(seq.ids) for seq in batch)
        ids = torch.full((len(batch), longest), self.pad, dtype=torch.long)
        weights = torch.zeros((len(batch), longest))
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq.ids)] = torch.tensor(seq.ids)
            weights[row, : len(seq.ids)] = torch.tensor(seq.weights)
            mask[row, : len(seq.ids)] = 1
        shown = [seq.image for seq in batch if seq.image is not None]
        images = self.pixels[shown].float() if shown else None
        logits = self.model(input_ids=ids, pixel_values=images, attention_mask=mask).logits
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1), reduction="none"
        )
        w = weights[:, 1:].reshape(-1)
        loss = (losses * w).sum() / w.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.count += 1
        self.seen += int(mask.sum())
        value = loss.item()
        self.smoothed = value if math.isnan(self.smoothed) else 0.95 * self.smoothed + 0.05 * value
        if self.count % self.log_every == 0:
            elapsed = time.perf_counter() - self.t0
            self.history.append(
                {"step": self.count, "loss": round(self.smoothed, 4), "seconds": round(elapsed, 1)}
            )
            logger.info(
                "step %d loss %.4f lr %.2e %.0f tok/s %.0f s",
                self.count, self.smoothed, lr, self.seen / elapsed, elapsed,
            )  # fmt: skip

    def mark(self, phase: str) -> None:
        self.phases.append({"phase": phase, "until_step": self.count, "tokens_seen": self.seen})

    def record(self) -> dict[str, Any]:
        return {
            "steps": self.count,
            "tokens_seen": self.seen,
            "train_seconds": round(time.perf_counter() - self.t0, 1),
            "final_loss": round(self.smoothed, 4),
            "phases": self.phases,
            "history": self.history,
        }


def _pixels(processor: Any, pictures: Any) -> Any:
    """The pictures as the saved processor makes them, in one tensor."""
    bank = Pictures(processor)
    for picture in pictures:
        bank.add(picture)
    return bank.tensor()


def _pretrain_vision(processor: Any, tower: Any, config: TrainConfig, seed: int) -> dict[str, Any]:
    """Stage 1 on drawings from the training split of both worlds (and off-domain pictures)."""
    from langchain_llava_cot.demo.vision import pretrain_vision_tower

    rng = random.Random(f"vision:{seed}")
    classic = int(config.vision_pictures * config.classic_share)
    scenes: list[Any] = [ex.scene for ex in examples("train", config.vision_pictures - classic)]
    scenes += [ex.scene for ex in examples("train", classic, world="classic")]
    scenes += [None] * (config.vision_pictures // 10)
    rng.shuffle(scenes)
    pictures = (off_domain_image(rng) if scene is None else scene.render() for scene in scenes)
    tests: dict[str, tuple[Any, list[Any]]] = {}
    for world in ("free", "novel", "classic"):
        held_out: list[Any] = [ex.scene for ex in examples("validation", config.vision_checks, world=world)]
        tests[f"validation_{world}"] = (_pixels(processor, (scene.render() for scene in held_out)), held_out)
    return pretrain_vision_tower(
        tower,
        _pixels(processor, pictures),
        scenes,
        steps=config.vision_steps,
        batch_size=config.vision_batch,
        lr=config.vision_lr,
        seed=seed,
        tests=tests,
    )


def _build(output_dir: Path, config: TrainConfig, seed: int) -> None:
    """A new, untrained demo model and its processor, with a tokenizer trained on the data."""
    from langchain_llava_cot.model_builders import build_tiny_vlm

    build_tiny_vlm(
        output_dir,
        arch="llava",
        corpus=_corpus(config.corpus_examples),
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        vision_hidden_size=config.vision_hidden_size,
        vision_layers=config.vision_layers,
        image_size=config.image_size,
        patch_size=config.patch_size,
        seed=seed,
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m langchain_llava_cot.demo.train --out DIR``."""
    parser = argparse.ArgumentParser(description="Train the demo LLaVA-CoT model on shapes.")
    parser.add_argument("--out", required=True, help="folder to write the model to")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of stage 2")
    parser.add_argument("--minutes", type=float, default=None, help="optional wall-clock budget of stage 2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", default=None, help="saved demo model to continue training")
    parser.add_argument("--tools", action="store_true", help="fine-tune with TOOLS_CONFIG (add tool use)")
    parser.add_argument(
        "--refusals",
        action="store_true",
        help="fine-tune with REFUSALS_CONFIG (more small talk)",
    )
    parser.add_argument(
        "--vision-steps", type=int, default=None, help="stage 1 steps (default: config's, none with --init)"
    )
    parser.add_argument("--save-every", type=int, default=200, help="stage 2 steps between checkpoints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = TOOLS_CONFIG if args.tools else REFUSALS_CONFIG if args.refusals else DEFAULT_CONFIG
    train_demo(
        args.out,
        minutes=args.minutes,
        steps=args.steps,
        seed=args.seed,
        threads=args.threads,
        config=config,
        init=args.init,
        save_every=args.save_every or None,
        vision_steps=args.vision_steps,
    )


if __name__ == "__main__":
    main()
