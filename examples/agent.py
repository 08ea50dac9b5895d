"""A tool-calling agent whose model is ChatLlavaCoT.

The agent looks at an image, reasons in four stages with stage-level search, and calls
a tool from its conclusion when arithmetic is needed; the tool's result comes back as a
ToolMessage and the model answers on the next turn.

    python examples/agent.py IMAGE "How many shapes are red or blue?" \
        --base-url http://127.0.0.1:8000/v1 --model Xkev/Llama-3.2V-11B-cot
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from langchain_llava_cot import ChatLlavaCoT


@tool
def add(a: int, b: int) -> int:
    """Add two whole numbers, e.g. two counts of shapes."""
    return a + b


def build_agent(llm: ChatLlavaCoT):
    """An agent that can add numbers, driven by ``llm``."""
    return create_agent(llm, tools=[add], system_prompt="Count carefully; use the add tool for sums.")


def ask(agent, image: bytes, question: str, mime_type: str = "image/png") -> str:
    """Run the agent's tool loop on one image question; return its final answer."""
    message = HumanMessage(
        content=[
            {"type": "image", "base64": base64.b64encode(image).decode(), "mime_type": mime_type},
            {"type": "text", "text": question},
        ]
    )
    state = agent.invoke({"messages": [message]})
    return state["messages"][-1].content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("question")
    parser.add_argument("--model")
    parser.add_argument("--base-url")
    args = parser.parse_args()
    llm = ChatLlavaCoT(model=args.model, base_url=args.base_url, strategy="stage_beam", candidates=4)
    print(ask(build_agent(llm), args.image.read_bytes(), args.question))


if __name__ == "__main__":
    main()
