"""How well does each judge rank the demo model's own candidates, within a question?

For held-out questions, greedy decoding gives the model's own prefix; at each stage
(caption, reasoning, conclusion) the engine's sampling settings then give N candidates
that continue it, each labelled by the eval's stage oracle (caption: lists exactly the
scene's objects; reasoning: follows the chosen caption; conclusion: agrees with the
chosen reasoning). Only *mixed* sets (some right, some wrong) can tell judges apart.
Per judge and stage:

- ``top-1 right``: how often the judge's pick is a right candidate, on mixed sets
  (``random``: the share of right candidates, what a blind pick scores);
- ``within-question AUC``: for scoring judges, the share of (right, wrong) pairs of one
  set that the scores order correctly (ties half), averaged over mixed sets. A pooled
  AUC would mostly tell easy questions from hard ones;
- ``rescues``: sets where greedy's own stage is wrong and the pick is right.

Judges: ``likelihood`` (mean token log-probability), ``verifier`` (log p(right) -
log p(wrong), :class:`~langchain_llava_cot.judges.VerifierJudge`), ``pairwise`` (the
knockout, top-1 only), with ``--reward-model DIR`` ``reward`` (a text reward model,
:func:`~langchain_llava_cot.reward_models.text_reward_judge`; captions stay with likelihood),
and with ``--served-reward URL --served-model NAME`` ``served_reward``: a reward model served
by vLLM's pooling runner (:class:`~langchain_llava_cot.judges.ServedRewardJudge`; with
``--step-tag`` a process reward model, :class:`~langchain_llava_cot.judges.ServedProcessRewardJudge`;
with ``--served-images`` it reads the picture and ranks captions too, else captions stay with
likelihood)::

    python benchmarks/judge_rank.py --questions 200 --out benchmarks/judge-rank.json
    python benchmarks/judge_rank.py --served-reward http://127.0.0.1:8001 --served-model rm --served-images
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

JUDGES = ("likelihood", "verifier", "pairwise")
STAGES_RANKED = ("caption", "reasoning", "conclusion")


def served_reward_judge(url: str, model: str, *, images: bool, step_tag: str | None) -> Any:
    """The served reward model as ``judge_rank`` ranks it: captions by likelihood unless it reads pictures."""
    from langchain_llava_cot.judges import ServedProcessRewardJudge, ServedRewardJudge, StageJudges

    if step_tag:
        served: Any = ServedProcessRewardJudge(url, model, images=images, step_tag=step_tag)
    else:
        served = ServedRewardJudge(url, model, images=images)
    if images:
        return served
    by_likelihood = {"summary": "likelihood", "caption": "likelihood"}
    return StageJudges(by_likelihood, default=served, name="served_reward")


def measure(
    model: str | None,
    questions: int,
    candidates: int,
    seed: int,
    reward_model: str | None = None,
    served: Any = None,
) -> dict[str, Any]:
    import torch

    from langchain_llava_cot._calls import drive
    from langchain_llava_cot.backends.base import SampleRequest
    from langchain_llava_cot.backends.transformers import TransformersBackend
    from langchain_llava_cot.demo import DEMO_MODEL_PATH
    from langchain_llava_cot.demo.dataset import examples
    from langchain_llava_cot.eval import ranking_auc, stage_oracle
    from langchain_llava_cot.judges import JudgeTask, LikelihoodJudge, PairwiseJudge, VerifierJudge
    from langchain_llava_cot.stages import STAGE_SEPARATOR, STAGES, Stage, cut_stage, render_answer

    torch.set_num_threads(1)
    backend = TransformersBackend(str(model or DEMO_MODEL_PATH))
    judges = {
        "likelihood": LikelihoodJudge(),
        "verifier": VerifierJudge(),
        "pairwise": PairwiseJudge(seed=seed, precheck=False),
    }
    if reward_model is not None:
        from langchain_llava_cot.reward_models import text_reward_judge

        judges["reward"] = text_reward_judge(reward_model)
    if served is not None:
        judges["served_reward"] = served
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    started = time.perf_counter()
    for example in examples("test", questions):
        conversation = example.conversation()
        chosen: dict[Stage, str] = {}
        for stage in STAGES:
            earlier = render_answer(chosen)
            prefix = f"{earlier}{STAGE_SEPARATOR}{stage.open_tag}" if earlier else stage.open_tag
            ask = SampleRequest(conversation, prefix, stop=(stage.close_tag,), max_new_tokens=256)
            [[greedy]] = backend.sample([ask])
            greedy_text = cut_stage(stage, greedy.text)[0]
            if stage.value in STAGES_RANKED:
                sampled = SampleRequest(
                    conversation,
                    prefix,
                    n=candidates,
                    stop=(stage.close_tag,),
                    max_new_tokens=256,
                    temperature=0.6,
                    top_p=0.9,
                    seed=seed + example.index,
                )
                [samples] = backend.sample([sampled])
                texts = tuple(cut_stage(stage, s.text)[0] for s in samples)
                labels = [stage_oracle(example, stage.value, t, chosen) for t in texts]
                if any(labels) and not all(labels):
                    task = JudgeTask(
                        conversation, stage, dict(chosen), texts, tuple(s.mean_logprob for s in samples)
                    )
                    greedy_right = stage_oracle(example, stage.value, greedy_text, chosen)
                    for name, judge in judges.items():
                        verdict = drive(judge.select(task, backend), backend)
                        auc = ranking_auc(list(verdict.scores), labels) if verdict.scores else None
                        rows.setdefault((name, stage.value), []).append(
                            {
                                "right": labels[verdict.winner],
                                "share": sum(labels) / len(labels),
                                "auc": auc,
                                "rescue": labels[verdict.winner] and not greedy_right,
                            }
                        )
            chosen[stage] = greedy_text
    table = []
    for (name, stage), found in sorted(
        rows.items(), key=lambda kv: (STAGES_RANKED.index(kv[0][1]), kv[0][0])
    ):
        aucs = [r["auc"] for r in found if r["auc"] is not None]
        table.append(
            {
                "judge": name,
                "stage": stage,
                "mixed_sets": len(found),
                "top1_right": round(sum(r["right"] for r in found) / len(found), 4),
                "random": round(statistics.mean(r["share"] for r in found), 4),
                "within_question_auc": round(statistics.mean(aucs), 4) if aucs else None,
                "rescues": sum(r["rescue"] for r in found),
            }
        )
    return {
        "model": "bundled demo model" if model is None else str(model),
        "questions": questions,
        "candidates": candidates,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "results": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bundled demo model)")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reward-model", default=None, help="also rank with this text reward model")
    parser.add_argument("--served-reward", default=None, help="also rank with the model vLLM serves here")
    parser.add_argument("--served-model", default=None, help="the served reward model's name")
    parser.add_argument("--served-images", action="store_true", help="the served reward model reads pictures")
    parser.add_argument("--step-tag", default=None, help="the served model scores steps at this tag")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    served = None
    if args.served_reward:
        if not args.served_model:
            parser.error("--served-reward needs --served-model, the name vLLM serves it under")
        served = served_reward_judge(
            args.served_reward, args.served_model, images=args.served_images, step_tag=args.step_tag
        )
    report = measure(args.model, args.questions, args.candidates, args.seed, args.reward_model, served)
    print(f"{report['questions']} held-out questions, N={report['candidates']}, {report['seconds']} s")
    print(f"{'stage':<11}{'judge':<12}{'mixed':>6}{'top-1':>8}{'random':>8}{'AUC':>7}{'rescues':>9}")
    for r in report["results"]:
        auc = "-" if r["within_question_auc"] is None else f"{r['within_question_auc']:.3f}"
        print(
            f"{r['stage']:<11}{r['judge']:<12}{r['mixed_sets']:>6}{r['top1_right']:>8.1%}"
            f"{r['random']:>8.1%}{auc:>7}{r['rescues']:>9}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
