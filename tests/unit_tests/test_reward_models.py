"""The reward-model judge on a tiny sequence classifier built here, and ScoreJudge."""

import asyncio

import pytest
import torch
from fakes import ScriptedBackend
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

from langchain_llava_cot._calls import adrive, drive
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.demo import DEMO_MODEL_PATH
from langchain_llava_cot.graph import build_graph
from langchain_llava_cot.judges import JudgeTask, ScoreJudge, StageJudges, reward_text
from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.reward_models import RewardModelJudge, text_reward_judge
from langchain_llava_cot.stages import Stage

CONVERSATION = Conversation((Turn("user", "How many red circles?"),))


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_PATH)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("reward")
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def task(*candidates, stage=Stage.CAPTION):
    return JudgeTask(CONVERSATION, stage, {Stage.SUMMARY: "count"}, candidates)


def test_reward_model_scores_each_candidate_in_context_in_one_batch(reward_model_dir):
    judge = RewardModelJudge(reward_model_dir)
    candidates = ("two red circles", "three red circles", "two red circles", "one blue square")
    verdict = drive(judge.select(task(*candidates), None), None)
    tokenizer, model = judge.tokenizer, judge.model
    alone = []
    for i in range(len(candidates)):  # each text on its own, no padding: the same rewards
        encoded = tokenizer(reward_text(task(*candidates), i), return_tensors="pt")
        alone.append(model(**encoded).logits[0, 0].item())
    assert verdict.scores == pytest.approx(alone, abs=1e-5)
    assert verdict.winner == max(range(4), key=lambda i: alone[i])
    assert verdict.scores[0] == verdict.scores[2] and judge.name == "reward_model" and judge.scores
    assert "<SUMMARY> count </SUMMARY>\n\n<CAPTION> three red circles </CAPTION>" in reward_text(
        task(*candidates), 1
    )


def test_reward_model_keeps_the_candidate_when_the_text_is_too_long(reward_model_dir):
    judge = RewardModelJudge(reward_model_dir, max_length=8)
    long = task("a " * 50 + "three", "a " * 50 + "two")
    scores = drive(judge.score(long, None), None).scores
    assert scores[0] != scores[1]  # the ends differ, and the ends are what is read


def test_reward_model_judges_a_search_and_runs_off_the_event_loop(reward_model_dir):
    judge = RewardModelJudge(reward_model_dir)
    script = {
        Stage.SUMMARY: [" count </SUMMARY>"],
        Stage.CAPTION: [" two red circles </CAPTION>", " three red circles </CAPTION>"],
        Stage.REASONING: [" so three </REASONING>", " so two </REASONING>"],
        Stage.CONCLUSION: [" 3 </CONCLUSION>", " 2 </CONCLUSION>"],
    }
    context = SearchContext(backend=ScriptedBackend(script), candidates=2, judge=judge)
    state = asyncio.run(build_graph().ainvoke({"conversation": CONVERSATION}, context=context))
    for step in state["steps"][1:]:
        assert step["judge"] == "reward_model" and step["winner"] == max(
            range(2), key=lambda i: step["scores"][i]
        )


def test_a_classifier_with_several_labels_is_not_a_reward_model(reward_model_dir):
    config = LlamaConfig.from_pretrained(reward_model_dir)
    config.num_labels = 3
    model = LlamaForSequenceClassification(config)
    with pytest.raises(ValueError, match="one output"):
        RewardModelJudge(model, AutoTokenizer.from_pretrained(reward_model_dir))
    with pytest.raises(ValueError, match="needs its tokenizer"):
        RewardModelJudge(model)


def test_score_judge_wraps_any_scoring_function_sync_or_async():
    def lengths(t):
        return [len(c) for c in t.candidates]

    async def negated(t):
        return [-len(c) for c in t.candidates]

    assert drive(ScoreJudge(lengths).select(task("ab", "abcd"), None), None).winner == 1
    assert asyncio.run(adrive(ScoreJudge(negated).select(task("ab", "abcd"), None), None)).winner == 0
    with pytest.raises(ValueError, match="must return 2 finite numbers"):
        drive(ScoreJudge(lambda t: [1.0]).select(task("ab", "abcd"), None), None)
    with pytest.raises(ValueError, match="must return 2 finite numbers"):
        drive(ScoreJudge(lambda t: [1.0, float("nan")]).select(task("ab", "abcd"), None), None)


def test_stage_judges_send_each_stage_to_its_own_judge():
    judge = StageJudges(
        {"caption": ScoreJudge(lambda t: [-len(c) for c in t.candidates])}, default="likelihood"
    )
    shorter_caption = drive(judge.select(task("a long caption", "short"), None), None)
    assert shorter_caption.winner == 1 and shorter_caption.scores == (-14.0, -5.0)
    reasoning = JudgeTask(CONVERSATION, Stage.REASONING, {}, ("a", "b"), mean_logprobs=(-0.1, -2.0))
    assert drive(judge.select(reasoning, None), None).winner == 0  # the default: likelihood
    assert judge.scores and judge.vote_weight(0.0) == 1.0  # whole answers: likelihood's weight
    assert not StageJudges({"caption": "pairwise"}).scores
    with pytest.raises(ValueError, match="unknown stage 'captions'"):
        StageJudges({"captions": "likelihood"})


def test_a_text_reward_model_judges_what_it_can_read(reward_model_dir):
    judge = text_reward_judge(reward_model_dir)
    assert judge.name == "reward" and judge.scores
    assert isinstance(judge.judge_of(Stage.REASONING), RewardModelJudge)
    assert isinstance(judge.judge_of(None), RewardModelJudge)  # whole answers
    assert judge.judge_of(Stage.CAPTION).name == "likelihood"  # it cannot see the picture


def test_max_length_is_capped_to_the_models_positions(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_PATH)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=1, n_head=2, num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    judge = RewardModelJudge(tmp_path)  # max_length 2048 asked; the model has 128 positions
    assert judge.max_length == 128
    long = task("a b " * 200 + "three", "a b " * 200 + "two")
    scores = drive(judge.score(long, None), None).scores
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_a_missing_reward_model_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RewardModelJudge(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RewardModelJudge(str(tmp_path / "no" / "such" / "model"))


def test_pickled_weights_load_only_when_allowed(reward_model_dir, tmp_path):
    pickled = tmp_path / "pickled"
    model = LlamaForSequenceClassification.from_pretrained(reward_model_dir)
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # the old, pickled format
    AutoTokenizer.from_pretrained(reward_model_dir).save_pretrained(pickled)
    assert (pickled / "pytorch_model.bin").is_file() and not list(pickled.glob("*.safetensors"))
    with pytest.raises(ValueError, match="safetensors only.*allow_pickle=True"):
        RewardModelJudge(pickled)
    judge = RewardModelJudge(pickled, allow_pickle=True)
    assert drive(judge.score(task("two", "three"), None), None).scores


@pytest.mark.parametrize("options", [{"max_length": 0}, {"batch_size": 0}, {"max_length": True}])
def test_bad_reward_model_options_are_refused(reward_model_dir, options):
    with pytest.raises(ValueError, match="must be a whole number of at least 1"):
        RewardModelJudge(reward_model_dir, **options)
