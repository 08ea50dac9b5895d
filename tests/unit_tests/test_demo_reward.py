"""The demo reward model's training data and its per-token labels, and a short real training run."""

import random

import pytest
import torch
from transformers import AutoTokenizer

from langchain_llava_cot._calls import drive
from langchain_llava_cot.demo import DEMO_MODEL_PATH
from langchain_llava_cot.demo.dataset import examples
from langchain_llava_cot.demo.reward import (
    RewardConfig,
    RewardRow,
    _token_labels,
    decision_rows,
    fit_report,
    made_up_rows,
    train_reward_model,
)
from langchain_llava_cot.judges import JudgeTask
from langchain_llava_cot.reward_models import RewardModelJudge
from langchain_llava_cot.stages import Stage

EXAMPLE = examples("train", 3, 100_000)[2]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(DEMO_MODEL_PATH)


def test_every_decision_is_cut_after_as_written_and_flipped():
    rows = list(decision_rows(EXAMPLE))
    reasoning = EXAMPLE.stages[Stage.REASONING]
    decisions = sum(w.strip(";.,") in ("yes", "no") for w in reasoning.split())
    assert len(rows) == 2 * decisions
    for written, flipped in zip(rows[::2], rows[1::2]):
        assert written.right and not flipped.right
        assert written.text.rsplit(" ", 1)[0] == flipped.text.rsplit(" ", 1)[0]
        assert {written.text.rsplit(" ", 1)[1], flipped.text.rsplit(" ", 1)[1]} == {"yes", "no"}


def test_tokens_are_labelled_right_until_the_answer_goes_wrong(tokenizer):
    rows = list(made_up_rows(EXAMPLE, random.Random(0)))
    right, wrong = rows[0], rows[2]  # the right reasoning, then a made-up wrong one
    assert right.right and not wrong.right
    ids, labels, weights = _token_labels(right, tokenizer, final_weight=4.0)
    assert set(labels) == {1.0} and weights[-1] == 4.0
    assert weights[0] == 0.0  # the question is given, not judged
    ids, labels, weights = _token_labels(wrong, tokenizer, final_weight=4.0)
    first_wrong = labels.index(0.0)
    assert set(labels[first_wrong:]) == {0.0} and weights[first_wrong] == 4.0
    written = tokenizer.decode(ids[: first_wrong + 1])
    assert not right.text.startswith(written) and right.text.startswith(tokenizer.decode(ids[:first_wrong]))


def test_a_short_run_trains_a_reward_model_the_judge_loads(tokenizer, tmp_path):
    rows = [row for example in examples("train", 6, 100_000) for row in decision_rows(example)]
    config = RewardConfig(hidden_size=32, num_layers=1, num_heads=2, steps=30, batch_size=8, warmup_steps=5)
    model, record = train_reward_model(rows, tokenizer, config, log_every=10)
    assert record["steps"] == 30 and len(record["history"]) == 3 and record["tokens_seen"] > 0
    assert record["history"][-1]["loss"] < record["history"][0]["loss"]
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    judge = RewardModelJudge(tmp_path)
    task = JudgeTask(EXAMPLE.conversation(), Stage.REASONING, {}, ("a", "b"))
    assert len(drive(judge.score(task, None), None).scores) == 2
    # pooling and shifting: the judge (left-padded batches, the last token) reads exactly the logit
    # training supervised at a row's last token (right-padded, every token)
    texts = [rows[0].text, rows[1].text[:-7], rows[5].text]
    read = judge.read(texts)
    for text, score in zip(texts, read):
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.inference_mode():
            trained = model.score(model.model(input_ids=ids).last_hidden_state)[0, -1, 0].item()
        assert score == pytest.approx(trained, abs=1e-4)


def test_fit_report_ranks_the_rows_as_the_judge_reads_them(tokenizer):
    rng = random.Random(0)
    rows = [row for example in examples("train", 2, 100_000) for row in made_up_rows(example, rng)]
    config = RewardConfig(hidden_size=32, num_layers=1, num_heads=2, steps=2, batch_size=4, warmup_steps=1)
    model, _ = train_reward_model(rows, tokenizer, config)
    report = fit_report(model, tokenizer, rows)
    assert report["rows"] == len(rows) and report["within_question_auc"]["sampled"]["mixed_questions"] == 0
    assert report["within_question_auc"]["all"]["mixed_questions"] == 2  # a right and a wrong reasoning each
    assert 0.0 <= report["pooled_auc"]["made_up"] <= 1.0 and report["pooled_auc"]["decision"] is None


def test_rows_know_whether_the_answer_so_far_is_right():
    assert RewardRow("abc", "abcdef", 0).right and not RewardRow("abd", "abcdef", 0).right
