"""How well a demo model writes reasoning, with the right summary and caption given.

Teacher-forced on held-out questions: the model reads the picture, the question and the
right summary and caption, and at each token of the right reasoning and conclusion its
most likely next token is compared with the right one. A question counts as right when
every one of those tokens is. This isolates the reasoning stage from the vision, and
shows what greedy decoding would write after a right caption::

    python benchmarks/reasoning_probe.py --questions 200
    python benchmarks/reasoning_probe.py --model OLD_MODEL_DIR --questions 200
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def probe(model_dir: Path, questions: int) -> dict:
    """The share of questions whose reasoning and conclusion are right token by token, by kind."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from langchain_llava_cot.demo.dataset import examples
    from langchain_llava_cot.demo.sequences import answer_tokens
    from langchain_llava_cot.stages import Stage

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    by_kind: dict[str, list[bool]] = {}
    tokens_right = tokens = 0
    for example in examples("test", questions):
        ids, graded, pixels = answer_tokens(processor, example, graded=(Stage.REASONING, Stage.CONCLUSION))
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0, :-1]
        mask = torch.tensor(graded[1:])
        right = logits.argmax(-1)[mask] == torch.tensor(ids[1:])[mask]
        tokens, tokens_right = tokens + len(right), tokens_right + int(right.sum())
        by_kind.setdefault(example.kind, []).append(bool(right.all()))
    every = [ok for oks in by_kind.values() for ok in oks]
    return {
        "model": str(model_dir),
        "questions": len(every),
        "reasoning_right": sum(every) / len(every),
        "tokens_right": tokens_right / tokens,
        "by_kind": {kind: sum(oks) / len(oks) for kind, oks in sorted(by_kind.items())},
    }


def main(argv: list[str] | None = None) -> dict:
    from langchain_llava_cot.demo import DEMO_MODEL_PATH

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=DEMO_MODEL_PATH, help="(default: the bundled demo model)"
    )
    parser.add_argument("--questions", type=int, default=200, help="held-out questions (default 200)")
    parser.add_argument("--out", type=Path, help="write the result here as JSON")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    result = probe(args.model, args.questions)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
