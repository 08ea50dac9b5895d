"""The README's benchmark commands run, on small settings, and report what they claim to."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def _run(script: str, *args: str, out: Path) -> dict:
    """Run ``benchmarks/<script>`` as the README does, writing its JSON to ``out``."""
    command = [sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.read_text())


def test_search_cost_measures_every_figure(tmp_path: Path) -> None:
    small = ("--repeats", "1", "--concurrency", "1", "2", "--stage-tokens", "6", "--verdict-tokens", "6")
    results = _run("search_cost.py", *small, out=tmp_path / "cost.json")
    side = results["side_by_side"]
    assert side["vision_encoder_calls_per_request"] == {
        "greedy": 1.0, "stage_beam": 1.0, "adaptive": 1.0, "reference": 28.0,
    }  # fmt: skip
    assert side["image_processor_runs_per_request"] == {"greedy": 1.0, "stage_beam": 1.0, "adaptive": 1.0}
    assert side["stage_beam_over_greedy"] > 0 and side["reference_over_stage_beam"] > 0
    assert side["adaptive_over_greedy"] > 0
    tokens = side["generated_tokens_mean"]
    assert tokens["greedy"] <= tokens["adaptive"] <= tokens["stage_beam"]  # 2 to N candidates a stage
    assert set(results["throughput"]) == {"1", "2"}
    assert results["prefix_cache"]["prompt_tokens_reused"] > results["prefix_cache"]["prompt_tokens_read"]


def test_search_cost_builds_a_random_mllama(tmp_path: Path) -> None:
    small = ("--repeats", "1", "--concurrency", "1", "--stage-tokens", "4", "--verdict-tokens", "4")
    results = _run("search_cost.py", "--random", "mllama", *small, out=tmp_path / "cost.json")
    assert results["model"]["source"].startswith("random-weight mllama")
    assert results["side_by_side"]["vision_encoder_calls_per_request"]["stage_beam"] == 1.0
    assert results["prefix_cache"]["prompt_tokens_reused"] > 0


def test_judge_rank_scores_every_judge_on_the_same_mixed_sets(tmp_path: Path) -> None:
    results = _run("judge_rank.py", "--questions", "12", "--candidates", "4", out=tmp_path / "rank.json")
    rows = results["results"]
    assert rows, "no mixed candidate set in 12 questions"
    by_stage: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_stage.setdefault(row["stage"], {})[row["judge"]] = row
    for judges in by_stage.values():
        assert set(judges) == {"likelihood", "verifier", "pairwise"}
        assert len({j["mixed_sets"] for j in judges.values()}) == 1  # the same sets for every judge
        assert all(0 < j["random"] < 1 for j in judges.values())  # mixed: some right, some wrong
        assert judges["pairwise"]["within_question_auc"] is None  # pairwise gives no scores
        assert judges["verifier"]["within_question_auc"] is not None


def test_ranking_auc_counts_ordered_pairs() -> None:
    from langchain_llava_cot.eval import ranking_auc

    assert ranking_auc([3.0, 1.0, 2.0], [True, False, False]) == 1.0
    assert ranking_auc([1.0, 3.0, 2.0], [True, False, False]) == 0.0
    assert ranking_auc([2.0, 2.0, 1.0], [True, False, True]) == 0.25  # a tie counts half
    assert ranking_auc([1.0, 2.0], [True, True]) is None
    scores, labels = [0.3, 0.1, 0.7, 0.3, 0.9, 0.2], [True, False, True, False, False, True]
    pairs = [(r, w) for r, ok in zip(scores, labels) if ok for w, bad in zip(scores, labels) if not bad]
    counted = sum(1.0 if r > w else 0.5 if r == w else 0.0 for r, w in pairs) / len(pairs)
    assert ranking_auc(scores, labels) == counted  # sorting gives what counting every pair gives


def test_cache_ab_reads_fewer_prompt_tokens_with_the_carry(tmp_path: Path) -> None:
    results = _run("cache_ab.py", "--cache", "carry", "--requests", "2", out=tmp_path / "carry.json")
    assert results["carry"]["prompt_tokens_read"] < results["no carry"]["prompt_tokens_read"]


def test_cache_ab_switches_the_prefix_cache_of_a_random_mllama(tmp_path: Path) -> None:
    small = ("--cache", "prefix", "--requests", "1", "--stage-tokens", "4")
    results = _run("cache_ab.py", "--random", "mllama", *small, out=tmp_path / "prefix.json")
    on = results["prefix cache"]
    assert (
        0
        < on["prompt_tokens_read"]
        < on["prompt_tokens_asked_for"]
        == results["whole prompts"]["prompt_tokens_asked_for"]
    )


def test_serve_cost_compares_the_server_with_direct_calls(tmp_path: Path) -> None:
    small = ("--strategy", "greedy", "--requests", "2", "--concurrency", "1", "2", "--repeats", "1")
    results = _run("serve_cost.py", *small, out=tmp_path / "serve.json")
    assert set(results["throughput"]) == {"1", "2"}
    for entry in results["throughput"].values():
        rates = entry["answers_per_second"]
        assert rates["direct"] > 0 and rates["server"] > 0
        assert entry["server_over_direct"] == rates["server"] / rates["direct"]
        cpu = entry["cpu_seconds_per_answer_median"]
        assert cpu["direct"] > 0 and cpu["server"] > 0
