"""CONTRACT tests of OpenAICompatibleBackend against a stand-in server on 127.0.0.1.

These are not end-to-end tests: no model runs. The stand-in is a small real HTTP server
(``http.server`` in a thread) that speaks the chat-completions protocol as vLLM documents
it (``n``, ``stop``, ``logprobs``/``top_logprobs``, ``continue_final_message`` with
``add_generation_prompt=false``, ``usage``, its 404 for an unknown model), and can be
told to ignore or reject each feature the way other servers do, so every fallback of
the backend is exercised. End-to-end runs against a real server are in
``tests/integration_tests/test_openai_backend.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from langchain_llava_cot._calls import adrive, drive
from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest
from langchain_llava_cot.backends.openai import (
    ImagesRejectedError,
    ModelNotServedError,
    OpenAICompatibleBackend,
    ServerCapabilities,
    ServerError,
    ServerTimeoutError,
    ServerUnreachableError,
)
from langchain_llava_cot.backends.openai.forced_calls import CLOSED_AT_THE_LIMIT
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.judges import JudgeTask, PairwiseJudge, VerifierJudge
from langchain_llava_cot.stages import Stage

pytestmark = pytest.mark.timeout(30)

MODEL = "tiny-vlm"
_KNOWN_FIELDS = {"model", "messages", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "logprobs"}
_KNOWN_FIELDS |= {"top_logprobs", "generation_config", "stream", "user"}  # no structured_outputs: 422


def answer(variant: int) -> str:
    """What the stand-in 'model' writes: a four-stage answer numbered by its variant."""
    return (
        f"<SUMMARY> plan {variant} </SUMMARY>\n\n<CAPTION> caption {variant} </CAPTION>\n\n"
        f"<REASONING> reasoning {variant} </REASONING>\n\n<CONCLUSION> answer {variant} </CONCLUSION>"
    )


@dataclass
class StandIn:
    """What the stand-in honours, and what it records."""

    n: bool = True
    stop: bool = True
    logprobs: bool = True
    continuation: bool = True
    prefill: bool = False
    """Continues any final assistant message, asked or not, and repeats it at the start of the
    reply (llama.cpp's assistant prefill)."""
    images: bool = True
    grammar: bool = True
    """Decodes under ``structured_outputs`` grammars (it knows two: the probe's, and a call of ``add``)."""
    gbnf: bool = False
    """Decodes under GBNF grammars in the ``grammar`` field instead (llama.cpp), the same two."""
    strict: bool = False
    """Reject unknown fields with 422, as ``transformers serve`` does."""
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    """Statuses (and headers) to answer the next requests with, before answering normally."""
    delay: float = 0.0
    trickle: float = 0.0
    """Seconds between the bytes of the body, after the headers (a server that trickles)."""
    cut: bool = False
    """Promise the whole body, send half of it, then close the connection."""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def after_probe(self) -> list[dict[str, Any]]:
        """The bodies received after the probe (probe bodies ask for one token of 'Say OK')."""
        return [b for b in self.bodies if not _is_probe(b)]

    # the protocol

    def reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.lock:
            self.bodies.append(body)
            if self.failures:
                status, headers = self.failures.pop(0)
                return status, {"error": {"message": "try again later", "code": status}}, headers
        if self.strict and set(body) - _KNOWN_FIELDS:
            return 422, {"detail": f"Unexpected fields in the request: {set(body) - _KNOWN_FIELDS}"}, {}
        if body.get("model") != MODEL:
            message = f"The model `{body.get('model')}` does not exist."
            return 404, {"error": {"message": message, "type": "NotFoundError", "code": 404}}, {}
        messages = body["messages"]
        if not self.images and any(isinstance(m["content"], list) for m in messages):
            message = f"{MODEL} is not a multimodal model"
            return 400, {"error": {"message": message, "type": "BadRequestError", "code": 400}}, {}
        continuing = bool(self.continuation and body.get("continue_final_message")) or self.prefill
        continuing = continuing and messages[-1]["role"] == "assistant"
        count = body.get("n", 1) if self.n else 1
        first = body.get("seed") or 0
        sampled = (body.get("temperature") or 0) > 0
        choices, completion_tokens = [], 0
        for index in range(count):
            text = self._under_grammar(body) or self._write(
                messages, continuing, first + index if sampled else 0
            )
            tokens = _tokenize(text)
            choice, used = self._choice(index, tokens, body)
            if self.prefill and continuing:
                choice["message"]["content"] = _text(messages[-1]) + choice["message"]["content"]
            choices.append(choice)
            completion_tokens += used
        prompt_tokens = _prompt_tokens(messages, continuing)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        return 200, {"object": "chat.completion", "model": MODEL, "choices": choices, "usage": usage}, {}

    def _under_grammar(self, body: dict[str, Any]) -> str | None:
        grammar = (body.get("structured_outputs") or {}).get("grammar") if self.grammar else None
        if self.gbnf and "grammar" in body:
            grammar = body["grammar"]
            rule_names = re.findall(r"^([^ ]+) ::=", grammar, re.MULTILINE)
            assert all("_" not in name for name in rule_names) and "(=" not in grammar  # GBNF's dialect
        if grammar is None:
            return None
        if grammar == 'root ::= "7"':
            return "7"
        assert '"\\"add\\""' in grammar  # the grammar names the tool the call must be of
        return ' <tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call> </CONCLUSION>'

    def _write(self, messages: list[dict[str, Any]], continuing: bool, variant: int) -> str:
        last_text = _text(messages[-1])
        if continuing:
            if last_text.endswith("The better response is"):
                return " 1."
            if last_text.endswith("The candidate is"):
                return " right."
            tag = re.findall(r"<(SUMMARY|CAPTION|REASONING|CONCLUSION)>\s*$", last_text)
            full = answer(variant)
            return full[full.index(f"<{tag[0]}>") + len(tag[0]) + 2 :] if tag else " more"
        if "Which is better?" in last_text:
            return "The better response is 2."
        if "Is it right?" in last_text:
            return "The candidate is wrong."
        return answer(variant)

    def _choice(self, index: int, tokens: list[str], body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        kept, text, finish = [], "", "length"
        for token in tokens[: body.get("max_tokens", 10_000)]:
            candidate = text + token
            stops = [s for s in body.get("stop") or () if s in candidate] if self.stop else []
            if stops:
                text, finish = candidate[: min(candidate.index(s) for s in stops)], "stop"
                break
            text = candidate
            kept.append(token)
        else:
            if len(tokens) <= body.get("max_tokens", 10_000):
                finish = "stop"
        choice: dict[str, Any] = {"index": index, "message": {"role": "assistant", "content": text}}
        choice["finish_reason"] = finish
        if self.logprobs and body.get("logprobs"):
            top = body.get("top_logprobs") or 0
            choice["logprobs"] = {"content": [_token_entry(t, top) for t in kept]}
        return choice, len(kept)


def _token_entry(token: str, top: int) -> dict[str, Any]:
    logprob = -0.1 if token.strip() in ("1", "right") else -0.5
    other = " wrong" if token.strip() == "right" else " 2"
    alternatives = [{"token": token, "logprob": logprob}, {"token": other, "logprob": -2.3}][:top]
    return {"token": token, "logprob": logprob, "top_logprobs": alternatives}


def _tokenize(text: str) -> list[str]:
    return re.findall(r"\s*[^\s.]+|\.", text)


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content)


def _prompt_tokens(messages: list[dict[str, Any]], continuing: bool) -> int:
    words = sum(len(_text(m).split()) + 3 for m in messages)
    return words - 1 if continuing else words + 2


def _is_probe(body: dict[str, Any]) -> bool:
    return body.get("max_tokens") == 1 and "Say OK" in _text(body["messages"][0])


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        stand_in = self.server.stand_in
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with stand_in.lock:
            stand_in.in_flight += 1
            stand_in.max_in_flight = max(stand_in.max_in_flight, stand_in.in_flight)
        try:
            time.sleep(stand_in.delay)
            status, payload, headers = stand_in.reply(body)
        finally:
            with stand_in.lock:
                stand_in.in_flight -= 1
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if stand_in.cut:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if stand_in.trickle:
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(stand_in.trickle)
                return
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stand_in: StandIn


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start stand-in servers on free ports of 127.0.0.1; all are shut down after the test."""
    servers: list[_Server] = []

    def start(**options: Any) -> StandIn:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.stand_in = StandIn(**options)
        server.stand_in.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.stand_in

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 0, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


CONVERSATION = Conversation((Turn("user", "How many squares?", (_png(),)),))
CAPTION_PREFIX = "<SUMMARY> plan 0 </SUMMARY>\n\n<CAPTION>"


def caption_request(**options: Any) -> SampleRequest:
    return SampleRequest(CONVERSATION, CAPTION_PREFIX, stop=("</CAPTION>",), **options)


def test_full_protocol_is_detected_and_used(serve: Any) -> None:
    """CONTRACT: a server that honours everything gets one request with n, stop, continuation."""
    stand_in = serve()
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    [samples] = backend.sample([caption_request(n=3, temperature=0.7, seed=5)])

    assert backend.capabilities == ServerCapabilities.vllm()
    assert [s.text.strip() for s in samples] == ["caption 5", "caption 6", "caption 7"]
    assert all(s.finish_reason == "stop" and len(s.token_logprobs or ()) == 2 for s in samples)
    assert samples[0].prompt_tokens > 0 and sum(s.completion_tokens for s in samples) == 6
    [body] = stand_in.after_probe()
    assert body["n"] == 3 and body["stop"] == ["</CAPTION>"] and body["logprobs"] is True
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": CAPTION_PREFIX}
    image = body["messages"][0]["content"][0]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")


def test_choose_reads_top_logprobs(serve: Any) -> None:
    """CONTRACT: choose sends a one-token continuation and reads the options' top logprobs."""
    stand_in = serve()
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    backend.probe()
    assert backend.supports_choice
    request = ChoiceRequest(CONVERSATION, "The better response is", options=(" 1", " 2"))
    [result] = backend.choose([request])
    assert result.logprobs == (-0.1, -2.3)
    [body] = stand_in.after_probe()
    assert body["max_tokens"] == 1 and body["top_logprobs"] == 20 and body["continue_final_message"]


def test_verifier_reads_its_verdict_from_top_logprobs(serve: Any) -> None:
    """CONTRACT: the verifier judge continues "The candidate is" and reads " right" / " wrong"."""
    stand_in = serve()
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    backend.probe()
    task = JudgeTask(CONVERSATION, Stage.CAPTION, {Stage.SUMMARY: "plan 0"}, ("caption 0", "caption 1"))
    verdict = drive(VerifierJudge().select(task, backend), backend)
    assert verdict.scores == pytest.approx((2.2, 2.2)) and {c.method for c in verdict.comparisons} == {
        "logits"
    }
    bodies = stand_in.after_probe()
    assert len(bodies) == 2 and all(b["max_tokens"] == 1 and b["continue_final_message"] for b in bodies)
    assert bodies[0]["messages"][-1] == {"role": "assistant", "content": "The candidate is"}


def test_n_ignored_falls_back_to_concurrent_requests(serve: Any) -> None:
    """CONTRACT: where n is ignored, one request per candidate, each with its own seed."""
    stand_in = serve(n=False, delay=0.2)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL, max_concurrency=2)
    backend.probe()
    assert backend.capabilities is not None and not backend.capabilities.n
    stand_in.max_in_flight = 0
    [samples] = backend.sample([caption_request(n=4, temperature=0.7, seed=1)])

    assert [s.text.strip() for s in samples] == ["caption 1", "caption 2", "caption 3", "caption 4"]
    bodies = stand_in.after_probe()
    assert sorted(b["seed"] for b in bodies) == [1, 2, 3, 4] and all("n" not in b for b in bodies)
    assert stand_in.max_in_flight == 2


