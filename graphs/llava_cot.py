"""The deployable LLaVA-CoT graph: chat messages in, a four-stage answer out.

``langgraph.json`` at the repository root points ``langgraph dev`` (and LangGraph
deployments) at the module-level :data:`graph`; tests build their own with
:func:`make_graph`.

    START -> prepare -> expand_summary -> judge_summary -> ... -> judge_conclusion -> respond -> END

- Input is JSON: ``{"messages": [...]}`` with LangChain/OpenAI-style messages, images as
  ``{"type": "image", "base64": ..., "mime_type": ...}`` or ``image_url`` data URLs.
- The deployer configures the backend, the models, the judges and the limits with
  ``LLAVA_COT_*`` environment variables (:class:`~langchain_llava_cot.deployment.Deployment`);
  a client's JSON context (:class:`~langchain_llava_cot.deployment.ClientContext`) chooses the
  search options within them, e.g. ``{"strategy": "stage_beam", "candidates": 4, "judge":
  "pairwise"}``, and ``model`` among the deployer's models. A context naming a URL, a device,
  a backend or a limit is refused before any model work; at most ``LLAVA_COT_MAX_LOADED_MODELS``
  models stay loaded.
- ``prepare`` starts a fresh search for the thread's latest question, the search nodes
  are the engine's own (:func:`~langchain_llava_cot.graph.add_search_nodes`), and ``respond``
  appends the answer as the same ``AIMessage`` ``ChatLlavaCoT`` returns: the conclusion as
  content, the earlier stages as ``reasoning_content``, the search record in
  ``response_metadata["llava_cot"]``, usage in ``usage_metadata``.
- Images are stored once: ``messages`` is a delta channel (checkpoints keep its writes,
  not a copy per checkpoint) and the search reads its conversation from the messages
  instead of keeping a second copy in state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from langchain_core.messages import AnyMessage, convert_to_messages
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import START, StateGraph
from langgraph.graph.message import _messages_delta_reducer
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from langchain_llava_cot.conversation import Conversation
from langchain_llava_cot.deployment import ClientContext, Deployment
from langchain_llava_cot.graph import add_search_nodes
from langchain_llava_cot.messages import convert_messages
from langchain_llava_cot.stages import STAGES
from langchain_llava_cot.state import SearchProgress, fresh_search
from langchain_llava_cot.streaming import message_from_state

__all__ = ["ServedState", "graph", "make_graph"]


class ServedState(SearchProgress):
    """A chat thread: its messages and the search for its latest question."""

    messages: Annotated[list[AnyMessage], DeltaChannel(_messages_delta_reducer)]
    """The conversation so far; stored as writes, so each image is stored once."""


class ServedInput(TypedDict):
    """What a run takes: the new messages of the thread."""

    messages: list[AnyMessage]


def conversation_of(state: Mapping[str, Any]) -> Conversation:
    """The thread's messages as the model's conversation (images decoded and checked)."""
    return convert_messages(convert_to_messages(state["messages"]))


def make_graph(deployment: Deployment | None = None, **compile_options: Any) -> Any:
    """Build and compile the served graph; ``compile_options`` go to ``compile()``.

    Args:
        deployment: What the deployer allows; None reads the ``LLAVA_COT_*`` environment variables.
        compile_options: e.g. ``checkpointer=``.

    Example::

        graph = make_graph(Deployment(models=("/path/to/model",)), checkpointer=InMemorySaver())
        graph.invoke({"messages": [{"role": "user", "content": [...]}]}, config,
                     context={"strategy": "stage_beam", "candidates": 2})
    """
    deployment = Deployment.from_env() if deployment is None else deployment

    def prepare(state: ServedState, runtime: Runtime[ClientContext]) -> dict[str, Any]:
        """Check the client's options and the request, and start a fresh search for the latest question."""
        deployment.search_context(runtime.context)  # refused here, before any model call
        conversation_of(state)  # a bad image or message fails here too
        return fresh_search()

    def respond(state: ServedState, runtime: Runtime[ClientContext]) -> dict[str, Any]:
        """Append the chosen answer to the thread, as the same ``AIMessage`` ChatLlavaCoT returns."""
        context = deployment.search_context(runtime.context)
        model_name = context.get_backend().model_name
        return {"messages": [message_from_state(state, model_name, context.strategy)]}

    builder = StateGraph(ServedState, input_schema=ServedInput, context_schema=ClientContext)
    builder.add_node("prepare", prepare)
    builder.add_node("respond", respond)
    add_search_nodes(
        builder, after="respond", conversation_of=conversation_of, context_of=deployment.search_context
    )
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", f"expand_{STAGES[0].value}")
    return builder.compile(name="llava_cot", **compile_options)


graph = make_graph()
"""The graph ``langgraph.json`` serves."""
