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
    assert side["vision_encoder_calls_per_request"] == {"greedy": 1.0, "stage_beam": 1.0, "reference": 28.0}
    assert side["stage_beam_over_greedy"] > 0 and side["reference_over_stage_beam"] > 0
    assert set(results["throughput"]) == {"1", "2"}
    assert results["prefix_cache"]["prompt_tokens_reused"] > results["prefix_cache"]["prompt_tokens_read"]


def test_search_cost_builds_a_random_mllama(tmp_path: Path) -> None:
    small = ("--repeats", "1", "--concurrency", "1", "--stage-tokens", "4", "--verdict-tokens", "4")
    results = _run("search_cost.py", "--random", "mllama", *small, out=tmp_path / "cost.json")
    assert results["model"]["source"].startswith("random-weight mllama")
    assert results["side_by_side"]["vision_encoder_calls_per_request"]["stage_beam"] == 1.0
    assert results["prefix_cache"]["prompt_tokens_reused"] > 0


def test_judge_probe_asks_each_pair_both_ways(tmp_path: Path) -> None:
    results = _run("judge_probe.py", "--questions", "6", out=tmp_path / "probe.json")
    stages = results["stages"]
    assert sum(entry["verdicts"] for entry in stages.values()) == 12
    for entry in stages.values():
        assert 0 <= entry["right"] <= 1 and 0 <= entry["response_1_wins"] <= 1


def test_caption_choice_rates_every_selector(tmp_path: Path) -> None:
    results = _run("caption_choice.py", "--questions", "4", out=tmp_path / "captions.json")
    rates = results["rates"]
    sampled = ("first sample", "likelihood", "pairwise", "picture PMI (blank)", "picture PMI (other scene)")
    assert set(rates) == {"greedy", "any of N", *sampled}
    assert all(0 <= rates[name] <= rates["any of N"] for name in sampled)


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