async def test_n_fallback_async_is_bounded_by_max_concurrency(serve: Any) -> None:
    """CONTRACT: the async path sends the n fallback concurrently, at most max_concurrency at once."""
    stand_in = serve(n=False, delay=0.2)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL, max_concurrency=3)
    await backend.aprobe()
    stand_in.max_in_flight = 0
    started = time.perf_counter()
    [samples] = await backend.asample([caption_request(n=6, temperature=0.7, seed=0)])
    assert len({s.text for s in samples}) == 6
    assert stand_in.max_in_flight == 3
    assert time.perf_counter() - started < 6 * 0.2
    await backend.aclose()


def test_stop_ignored_is_cut_client_side(serve: Any) -> None:
    """CONTRACT: a server that ignores stop runs on; the text and logprobs are cut at the stop string."""
    stand_in = serve(stop=False)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL, capabilities=ServerCapabilities.vllm())
    [[sample]] = backend.sample([caption_request()])
    assert sample.text.strip() == "caption 0" and sample.finish_reason == "stop"
    assert sample.token_logprobs is not None and len(sample.token_logprobs) == 2


def test_no_logprobs_means_no_choice_and_generated_verdicts(serve: Any) -> None:
    """CONTRACT: without logprobs, supports_choice is False and the pairwise judge parses verdicts."""
    stand_in = serve(logprobs=False)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    [[sample]] = backend.sample([caption_request()])
    assert sample.token_logprobs is None
    assert backend.capabilities is not None and not backend.capabilities.logprobs
    assert not backend.supports_choice
    with pytest.raises(NotImplementedError, match="cannot score choices"):
        backend.choose([ChoiceRequest(CONVERSATION, "The better response is")])

    task = JudgeTask(CONVERSATION, Stage.CAPTION, {Stage.SUMMARY: "plan 0"}, ("caption 0", "caption 1"))
    verdict = drive(PairwiseJudge(seed=0).select(task, backend), backend)
    assert [c.method for c in verdict.comparisons] == ["generated"]
    verdict = drive(VerifierJudge().select(task, backend), backend)  # generated and parsed: "wrong"
    assert verdict.scores == (-1.0, -1.0) and {c.method for c in verdict.comparisons} == {"generated"}


