"""vLLM's pooling API: what a reward model served with ``--runner pooling`` says about texts.

:class:`PoolingClient` posts the inputs of one judge step to ``{base_url}/pooling`` through
a :class:`~.transport.Session` (the chat backend's transport: retries with backoff,
one deadline per reply, errors that say what to do) and reads back each input's output:

- ``task="classify"`` (an outcome reward model, the sequence-classification head read at
  the last token): one vector per input, ``[logit, ...]``;
- ``task="token_classify"`` (a process reward model, served with a step tag:
  ``--pooler-config '{"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": ID}'``):
  one vector per step tag in the input, ``[[logit, ...], ...]``.

Request and reply shapes, as vLLM 0.32 serves them (``use_activation: false`` asks for
the head's raw logits rather than their sigmoid or softmax):

- texts, all in one request: ``{"model", "input": [text, ...], "task", "use_activation"}``;
- a conversation (the way to send a picture, for a model that reads images):
  ``{"model", "messages": [...], "task", "use_activation"}``, one per request (the API
  takes one conversation), the step's requests posted concurrently;
- the reply: ``{"data": [{"index": i, "data": output}, ...], "usage": {...}}``.

vLLM serves ``/pooling`` at the server's root, beside ``/v1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from langchain_llava_cot.backends.openai.asking import openai_messages
from langchain_llava_cot.backends.openai.errors import ServerError
from langchain_llava_cot.backends.openai.transport import Plan, Posts, Session
from langchain_llava_cot.conversation import Conversation

__all__ = ["Pooled", "PoolingClient", "PoolingInput", "PoolingTask", "pooling_plan"]

PoolingTask = Literal["classify", "token_classify"]

PoolingInput = Union[str, tuple[Conversation, str]]  # noqa: UP007 - a runtime alias on Python 3.10
"""A text, or a conversation and the assistant's answer that follows it (sent as chat messages)."""

POOLING_PATH = "/pooling"


@dataclass(frozen=True)
class Pooled:
    """What the server said about each input, and the tokens it read."""

    outputs: list[Any]
    """Each input's output, in order: a vector (``classify``), or one per step tag (``token_classify``)."""
    prompt_tokens: int = 0


class PoolingClient:
    """Ask a reward model served by vLLM's pooling runner for its outputs.

    Example::

        client = PoolingClient("http://127.0.0.1:8000", "reward-model")
        [[logit]] = client.pool(["Question: ...<REASONING> ... </REASONING>"], "classify")

    Args:
        base_url: The server's root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is
            dropped: vLLM serves ``/pooling`` beside it).
        model: The served model's name.
        api_key: Sent as a bearer token when given.
        timeout: Seconds a request may take in all.
        max_retries: Retries after a 429, a 5xx or a connection error (exponential backoff).
        max_concurrency: Most requests in flight at once (conversations go one per request).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_concurrency: int = 8,
    ) -> None:
        if not model:
            msg = "Name the served reward model: PoolingClient(base_url, model='<the name vLLM serves>')."
            raise ValueError(msg)
        root = base_url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.session = Session(
            root, api_key=api_key, timeout=timeout, max_retries=max_retries, max_concurrency=max_concurrency
        )
        self.base_url = self.session.base_url

    def pool(self, inputs: Sequence[PoolingInput], task: PoolingTask) -> Pooled:
        """Each input's output, in order: a vector (``classify``) or a vector per step tag."""
        try:
            return self.session.run(pooling_plan(self.model, inputs, task, self.base_url))
        except ServerError as e:
            raise _explained(e, task) from e

    async def apool(self, inputs: Sequence[PoolingInput], task: PoolingTask) -> Pooled:
        """Async :meth:`pool`."""
        try:
            return await self.session.arun(pooling_plan(self.model, inputs, task, self.base_url))
        except ServerError as e:
            raise _explained(e, task) from e

    def close(self) -> None:
        """Close the sync HTTP client."""
        self.session.close()

    async def aclose(self) -> None:
        """Close the current event loop's HTTP client."""
        await self.session.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"


def pooling_plan(
    model: str, inputs: Sequence[PoolingInput], task: PoolingTask, base_url: str
) -> Plan[Pooled]:
    """Texts in one request, each conversation in its own; the outputs in the inputs' order."""
    texts = [i for i, item in enumerate(inputs) if isinstance(item, str)]
    chats = [(i, item) for i, item in enumerate(inputs) if not isinstance(item, str)]
    common = {"model": model, "task": task, "use_activation": False}
    payloads: list[dict[str, Any]] = []
    if texts:
        payloads.append({**common, "input": [inputs[i] for i in texts]})
    for _, (conversation, answer) in chats:
        messages = [*openai_messages(conversation), {"role": "assistant", "content": answer}]
        payloads.append({**common, "messages": messages})
    if not payloads:
        return Pooled([])
    replies = yield Posts(tuple(payloads), path=POOLING_PATH)
    outputs: list[Any] = [None] * len(inputs)
    if texts:
        for i, output in zip(texts, _outputs(replies[0], len(texts), base_url)):
            outputs[i] = output
    for (i, _), reply in zip(chats, replies[1:] if texts else replies):
        [outputs[i]] = _outputs(reply, 1, base_url)
    used = sum(int((reply.get("usage") or {}).get("prompt_tokens") or 0) for reply in replies)
    return Pooled(outputs, used)


def _outputs(reply: Any, count: int, base_url: str) -> list[Any]:
    """The ``data`` of each input in one reply, by its ``index``."""
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, list) or len(data) != count:
        found = len(data) if isinstance(data, list) else "no"
        msg = f"The server at {base_url} answered {POOLING_PATH} with {found} outputs for {count} inputs."
        raise ServerError(msg)
    by_index = {item.get("index", n): item.get("data") for n, item in enumerate(data)}
    return [by_index.get(n) for n in range(count)]


def _explained(error: ServerError, task: PoolingTask) -> ServerError:
    """A 400 about the pooling task means the server runs the other kind of reward model."""
    if error.status == 400 and "pooling_task" in str(error):
        served = "token_classify" if task == "classify" else "classify"
        msg = (
            f"{error} The server serves its model for task {served!r}, and this judge asks for {task!r}: "
            + (
                "serve a process reward model with --pooler-config "
                '\'{"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": <id>}\', '
                "or use the outcome judge."
                if task == "token_classify"
                else "use the process judge for it, or serve the outcome model without a token_classify task."
            )
        )
        return ServerError(msg, status=error.status)
    return error
