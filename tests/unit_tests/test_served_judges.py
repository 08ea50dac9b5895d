"""Served reward models as judges, without a server: what they send, how they read the reply, and
that they judge in every strategy that takes scores. The real vLLM is in
tests/integration_tests/test_vllm_reward_server.py."""

import asyncio
import math
import re

import pytest
from fakes import SCRIPT, ScriptedBackend
from langchain_core.messages import HumanMessage

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot._calls import ClientCall, adrive, drive
from langchain_llava_cot.backends.openai.errors import ServerError
from langchain_llava_cot.backends.openai.pooling import Pooled, PoolingClient, pooling_plan
from langchain_llava_cot.backends.openai.transport import Posts
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.demo import EXAMPLE_IMAGE
from langchain_llava_cot.judges import (
    JudgeTask,
    ServedProcessRewardJudge,
    ServedRewardJudge,
    StageJudges,
    aggregate_steps,
    reward_text,
    split_steps,
)
from langchain_llava_cot.judges.served import label_log_odds
from langchain_llava_cot.stages import Stage

PICTURE = EXAMPLE_IMAGE.read_bytes()
CONVERSATION = Conversation((Turn("user", "How many red circles?", (PICTURE,)),))
QUESTION = [HumanMessage("How many red circles?")]
TAG = "<step>"


def task(*candidates, stage=Stage.REASONING):
    return JudgeTask(CONVERSATION, stage, {Stage.SUMMARY: "count"}, candidates)


# -- the request plan ------------------------------------------------------------------