def test_continuation_ignored_asks_for_the_stage_explicitly(serve: Any) -> None:
    """CONTRACT: a server that starts a new turn gets an explicit stage request; the stage is parsed out."""
    stand_in = serve(continuation=False)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    [[sample]] = backend.sample([caption_request()])

    assert backend.capabilities is not None and not backend.capabilities.continuation
    assert sample.text.strip() == "caption 0" and sample.finish_reason == "stop"
    assert sample.repairs == ("text before the opening tag dropped",)  # it wrote the whole answer
    [body] = stand_in.after_probe()
    assert body["messages"][-1]["role"] == "user" and "continue_final_message" not in body
    asked = body["messages"][-1]["content"][-1]["text"]
    assert "<SUMMARY> plan 0 </SUMMARY>" in asked and "only the caption stage" in asked
    assert not backend.supports_choice


def test_a_server_that_continues_unasked_and_repeats_the_prefix_like_llama_cpp(serve: Any) -> None:
    """CONTRACT: llama.cpp continues a final assistant message and repeats it in its reply; the probe
    sees the continuation (the prompt is only "OK" longer), and the repeated prefix is cut."""
    stand_in = serve(continuation=False, prefill=True)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    [[sample]] = backend.sample([caption_request()])
    assert backend.capabilities is not None and backend.capabilities.continuation
    assert sample.text.strip() == "caption 0" and not sample.repairs
    assert sample.token_logprobs is not None and len(sample.token_logprobs) == 2  # "caption", "0"
    [body] = stand_in.after_probe()
    assert body["messages"][-1]["role"] == "assistant" and body["continue_final_message"]


