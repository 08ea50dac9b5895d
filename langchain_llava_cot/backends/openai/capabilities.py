"""What an OpenAI-compatible server honours, and the probe that finds out.

Servers differ in what they honour, so the first call sends a few one-token probe
requests and records a :class:`ServerCapabilities` (or takes the one given as
``capabilities=``); every later request is built for what the server can do.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

from langchain_llava_cot.backends.openai.errors import ImagesRejectedError, ServerError
from langchain_llava_cot.backends.openai.transport import Plan, Posts


@dataclass(frozen=True)
class ServerCapabilities:
    """What a server honours; detected at first use, or given to skip detection.

    >>> ServerCapabilities.vllm().continuation
    True
    """

    n: bool = False
    """Returns ``n`` choices from one request; otherwise one request per candidate."""
    stop: bool = False
    """Accepts ``stop`` strings; the text is cut client-side either way."""
    logprobs: bool = False
    """Returns per-token ``logprobs``."""
    top_logprobs: bool = False
    """Returns ``top_logprobs``; with ``logprobs`` and ``continuation`` it enables :meth:`choose`."""
    continuation: bool = False
    """Continues a final assistant message (``continue_final_message``, ``add_generation_prompt=false``)."""
    images: bool = True
    """Accepts ``image_url`` content parts."""
    generation_config: bool = False
    """Reads a per-request ``generation_config`` JSON (``transformers serve``; needed there to sample)."""
    grammar: bool = False
    """Decodes under an EBNF grammar sent as ``structured_outputs`` (vLLM): forced tool calls are
    then valid by construction."""
    gbnf: bool = False
    """Decodes under a GBNF grammar sent as ``grammar`` (llama.cpp), used where ``grammar`` is not."""

    @classmethod
    def vllm(cls) -> ServerCapabilities:
        """Everything, as vLLM documents it."""
        return cls(n=True, stop=True, logprobs=True, top_logprobs=True, continuation=True, grammar=True)

    @property
    def choice(self) -> bool:
        """Whether verdicts can be read from one token's ``top_logprobs``."""
        return self.logprobs and self.top_logprobs and self.continuation


# --- detection ------------------------------------------------------------------------


def probe_plan(model: str) -> Plan[ServerCapabilities]:
    """Find out what the server honours with a few one-token requests.

    1. A plain request, which must succeed: a dead server or a wrong model name fails here.
    2. At once: ``n=2`` + ``stop`` + ``logprobs`` + ``top_logprobs`` together (split up when
       that is rejected); a continued assistant message and the same message as a finished
       turn (continuation is honoured when the first prompt is shorter, in ``usage``);
       an 8x8 image; a grammar that allows only "7", as ``structured_outputs`` (vLLM) and as
       ``grammar`` (llama.cpp's GBNF): honoured when the reply is "7".
    3. Only on a server that rejects unknown fields (HTTP 422): a ``generation_config``.
    """

    def payload(**extra: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"model": model, "messages": [user], "max_tokens": 1, "temperature": 0.0}
        return {**base, **extra}

    user = {"role": "user", "content": "Say OK."}
    partial = [user, {"role": "assistant", "content": "OK"}]
    image_part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_probe_image()}"}}
    [plain_reply] = yield Posts((payload(),))
    features = payload(n=2, stop=["\n\n"], logprobs=True, top_logprobs=2, temperature=1.0, seed=0)
    continued = payload(messages=partial, continue_final_message=True, add_generation_prompt=False)
    finished = payload(messages=partial)
    pictured = payload(
        messages=[{"role": "user", "content": [image_part, {"type": "text", "text": "Say OK"}]}]
    )
    grammar = payload(structured_outputs={"grammar": 'root ::= "7"'})  # honoured: the reply is "7"
    gbnf = payload(grammar='root ::= "7"')
    together, continued_reply, finished_reply, image_reply, grammar_reply, gbnf_reply = yield Posts(
        (features, continued, finished, pictured, grammar, gbnf), probe=True
    )
    if isinstance(together, ServerError):
        separately = (
            payload(n=2, temperature=1.0, seed=0),
            payload(stop=["\n\n"]),
            payload(logprobs=True, top_logprobs=2),
        )
        n_reply, stop_reply, logprobs_reply = yield Posts(separately, probe=True)
    else:
        n_reply = stop_reply = logprobs_reply = together
    generation_config = False
    if isinstance(continued_reply, ServerError) and continued_reply.status == 422:
        config = payload(generation_config=json.dumps({"max_new_tokens": 1}))
        [config_reply] = yield Posts((config,), probe=True)
        generation_config = not isinstance(config_reply, ServerError)
    first_token = _first_token(logprobs_reply)
    return ServerCapabilities(
        n=_ok(n_reply) and isinstance(n_reply.get("choices"), list) and len(n_reply["choices"]) >= 2,
        stop=_ok(stop_reply),
        logprobs=first_token is not None,
        top_logprobs=bool(first_token and first_token.get("top_logprobs")),
        continuation=_continued(plain_reply, continued_reply, finished_reply),
        images=not isinstance(image_reply, ImagesRejectedError),
        generation_config=generation_config,
        grammar=_ok(grammar_reply) and _content(grammar_reply) == "7",
        gbnf=_ok(gbnf_reply) and _content(gbnf_reply) == "7",
    )


def _content(reply: dict[str, Any]) -> Any:
    return _field(_field(_first_choice(reply), "message"), "content")


def _ok(reply: Any) -> bool:
    return isinstance(reply, dict)


def _first_choice(reply: Any) -> Any:
    choices = reply.get("choices") if _ok(reply) else None
    return choices[0] if isinstance(choices, list) and choices else None


def _field(holder: Any, name: str) -> Any:
    """``holder[name]`` when ``holder`` is an object; None for anything else a server may send."""
    return holder.get(name) if isinstance(holder, dict) else None


def _first_token(reply: Any) -> dict[str, Any] | None:
    content = _field(_field(_first_choice(reply), "logprobs"), "content")
    first = content[0] if isinstance(content, list) and content else None
    return first if isinstance(first, dict) else None


def _continued(plain: Any, continued: Any, finished: Any) -> bool:
    """Whether the server continued the partial assistant message ("OK") rather than closing it.

    Its prompt then lacks the end-of-turn and new-turn tokens: it is shorter than the same
    message as a finished turn (vLLM's ``continue_final_message``), or, on a server that
    always continues a final assistant message (llama.cpp's assistant prefill), only the
    one or two tokens of "OK" longer than the user turn alone. A server whose counts do not
    grow with the prompt (the finished turn no longer than the user turn alone) tells nothing,
    and is not taken to continue.
    """
    alone, used, full = (_field(_field(r, "usage"), "prompt_tokens") for r in (plain, continued, finished))
    counts = (alone, used, full)
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        return False
    assert isinstance(alone, int) and isinstance(used, int) and isinstance(full, int)
    if full <= alone:
        return False
    return used < full or alone < used <= alone + 2


def _probe_image() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
