"""A real llama.cpp ``llama-server`` serving the bundled demo model, converted to GGUF.

``make llama-server`` (``.ci/setup-llama-server``) builds the server from the llama-cpp-python
sdist into a cache folder and converts the demo model (text model + mmproj); these tests run
whenever that build exists. They check what the probe finds, that the converted model still
reads the picture (greedy gets the bundled question right), and that searches run through
llama.cpp's features.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from servers import DEMO_MESSAGES, STAGE_LIMITS, free_port, record_chat_requests, running_server, served_eval
from structured import fifty_tries

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.backends.openai import OpenAICompatibleBackend, ServerCapabilities
from langchain_llava_cot.demo import DEMO_ANSWER
from langchain_llava_cot.demo.dataset import bundled_example, parse_caption
from langchain_llava_cot.stages import Stage

LLAMA_CPP = Path(
    os.environ.get("LLAMA_CPP_HOME", Path.home() / ".cache" / "langchain-llava-cot" / "llama.cpp")
)
SERVER, MODEL, MMPROJ = (
    LLAMA_CPP / "bin" / "llama-server",
    LLAMA_CPP / "demo" / "text.gguf",
    LLAMA_CPP / "demo" / "mmproj.gguf",
)

pytestmark = [
    pytest.mark.skipif(
        not (SERVER.exists() and MODEL.exists() and MMPROJ.exists()),
        reason="llama.cpp is not built: make llama-server",
    ),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    """llama-server on 127.0.0.1 with the demo model; yields (base URL, start-up seconds)."""
    folder = tmp_path_factory.mktemp("llama-cpp")
    port = free_port()
    # One thread: llama.cpp's threads meet at a barrier after every operation, and on these two cores
    # shared with other work two threads made a 64-token answer take 120 s, one thread 0.2 s.
    command = [
        str(SERVER), "--model", str(MODEL), "--mmproj", str(MMPROJ), "--alias", "demo",
        "--host", "127.0.0.1", "--port", str(port), "--ctx-size", "4096", "--parallel", "4",
        "--threads", "1", "--jinja",
    ]  # fmt: skip
    started = time.monotonic()
    url = f"http://127.0.0.1:{port}"
    log = folder / "llama-server.log"
    with running_server(command, ready_url=f"{url}/health", log_path=log, env=os.environ, timeout=120):
        yield url, time.monotonic() - started


def served(url: str) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(f"{url}/v1", "demo", timeout=120)


def test_the_probe_finds_what_llama_server_offers(llama_server: tuple[str, float]) -> None:
    url, startup = llama_server
    # continuation: llama.cpp continues a final assistant message (and repeats it in the reply);
    # grammars: GBNF in its own `grammar` field, not vLLM's structured_outputs
    expected = ServerCapabilities(
        n=True, stop=True, logprobs=True, top_logprobs=True, continuation=True, gbnf=True
    )
    assert served(url).probe() == expected
    print(f"\nllama-server {url}: ready {startup:.1f} s after start")


def test_the_converted_model_reads_the_picture(llama_server: tuple[str, float]) -> None:
    url, _ = llama_server
    llm = ChatLlavaCoT(backend=served(url), strategy="greedy", max_stage_tokens=STAGE_LIMITS)
    started = time.perf_counter()
    answer = llm.invoke(DEMO_MESSAGES)
    seconds = time.perf_counter() - started
    chosen = answer.response_metadata["llava_cot"]["chosen"]
    right = parse_caption(bundled_example().stages[Stage.CAPTION])
    read = parse_caption(chosen["caption"])
    assert sorted(map(repr, read)) == sorted(map(repr, right)), chosen["caption"]  # every object, right
    assert answer.content in ("1", "2", "3")  # a count, in the demo's format
    print(f"\ngreedy: {seconds:.2f} s an answer through llama.cpp ({answer.content}; right: {DEMO_ANSWER})")


@pytest.mark.parametrize(
    ("strategy", "judge"),
    [
        ("best_of_n", "likelihood"),
        ("stage_beam", "likelihood"),
        ("stage_beam", "pairwise"),
        ("stage_beam", "verifier"),
    ],
)
def test_searches_use_n_continuation_and_top_logprobs(
    llama_server: tuple[str, float], strategy: str, judge: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = llama_server
    backend = served(url)
    backend.probe()
    sent = record_chat_requests(monkeypatch)
    llm = ChatLlavaCoT(
        backend=backend, strategy=strategy, candidates=4, judge=judge, seed=0, max_stage_tokens=STAGE_LIMITS
    )
    started = time.perf_counter()
    answer = llm.invoke(DEMO_MESSAGES)
    seconds = time.perf_counter() - started
    steps = answer.response_metadata["llava_cot"]["steps"]
    samples = [body for body in sent if body.get("max_tokens", 0) > 1]
    assert len(samples) == (1 if strategy == "best_of_n" else 4)  # one request a step: n=4 in it
    assert all(body["n"] == 4 and body["stop"] for body in samples)
    assert all(body.get("continue_final_message") for body in samples[1:])  # the partial answer, continued
    assert all(
        len(step["candidates"]) == 4 and not any(c["problems"] for c in step["candidates"]) for step in steps
    )
    methods = {c["method"] for step in steps for c in step["comparisons"]} - {"identical"}
    assert methods <= {"logits", "precheck"}  # verdicts read from top logprobs, none written and parsed
    if judge != "pairwise":  # scored, wherever the candidates differ
        assert all(step["scores"] for step in steps if len({c["text"] for c in step["candidates"]}) > 1)
    assert answer.content.strip()
    print(f"\n{strategy}, {judge} judge, N=4: {seconds:.2f} s an answer through llama.cpp")


def test_a_forced_tool_call_is_valid_by_construction_under_llama_cpps_grammar(
    llama_server: tuple[str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    def add(a: int, b: int) -> int:
        """Add two whole numbers."""
        return a + b

    url, _ = llama_server
    sent = record_chat_requests(monkeypatch)
    llm = ChatLlavaCoT(
        backend=served(url), strategy="stage_beam", candidates=3, max_stage_tokens=STAGE_LIMITS, seed=1
    )
    question = [HumanMessage("What is 2 plus 3?")]
    answers = [llm.bind_tools([add], tool_choice="add").invoke(question) for _ in range(3)]
    assert any("<tool_call>" in body.get("grammar", "") for body in sent)  # decoded under the call's GBNF
    for answer in answers:
        [call] = answer.tool_calls
        assert call["name"] == "add" and set(call["args"]) == {"a", "b"}
        assert all(isinstance(value, int) for value in call["args"].values())


def test_the_eval_runs_a_benchmark_file_through_llama_cpp_8_questions_at_a_time(
    llama_server: tuple[str, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = llama_server
    started = time.perf_counter()
    report, most_open = served_eval(url, tmp_path, monkeypatch)
    seconds = time.perf_counter() - started
    assert [r.questions for r in report.results] == [8, 8] and most_open > 1  # questions overlapped
    assert all(r.tokens_per_question > 0 and r.requests_per_question >= 1 for r in report.results)
    lines = (tmp_path / "out" / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 16
    print(
        f"\nllama.cpp eval, 8 questions x 2 strategies, concurrency 8: {seconds:.1f} s, "
        f"{most_open} requests open at most"
    )
    print(report.markdown())


def test_structured_output_is_valid_in_50_of_50_tries_through_llama_cpp(
    llama_server: tuple[str, float],
) -> None:
    url, _ = llama_server
    tries = fifty_tries(ChatLlavaCoT(backend=served(url), max_stage_tokens=STAGE_LIMITS))
    print(f"\nstructured output through llama.cpp: {tries.summary()}")
    assert tries.valid == tries.tries == 50, tries.failures[:1]