def test_first_stage_without_continuation_sends_the_conversation_alone(serve: Any) -> None:
    """CONTRACT: best-of-N (prefix "<SUMMARY>") needs no instruction: LLaVA-CoT opens with it."""
    stand_in = serve(continuation=False)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    request = SampleRequest(CONVERSATION, "<SUMMARY>", stop=("</CONCLUSION>",), max_new_tokens=100)
    [[sample]] = backend.sample([request])
    assert sample.text.strip().startswith("plan 0 </SUMMARY>") and sample.text.strip().endswith("answer 0")
    [body] = stand_in.after_probe()
    assert body["messages"][-1]["content"][-1]["text"] == "How many squares?"


def test_strict_server_like_transformers_serve(serve: Any) -> None:
    """CONTRACT: a server that rejects unknown fields (422) gets what it reads; generation_config samples."""
    stand_in = serve(strict=True, n=False, logprobs=False, continuation=False)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    [samples] = backend.sample([caption_request(n=2, temperature=0.7, seed=3)])
    assert backend.capabilities == ServerCapabilities(stop=True, generation_config=True)
    assert [s.text.strip() for s in samples] == ["caption 3", "caption 4"]
    for body in stand_in.after_probe():
        assert json.loads(body["generation_config"])["do_sample"] is True
        assert "continue_final_message" not in body and "n" not in body


