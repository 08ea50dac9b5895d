"""Has the model learned the pairwise judge? Its verdicts on pairs made like its training pairs.

``llava-cot eval`` measures the judge on the model's own candidates. This probe asks
the easier question first: on held-out pairs built exactly as the training pairs are
(:func:`langchain_llava_cot.demo.train.judge_pair`: a right candidate and one wrong in a
known way), does the model pick the right one? Each pair is asked in both orders, with
the engine's prompt (:func:`~langchain_llava_cot.judges.pairwise_prompt`) and the verdict
read as the pairwise judge reads it (log-probabilities of " 1" and " 2" in one forward
pass). It prints, for each stage, how often the right candidate won, how often
"Response 1" won (0.5 for a judge without a position bias), and how often both orders
gave the same winner::

    python benchmarks/judge_probe.py --out benchmarks/judge-probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def probe(model: Path, questions: int, seed: int) -> dict:
    """Per stage: pairs asked, right-candidate rate, "Response 1" rate, order-consistency rate."""
    from langchain_llava_cot.backends.transformers import TransformersBackend
    from langchain_llava_cot.demo.dataset import examples
    from langchain_llava_cot.demo.train import JUDGE_STAGES, judge_pair
    from langchain_llava_cot.judges import JudgeTask, verdict_choice

    rng = random.Random(seed)
    requests, labels = [], []
    for example in examples("test", questions):
        stage = rng.choice(JUDGE_STAGES)
        chosen, right, wrong = judge_pair(example, stage, rng)
        task = JudgeTask(example.conversation(), stage, chosen, (right, wrong))
        # the right candidate as response 1, then as response 2
        requests += [verdict_choice(task, 0, 1), verdict_choice(task, 1, 0)]
        labels.append("answer" if stage is None else stage.value)
    with TransformersBackend(model) as backend:
        results = [r for i in range(0, len(requests), 16) for r in backend.choose(requests[i : i + 16])]
    says_one = [one >= two for one, two in (result.logprobs for result in results)]
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for index, label in enumerate(labels):
        right_first, right_second = says_one[2 * index], not says_one[2 * index + 1]
        entry = counts[label]
        entry[0] += 2
        entry[1] += right_first + right_second
        entry[2] += says_one[2 * index] + says_one[2 * index + 1]
        entry[3] += right_first == right_second
    return {
        label: {
            "verdicts": asked,
            "right": right / asked,
            "response_1_wins": first / asked,
            "same_winner_both_orders": consistent / (asked // 2),
        }
        for label, (asked, right, first, consistent) in sorted(counts.items())
    }


def main(argv: list[str] | None = None) -> dict:
    from langchain_llava_cot.demo import DEMO_MODEL_PATH

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", type=Path, default=DEMO_MODEL_PATH, help="model folder (default: the demo model)"
    )
    parser.add_argument("--questions", type=int, default=300, help="held-out questions, one pair each")
    parser.add_argument("--seed", type=int, default=5, help="seed of the stages and the wrong candidates")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    stages = probe(args.model, args.questions, args.seed)
    print(f"{'stage':12s} {'verdicts':>8s} {'right':>6s} {'resp. 1 wins':>12s} {'same both orders':>16s}")
    for label, entry in stages.items():
        print(
            f"{label:12s} {entry['verdicts']:8d} {entry['right']:6.1%} {entry['response_1_wins']:12.1%} "
            f"{entry['same_winner_both_orders']:16.1%}"
        )
    model = "bundled demo model" if args.model == DEMO_MODEL_PATH else str(args.model)
    results = {"model": model, "questions": args.questions, "seed": args.seed, "stages": stages}
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
