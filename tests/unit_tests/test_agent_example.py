"""The agent example's tool loop, driven by a scripted model.

The scripted backend stands in for a model that knows when to call a tool: it calls
``add`` until the conversation holds a tool result, then answers with that result. What
is real is everything around it: LangChain's agent, the tool execution, the ToolMessage
returning to ChatLlavaCoT, and the search over each turn's stages.
"""

import importlib.util
import io
from pathlib import Path

from fakes import ScriptedBackend
from PIL import Image

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.stages import Stage

EXAMPLE = Path(__file__).parents[2] / "examples" / "agent.py"


def load_example():
    spec = importlib.util.spec_from_file_location("agent_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ToolUsingBackend(ScriptedBackend):
    def _sample_one(self, request):
        results = [t.text for t in request.conversation.turns if t.text.startswith("Tool result (add)")]
        answer = (
            results[0].rsplit(" ", 1)[-1]
            if results
            else ('<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>')
        )
        self.script[Stage.CONCLUSION] = [f" {answer} </CONCLUSION>"]
        return super()._sample_one(request)


def test_agent_calls_the_tool_and_answers_with_its_result():
    backend = ToolUsingBackend(
        {
            Stage.SUMMARY: [" count red and blue, then add </SUMMARY>"],
            Stage.CAPTION: [" two red circles and three blue squares </CAPTION>"],
            Stage.REASONING: [" 2 red + 3 blue: use add </REASONING>"],
            Stage.CONCLUSION: [],
        }
    )
    example = load_example()
    agent = example.build_agent(ChatLlavaCoT(backend=backend, candidates=2, seed=0))
    image = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(image, format="PNG")

    answer = example.ask(agent, image.getvalue(), "How many shapes are red or blue?")

    assert answer == "5"
    last_turns = backend.sample_calls[-1][0].conversation.turns
    assert [t.role for t in last_turns] == ["system", "user", "assistant", "user"]
    assert last_turns[1].images and "Count carefully" in last_turns[0].text
    assert last_turns[3].text == "Tool result (add): 5"