def test_retries_429_and_503_then_succeeds(serve: Any) -> None:
    """CONTRACT: 429 (with Retry-After) and 503 are retried with backoff, then the answer comes."""
    stand_in = serve(failures=[(429, {"Retry-After": "0"}), (503, {})])
    backend = OpenAICompatibleBackend(stand_in.url, MODEL, capabilities=ServerCapabilities.vllm())
    [[sample]] = backend.sample([caption_request()])
    assert sample.text.strip() == "caption 0" and len(stand_in.bodies) == 3


def test_retries_run_out_with_a_clear_error(serve: Any) -> None:
    """CONTRACT: a server that keeps answering 503 gives a ServerError after max_retries."""
    stand_in = serve(failures=[(503, {"Retry-After": "0"})] * 5)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL, max_retries=1, capabilities=ServerCapabilities())
    with pytest.raises(ServerError, match="503") as raised:
        backend.sample([caption_request()])
    assert raised.value.status == 503 and len(stand_in.bodies) == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dead_server_fails_fast_and_clearly(mode: str) -> None:
    """CONTRACT: connection refused is retried briefly, then ServerUnreachableError says what to do."""
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{_free_port()}/v1", MODEL, timeout=2)
    started = time.perf_counter()
    with pytest.raises(ServerUnreachableError, match="Start the server"):
        if mode == "sync":
            backend.sample([caption_request()])
        else:
            asyncio.run(backend.asample([caption_request()]))
    assert time.perf_counter() - started < 3


def test_wrong_model_name_is_a_clear_error(serve: Any) -> None:
    """CONTRACT: vLLM's 404 for an unknown model becomes ModelNotServedError at first use, without retries."""
    stand_in = serve()
    backend = OpenAICompatibleBackend(stand_in.url, "no-such-model")
    started = time.perf_counter()
    with pytest.raises(ModelNotServedError, match="does not serve model 'no-such-model'"):
        backend.sample([caption_request()])
    assert time.perf_counter() - started < 1 and len(stand_in.bodies) == 1


