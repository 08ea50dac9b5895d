"""ChatLlavaCoT: LLaVA-CoT's staged search behind LangChain's chat model interface.

Input flow:
    LangChain messages -> :func:`~langchain_llava_cot.messages.convert_messages` (text,
    image blocks, validated images) -> :class:`~langchain_llava_cot.conversation.Conversation`
    -> the search graph (:func:`~langchain_llava_cot.graph.build_graph`) with a
    :class:`~langchain_llava_cot.options.SearchContext` built from this model's options.

Output flow:
    graph ``updates`` (one per judged stage) and the final graph state
    -> :class:`~langchain_llava_cot.streaming.ChunkConverter` -> ``AIMessageChunk`` s:
    summary, caption and reasoning as ``reasoning_content``, the conclusion as content,
    then usage and the whole search record in ``response_metadata["llava_cot"]``.
    ``invoke`` aggregates the same chunks.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, ModelProfile
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from langchain_llava_cot.backends import create_backend
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.conversation import check_request
from langchain_llava_cot.demo import DEMO_MODEL_PATH
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.images import DEFAULT_MAX_PIXELS
from langchain_llava_cot.messages import convert_messages, normalise_tool_choice
from langchain_llava_cot.options import DEFAULT_JUDGE, MAX_CANDIDATES, RETRACE_Z, SearchContext, Strategy
from langchain_llava_cot.state import SearchState
from langchain_llava_cot.streaming import PROVIDER, ChunkConverter, child_config
from langchain_llava_cot.tools import render_tools_prompt

__all__ = ["ChatLlavaCoT"]

_PROFILE = ModelProfile(
    text_inputs=True,
    image_inputs=True,
    image_url_inputs=False,
    text_outputs=True,
    reasoning_output=True,
    tool_calling=True,
    tool_choice=True,
    tool_call_streaming=False,
    structured_output=True,
    open_weights=True,
)


class ChatLlavaCoT(BaseChatModel):
    """LLaVA-CoT with stage-level beam search, as a LangChain chat model.

    Each answer is written in four stages (summary, caption, reasoning, conclusion).
    With ``strategy="stage_beam"`` every stage samples ``candidates`` continuations
    and a judge keeps the best before the next stage starts.

    Setup:
        .. code-block:: bash

            pip install "langchain-llava-cot[transformers]"

    Key init args:
        model: local folder or hub id of an image-text-to-text model; None uses the
            bundled demo model.
        strategy: ``"greedy"``, ``"best_of_n"``, ``"vote"``, ``"stage_beam"`` or ``"retrace"``.
        candidates: candidates per step (N).
        judge: ``"auto"`` (default), ``"likelihood"``, ``"verifier"``, ``"pairwise"``, ``"vote"``, a Judge
            or a function.
        backend: a ready :class:`VLMBackend` or a LangChain chat model to drive instead.
        base_url: an OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama).

    Instantiate:
        .. code-block:: python

            from langchain_llava_cot import ChatLlavaCoT

            llm = ChatLlavaCoT(strategy="stage_beam", candidates=4, judge="pairwise")

    Invoke:
        .. code-block:: python

            msg = llm.invoke([HumanMessage(content=[
                {"type": "image", "base64": b64_png, "mime_type": "image/png"},
                {"type": "text", "text": "How many red shapes are there?"}])])
            msg.content                         # the conclusion
            msg.additional_kwargs["reasoning_content"]  # summary, caption, reasoning
            msg.response_metadata["llava_cot"]  # every candidate and judge decision

    Stream:
        .. code-block:: python

            for chunk in llm.stream(messages):  # one chunk per stage, as it is chosen
                print(chunk.additional_kwargs.get("reasoning_content", ""), chunk.content)

    Async:
        .. code-block:: python

            msg = await llm.ainvoke(messages)
    """

    model: str | None = None
    """Local folder or hub id of the model; None uses the bundled demo model."""
    backend: Any = None
    """A ready ``VLMBackend``, or a LangChain chat model to use as the backend."""
    base_url: str | None = None
    """Base URL of an OpenAI-compatible server, e.g. ``http://127.0.0.1:8000/v1``."""
    api_key: SecretStr | None = None
    """API key of that server, if it needs one."""
    strategy: Strategy = "stage_beam"
    """How to search: ``greedy``, ``best_of_n``, ``vote``, ``stage_beam`` or ``retrace``."""
    candidates: int = 4
    """Candidates per step (N)."""
    adaptive: bool = False
    """stage_beam and retrace: sample ``adaptive_start`` candidates first, and the rest only
    when they disagree and none scores ``confidence``."""
    adaptive_start: int = 2
    """Candidates of an adaptive step's first round."""
    confidence: float | None = None
    """Adaptive steps stop after the first round when the judge scores a candidate this high."""
    keep: int = 2
    """retrace: captions kept for the reasoning step."""
    max_retraces: int = 3
    """retrace: times the search may go back to sample captions again."""
    retrace_threshold: float | None = None
    """retrace: the score the ``keep``-th best reasoning must reach (None: mean + z x std of
    the run's reasoning scores, ``retrace_z``)."""
    retrace_z: float = RETRACE_Z
    """retrace: z of the relative threshold (the paper's 0.2533)."""
    max_candidates: int = MAX_CANDIDATES
    """The cap on ``candidates`` (a typo like 1000 fails fast); raise it if you mean more."""
    judge: Any = DEFAULT_JUDGE
    """``"auto"`` (the default: the judge that fits the model and the backend), ``"likelihood"``,
    ``"verifier"``, ``"pairwise"``, ``"vote"``, a Judge, or a function ``(JudgeTask) -> int``."""
    temperature: float = 0.6
    """Sampling temperature of the candidates (greedy always uses 0)."""
    top_p: float | None = 0.9
    """Nucleus sampling of the candidates."""
    max_tokens: int | None = None
    """Token budget of the whole answer, all stages together."""
    max_stage_tokens: int | dict[str, int] | None = None
    """Token limit per stage: one number, or a mapping like ``{"reasoning": 512}``."""
    stop: list[str] | None = None
    """Stop strings for the conclusion."""
    seed: int | None = None
    """Makes sampling and judging reproducible."""
    return_tagged_text: bool = False
    """Return the whole tagged answer as content instead of the conclusion alone."""
    allow_local_images: bool = False
    """Read images given as local file paths (off: only base64 and data URLs)."""
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    """Largest image accepted, in pixels."""
    device: str = "cpu"
    """Device of an in-process model: ``cpu``, ``cuda``, ``cuda:1``..."""
    dtype: str = "auto"
    """dtype of an in-process model: ``auto``, ``float32``, ``bfloat16``..."""
    trust_remote_code: bool = False
    """Allow a model's own code to run (off unless you trust it)."""
    streaming: bool = False
    """Accepted for compatibility: answers are always built from the stage stream."""
    timeout: float = 120.0
    """Seconds to wait for a server's answer."""
    max_retries: int = 2
    """Retries of a failed server request."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    profile: ModelProfile | None = Field(default_factory=lambda: dict(_PROFILE))  # type: ignore[assignment]
    """What the model accepts and returns (LangChain model profile)."""

    _backend: VLMBackend | None = PrivateAttr(default=None)
    _backend_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _graph: Any = PrivateAttr(default=None)

    @field_validator(
        "candidates", "max_candidates", "max_tokens", "seed", "temperature", "top_p", "max_stage_tokens",
        "adaptive_start", "confidence", "keep", "max_retraces", "retrace_threshold", "retrace_z",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _no_bools(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool):
            msg = f"{info.field_name} must be a number, not {value!r}."
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _check_options(self) -> Self:
        self.search_context(backend=None)  # checks the search options without loading a model
        in_process = self.backend is None and self.base_url is None
        if (
            in_process
            and self.model
            and _looks_like_local_path(self.model)
            and not Path(self.model).expanduser().exists()
        ):
            msg = f"Model path {self.model!r} does not exist. Pass an existing folder or a hub id."
            raise ValueError(msg)
        return self

    @property
    def _llm_type(self) -> str:
        return "llava-cot"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "strategy": self.strategy,
            "candidates": self.candidates,
            "judge": self.judge if isinstance(self.judge, str) else type(self.judge).__name__,
            "temperature": self.temperature,
        }

    @property
    def model_name(self) -> str:
        """The name reported in ``response_metadata["model_name"]``."""
        backend = self._backend or self.backend
        if isinstance(backend, VLMBackend):
            return backend.model_name
        if isinstance(backend, BaseChatModel):
            return str(
                getattr(backend, "model", None) or getattr(backend, "model_name", None) or backend._llm_type
            )
        return self.model or "llava-cot-demo"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model_name,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if max_tokens := kwargs.get("max_tokens", self.max_tokens):
            params["ls_max_tokens"] = max_tokens
        if stop := stop or self.stop:
            params["ls_stop"] = stop
        return params

    # -- the engine -------------------------------------------------------------

    @property
    def graph(self) -> Any:
        """The compiled search graph this model runs."""
        if self._graph is None:
            self._graph = build_graph()
        return self._graph

    def get_backend(self) -> VLMBackend:
        """The backend, created (and its model loaded) on first use."""
        with self._backend_lock:
            if self._backend is None:
                self._backend = _make_backend(self)
            return self._backend

    def search_context(self, stop: Sequence[str] | None = None, **overrides: Any) -> SearchContext:
        """The graph's runtime context for this model's options, with ``overrides``."""
        options: dict[str, Any] = {name: getattr(self, name) for name in _SEARCH_OPTIONS}
        fixed = sorted(_MODEL_OPTIONS & set(overrides))
        if fixed:
            msg = (
                f"{', '.join(fixed)} cannot change per call: the model is loaded once. Make another "
                f"ChatLlavaCoT({fixed[0]}=...) for another model."
            )
            raise TypeError(msg)
        options.update({k: v for k, v in overrides.items() if k != "backend"})
        unknown = set(options) - set(SearchContext.__dataclass_fields__)
        if unknown:
            accepted = sorted(SearchContext.__dataclass_fields__)
            msg = f"Unknown option(s) {sorted(unknown)}; ChatLlavaCoT accepts {accepted}."
            raise TypeError(msg)
        backend = overrides["backend"] if "backend" in overrides else self.get_backend()
        return SearchContext(backend=backend, stop=tuple(stop or self.stop or ()), **options)

    def graph_input(
        self,
        messages: Sequence[BaseMessage],
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> SearchState:
        """The graph input for ``messages`` (images are read and checked here)."""
        conversation = check_request(
            convert_messages(
                messages, allow_local_images=self.allow_local_images, max_image_pixels=self.max_image_pixels
            )
        )
        if tools and tool_choice != "none":
            conversation = replace(
                conversation,
                tools_prompt=render_tools_prompt(tools, tool_choice),
                tools=tuple(tools),
                tool_choice=tool_choice,
            )
        return SearchState(conversation=conversation)

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        """The model forced to answer with ``schema`` (a tool call decoded under its JSON schema).

        Every ``method`` (``function_calling``, ``json_schema``, ``json_mode``) is served the
        same way, by a forced call whose JSON the transformers backend decodes under the
        schema. Never returns None silently: an answer that does not parse raises
        ``OutputParserException``, or, with ``include_raw=True``, comes back as
        ``{"raw": message, "parsed": None, "parsing_error": error}``.
        """
        from operator import itemgetter

        from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
        from langchain_core.runnables import RunnableLambda, RunnablePassthrough
        from langchain_core.utils.pydantic import is_basemodel_subclass

        kwargs.pop("method", None)  # every method is one: a call decoded under the schema
        kwargs.pop("strict", None)
        if kwargs:
            msg = f"with_structured_output got unsupported arguments {sorted(kwargs)}."
            raise TypeError(msg)
        name = convert_to_openai_tool(schema)["function"]["name"]
        llm = self.bind_tools(
            [schema],
            tool_choice=name,
            ls_structured_output_format={"kwargs": {"method": "function_calling"}, "schema": schema},
        )
        parser: Runnable[Any, Any]
        if isinstance(schema, type) and is_basemodel_subclass(schema):
            parser = PydanticToolsParser(tools=[schema], first_tool_only=True)
        else:
            parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        parser = parser | RunnableLambda(_parsed_or_raise)
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return {"raw": llm} | parsed.with_fallbacks([failed], exception_key="parsing_error")

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        """Offer ``tools`` to the model; it calls them in its conclusion stage.

        ``tool_choice``: ``"auto"`` (default), ``"any"``/``"required"``/``True`` (must call
        one), ``"none"``, or a tool's name (must call that one).
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        names = [t["function"]["name"] for t in formatted]
        choice = normalise_tool_choice(tool_choice, names)
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    # -- LangChain interface ------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def _prepare(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, options: dict[str, Any]
    ) -> tuple[SearchState, SearchContext]:
        """Split call options into graph input (messages, tools) and search context."""
        options = dict(options)
        options.pop("ls_structured_output_format", None)
        tools, tool_choice = options.pop("tools", None), options.pop("tool_choice", None)
        if tools and tool_choice is not None:  # per call, as bind_tools would have written it
            tool_choice = normalise_tool_choice(tool_choice, [t["function"]["name"] for t in tools])
        return self.graph_input(messages, tools, tool_choice), self.search_context(stop, **options)

    def _chunk_converter(self, graph_input: SearchState, context: SearchContext) -> ChunkConverter:
        has_tools = bool(graph_input["conversation"].tools_prompt)
        return ChunkConverter(self.model_name, context.strategy, self.return_tagged_text, has_tools)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        graph_input, context = self._prepare(messages, stop, kwargs)
        events = self.graph.stream(
            graph_input, child_config(run_manager), context=context, stream_mode=["updates", "values"]
        )
        converter = self._chunk_converter(graph_input, context)
        for mode, data in events:
            for chunk in converter.convert(mode, data):
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        yield converter.final_chunk()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        graph_input, context = self._prepare(messages, stop, kwargs)
        events = self.graph.astream(
            graph_input, child_config(run_manager), context=context, stream_mode=["updates", "values"]
        )
        converter = self._chunk_converter(graph_input, context)
        async for mode, data in events:
            for chunk in converter.convert(mode, data):
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        yield converter.final_chunk()


