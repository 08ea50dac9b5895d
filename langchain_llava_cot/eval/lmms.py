"""ChatLlavaCoT as an lmms-eval model: ``lmms-eval --model llava_cot`` runs any of lmms-eval's tasks.

lmms-eval (0.7) takes models from outside its tree through the Python entry-point group
``lmms_eval.models``; this package registers :func:`manifest` there (``pyproject.toml``), so once
both are installed in one environment lmms-eval lists ``llava_cot`` beside its own models.
Options go in ``--model_args`` as lmms-eval passes them, e.g.
``model=PATH,strategy=stage_beam,candidates=4,judge=likelihood`` (in-process) or
``base_url=http://127.0.0.1:8000/v1,served_model=NAME,timeout=300`` (a served model; the API key
from the environment variable ``api_key_env``, ``OPENAI_API_KEY`` by default), ``concurrency=8``.

Each ``generate_until`` request becomes one user message (the task's pictures, then its prompt)
answered with the search; ``batch_size`` requests go to ``ChatLlavaCoT.batch`` at once
(``concurrency`` in flight). The answer is the conclusion, with its token counts. The task's
``until``, ``max_new_tokens`` and ``temperature`` are not applied: the search has its own stages,
per-stage limits and sampling. Loglikelihood tasks are not supported (LLaVA-CoT answers by
writing its stages). This module imports lmms-eval, so it is imported only by lmms-eval.
"""

from __future__ import annotations

import io
import os
from typing import Any

try:
    from lmms_eval.api.instance import GenerationResult, TokenCounts
    from lmms_eval.api.model import lmms
    from lmms_eval.models.registry_v2 import ModelManifest
except ImportError as e:  # pragma: no cover - depends on the environment
    msg = "langchain_llava_cot.eval.lmms runs inside lmms-eval: pip install lmms-eval (see the README)."
    raise ImportError(msg) from e

__all__ = ["MODEL_ID", "LlavaCoTLmms", "manifest"]

MODEL_ID = "llava_cot"
"""The name lmms-eval knows the model by (``--model llava_cot``)."""


def manifest() -> ModelManifest:
    """The entry point lmms-eval loads: where the model class lives."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.LlavaCoTLmms")


class LlavaCoTLmms(lmms):
    """ChatLlavaCoT (any strategy, judge and backend) behind lmms-eval's model interface.

    Args:
        model: Model folder answered in-process (None: the bundled demo model).
        base_url: An OpenAI-compatible server instead.
        served_model: The served model's name (None: the one the server lists).
        api_key_env: Environment variable holding the server's API key.
        timeout: Seconds one reply of the server may take, queueing included (None: 60).
        strategy: ``greedy``, ``best_of_n``, ``vote``, ``stage_beam`` or ``retrace``.
        candidates: Candidates per step (N).
        judge: ``likelihood``, ``verifier``, ``pairwise`` or ``vote``.
        temperature: Sampling temperature of the candidates.
        max_stage_tokens: Token limit of each stage (None: the engine's).
        seed: Makes sampling and judging repeatable.
        concurrency: Questions in flight at once.
        batch_size: Accepted from lmms-eval's ``--batch_size``; questions go ``concurrency`` at a time.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        served_model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float | None = None,
        strategy: str = "stage_beam",
        candidates: int = 4,
        judge: str | None = None,
        temperature: float = 0.6,
        max_stage_tokens: int | dict[str, int] | None = None,
        seed: int | None = 0,
        concurrency: int = 4,
        batch_size: int | str = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            msg = f"llava_cot does not take {sorted(kwargs)} in --model_args (langchain_llava_cot.eval.lmms)."
            raise TypeError(msg)
        from langchain_llava_cot.chat_models import ChatLlavaCoT
        from langchain_llava_cot.options import DEFAULT_JUDGE

        backend = None
        if base_url:
            from langchain_llava_cot.eval.serving import served_backend

            api_key = os.environ.get(api_key_env) or None
            backend = served_backend(
                str(base_url),
                served_model,
                api_key,
                max_concurrency=max(8, int(concurrency)),
                timeout=None if timeout is None else float(timeout),
            )
        self.llm = ChatLlavaCoT(
            model=None if backend else model,
            backend=backend,
            strategy=strategy,  # type: ignore[arg-type]
            candidates=int(candidates),
            judge=judge or DEFAULT_JUDGE,
            temperature=float(temperature),
            max_stage_tokens=max_stage_tokens,
            seed=seed,
        )
        self.concurrency = int(concurrency)

    def generate_until(self, requests: list[Any]) -> list[GenerationResult]:
        """Answer each request with the search; the conclusion and its token counts."""
        messages = [self._message(request) for request in requests]
        answers = self.llm.batch(messages, config={"max_concurrency": self.concurrency})  # type: ignore[arg-type]
        results = []
        for answer in answers:
            usage: dict[str, Any] = dict(answer.usage_metadata or {})
            counts = TokenCounts(
                input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens")
            )
            results.append(GenerationResult(text=str(answer.content), token_counts=counts))
        return results

    def _message(self, request: Any) -> list[Any]:
        from langchain_core.messages import HumanMessage

        from langchain_llava_cot.images import image_block

        context, _, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        blocks: list[Any] = [image_block(_png(v)) for v in (visuals or [])]
        return [HumanMessage(content=[*blocks, {"type": "text", "text": str(context)}])]

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        msg = "llava_cot answers by writing its stages; run tasks whose output_type is generate_until."
        raise NotImplementedError(msg)

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        msg = "llava_cot answers one round; multi-round tasks are not supported."
        raise NotImplementedError(msg)


def _png(visual: Any) -> bytes:
    """A task's picture (PIL image, bytes, or a file path) as image bytes."""
    if isinstance(visual, bytes):
        return visual
    if isinstance(visual, str):
        with open(visual, "rb") as file:
            return file.read()
    buffer = io.BytesIO()
    visual.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()