def test_images_rejected_is_a_clear_error(serve: Any) -> None:
    """CONTRACT: a text-only server is detected by the probe; image requests then fail before sending."""
    stand_in = serve(images=False)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    with pytest.raises(ImagesRejectedError, match="rejected image input"):
        backend.sample([caption_request()])
    assert stand_in.after_probe() == []
    text_only = Conversation((Turn("user", "Say hi"),))
    [[sample]] = backend.sample([SampleRequest(text_only, "")])
    assert "plan 0" in sample.text


def test_images_rejected_without_probe_is_a_clear_error(serve: Any) -> None:
    """CONTRACT: with capabilities given (no probe), the server's rejection becomes ImagesRejectedError."""
    stand_in = serve(images=False)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL, capabilities=ServerCapabilities.vllm())
    with pytest.raises(ImagesRejectedError, match="not a multimodal model") as raised:
        backend.sample([caption_request()])
    assert raised.value.status == 400 and len(stand_in.bodies) == 1


def test_a_hanging_server_times_out(serve: Any) -> None:
    """CONTRACT: a server that accepts but does not answer gives ServerTimeoutError within the timeout."""
    stand_in = serve(delay=5)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL, timeout=0.5, capabilities=ServerCapabilities())
    started = time.perf_counter()
    with pytest.raises(ServerTimeoutError, match="Raise timeout"):
        backend.sample([caption_request()])
    assert time.perf_counter() - started < 1.5


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_trickling_server_cannot_hold_a_call_past_its_timeout(serve: Any, mode: str) -> None:
    """CONTRACT: timeout bounds the whole request, not each read: a body sent a byte at a time fails."""
    stand_in = serve(trickle=0.2)
    backend = OpenAICompatibleBackend(
        stand_in.url, MODEL, timeout=1.0, max_retries=0, capabilities=ServerCapabilities()
    )
    started = time.perf_counter()
    with pytest.raises(ServerTimeoutError, match="whole reply took over 1 s"):
        if mode == "sync":
            backend.sample([caption_request()])
        else:
            asyncio.run(backend.asample([caption_request()]))
    assert time.perf_counter() - started < 3


def test_a_body_cut_mid_reply_is_not_called_unreachable(serve: Any) -> None:
    """CONTRACT: a server that answers, then closes mid-body, is reported as a broken reply."""
    stand_in = serve(cut=True)
    backend = OpenAICompatibleBackend(
        stand_in.url, MODEL, timeout=5.0, max_retries=1, capabilities=ServerCapabilities()
    )
    with pytest.raises(ServerError, match="broke during the request") as raised:
        backend.sample([caption_request()])
    assert not isinstance(raised.value, ServerUnreachableError)
    assert len(stand_in.bodies) == 2  # a broken reply is retried


ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


def forced_call_request() -> SampleRequest:
    from langchain_llava_cot.backends.base import ToolCallConstraint

    prefix = "<SUMMARY> s </SUMMARY>\n\n<CAPTION> c </CAPTION>\n\n<REASONING> r </REASONING>\n\n<CONCLUSION>"
    return SampleRequest(CONVERSATION, prefix, stop=("</CONCLUSION>",), tool_call=ToolCallConstraint((ADD,)))


def test_a_forced_tool_call_is_decoded_under_the_servers_grammar(serve: Any) -> None:
    """CONTRACT: where the probe finds grammars, a forced call is sent with its grammar."""
    stand_in = serve()
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    [[sample]] = backend.sample([forced_call_request()])
    assert backend.capabilities is not None and backend.capabilities.grammar
    [body] = stand_in.after_probe()
    grammar = body["structured_outputs"]["grammar"]
    assert '"<tool_call>"' in grammar and '"</CONCLUSION>"' in grammar and "add" in grammar
    assert sample.text.strip() == '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
    [[free]] = backend.sample([caption_request()])
    assert "structured_outputs" not in stand_in.after_probe()[-1]  # only forced calls are constrained