def _parsed_or_raise(parsed: Any) -> Any:
    if parsed is None:
        from langchain_core.exceptions import OutputParserException

        msg = (
            "The answer holds no call in the requested schema. Forced calls are decoded under the "
            "schema by the transformers backend; other backends rely on the model following the prompt."
        )
        raise OutputParserException(msg)
    return parsed


_MODEL_OPTIONS = frozenset({"model", "base_url", "device"})
"""Options that name the model: set on the chat model, never per call."""

_SEARCH_OPTIONS = tuple(
    name
    for name in SearchContext.__dataclass_fields__
    if name in ChatLlavaCoT.model_fields and name not in _MODEL_OPTIONS | {"backend", "stop"}
)
"""The chat model's fields that are search options, passed to its SearchContext as they are."""


def _looks_like_local_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1


def _make_backend(llm: ChatLlavaCoT) -> VLMBackend:
    """Create the backend that ``llm``'s options describe."""
    if isinstance(llm.backend, VLMBackend):
        return llm.backend
    if isinstance(llm.backend, BaseChatModel):
        from langchain_llava_cot.backends.langchain import ChatModelBackend

        return ChatModelBackend(llm.backend)
    if llm.backend is not None:
        msg = f"backend must be a VLMBackend or a LangChain chat model, got {type(llm.backend).__name__}."
        raise TypeError(msg)
    return create_backend(
        llm.model or DEMO_MODEL_PATH,
        llm.base_url,
        api_key=llm.api_key.get_secret_value() if llm.api_key else None,
        device=llm.device,
        dtype=llm.dtype,
        trust_remote_code=llm.trust_remote_code,
        timeout=llm.timeout,
        max_retries=llm.max_retries,
    )
