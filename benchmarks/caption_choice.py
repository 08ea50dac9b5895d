"""Is there room for search at the caption stage, and can a judge find it?

The demo model's answer can only be as right as its caption: the reasoning works from
it. This asks, for held-out questions, after the greedy summary, for N sampled
captions (the engine's sampling settings) and counts how often the caption each
selector keeps *implies the right answer* (the answer the question has if the
caption's objects are the scene's; :func:`~langchain_llava_cot.demo.dataset.right_stage`):

- ``greedy``: the caption greedy decoding writes;
- ``any of N``: whether some sampled caption implies it (the most a judge could reach);
- ``first sample``: the first sampled caption (a judge that picks blindly);
- ``likelihood``: the highest mean token log-probability (the likelihood judge);
- ``pairwise``: the engine's pairwise self-judge, a knockout read from logits;
- ``picture PMI (blank)`` / ``picture PMI (other scene)``: the highest log-probability
  with the picture minus that with a blank picture / another scene's picture, which
  rewards captions that the picture itself makes likely.

::

    python benchmarks/caption_choice.py --out benchmarks/caption-choice.json
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import statistics
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SELECTORS = (
    "greedy",
    "any of N",
    "first sample",
    "likelihood",
    "pairwise",
    "picture PMI (blank)",
    "picture PMI (other scene)",
)


def _blank_picture() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def _with_picture(conversation: Any, picture: bytes) -> Any:
    """``conversation`` with its picture replaced by ``picture``."""
    turns = tuple(
        dataclasses.replace(turn, images=(picture,) if turn.images else ()) for turn in conversation.turns
    )
    return dataclasses.replace(conversation, turns=turns)


def _picks(backend: Any, example: Any, other: bytes, blank: bytes, n: int) -> dict[str, bool]:
    """For one question: whether each selector's caption implies the right answer."""
    from langchain_llava_cot._calls import drive
    from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest
    from langchain_llava_cot.demo.dataset import normalize_answer, right_stage
    from langchain_llava_cot.judges import JudgeTask, PairwiseJudge
    from langchain_llava_cot.stages import STAGE_SEPARATOR, Stage, render_answer

    def implies(caption: str) -> bool:
        implied = right_stage(example, Stage.CONCLUSION, {Stage.CAPTION: caption.strip()})
        return normalize_answer(implied) == normalize_answer(example.answer)

    conversation = example.conversation()
    summary_request = SampleRequest(
        conversation, prefix=Stage.SUMMARY.open_tag, stop=(Stage.SUMMARY.close_tag,), max_new_tokens=64
    )
    [[summary]] = backend.sample([summary_request])
    chosen = {Stage.SUMMARY: summary.text.strip()}
    prefix = render_answer(chosen) + STAGE_SEPARATOR + Stage.CAPTION.open_tag
    caption = SampleRequest(conversation, prefix=prefix, stop=(Stage.CAPTION.close_tag,), max_new_tokens=96)
    sampled = dataclasses.replace(caption, n=n, temperature=0.6, top_p=0.9, seed=example.index)
    [[greedy], samples] = backend.sample([caption, sampled])
    texts = tuple(sample.text for sample in samples)
    own, on_blank, on_other = backend.choose(
        [
            ChoiceRequest(picture_conversation, prefix, texts)
            for picture_conversation in (
                conversation,
                _with_picture(conversation, blank),
                _with_picture(conversation, other),
            )
        ]
    )
    task = JudgeTask(conversation, Stage.CAPTION, chosen, tuple(text.strip() for text in texts))
    pairwise = drive(PairwiseJudge(seed=example.index).select(task, backend), backend).winner
    means = [statistics.mean(sample.token_logprobs) for sample in samples]
    kept = {
        "first sample": 0,
        "likelihood": max(range(n), key=lambda k: means[k]),
        "pairwise": pairwise,
        "picture PMI (blank)": max(range(n), key=lambda k: own.logprobs[k] - on_blank.logprobs[k]),
        "picture PMI (other scene)": max(range(n), key=lambda k: own.logprobs[k] - on_other.logprobs[k]),
    }
    right = [implies(text) for text in texts]
    return {
        "greedy": implies(greedy.text),
        "any of N": any(right),
        **{name: right[index] for name, index in kept.items()},
    }


def measure(model: Path, questions: int, n: int) -> dict[str, float]:
    """Per selector: how often its caption implies the right answer."""
    from langchain_llava_cot.backends.transformers import TransformersBackend
    from langchain_llava_cot.demo.dataset import examples

    asked = examples("test", questions)
    blank = _blank_picture()
    counts = dict.fromkeys(SELECTORS, 0)
    with TransformersBackend(model) as backend:
        for index, example in enumerate(asked):
            other = asked[(index + 1) % len(asked)].image_bytes
            for name, right in _picks(backend, example, other, blank, n).items():
                counts[name] += right
    return {name: count / len(asked) for name, count in counts.items()}


def main(argv: list[str] | None = None) -> dict:
    import torch

    from langchain_llava_cot.demo import DEMO_MODEL_PATH

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", type=Path, default=DEMO_MODEL_PATH, help="model folder (default: the demo model)"
    )
    parser.add_argument("--questions", type=int, default=200, help="held-out test questions")
    parser.add_argument("--candidates", type=int, default=4, help="N, sampled captions per question")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rates = measure(args.model, args.questions, args.candidates)
    print(f"caption kept by ({args.questions} questions, N={args.candidates})   implies the right answer")
    for name, rate in rates.items():
        print(f"  {name:28s} {rate:6.1%}")
    model = "bundled demo model" if args.model == DEMO_MODEL_PATH else str(args.model)
    results = {"model": model, "questions": args.questions, "candidates": args.candidates, "rates": rates}
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