def test_a_llama_cpp_server_gets_the_forced_call_grammar_in_gbnf(serve: Any) -> None:
    """CONTRACT: a server that reads GBNF in ``grammar`` (llama.cpp) gets the call's grammar there."""
    stand_in = serve(grammar=False, gbnf=True)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    [[sample]] = backend.sample([forced_call_request()])
    assert backend.capabilities is not None and backend.capabilities.gbnf and not backend.capabilities.grammar
    [body] = stand_in.after_probe()
    assert '"<tool_call>"' in body["grammar"] and "structured_outputs" not in body
    assert sample.text.strip() == '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'


@pytest.mark.parametrize("server", [{}, {"grammar": False, "gbnf": True}])
def test_under_a_grammar_only_its_end_stops_a_forced_call(serve: Any, server: dict) -> None:
    """CONTRACT: stop strings a call contains ("2", ":") are neither sent with its grammar nor cut here."""
    stand_in = serve(**server)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    request = replace(forced_call_request(), stop=("</CONCLUSION>", "2", ":"))
    [[sample]] = backend.sample([request])
    [body] = stand_in.after_probe()
    assert body["stop"] == ["</CONCLUSION>"]
    assert sample.text.strip() == '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'


@pytest.mark.parametrize("server", [{}, {"grammar": False, "gbnf": True}])
def test_a_forced_call_its_token_limit_cuts_is_closed_by_its_grammar(serve: Any, server: dict) -> None:
    """CONTRACT: the server cannot close a call in time; the client completes it the shortest way."""
    stand_in = serve(**server)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    [[sample]] = backend.sample([replace(forced_call_request(), max_new_tokens=5)])  # cut after '"a": 2,'
    assert sample.text.strip() == '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 0}}</tool_call>'
    assert sample.finish_reason == "stop" and sample.repairs == (CLOSED_AT_THE_LIMIT,)
    assert sample.completion_tokens == 5  # what the server wrote; the close was not generated


def test_without_a_grammar_a_forced_call_keeps_every_stop_string(serve: Any) -> None:
    stand_in = serve(grammar=False)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    backend.sample([replace(forced_call_request(), stop=("</CONCLUSION>", "2"))])
    assert [body["stop"] for body in stand_in.after_probe()] == [["</CONCLUSION>", "2"]]


@pytest.mark.parametrize("server", [{"grammar": False}, {"strict": True}])
def test_without_grammars_a_forced_call_is_asked_for_by_the_prompt_alone(serve: Any, server: dict) -> None:
    stand_in = serve(**server)
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    backend.sample([forced_call_request()])
    assert backend.capabilities is not None and not backend.capabilities.grammar
    assert all("structured_outputs" not in body and "grammar" not in body for body in stand_in.after_probe())


async def test_sync_call_inside_a_running_loop_and_async_judge(serve: Any) -> None:
    """CONTRACT: sample() works inside a running loop (no nested loop); the judge reads logits via achoose."""
    stand_in = serve()
    backend = OpenAICompatibleBackend(stand_in.url, MODEL)
    [[sample]] = backend.sample([caption_request()])
    assert sample.text.strip() == "caption 0"
    task = JudgeTask(CONVERSATION, Stage.CAPTION, {Stage.SUMMARY: "plan 0"}, ("caption 0", "caption 1"))
    verdict = await adrive(PairwiseJudge(seed=0).select(task, backend), backend)
    assert [c.method for c in verdict.comparisons] == ["logits"]


def test_capabilities_override_skips_the_probe(serve: Any) -> None:
    """CONTRACT: capabilities= is used as given; no probe request is sent."""
    stand_in = serve()
    backend = OpenAICompatibleBackend(stand_in.url, MODEL, capabilities=ServerCapabilities(n=False))
    [samples] = backend.sample([caption_request(n=2)])
    assert len(samples) == 2 and len(stand_in.bodies) == 2 and not any(_is_probe(b) for b in stand_in.bodies)
    assert not backend.supports_choice
