"""Does offering a tool (``tool_choice="auto"``) change the demo model's answer to a plain question?

Decoding does not change: with ``"auto"`` nothing is constrained, and every request is
the plain one but for the tools prompt in its system turn
(``tests/unit_tests/test_tool_calling.py``). This measures what that prompt alone does:
held-out questions that need no tool (every kind but arithmetic) are answered greedily
with and without ``bind_tools([add])``, and the answers compared.

::

    python benchmarks/tool_offered.py --questions 100 --out benchmarks/tool-offered.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))


def _questions(count: int) -> list[Any]:
    from langchain_llava_cot.demo.dataset import iter_examples

    found = (e for e in iter_examples("test") if e.kind != "arithmetic")
    return [next(found) for _ in range(count)]


def _answer(llm: Any, example: Any) -> dict[str, Any]:
    message = llm.invoke([example.message()])
    return {"content": str(message.content).strip(), "calls": [c["name"] for c in message.tool_calls]}


def main() -> None:
    """Answer each question with and without the tool offered; print and save the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from agent import add

    from langchain_llava_cot import ChatLlavaCoT

    plain = ChatLlavaCoT(strategy="greedy")
    offered = plain.bind_tools([add], tool_choice="auto")
    rows, started = [], time.perf_counter()
    for example in _questions(args.questions):
        alone, with_tool = _answer(plain, example), _answer(offered, example)
        rows.append({"question": example.question, "kind": example.kind, "truth": example.answer,
                     "plain": alone, "tool_offered": with_tool})  # fmt: skip
    changed = [r for r in rows if r["plain"] != r["tool_offered"]]
    result = {
        "questions": len(rows),
        "answers_changed": len(changed),
        "called_the_tool": sum(bool(r["tool_offered"]["calls"]) for r in rows),
        "right_plain": sum(r["plain"]["content"] == r["truth"] for r in rows),
        "right_tool_offered": sum(r["tool_offered"]["content"] == r["truth"] for r in rows),
        "seconds": round(time.perf_counter() - started, 1),
        "command": "python benchmarks/tool_offered.py " + " ".join(sys.argv[1:]),
        "changed": changed,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "changed"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
