"""Tool calling in the conclusion stage: the prompt format and its parser.

When tools are bound, the model is told about them in a system turn (the format below),
reasons through its four stages as usual, and calls tools in its conclusion, one
``<tool_call>`` line per call::

    <CONCLUSION> <tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call> </CONCLUSION>

:func:`parse_tool_calls` takes those calls out of the conclusion; what remains is the
message content. Backends whose chat template has its own tool format may render
``Conversation.tools`` with it instead of this prompt.

>>> text, calls, bad = parse_tool_calls('<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>')
>>> calls[0]["name"], calls[0]["args"], bad
('add', {'a': 1}, [])
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import InvalidToolCall, ToolCall

__all__ = ["format_tool_calls", "parse_tool_calls", "render_tools_prompt"]

_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


def render_tools_prompt(tools: Sequence[dict[str, Any]], tool_choice: str | None = None) -> str:
    """Describe OpenAI-format ``tools`` and how to call them, honouring ``tool_choice``."""
    lines = ["You can call these tools:"]
    for tool in tools:
        function = tool.get("function", tool)
        spec = {k: function[k] for k in ("name", "description", "parameters") if k in function}
        lines.append(json.dumps(spec, sort_keys=True))
    lines.append(
        "To call a tool, write in the CONCLUSION stage, one line per call: "
        '<tool_call>{"name": "<tool name>", "arguments": {<arguments as JSON>}}</tool_call>'
    )
    if tool_choice in ("any", "required"):
        lines.append("You must call at least one tool.")
    elif tool_choice and tool_choice not in ("auto", "none"):
        lines.append(f"You must call the tool {tool_choice}.")
    return "\n".join(lines)


def parse_tool_calls(conclusion: str) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """Split a conclusion into its text, its tool calls, and calls that did not parse."""
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for raw in _TOOL_CALL.findall(conclusion):
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        try:
            payload = json.loads(raw)
            name, args = payload["name"], payload.get("arguments", {})
            if not isinstance(name, str) or not isinstance(args, dict):
                raise TypeError("name must be a string and arguments an object")
        except (ValueError, KeyError, TypeError) as e:
            invalid.append(
                InvalidToolCall(name=None, args=raw, id=call_id, error=str(e), type="invalid_tool_call")
            )
            continue
        calls.append(ToolCall(name=name, args=args, id=call_id, type="tool_call"))
    text = _TOOL_CALL.sub("", conclusion).strip()
    if not calls and not invalid and (call := _bare_json_call(text)):
        return "", [call], []
    return text, calls, invalid


def _bare_json_call(text: str) -> ToolCall | None:
    """A call written the way Llama-3-style chat templates ask: one bare JSON object.

    ``{"name": "add", "parameters": {"a": 2, "b": 3}}`` (or ``"arguments"``); anything
    else is left as text.
    """
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    args = payload.get("parameters", payload.get("arguments"))
    if not isinstance(payload.get("name"), str) or not isinstance(args, dict):
        return None
    return ToolCall(name=payload["name"], args=args, id=f"call_{uuid.uuid4().hex[:12]}", type="tool_call")


def format_tool_calls(calls: Sequence[ToolCall]) -> str:
    """Write tool calls back in the prompt format, for an assistant turn in the history."""
    return "\n".join(
        "<tool_call>" + json.dumps({"name": c["name"], "arguments": c["args"]}) + "</tool_call>"
        for c in calls
    )
