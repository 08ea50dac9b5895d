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
from typing import Annotated, Any

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
    model_validator,
)
from typing_extensions import Self

from langchain_llava_cot.backends import create_backend
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.conversation import check_request
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.images import DEFAULT_MAX_PIXELS
from langchain_llava_cot.messages import convert_messages, normalise_tool_choice
from langchain_llava_cot.options import (
    SearchContext,
    SearchOptions,
    checked,
    finite_number,
    model_or_demo,
    true_or_false,
    whole_number,
)
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


class ChatLlavaCoT(BaseChatModel, SearchOptions):
    """LLaVA-CoT with stage-level beam search, as a LangChain chat model.

    Each answer is written in four stages (summary, caption, reasoning, conclusion).
    With ``strategy="stage_beam"`` every stage samples ``candidates`` continuations
    and a judge keeps the best before the next stage starts. The search options (their
    defaults, descriptions and checks) are inherited from
    :class:`~langchain_llava_cot.options.SearchOptions`; the fields declared here name the
    model and how its answers are returned.

    Setup:
        .. code-block:: bash

            pip install "langchain-llava-cot[transformers]"

    Key init args:
        model: local folder or hub id of an image-text-to-text model; None uses the
            bundled demo model.
        strategy: ``"greedy"``, ``"best_of_n"``, ``"vote"``, ``"stage_beam"``, ``"retrace"``,
            ``"dvts"``, ``"particle_filter"``, or one registered with ``register_strategy``.
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
    return_tagged_text: Annotated[bool, checked(true_or_false)] = False
    """Return the whole tagged answer as content instead of the conclusion alone."""
    allow_local_images: Annotated[bool, checked(true_or_false)] = False
    """Read images given as local file paths (off: only base64 and data URLs)."""
    max_image_pixels: Annotated[int, checked(whole_number, low=1)] = DEFAULT_MAX_PIXELS
    """Largest image accepted, in pixels."""
    device: str = "cpu"
    """Device of an in-process model: ``cpu``, ``cuda``, ``cuda:1``..."""
    dtype: str = "auto"
    """dtype of an in-process model: ``auto``, ``float32``, ``bfloat16``..."""
    trust_remote_code: bool = False
    """Allow a model's own code to run (off unless you trust it)."""
    streaming: bool = False
    """Accepted for compatibility: answers are always built from the stage stream."""
    timeout: Annotated[float, checked(finite_number, above=0.0)] = 120.0
    """Seconds to wait for a server's answer."""
    max_retries: Annotated[int, checked(whole_number, low=0)] = 2
    """Retries of a failed server request."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    profile: ModelProfile | None = Field(default_factory=lambda: dict(_PROFILE))  # type: ignore[assignment]
    """What the model accepts and returns (LangChain model profile)."""

    _backend: VLMBackend | None = PrivateAttr(default=None)
    _backend_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _graph: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_options(self) -> Self:
        _refuse_a_person(self)
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
        if stop := stop or list(self.stop):
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
        """The graph's runtime context: this model's search options with ``overrides``, and its backend."""
        fixed = sorted(_MODEL_OPTIONS & set(overrides))
        if fixed:
            msg = (
                f"{', '.join(fixed)} cannot change per call: the model is loaded once. Make another "
                f"ChatLlavaCoT({fixed[0]}=...) for another model."
            )
            raise TypeError(msg)
        if stop:
            overrides["stop"] = stop
        context = SearchContext.of(self, self.get_backend(), **overrides)
        _refuse_a_person(context)
        return context

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
            graph_input, _run_config(run_manager, context), context=context, stream_mode=["updates", "values"]
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
            graph_input, _run_config(run_manager, context), context=context, stream_mode=["updates", "values"]
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


_MODEL_OPTIONS = frozenset({"model", "base_url", "device", "backend"})
"""Options that name the model: set on the chat model, never per call."""


def _refuse_a_person(options: SearchOptions) -> None:
    """A chat model's call runs to its end: a judge that waits for a person cannot answer there."""
    if options.asks_a_person:
        msg = (
            "The human judge interrupts the search for a person's choice, which needs a checkpointer and a "
            "resume: run build_graph(checkpointer=...) with SearchContext(judge='human') and resume with "
            "Command(resume=<index>), or pick another judge for ChatLlavaCoT."
        )
        raise ValueError(msg)


def _run_config(run_manager: Any, context: SearchContext) -> dict[str, Any]:
    """The graph's config: nested under this model's run, with the steps the search needs.

    A chain passes its own recursion limit (LangChain's 25) down to the graph, which a
    retrace with many tries needs more than.
    """
    return {**(child_config(run_manager) or {}), "recursion_limit": context.graph_steps + 1}


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
        model_or_demo(llm.model),
        llm.base_url,
        api_key=llm.api_key.get_secret_value() if llm.api_key else None,
        device=llm.device,
        dtype=llm.dtype,
        trust_remote_code=llm.trust_remote_code,
        timeout=llm.timeout,
        max_retries=llm.max_retries,
    )