def test_texts_go_in_one_request_and_conversations_one_each_with_their_picture():
    inputs = ["first text", (CONVERSATION, "<SUMMARY> s </SUMMARY>"), "second text"]
    plan = pooling_plan("rm", inputs, "classify", "http://x")
    posts = next(plan)
    assert isinstance(posts, Posts) and posts.path == "/pooling" and len(posts.payloads) == 2
    text, chat = posts.payloads
    assert text == {
        "model": "rm",
        "task": "classify",
        "use_activation": False,
        "input": ["first text", "second text"],
    }
    user, assistant = chat["messages"]
    assert [part["type"] for part in user["content"]] == ["image_url", "text"]
    assert user["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert assistant == {"role": "assistant", "content": "<SUMMARY> s </SUMMARY>"}
    replies = [
        {"data": [{"index": 1, "data": [2.0]}, {"index": 0, "data": [1.0]}], "usage": {"prompt_tokens": 7}},
        {"data": [{"index": 0, "data": [3.0]}], "usage": {"prompt_tokens": 40}},
    ]
    with pytest.raises(StopIteration) as done:
        plan.send(replies)
    assert done.value.value == Pooled([[1.0], [3.0], [2.0]], 47)  # in the inputs' order, by index


def test_a_reply_with_the_wrong_number_of_outputs_is_a_clear_error():
    plan = pooling_plan("rm", ["a", "b"], "classify", "http://x")
    next(plan)
    with pytest.raises(ServerError, match="answered /pooling with 1 outputs for 2 inputs"):
        plan.send([{"data": [{"index": 0, "data": [1.0]}]}])


def test_the_client_talks_to_the_servers_root():
    assert PoolingClient("http://127.0.0.1:8001/v1/", "rm").base_url == "http://127.0.0.1:8001"
    with pytest.raises(ValueError, match="Name the served reward model"):
        PoolingClient("http://127.0.0.1:8001", "")


# -- scores from outputs -----------------------------------------------------------------


def test_a_head_output_is_read_as_log_odds():
    assert label_log_odds([1.5], 1, "x") == 1.5
    assert label_log_odds([0.0, 2.0], 1, "x") == pytest.approx(2.0)
    assert label_log_odds([2.0, 0.0], 0, "x") == pytest.approx(2.0)  # math-shepherd's [good, bad]
    assert label_log_odds([0.0, 0.0, math.log(2)], 2, "x") == pytest.approx(0.0)  # 2/(1+1) = even odds
    with pytest.raises(ValueError, match="not a vector of logits"):
        label_log_odds("oops", 1, "x")
    with pytest.raises(ValueError, match="positive_label=3"):
        label_log_odds([0.0, 1.0], 3, "x")


def test_steps_aggregate_by_min_prod_last_or_mean():
    steps = [2.0, -1.0, 0.5]
    assert aggregate_steps(steps, "min") == -1.0 and aggregate_steps(steps, "last") == 0.5
    probabilities = [1 / (1 + math.exp(-s)) for s in steps]
    product = math.prod(probabilities)
    assert aggregate_steps(steps, "prod") == pytest.approx(math.log(product / (1 - product)))
    mean = sum(probabilities) / 3
    assert aggregate_steps(steps, "mean") == pytest.approx(math.log(mean / (1 - mean)))
    with pytest.raises(ValueError, match="no step"):
        aggregate_steps([], "min")


def test_a_stage_splits_into_lines_or_sentences():
    assert split_steps("a.\nb.\n\nc.") == ["a.", "b.", "c."]
    assert split_steps("Count red: yes 1. That is 1. 1 plus 0 is 1.") == [
        "Count red: yes 1.",
        "That is 1.",
        "1 plus 0 is 1.",
    ]
    assert split_steps("  ") == [""]


# -- the judges, driven by hand -----------------------------------------------------------


def test_the_outcome_judge_reads_every_candidate_as_text_in_one_call():
    judge = ServedRewardJudge("http://127.0.0.1:1", "rm")
    asked = task("so three", "so two", "so three")
    step = judge.select(asked, None)
    call = next(step)
    assert isinstance(call, ClientCall) and call.argument == [reward_text(asked, 0), reward_text(asked, 1)]
    with pytest.raises(StopIteration) as done:
        step.send(Pooled([[1.0], [3.0]], prompt_tokens=30))
    verdict = done.value.value
    assert verdict.scores == (1.0, 3.0, 1.0) and verdict.winner == 1 and verdict.prompt_tokens == 30
    assert drive(judge.select(task("same", "same"), None), None).winner == 0  # nothing to tell apart: no call


def test_with_images_each_candidate_goes_as_the_conversation_and_its_answer():
    judge = ServedRewardJudge("http://127.0.0.1:1", "vrm", images=True)
    call = next(judge.score(task("so three", "so two"), None))
    (conversation, answer), _ = call.argument
    assert conversation is CONVERSATION and conversation.images == (PICTURE,)
    assert answer == "<SUMMARY> count </SUMMARY>\n\n<REASONING> so three </REASONING>"


def test_the_process_judge_tags_every_step_and_keeps_each_steps_score():
    judge = ServedProcessRewardJudge("http://127.0.0.1:1", "prm", step_tag=TAG, aggregate="min")
    asked = task("Count red: yes 1. That is 1.", "Count red: no. That is 0.")
    step = judge.score(asked, None)
    call = next(step)
    first, second = call.argument
    assert first.endswith(f"<REASONING> Count red: yes 1.{TAG}\nThat is 1.{TAG} </REASONING>")
    assert first.startswith("Question: How many red circles?\n\n<SUMMARY> count </SUMMARY>")
    with pytest.raises(StopIteration) as done:
        step.send(Pooled([[[2.0], [1.0]], [[-1.0], [3.0]]]))
    verdict = done.value.value
    assert verdict.scores == (1.0, -1.0)
    assert [(s.text, s.score) for s in verdict.step_scores[1]] == [
        ("Count red: no.", -1.0),
        ("That is 0.", 3.0),
    ]


def test_whole_answers_are_scored_stage_by_stage():
    judge = ServedProcessRewardJudge("http://127.0.0.1:1", "prm", step_tag=TAG, aggregate="last")
    answer = "<SUMMARY> s </SUMMARY>\n\n<CAPTION> c </CAPTION>\n\n<CONCLUSION> 3 </CONCLUSION>"
    step = judge.score(JudgeTask(CONVERSATION, None, {}, (answer,)), None)
    [text] = next(step).argument
    assert (
        f"<SUMMARY> s </SUMMARY>{TAG}\n\n<CAPTION> c </CAPTION>{TAG}\n\n<CONCLUSION> 3 </CONCLUSION>{TAG}"
        in text
    )
    with pytest.raises(StopIteration) as done:
        step.send(Pooled([[[0.5], [0.1], [-2.0]]]))
    assert done.value.value.scores == (-2.0,)
    stages = ["<SUMMARY> s </SUMMARY>", "<CAPTION> c </CAPTION>", "<CONCLUSION> 3 </CONCLUSION>"]
    assert [s.text for s in done.value.value.step_scores[0]] == stages


def test_a_step_count_that_does_not_match_says_to_check_the_step_tag():
    judge = ServedProcessRewardJudge("http://127.0.0.1:1", "prm", step_tag=TAG)
    step = judge.score(task("One. Two."), None)
    next(step)
    with pytest.raises(
        ValueError, match="scored 1 steps of a candidate split into 2: check that step_tag='<step>'"
    ):
        step.send(Pooled([[[0.5]]]))


def test_the_process_judge_needs_its_step_tag_and_a_known_aggregate():
    with pytest.raises(ValueError, match="needs step_tag="):
        ServedProcessRewardJudge("http://127.0.0.1:1", "prm")
    with pytest.raises(ValueError, match="Unknown aggregate 'max'"):
        ServedProcessRewardJudge("http://127.0.0.1:1", "prm", step_tag=TAG, aggregate="max")


# -- in every strategy that takes scores, through the graph ------------------------------------


class FakeServer:
    """Answers like a reward model that believes in three: per text, or per step tag."""

    def __init__(self):
        self.calls = 0

    def pool(self, inputs, task):
        self.calls += 1
        texts = [item if isinstance(item, str) else item[1] for item in inputs]
        if task == "classify":
            return Pooled(
                [[self._score(text.rsplit(">", 2)[-2])] for text in texts], prompt_tokens=10 * len(texts)
            )
        outputs = []
        for text in texts:
            steps = re.split(re.escape(TAG), text)[:-1]
            outputs.append([[self._score(step.rsplit(">", 1)[-1])] for step in steps])
        return Pooled(outputs, prompt_tokens=10 * len(texts))

    async def apool(self, inputs, task):
        return self.pool(inputs, task)

    @staticmethod
    def _score(text):
        return 2.0 if "three" in text or "3" in text else -2.0


def served(kind="outcome", **options):
    if kind == "outcome":
        judge = ServedRewardJudge("http://127.0.0.1:1", "rm", **options)
    else:
        judge = ServedProcessRewardJudge("http://127.0.0.1:1", "prm", step_tag=TAG, **options)
    judge.client = FakeServer()
    return judge


@pytest.mark.parametrize("kind", ["outcome", "process"])
@pytest.mark.parametrize(
    "options",
    [
        {"strategy": "stage_beam"},
        {"strategy": "best_of_n"},
        {"strategy": "vote"},
        {"strategy": "retrace", "retrace_threshold": 0.0},
        {"strategy": "stage_beam", "adaptive": True, "adaptive_start": 2, "confidence": 1.0},
    ],
)
def test_a_served_reward_model_judges_in_every_strategy_that_takes_scores(kind, options):
    judge = served(kind)
    llm = ChatLlavaCoT(backend=ScriptedBackend(SCRIPT), candidates=3, judge=judge, **options)
    record = llm.invoke(QUESTION).response_metadata["llava_cot"]
    assert "3" in record["chosen"]["conclusion"] and judge.client.calls > 0
    scored = [step for step in record["steps"] if step["scores"]]
    assert scored and all(score is not None for step in scored for score in step["scores"])
    if kind == "process" and options["strategy"] != "vote":
        assert all(step["step_scores"] for step in scored)


def test_one_request_per_judge_step_and_the_stream_carries_the_step_scores():
    judge = served("process")
    llm = ChatLlavaCoT(backend=ScriptedBackend(SCRIPT), candidates=3, judge=judge)
    events = list(
        llm.graph.stream(llm.graph_input(QUESTION), context=llm.search_context(), stream_mode="custom")
    )
    chosen = [e for e in events if e["event"] == "chosen"]
    judged = [e for e in chosen if len({c["text"] for c in e["step"]["candidates"]}) > 1]
    assert judge.client.calls == len(judged) == 3  # caption, reasoning, conclusion: one request each
    caption = next(e for e in chosen if e["stage"] == "caption")["step"]
    assert [[s["score"] for s in steps] for steps in caption["step_scores"]] == [[-2.0], [2.0], [-2.0]]
    assert caption["step_scores"][1][0]["text"] == "three red circles"
    assert chosen[-1]["judge"] == {"name": "served_process_reward", "reason": "named by the judge option"}


def test_per_stage_and_async():
    outcome = served("outcome")
    judge = StageJudges({"caption": outcome}, default="likelihood")
    llm = ChatLlavaCoT(backend=ScriptedBackend(SCRIPT), candidates=3, judge=judge)
    message = asyncio.run(llm.ainvoke(QUESTION))
    steps = {s["stage"]: s for s in message.response_metadata["llava_cot"]["steps"]}
    assert steps["caption"]["scores"] == [-2.0, 2.0, -2.0]  # the served model's, by text
    assert steps["reasoning"]["scores"] == pytest.approx([-0.1, -0.2, -0.3])  # likelihood's
    assert "three" in steps["caption"]["candidates"][steps["caption"]["winner"]]["text"]
    assert message.usage_metadata["input_tokens"] > 0 and outcome.client.calls == 1


def test_async_driving_gives_the_same_verdict():
    judge = served("process")
    asked = task("so three. 3.", "so two. 2.")
    assert asyncio.run(adrive(judge.select(asked, None), None)) == drive(judge.select(asked, None), None)
