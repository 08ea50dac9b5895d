"""A real vLLM (its CPU build) serving the bundled demo model, with ChatLlavaCoT pointed at it.

The lane's venv comes from ``make vllm-venv`` (``.ci/setup-vllm``); ``make test-servers`` builds
it and runs these tests. They check that the backend uses what vLLM offers: ``n`` in one
request, server-side stop strings, verdicts read from top log-probabilities, continuation of
the partial assistant message, and vLLM's prefix cache.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage
from servers import (
    DEMO_MESSAGES,
    STAGE_LIMITS,
    VLLM_PYTHON,
    record_chat_requests,
    served_eval,
    vllm_serving_demo,
)
from structured import fifty_tries

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.backends.openai import OpenAICompatibleBackend, ServerCapabilities

pytestmark = [
    pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="the real-server lane: make test-servers"),
    pytest.mark.timeout(1200),  # the first test also waits for the server's start
]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory):
    """vLLM on 127.0.0.1 serving the demo model as "demo"; yields (base URL, start-up seconds)."""
    started = time.monotonic()
    with vllm_serving_demo(tmp_path_factory.mktemp("vllm")) as url:
        yield url, time.monotonic() - started


def metric(url: str, name: str) -> float:
    """A counter from vLLM's Prometheus metrics, summed over its labels."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def served(url: str) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(f"{url}/v1", "demo", timeout=120)


def test_the_probe_finds_everything_vllm_offers(vllm: tuple[str, float]) -> None:
    url, startup = vllm
    backend = served(url)
    assert backend.probe() == ServerCapabilities(
        n=True, stop=True, logprobs=True, top_logprobs=True, continuation=True, images=True,
        generation_config=False, grammar=True,
    )  # fmt: skip
    print(f"\nvLLM {url}: ready {startup:.0f} s after start")


@pytest.mark.parametrize(("strategy", "requests"), [("greedy", 4), ("best_of_n", 1)])
def test_candidates_come_n_at_a_time_in_one_request(
    vllm: tuple[str, float], strategy: str, requests: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = vllm
    backend = served(url)
    backend.probe()
    sent = record_chat_requests(monkeypatch)
    llm = ChatLlavaCoT(
        backend=backend, strategy=strategy, candidates=4, judge="likelihood", max_stage_tokens=STAGE_LIMITS
    )
    started = time.perf_counter()
    answer = llm.invoke(DEMO_MESSAGES)
    seconds = time.perf_counter() - started
    record = answer.response_metadata["llava_cot"]
    assert len(sent) == requests  # one request a step, whatever N
    assert all(
        body["stop"] and body.get("continue_final_message") for body in sent
    )  # served stop, continuation
    assert {body.get("n", 1) for body in sent} == {1 if strategy == "greedy" else 4}
    assert all(len(step["candidates"]) == (1 if strategy == "greedy" else 4) for step in record["steps"])
    assert all(not c["problems"] for step in record["steps"] for c in step["candidates"])  # nothing repaired
    assert answer.content.strip()
    print(f"\n{strategy}: {seconds:.2f} s an answer through vLLM")


@pytest.mark.parametrize("judge", ["pairwise", "verifier"])
def test_stage_beam_reads_its_verdicts_from_top_logprobs(vllm: tuple[str, float], judge: str) -> None:
    url, _ = vllm
    llm = ChatLlavaCoT(
        backend=served(url),
        strategy="stage_beam",
        candidates=4,
        judge=judge,
        seed=0,
        max_stage_tokens=STAGE_LIMITS,
    )
    hits = metric(url, "vllm:prefix_cache_hits_total")
    started = time.perf_counter()
    answer = llm.invoke(DEMO_MESSAGES)
    seconds = time.perf_counter() - started
    steps = answer.response_metadata["llava_cot"]["steps"]
    methods = {c["method"] for step in steps for c in step["comparisons"]} - {"identical"}
    assert methods <= {"logits", "precheck"}  # no verdict was generated and parsed
    if judge == "verifier":
        assert all(step["scores"] for step in steps if len(set(c["text"] for c in step["candidates"])) > 1)
    assert metric(url, "vllm:prefix_cache_hits_total") > hits  # each stage re-reads the prefix: cached
    assert answer.content.strip()
    print(f"\nstage_beam, {judge} judge, N=4: {seconds:.2f} s an answer through vLLM")


def test_a_forced_tool_call_is_valid_by_construction_under_vllms_grammar(vllm: tuple[str, float]) -> None:
    def add(a: int, b: int) -> int:
        """Add two whole numbers."""
        return a + b

    url, _ = vllm
    llm = ChatLlavaCoT(
        backend=served(url), strategy="stage_beam", candidates=3, max_stage_tokens=STAGE_LIMITS, seed=1
    )
    question = [HumanMessage("What is 2 plus 3?")]
    answers = [llm.bind_tools([add], tool_choice="add").invoke(question) for _ in range(3)]
    for answer in answers:
        [call] = answer.tool_calls
        assert call["name"] == "add" and set(call["args"]) == {"a", "b"}
        assert all(isinstance(value, int) for value in call["args"].values())


def test_the_eval_runs_a_benchmark_file_through_vllm_8_questions_at_a_time(
    vllm: tuple[str, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = vllm
    started = time.perf_counter()
    report, most_open = served_eval(url, tmp_path, monkeypatch)
    seconds = time.perf_counter() - started
    assert [r.questions for r in report.results] == [8, 8] and most_open > 1  # questions overlapped
    assert all(r.tokens_per_question > 0 and r.requests_per_question >= 1 for r in report.results)
    assert len((tmp_path / "out" / "answers.jsonl").read_text().splitlines()) == 16
    print(
        f"\nvLLM eval, 8 questions x 2 strategies, concurrency 8: {seconds:.1f} s, "
        f"{most_open} requests open at most"
    )
    print(report.markdown())


def test_structured_output_is_valid_in_50_of_50_tries_through_vllm(vllm: tuple[str, float]) -> None:
    url, _ = vllm
    tries = fifty_tries(ChatLlavaCoT(backend=served(url), max_stage_tokens=STAGE_LIMITS))
    print(f"\nstructured output through vLLM: {tries.summary()}")
    assert tries.valid == tries.tries == 50, tries.failures[:1]
