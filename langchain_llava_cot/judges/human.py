"""A person as the judge: :class:`HumanJudge`.

The judge node interrupts the graph with the candidates (LangGraph ``interrupt``) and
resumes with ``Command(resume=<index>)``. It needs a checkpointer; sampling happens in
the expand node, so resuming never samples again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from langchain_llava_cot._calls import Step, finished
from langchain_llava_cot.backends.base import VLMBackend
from langchain_llava_cot.judges.base import Judge, JudgeTask, Verdict

__all__ = ["HumanJudge", "human_judge_request"]

logger = logging.getLogger(__name__)


@dataclass
class HumanJudge(Judge):
    """Let a person choose: interrupt the graph with the candidates, resume with an index.

    The interrupt's value is a JSON-ready dict (``event``, ``stage``, ``question``,
    ``chosen`` and ``candidates``); resume the run with ``Command(resume=<index>)``.
    A resume value that is not a candidate's index interrupts again, with the same
    candidates and an ``error`` saying what to send, so the thread stays usable.
    The graph must be compiled with a checkpointer.

    Example::

        graph = build_graph(checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": "1"}}
        context = SearchContext(backend=backend, judge="human")
        graph.invoke({"conversation": conversation}, config, context=context)
        graph.get_state(config).interrupts[0].value["candidates"]  # shown to the person
        graph.invoke(Command(resume=1), config, context=context)
    """

    name: str = field(default="human", init=False)
    asks_a_person: bool = field(default=True, init=False)

    def select(self, task: JudgeTask, backend: VLMBackend | None) -> Step[Verdict]:
        """Interrupt with the candidates; on resume, check and return the person's choice."""
        from langgraph.types import interrupt

        request = human_judge_request(task)
        while True:
            answer = interrupt(request)
            error = _choice_error(answer, len(task.candidates))
            if error is None:
                return finished(Verdict(answer))  # type: ignore[arg-type]
            logger.warning("Human judge: %s", error)
            request = {**request, "error": error}


def human_judge_request(task: JudgeTask) -> dict:
    """The interrupt value a :class:`HumanJudge` shows: plain JSON types only."""
    return {
        "event": "choose",
        "stage": task.stage.value if task.stage else "answer",
        "question": task.conversation.question,
        "chosen": {stage.value: text for stage, text in task.chosen.items()},
        "candidates": list(task.candidates),
    }


def _choice_error(answer: object, count: int) -> str | None:
    """Why ``answer`` is not a candidate's index, or None when it is one."""
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < count:
        return (
            f"resumed with {answer!r}; resume with the index of the chosen candidate, "
            f"a whole number from 0 to {count - 1}, e.g. Command(resume=0)."
        )
    return None
